"""The ``deepdream-live`` command line. Commands wire modules together; no maths lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from live import __version__, logs
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
