"""The ``deepdream-live`` command line. Commands wire modules together; no maths lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from live import threads

# First: libgomp reads OMP_WAIT_POLICY once, when PyTorch loads it, and the imports below load
# PyTorch (docs/architecture.md, "Frame budget").
threads.prepare_environment()

from live import __version__, logs  # noqa: E402
from live.control.cli_flags import add_param_flags, apply_flags  # noqa: E402
from live.errors import LiveError  # noqa: E402

log = logging.getLogger("live")


def _add_model_options(p: argparse.ArgumentParser, default_weights: str | None = "imagenet",
                       defaults: bool = True) -> None:
    """--model, --weights, --backend, --device. ``defaults=False`` leaves them None so a site
    config can fill what the command line does not say."""
    g = p.add_argument_group("network")
    g.add_argument("--model", default="torchvision" if defaults else None, choices=("torchvision", "bvlc"),
                   help="torchvision's GoogLeNet, or bvlc: the 2015 Caffe GoogLeNet of the classic look "
                   "(default: torchvision)")
    g.add_argument(
        "--weights",
        default=default_weights,
        metavar="W",
        help="imagenet (cached; downloaded on first use), auto (imagenet, or random when offline), "
        "random[:SEED] (untrained, for demos), or a weights FILE (default: imagenet)",
    )
    g.add_argument("--backend", default="auto" if defaults else None,
                   help="auto, torch, onnx or tensorrt (default: auto, the fastest that starts)")
    g.add_argument("--device", default="auto" if defaults else None, help="auto, cpu, cuda or cuda:N (default: auto)")


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    """--threads after the command too (``run --threads 1``); the main parser's value is the default."""
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                   help=f"CPU threads for the dream (default: ${threads.ENV_THREADS}, else every core)")


