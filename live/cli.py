"""The ``deepdream-live`` command line. Commands wire modules together; no maths lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from live import __version__, logs
from live.control.cli_flags import add_param_flags, apply_flags
from live.errors import LiveError

log = logging.getLogger("live")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--weights",
        default="imagenet",
        metavar="W",
        help="imagenet (cached; downloaded on first use), auto (imagenet, or random when offline), "
        "random[:SEED] (untrained, for demos), or a checkpoint FILE (default: %(default)s)",
    )
    g.add_argument("--backend", default="auto", help="auto or torch (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")


def _build_parser() -> argparse.ArgumentParser:
    from live.dreamer import DreamSettings

    d = DreamSettings()
    parser = argparse.ArgumentParser(prog="deepdream-live", description="Real-time DeepDream for cameras and streams.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=logs.LEVELS)
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
    image.set_defaults(handler=_cmd_image)

    run = sub.add_parser(
        "run",
        help="the live show: camera (or file, stream, test scene) dreamed to window, virtual camera, recording",
        description="Dream live on a camera or stream. Parameters below can also be changed while running.",
    )
    src = run.add_argument_group("source")
    src.add_argument("--source", default="auto", help="auto (camera 0, else the test scene), a camera index or "
                     "/dev/videoN, an rtsp:// or http(s):// URL, a video or image file, or test-scene")
    src.add_argument("--capture-size", default="1280x720", metavar="WxH", help="size asked of a camera (default: %(default)s)")
    src.add_argument("--capture-fps", type=float, default=30.0, help="rate asked of a camera (default: %(default)s)")
    src.add_argument("--once", action="store_true", help="play a video file once, then stop (default: loop)")
    out = run.add_argument_group("outputs (any combination; none = headless)")
    out.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                     help="show a window (default: when there is a display)")
    out.add_argument("--fullscreen", action="store_true", help="fullscreen window, for projectors")
    out.add_argument("--monitor", type=int, default=None, help="monitor index for the window (0 = primary)")
    out.add_argument("--vcam", action="store_true", help="send to a virtual camera (v4l2loopback / OBS) for video calls")
    out.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video10")
    out.add_argument("--vcam-backend", default=None, help="pyvirtualcam backend (default: the platform's)")
    out.add_argument("--record", type=Path, default=None, metavar="FILE", help="record to FILE (.mp4 or .avi)")
    out.add_argument("--overlay", action="store_true", help="draw fps, layer, steps and backend on the output")
    out.add_argument("--screenshot-dir", type=Path, default=Path("."), help="where the 's' key saves PNGs")
    ctl = run.add_argument_group("loop")
    ctl.add_argument("--size", default=None, metavar="WxH", help="dream size, same as --width W --height H")
    ctl.add_argument("--preset", default=None, help="start from this preset (flags given here override it)")
    ctl.add_argument("--presets", type=Path, default=None, metavar="DIR",
                     help="presets directory (default: $DEEPDREAM_LIVE_PRESETS or ~/.config/deepdream-live/presets)")
    ctl.add_argument("--flow-preset", default="fast", choices=("ultrafast", "fast", "medium"))
    ctl.add_argument("--seed", type=int, default=None, help="seed for the jitter (CPU)")
    ctl.add_argument("--max-frames", type=int, default=None, help="stop after N output frames")
    ctl.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    ctl.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    _add_model_options(run)
    add_param_flags(run)
    run.set_defaults(handler=_cmd_run)

    bench = sub.add_parser("bench", help="frames per second of the live loop here, against a plain PyTorch loop",
                           description="The whole live loop (test scene and a clip, headless) against the plain "
                           "PyTorch DeepDream loop, measured in the same run.")
    bench.add_argument("--sizes", default=None, metavar="WxH[,WxH…]",
                       help="dream sizes (default: 320x180 on CPU, 1280x720,1920x1080 on CUDA)")
    bench.add_argument("--steps", type=int, default=None, help="steps per frame (default: 2 on CPU, 4 on CUDA)")
    bench.add_argument("--frames", type=int, default=20, help="frames timed per run (default: %(default)s)")
    bench.add_argument("--layer", default="inception4c")
    _add_model_options(bench)
    bench.set_defaults(handler=_cmd_bench, weights="random")

    layers = sub.add_parser("layers", help="list the layers that can be dreamed on")
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

    from live.app import ShowOptions, run_show
    from live.control.params import Registry
    from live.control.presets import PresetStore

    registry = Registry()
    presets = PresetStore(registry, args.presets)
    if args.preset:
        presets.load(args.preset)
    apply_flags(registry, args)
    if args.size:
        w, h = _parse_size(args.size, "--size")
        registry.update({"width": w, "height": h}, source="cli")
    cw, ch = _parse_size(args.capture_size, "--capture-size")
    opts = ShowOptions(
        source=args.source, capture_width=cw, capture_height=ch, capture_fps=args.capture_fps,
        loop_video=not args.once, window=args.window, fullscreen=args.fullscreen, monitor=args.monitor,
        vcam=args.vcam, vcam_device=args.vcam_device, vcam_backend=args.vcam_backend, record=args.record,
        overlay=args.overlay, weights=args.weights, backend=args.backend, device=args.device,
        flow_preset=args.flow_preset, seed=args.seed, max_frames=args.max_frames, duration=args.duration,
        status_every=args.status_every, screenshot_dir=args.screenshot_dir,
    )  # fmt: skip
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: finishing the current frame and closing outputs", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = run_show(opts, registry, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if report.stopped_because == "source failed":
        # A source that broke on an unexpected error: exit non-zero so systemd restarts the show.
        print("deepdream-live: error: the source stopped on an unexpected error (see the log)", file=sys.stderr)
        return 70  # EX_SOFTWARE
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from live.benchmark import loop_benchmark

    sizes = [_parse_size(t, "--sizes") for t in args.sizes.split(",")] if args.sizes else None
    loop_benchmark(sizes, args.steps, args.frames, args.layer, args.weights, args.backend, args.device)
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from live.model import catalog

    print(f"{'#':>2}  {'layer':<12} {'channels':>8}  aliases")
    for layer in catalog.LAYERS:
        print(f"{layer.index + 1:>2}  {layer.name:<12} {layer.channels:>8}  {', '.join(layer.aliases)}")
    print("\nObjectives: a layer (inception4c), a channel (inception4c:97), channels (inception4c:0..9,97)")
    print("or a weighted sum ('0.5*inception3b + inception4c').")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepdream-live`` command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        return args.handler(args)
    except LiveError as e:
        print(f"deepdream-live: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepdream-live: interrupted", file=sys.stderr)
        return 130
