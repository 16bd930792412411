# Two commands on a fresh Linux machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch goes in first, pinned: CI gets the CPU wheel from its local disk, users the same release
# from PyPI (a CUDA build on Linux). For another build: make run TORCH='torch==2.x.y' or install
# your own torch into .venv first; pyproject.toml only asks for a range.
TORCH ?= torch==2.13.0
# The main job: the live show. Camera 0, or the built-in test scene when there is none; a
# window when there is a display, else headless with status lines. `--weights auto` downloads
# the ImageNet weights, or falls back to (announced) random weights when offline. Ctrl-C stops.
RUN_ARGS ?= run --weights auto

# Debian packages OpenCV's wheel needs on a bare machine and libsrt (SRT streams: PyAV's FFmpeg
# has no SRT); for the tests Xvfb (window), systemd (systemd-analyze verify of the units),
# chromium (the web page, driven by Playwright), nginx with its RTMP module (a stream server the
# tests start) and jackd2 (a JACK server with the dummy driver: MIDI over JACK from a virtual
# port); installed with apt-get when missing.
APT_PACKAGES := libgl1 libglib2.0-0 libsrt1.5-gnutls
APT_TEST_PACKAGES := xvfb systemd chromium nginx-light libnginx-mod-rtmp jackd2

.PHONY: run test bench bench-steps bench-threads bench-paces layers clean system-deps test-system-deps install-service gpu-check wheels

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

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,midi,ndi]"
	touch $@

run: system-deps $(VENV)/.installed
	$(BIN)/deepdream-live $(RUN_ARGS)

test: test-system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The benchmarks pan a real photograph from scikit-image (the test extra) as their camera.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/dream_step.py
	$(BIN)/python bench/live_loop.py

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
# table in $(GPU_CHECK_OUT). Without CUDA it says so and exits 69.
GPU_CHECK_OUT ?= gpu-check-results
WHEELS ?= wheels
gpu-check:
	$(PYTHON) bench/gpu_deps.py install --wheels $(WHEELS) --target .gpu-check/site
	PYTHONPATH=$(CURDIR)/.gpu-check/site:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) bench/gpu_check.py $(GPU_CHECK_OUT)

# On a machine with a registry: wheels of those small dependencies for the GPU machine's Python
# (default 3.12; WHEEL_PYTHON=3.11 ...), to copy along with the checkout.
WHEEL_PYTHON ?= 3.12
wheels:
	$(PYTHON) bench/gpu_deps.py download --wheels $(WHEELS) --python $(WHEEL_PYTHON)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .gpu-check