def _build_parser() -> argparse.ArgumentParser:
    from live.dreamer import DreamSettings

    d = DreamSettings()
    parser = argparse.ArgumentParser(prog="deepdream-live", description="Real-time DeepDream for cameras and streams.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default=None, choices=logs.LEVELS, help="(default: info, or the config's)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads for the dream (default: ${threads.ENV_THREADS}, else every core); idle "
                        "threads sleep (OMP_WAIT_POLICY=PASSIVE unless set)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = sub.add_parser("image", help="dream on a still image (PNG or JPEG)", description="The classic still-image DeepDream.")
    image.add_argument("input", type=Path, metavar="IN", help="PNG or JPEG to read, or 'test-scene' for a built-in picture")
    image.add_argument("output", type=Path, metavar="OUT", help="where to write: .png, .jpg or .jpeg")
    image.add_argument(
        "--layer",
        "--objective",
        dest="objective",
        default="inception4c",
        help="layer or objective: inception4c, inception4c:97, '0.5*inception3b+mixed4c' (default: %(default)s)",
    )
    image.add_argument("--steps", type=int, default=d.steps, help="steps per octave (default: %(default)s)")
    image.add_argument("--octaves", type=int, default=d.octaves, help="(default: %(default)s)")
    image.add_argument("--octave-scale", type=float, default=d.octave_scale, help="(default: %(default)s)")
    image.add_argument("--step-size", type=float, default=d.step_size, help="grey levels per step (default: %(default)s)")
    image.add_argument("--jitter", type=int, default=d.jitter, help="random roll in pixels (default: %(default)s)")
    image.add_argument("--seed", type=int, default=0, help="random seed for the jitter (default: %(default)s)")
    image.add_argument(
        "--max-side", type=int, default=1024, help="dream at most this many pixels wide or tall, 0 for no limit; "
        "the dream's detail is laid over the full-size picture (default: %(default)s)"
    )
    image.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(image)
    _add_threads_option(image)
    image.set_defaults(handler=_cmd_image)

    run = sub.add_parser(
        "run",
        help="the live show: camera (or file, stream, test scene) dreamed to window, virtual camera, recording",
        description="Dream live on a camera or stream. Flags override the site config (--config); the "
        "live parameters can also be changed while running (keys, OSC, MIDI).",
    )
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="site config (TOML); SIGHUP re-reads it (see live/site-example.toml)")
    src = run.add_argument_group("source")
    src.add_argument("--source", default=None, help="auto (camera 0, else the test scene), a camera index or "
                     "/dev/videoN, an rtsp:// or http(s):// URL, a video or image file, or test-scene (default: auto)")
    src.add_argument("--capture-size", default=None, metavar="WxH", help="size asked of a camera (default: 1280x720)")
    src.add_argument("--capture-fps", type=float, default=None, help="rate asked of a camera (default: 30)")
    src.add_argument("--once", action="store_true", default=None, help="play a video file once, then stop (default: loop)")
    out = run.add_argument_group("outputs (any combination; none = headless)")
    out.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                     help="show a window (default: when there is a display)")
    out.add_argument("--fullscreen", action=argparse.BooleanOptionalAction, default=None,
                     help="fullscreen window, for projectors")
    out.add_argument("--monitor", type=int, default=None, help="monitor index for the window (0 = primary)")
    out.add_argument("--vcam", action=argparse.BooleanOptionalAction, default=None,
                     help="send to a virtual camera (v4l2loopback / OBS) for video calls")
    out.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video10")
    out.add_argument("--vcam-backend", default=None, help="pyvirtualcam backend (default: the platform's)")
    out.add_argument("--record", type=Path, default=None, metavar="FILE", help="record to FILE (.mp4 or .avi)")
    out.add_argument("--output-size", default=None, metavar="WxH",
                     help="size of every output, any size, e.g. 1920x1080 (default: the source's own; the dream "
                     "runs at --size and its detail is laid over the full-size camera)")
    out.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=None,
                     help="draw fps, layer, steps and backend on the output")
    out.add_argument("--screenshot-dir", type=Path, default=None, help="where the 's' key saves PNGs (default: .)")
    ctl = run.add_argument_group("control")
    ctl.add_argument("--osc", action=argparse.BooleanOptionalAction, default=None,
                     help="OSC control (default: on, 127.0.0.1:9000)")
    ctl.add_argument("--osc-host", default=None, help="address to listen on (default: 127.0.0.1)")
    ctl.add_argument("--osc-port", type=int, default=None, help="UDP port (default: 9000)")
    ctl.add_argument("--osc-allow", action="append", default=None, metavar="CIDR",
                     help="sender network allowed besides loopback, e.g. 192.168.1.0/24 (repeatable)")
    ctl.add_argument("--osc-feedback", action="append", default=None, metavar="HOST:PORT",
                     help="controller that receives every change, e.g. 192.168.1.20:9001 (repeatable)")
    ctl.add_argument("--midi", action=argparse.BooleanOptionalAction, default=None,
                     help="MIDI control (default: on where the midi extra is installed)")
    ctl.add_argument("--midi-map", type=Path, default=None, metavar="FILE",
                     help="MIDI mapping file (default: ~/.config/deepdream-live/midi.toml)")
    ctl.add_argument("--preset", default=None, help="start from this preset (flags given here override it)")
    ctl.add_argument("--presets", type=Path, default=None, metavar="DIR",
                     help="presets directory (default: $DEEPDREAM_LIVE_PRESETS or ~/.config/deepdream-live/presets)")
    loop = run.add_argument_group("loop")
    loop.add_argument("--size", default=None, metavar="WxH", help="dream size, same as --width W --height H")
    loop.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                      help="a profile written by `deepdream-live calibrate` (its settings, then the config's)")
    loop.add_argument("--target-fps", type=float, default=None,
                      help="hold this frame rate by trimming steps, then size (default: the profile's, else off)")
    loop.add_argument("--governor", action=argparse.BooleanOptionalAction, default=None,
                      help="adaptive quality (default: on when a target fps is known)")
    loop.add_argument("--flow-preset", default=None, choices=("ultrafast", "fast", "medium"))
    loop.add_argument("--seed", type=int, default=None, help="seed for the jitter (CPU)")
    loop.add_argument("--max-frames", type=int, default=None, help="stop after N output frames")
    loop.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    loop.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    _add_model_options(run, default_weights=None, defaults=False)
    add_param_flags(run)
    _add_threads_option(run)
    run.set_defaults(handler=_cmd_run)

    bench = sub.add_parser("bench", help="frames per second of the live loop here, against ordinary PyTorch loops",
                           description="The whole live loop (default look, headless, a panning clip and the test "
                           "scene) against ordinary live loops dreaming 4 steps a frame (naive, frozen, best "
                           "ordinary), with the dream strength each reaches, then the cost of outputs at the "
                           "camera's size; all measured in the same run.")
    bench.add_argument("--sizes", default=None, metavar="WxH[,WxH…]",
                       help="camera sizes; the dream runs at each rounded to 32 (default: 640x360 on CPU, "
                       "960x540 on CUDA)")
    bench.add_argument("--steps", type=int, default=None, help="steps per frame (default: the default look's)")
    bench.add_argument("--frames", type=int, default=20, help="frames timed per run (default: %(default)s)")
    bench.add_argument("--warmup", type=int, default=60,
                       help="frames before timing, so the carried dream settles (default: %(default)s)")
    bench.add_argument("--layer", default="inception4c")
    _add_model_options(bench)
    _add_threads_option(bench)
    bench.set_defaults(handler=_cmd_bench, weights="random")

    check = sub.add_parser("check", help="is this machine ready for the show? one line per check, with the fix")
    check.add_argument("--config", type=Path, default=None, metavar="FILE", help="check what this site config needs")
    check.add_argument("--no-probe", action="store_true", help="do not start each backend (faster)")
    check.set_defaults(handler=_cmd_check)

    from live import calibrate

    cal = sub.add_parser("calibrate", help="measure this machine and camera; write calibration/SITE.toml",
                         description="Time the live loop here (backend x size x steps x layer) and choose the "
                         "settings that hold the target frame rate with headroom.")
    calibrate.add_arguments(cal)
    _add_model_options(cal)
    _add_threads_option(cal)
    cal.set_defaults(handler=_cmd_calibrate, weights="random")

    eng = sub.add_parser("build-engines", help="build TensorRT engines ahead of opening hours",
                         description="Export the forward-only dream graph and build a TensorRT plan for each "
                         "size and layer set; plans are checked against this machine before use.")
    eng.add_argument("--sizes", required=True, metavar="WxH[,WxH…]", help="dream sizes, e.g. 1280x720,1920x1080")
    eng.add_argument("--layers", default="inception4c", metavar="L[+L][,…]",
                     help="layer sets, ',' between sets, '+' within one (default: %(default)s)")
    eng.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    eng.add_argument("--force", action="store_true", help="rebuild even when a valid plan exists")
    _add_model_options(eng)
    eng.set_defaults(handler=_cmd_build_engines)

    layers = sub.add_parser("layers", help="list the layers that can be dreamed on")
    layers.add_argument("--model", default="torchvision", choices=("torchvision", "bvlc"))
    layers.set_defaults(handler=_cmd_layers)
    return parser


