# Two commands on a fresh Linux machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch goes in first, pinned: CI gets the CPU wheel from its local disk, users the same release
# from PyPI (a CUDA build on Linux). For another build: make run TORCH='torch==2.x.y' or install
# your own torch into .venv first; pyproject.toml only asks for a range.
TORCH ?= torch==2.13.0
# The tested set: every other package at the exact version the suite last passed with (pip
# constraints; pyproject.toml keeps the ranges users install from). `make lock` refreshes it.
LOCK := constraints.txt
# The extras the tests need (test tools, MIDI, NDI, sound, Ableton Link, Ray).
TEST_EXTRAS := test,midi,ndi,audio,link,cluster
# The main job: the live show. Camera 0, or the built-in test scene when there is none; a
# window when there is a display, else headless with status lines. `--weights auto` downloads
# the ImageNet weights, or falls back to (announced) random weights when offline. Ctrl-C stops.
RUN_ARGS ?= run --weights auto

# Debian packages OpenCV's wheel needs on a bare machine, libsrt (SRT streams: PyAV's FFmpeg
# has no SRT) and libportaudio2 (sound from a device, through sounddevice); for the tests Xvfb
# (window), systemd (systemd-analyze verify of the units), chromium (the web page, driven by
# Playwright), nginx with its RTMP module (a stream server the tests start), jackd2 (a JACK
# server with the dummy driver: MIDI over JACK from a virtual port, sound into PortAudio from
# jack_metro), espeak-ng and sox (real sounds: speech, and signals made by sox); installed with
# apt-get when missing.
APT_PACKAGES := libgl1 libglib2.0-0 libsrt1.5-gnutls libportaudio2
APT_TEST_PACKAGES := xvfb systemd chromium nginx-light libnginx-mod-rtmp jackd2 espeak-ng sox

.PHONY: run test lock fuzz bench bench-audio bench-doors bench-steps bench-threads bench-paces layers clean system-deps test-system-deps install-service gpu-check wheels

# $(call apt-ensure,PACKAGES): apt-get install those not yet installed (sudo when not root).
define apt-ensure
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then echo "install these system packages first: $$missing"; exit 1; fi; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing $$missing"; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

system-deps:
	$(call apt-ensure,$(APT_PACKAGES))

test-system-deps:
	$(call apt-ensure,$(APT_PACKAGES) $(APT_TEST_PACKAGES))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[$(TEST_EXTRAS)]"
	touch $@

run: system-deps $(VENV)/.installed
	$(BIN)/deepdream-live $(RUN_ARGS)

test: test-system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Refresh the tested set: a fresh venv with the newest versions pyproject.toml's ranges allow,
# the whole suite on them, and $(LOCK) rewritten only when it passes. It prints what changed
# first, so a failure names the versions that broke it (the old lock is kept then).
LOCK_VENV ?= .venv-lock
lock: test-system-deps
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	# The pin again: an eager upgrade would otherwise take PyTorch to PyPI's newest (a CUDA build).
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager "$(TORCH)" -e ".[$(TEST_EXTRAS)]"
	@case '$(TORCH)' in torch==*) $(LOCK_VENV)/bin/python -c "import sys, torch; v = torch.__version__; sys.exit(0 if v.split('+')[0] == '$(TORCH)'.split('==')[1] else 'make lock: torch ' + v + ' got installed, not $(TORCH)')";; esac
	{ echo "# The tested set of versions: make test, make run and CI install from it (pip -c)."; \
	  echo "# Written by make lock after the whole suite passed on them; torch is pinned in the Makefile."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable --exclude torch --exclude pip; } > $(LOCK).new
	@echo "changes against $(LOCK):"; diff $(LOCK) $(LOCK).new | grep '^[<>]' || echo "  none"
	$(LOCK_VENV)/bin/python -m pytest -p no:cacheprovider -q
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "$(LOCK) written: the suite passed on these versions"

# The doors' fuzz tests with fifty times the examples of `make test` (22 min on 2 cores),
# randomised rather than the suite's fixed sequence.
fuzz: $(VENV)/.installed-test
	DDL_FUZZ=long $(BIN)/python -m pytest tests/test_fuzz_doors.py -q --hypothesis-show-statistics

# The README's doors table: fuzz volumes and the show under an idle-connection and OSC flood.
bench-doors: $(VENV)/.installed-test
	$(BIN)/python bench/doors.py

# The benchmarks pan a real photograph from scikit-image (the test extra) as their camera.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/dream_step.py
	$(BIN)/python bench/live_loop.py

# The README's sound table: onsets, tempo, latency and CPU of the audio analysis (a minute or two).
bench-audio: $(VENV)/.installed-test
	$(BIN)/python bench/audio.py

# The README's steps x feedback table (about half an hour on 2 CPU cores) and the threads table.
bench-steps: $(VENV)/.installed-test
	$(BIN)/python bench/steps_across_frames.py

bench-threads: $(VENV)/.installed-test
	$(BIN)/python bench/threads.py

# The show at the camera's pace against the dream's (README, "Two paces"); the receiver start-up
# rows need Debian's ffmpeg (apt install ffmpeg) for the FFmpeg 5.1 column. About ten minutes.
bench-paces: $(VENV)/.installed-test
	$(BIN)/python bench/two_paces.py

layers: $(VENV)/.installed
	$(BIN)/deepdream-live layers

# Install the systemd user units for this user (systemd/README.md walks through a kiosk).
# More: make install-service INSTALL_ARGS='--hours 10:00-18:00 --v4l2loopback'
INSTALL_ARGS ?=
install-service: system-deps $(VENV)/.installed
	sh systemd/install.sh $(INSTALL_ARGS) $(abspath $(BIN))/deepdream-live

# The GPU path verified and measured in one command, on a machine with an NVIDIA GPU (README.md,
# "On a GPU"): the Python and CUDA build of PyTorch already there (never reinstalled), the
# project's small missing dependencies from the wheel folder (no network needed), results and the
# table in $(GPU_CHECK_OUT). One deadline for the whole target, from the moment it starts
# (dependency install included): $(GPU_CHECK_SECONDS) s. Exit 0 only when every part ran and
# passed; without CUDA it says so and exits 69.
GPU_CHECK_OUT ?= gpu-check-results
GPU_CHECK_SECONDS ?= 480
WHEELS ?= wheels
gpu-check:
	@deadline=$$(( $$(date +%s) + $(GPU_CHECK_SECONDS) )); \
	$(PYTHON) bench/gpu_deps.py install --wheels $(WHEELS) --target .gpu-check/site --deadline $$deadline; \
	PYTHONPATH=$(CURDIR)/.gpu-check/site:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} \
	  $(PYTHON) bench/gpu_check.py $(GPU_CHECK_OUT) --deadline $$deadline

# On a machine with a registry: wheels of those small dependencies for the GPU machine's Python
# (default 3.12; WHEEL_PYTHON=3.11 ...), to copy along with the checkout.
WHEEL_PYTHON ?= 3.12
wheels:
	$(PYTHON) bench/gpu_deps.py download --wheels $(WHEELS) --python $(WHEEL_PYTHON)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info .pytest_cache .gpu-check $(LOCK).new