def _cmd_image(args: argparse.Namespace) -> int:
    from live.dreamer import DreamSettings
    from live.still import StillJob, dream_still

    settings = DreamSettings(
        steps=args.steps,
        step_size=args.step_size,
        octaves=args.octaves,
        octave_scale=args.octave_scale,
        jitter=args.jitter,
    )
    job = StillJob(
        source=args.input,
        target=args.output,
        objective=args.objective,
        settings=settings,
        weights=args.weights,
        model=args.model,
        backend=args.backend,
        device=args.device,
        seed=args.seed,
        max_side=args.max_side,
        progress=False if args.no_progress else None,
    )
    dream_still(job)
    return 0


def _parse_size(text: str, what: str) -> tuple[int, int]:
    from live.errors import UsageError

    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise UsageError(f"{what} {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    return int(w), int(h)


def _cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from live.app import run_show

    opts, registry, reloader = _show_setup(args)
    stop = threading.Event()
    reload_asked = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            reload_asked.set()  # applied on the loop's thread, between frames
            return
        log.info("%s: finishing the current frame and closing outputs", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    def on_tick() -> None:
        if reload_asked.is_set():
            reload_asked.clear()
            reloader()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        report = run_show(opts, registry, stop, on_tick=on_tick)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if report.stopped_because == "source failed":
        # A source that broke on an unexpected error: exit non-zero so systemd restarts the show.
        print("deepdream-live: error: the source stopped on an unexpected error (see the log)", file=sys.stderr)
        return 70  # EX_SOFTWARE
    return 0


def _show_setup(args: argparse.Namespace):
    """ShowOptions, the registry and a config reloader from the flags, the site config and the
    calibration profile. Lowest to highest: defaults, profile, config, preset, flags."""
    import dataclasses

    from live.app import ShowOptions
    from live.control.params import Registry
    from live.control.presets import PresetStore
    from live.control.schedule import OpeningHours

    site = None
    if args.config is not None:
        from live.site import load_site

        site = load_site(args.config)
        if site.log.level and args.log_level is None:
            logs.configure(site.log.level)

    registry = Registry()
    profile = None
    profile_path = args.calibration or (site.calibration_path if site else None)
    if profile_path is not None:
        from live.calibrate import load_profile

        profile = load_profile(profile_path)
        registry.update(profile.registry_values(), source="calibration")
    if site is not None:
        site.apply(registry)
    presets_dir = args.presets or (site.presets.directory if site else None)
    preset = args.preset or (site.presets.start if site else None)
    if preset:
        PresetStore(registry, presets_dir).load(preset)
    if site is not None and site.presets.morph_time is not None:
        registry.set("morph_time", site.presets.morph_time, source="config")
    apply_flags(registry, args)
    if args.size:
        w, h = _parse_size(args.size, "--size")
        registry.update({"width": w, "height": h}, source="cli")

    fields: dict[str, object] = dict(site.show_options()) if site else {}
    if site is not None:
        o, m, sch, idle, gov = site.osc, site.midi, site.schedule, site.idle, site.governor
        fields.update(osc=o.enabled, osc_host=o.host, osc_port=o.port, osc_allow=tuple(str(n) for n in o.allow),
                      osc_feedback=tuple(f"{h}:{p}" for h, p in o.feedback), midi=m.enabled)
        if m.mapping is not None:
            fields["midi_map"] = m.mapping
        fields.update(preset_cycle=site.presets.cycle, preset_cycle_minutes=site.presets.cycle_minutes)
        if sch.open is not None and sch.close is not None:
            fields.update(hours=OpeningHours(sch.open, sch.close, sch.days), closed_look=sch.outside)
        if idle.after_minutes:
            fields.update(idle_after_minutes=idle.after_minutes, idle_threshold=idle.motion_threshold,
                          idle_values=dict(idle.dream))
        if gov.enabled:
            fields.update(governor_headroom=gov.headroom, governor_min_steps=gov.min_steps,
                          governor_min_size=gov.min_size)
            if gov.target_fps:
                fields["target_fps"] = gov.target_fps
    if profile is not None:
        fields.setdefault("target_fps", profile.target_fps)
        fields["governor_sizes"] = profile.sizes()
    cli = {
        "source": args.source, "capture_fps": args.capture_fps, "loop_video": False if args.once else None,
        "window": args.window, "fullscreen": args.fullscreen, "monitor": args.monitor, "vcam": args.vcam,
        "vcam_device": args.vcam_device, "vcam_backend": args.vcam_backend, "record": args.record,
        "overlay": args.overlay, "screenshot_dir": args.screenshot_dir, "weights": args.weights,
        "backend": args.backend, "device": args.device, "model": args.model, "flow_preset": args.flow_preset,
        "seed": args.seed, "max_frames": args.max_frames, "duration": args.duration,
        "status_every": args.status_every, "osc": args.osc, "osc_host": args.osc_host, "osc_port": args.osc_port,
        "osc_allow": tuple(args.osc_allow) if args.osc_allow else None,
        "osc_feedback": tuple(args.osc_feedback) if args.osc_feedback else None,
        "midi": args.midi, "midi_map": args.midi_map, "presets_dir": presets_dir, "target_fps": args.target_fps,
    }
    if args.capture_size:
        cli["capture_width"], cli["capture_height"] = _parse_size(args.capture_size, "--capture-size")
    if args.output_size:
        from live.compose import check_output_size

        cli["output_size"] = check_output_size(_parse_size(args.output_size, "--output-size"))
    fields.update({k: v for k, v in cli.items() if v is not None})
    if args.governor is False:
        fields["target_fps"] = None
    elif args.governor and not fields.get("target_fps"):
        fields["target_fps"] = 25.0
    names = {f.name for f in dataclasses.fields(ShowOptions)}
    opts = ShowOptions(**{k: v for k, v in fields.items() if k in names})

    state = {"site": site}

    def reload() -> None:
        """SIGHUP: re-read the config; apply what can change live, say what needs a restart."""
        if args.config is None:
            log.info("SIGHUP: no --config to reload")
            return
        from live.errors import LiveError
        from live.site import apply_reload, load_site

        try:
            new = load_site(args.config)
        except LiveError as e:
            log.error("config not reloaded, the show goes on unchanged:\n%s", e)
            return
        apply_reload(state["site"], new, registry)
        if new.log.level and new.log.level != (state["site"].log.level if state["site"] else None):
            logs.configure(new.log.level)
        state["site"] = new

    return opts, registry, reload


def _cmd_bench(args: argparse.Namespace) -> int:
    from live.benchmark import loop_benchmark

    sizes = [_parse_size(t, "--sizes") for t in args.sizes.split(",")] if args.sizes else None
    loop_benchmark(sizes, args.steps, args.frames, args.layer, args.weights, args.backend, args.device,
                   warmup=args.warmup)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from live.check import CheckOptions, exit_code, format_results, run_checks

    fields: dict[str, object] = {}
    if args.config is not None:
        from live.site import load_site

        site = load_site(args.config)
        o = site.show_options()
        fields.update({k: o[k] for k in ("source", "window", "vcam", "vcam_device", "record", "screenshot_dir",
                                         "backend", "device", "weights") if k in o})
        fields.update(osc_host=site.osc.host, osc_port=site.osc.port if site.osc.enabled else None,
                      midi=site.midi.enabled)
    else:
        fields.update(osc_port=9000, midi=True)  # what `run` uses when told nothing
    fields["probe_backends"] = not args.no_probe
    results = run_checks(CheckOptions(**fields))
    print(format_results(results))
    return exit_code(results)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from live.calibrate import calibrate_from_args, format_report

    print(format_report(calibrate_from_args(args)))
    return 0


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from live.backends.tensorrt_backend import build_engines
    from live.model import load_model

    sizes = [_parse_size(t, "--sizes") for t in args.sizes.split(",")]
    layer_sets = [[name for name in group.split("+") if name] for group in args.layers.split(",")]
    model = load_model(args.weights, model=args.model)

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)

    plans = build_engines(model, sizes, layer_sets, precision=args.precision, progress=progress, force=args.force)
    for plan in plans:
        print(plan)
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from live.model import catalog

    print(f"{'#':>2}  {'layer':<12} {'channels':>8}  aliases   ({args.model})")
    for layer in catalog.for_model(args.model).layers:
        print(f"{layer.index + 1:>2}  {layer.name:<12} {layer.channels:>8}  {', '.join(layer.aliases)}")
    print("\nObjectives: a layer (inception4c), a channel (inception4c:97), channels (inception4c:0..9,97)")
    print("or a weighted sum ('0.5*inception3b + inception4c').")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepdream-live`` command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level or "info")
    try:
        settings = threads.apply(args.threads)
        log.log(logging.INFO if args.command in ("run", "bench", "calibrate") else logging.DEBUG, "threads: %s",
                settings.describe())
        return args.handler(args)
    except LiveError as e:
        print(f"deepdream-live: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepdream-live: interrupted", file=sys.stderr)
        return 130
