"""The ``deepdream-live`` command line. Commands wire modules together; no maths lives here."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import typing
from pathlib import Path

from live import threads

# First: libgomp reads OMP_WAIT_POLICY once, when PyTorch loads it, and the imports below load
# PyTorch (docs/architecture.md, "Frame budget").
threads.prepare_environment()

from live import __version__, logs  # noqa: E402
from live.control.cli_flags import add_param_flags, apply_flags  # noqa: E402
from live.errors import LiveError  # noqa: E402

if typing.TYPE_CHECKING:
    from live.site import Site

log = logging.getLogger("live")


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line on stderr and exit 64 (EX_USAGE, like
    every other usage error), instead of the usage text and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        command = self.prog.removeprefix("deepdream-live").strip()
        self.exit(64, f"deepdream-live: error: {command + ': ' if command else ''}{message} "
                      f"(see `{self.prog} --help`)\n")


def _number(kind: type, lo: float | None = None, hi: float | None = None, *, above: float | None = None,
            what: str = "") -> typing.Callable[[str], typing.Any]:
    """An argparse type: ``kind`` (int or float), finite, within lo..hi (or above ``above``);
    out of range is refused with the allowed range, never clamped."""
    def unit(v: float) -> str:
        return f"{v:g}"

    if above is not None:
        allowed = f"{'an integer' if kind is int else 'a number'} above {unit(above)}"
    else:
        allowed = f"{'an integer' if kind is int else 'a number'} {unit(lo)}..{unit(hi)}" if hi is not None else (
            f"{'an integer' if kind is int else 'a number'} of at least {unit(lo)}")
    allowed += f" {what}" if what else ""

    def parse(text: str) -> typing.Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}")
        if (above is not None and not value > above) or (lo is not None and value < lo) or (
                hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {allowed}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


# 0: a free port the system picks, named in the log (several shows, or tests, on one machine)
ANY_PORT = _number(int, 0, 65535, what="(a port; 0 = any free one, named in the log)")


def _segments(text: str) -> str | int:
    """``render --segments``: auto, or a number of segments (1 or more)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or a number of segments") from None
    if not 1 <= value <= 100000:
        raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: auto, or 1..100000 segments")
    return value


def _max_side(text: str) -> int:
    """``image --max-side``: 0 (no limit) or at least 32 (the smallest picture the network takes)."""
    allowed = "0 (no limit) or 32 or more pixels"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; allowed: {allowed}") from None
    if value < 0 or 0 < value < 32:
        raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {allowed}")
    return value

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
    g.add_argument("--precision", default=None, choices=("fp16", "fp32", "auto"),
                   help="compute precision (default: fp16 on CUDA, fp32 on the CPU; fp16 on the CPU runs, "
                   "about 8x slower, for comparisons)")


def _add_encoder_options(g: argparse._ArgumentGroup) -> None:
    """--record-*, --stream*, --keyframe-interval, --ndi: the encoder outputs (live/outputs/encoder.py)."""
    g.add_argument("--record-dir", type=Path, default=None, metavar="DIR",
                   help="where OSC /dream/record/start writes its time-named files (default: --record's directory, else .)")
    g.add_argument("--record-codec", default=None, metavar="CODEC",
                   help="H.264 encoder: h264_nvenc, libx264, … (default: h264_nvenc where it opens, else libx264)")
    g.add_argument("--record-bitrate", default=None, metavar="RATE",
                   help="recording bitrate, e.g. 8M (default: constant quality, CRF 20)")
    g.add_argument("--stream", action="append", default=None, metavar="URL",
                   help="stream to URL (repeatable): rtmp(s)://host/app/KEY, srt://host:port[?mode=listener], "
                   "udp://host:port, rtp://host:port; keys are never logged")
    g.add_argument("--stream-bitrate", default=None, metavar="RATE", help="constant stream bitrate (default: 4500k)")
    g.add_argument("--encoder-preset", default=None, metavar="PRESET",
                   help="libx264 speed/quality: veryfast (default), superfast, ultrafast (cheapest CPU), faster, …")
    g.add_argument("--keyframe-interval", type=float, default=None, metavar="SECONDS",
                   help="a keyframe every SECONDS of real time (default: 2)")
    g.add_argument("--ndi", default=None, metavar="NAME", help="send as the NDI source NAME (the ndi extra)")


def _add_midi_api(p: argparse._ActionsContainer) -> None:
    p.add_argument("--midi-api", default=None, choices=("alsa", "jack"),
                   help="MIDI system: alsa (Linux's default) or jack (a running JACK server; "
                   "default: $MIDO_BACKEND, else alsa)")


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    """--threads after the command too (``run --threads 1``); the main parser's value is the default."""
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                   help=f"CPU threads for the dream (default: ${threads.ENV_THREADS}, else every core)")


def _build_parser() -> argparse.ArgumentParser:
    from live.dreamer import DreamSettings

    d = DreamSettings()
    parser = _Parser(prog="deepdream-live", description="Real-time DeepDream for cameras and streams.")
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
        "--max-side", type=_max_side, default=1024, help="dream at most this many pixels wide or tall (32 or "
        "more), 0 for no limit; the dream's detail is laid over the full-size picture (default: %(default)s)"
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
    src.add_argument("--capture-fps", type=_number(float, above=0, hi=240), default=None,
                     help="rate asked of a camera (default: 30)")
    src.add_argument("--once", action="store_true", default=None, help="play a video file once, then stop (default: loop)")
    out = run.add_argument_group("outputs (any combination; none = headless)")
    out.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                     help="show a window (default: when there is a display)")
    out.add_argument("--fullscreen", action=argparse.BooleanOptionalAction, default=None,
                     help="fullscreen window, for projectors")
    out.add_argument("--monitor", type=_number(int, 0, 63), default=None,
                     help="monitor index for the window (0 = primary)")
    out.add_argument("--vcam", action=argparse.BooleanOptionalAction, default=None,
                     help="send to a virtual camera (v4l2loopback / OBS) for video calls")
    out.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video10")
    out.add_argument("--vcam-backend", default=None, help="pyvirtualcam backend (default: the platform's)")
    out.add_argument("--record", type=Path, default=None, metavar="FILE",
                     help="record H.264 to FILE: .mp4 or .mov (fragmented MP4) or .mkv (Matroska); crash-safe")
    _add_encoder_options(out)
    out.add_argument("--output-size", default=None, metavar="WxH",
                     help="size of every output, any size, e.g. 1920x1080 (default: the source's own; the dream "
                     "runs at --size and its detail is laid over the full-size camera)")
    out.add_argument("--present", default=None, choices=("camera", "dream"),
                     help="camera: every camera frame goes out at the camera's rate with the newest dream carried "
                     "onto it along the motion; dream: each frame waits for its own dream (the dream's rate, "
                     "latency one dream). Default: camera (site config: outputs.present)")
    out.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=None,
                     help="draw fps, layer, steps and backend on the output")
    out.add_argument("--screenshot-dir", type=Path, default=None, help="where the 's' key saves PNGs (default: .)")
    ctl = run.add_argument_group("control")
    ctl.add_argument("--osc", action=argparse.BooleanOptionalAction, default=None,
                     help="OSC control (default: on, 127.0.0.1:9000)")
    ctl.add_argument("--osc-host", default=None, help="address to listen on (default: 127.0.0.1)")
    ctl.add_argument("--osc-port", type=ANY_PORT, default=None,
                     help="UDP port 1..65535, or 0 for any free one, named in the log (default: 9000)")
    ctl.add_argument("--osc-allow", action="append", default=None, metavar="CIDR",
                     help="sender network allowed besides loopback, e.g. 192.168.1.0/24 (repeatable)")
    ctl.add_argument("--osc-feedback", action="append", default=None, metavar="HOST:PORT",
                     help="controller that receives every change, e.g. 192.168.1.20:9001 (repeatable)")
    web = run.add_argument_group("web page (control, live preview and status in a browser; OSCQuery)")
    web.add_argument("--web", action=argparse.BooleanOptionalAction, default=None,
                     help="serve the show's web page (default: on, http://127.0.0.1:8080)")
    web.add_argument("--web-host", default=None,
                     help="address to listen on (default: 127.0.0.1; 0.0.0.0 for phones on the network: "
                     "then every device needs the token)")
    web.add_argument("--web-port", type=ANY_PORT, default=None,
                     help="TCP port 1..65535, or 0 for any free one, named in the log (default: 8080, or a free "
                     "one when 8080 is taken)")
    web.add_argument("--web-token-file", type=Path, default=None, metavar="FILE",
                     help="where the token devices on the network must give is kept (made there, 0600, when "
                     "missing; default: $DEEPDREAM_LIVE_WEB_TOKEN, else web-token beside the site config)")
    web.add_argument("--web-token", default=None, metavar="TOKEN",
                     help="the token itself; every user of this machine can read it in ps: prefer --web-token-file "
                     "or $DEEPDREAM_LIVE_WEB_TOKEN")
    web.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=None,
                     help="advertise OSCQuery (_oscjson._tcp) and OSC (_osc._udp) over mDNS (default: on)")
    ctl.add_argument("--midi", action=argparse.BooleanOptionalAction, default=None,
                     help="MIDI control (default: on where the midi extra is installed)")
    ctl.add_argument("--midi-map", type=Path, default=None, metavar="FILE",
                     help="MIDI mapping file (default: ~/.config/deepdream-live/midi.toml)")
    _add_midi_api(ctl)
    snd = run.add_argument_group("sound (parameters follow the music; README, *Sound*)")
    snd.add_argument("--audio", default=None, metavar="DEVICE|FILE|source",
                     help="sound in: a device (index or name, see --audio-list; 'default'), a WAV/FLAC/MP3 file "
                     "played in real time and looped, or 'source' (the sound of a video file or stream source)")
    snd.add_argument("--audio-map", default=None, metavar="FILE|NAME",
                     help="audio mapping (TOML), or a shipped one: bass-zoom, breathe, kick-reset")
    snd.add_argument("--audio-list", action="store_true", help="print the audio input devices and exit")
    snd.add_argument("--audio-link", action=argparse.BooleanOptionalAction, default=None,
                     help="share tempo and beat over Ableton Link (the link extra)")
    ctl.add_argument("--preset", default=None, help="start from this preset (flags given here override it)")
    ctl.add_argument("--presets", type=Path, default=None, metavar="DIR",
                     help="presets directory (default: $DEEPDREAM_LIVE_PRESETS or ~/.config/deepdream-live/presets)")
    loop = run.add_argument_group("loop")
    loop.add_argument("--size", default=None, metavar="WxH", help="dream size, same as --width W --height H")
    loop.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                      help="a profile written by `deepdream-live calibrate` (its settings, then the config's)")
    loop.add_argument("--target-fps", type=_number(float, above=0, hi=240), default=None,
                      help="hold this frame rate by trimming steps, then size (default: the profile's, else off)")
    loop.add_argument("--governor", action=argparse.BooleanOptionalAction, default=None,
                      help="adaptive quality (default: on when a target fps is known)")
    loop.add_argument("--flow-preset", default=None, choices=("ultrafast", "fast", "medium"))
    loop.add_argument("--seed", type=int, default=None, help="seed for the jitter (CPU)")
    loop.add_argument("--max-frames", type=_number(int, 1), default=None, help="stop after N output frames")
    loop.add_argument("--duration", type=_number(float, above=0), default=None, help="stop after SECONDS")
    loop.add_argument("--status-every", type=_number(float, above=0), default=10.0,
                      help="seconds between status lines")
    loop.add_argument("--no-build", action="store_true", default=None,
                      help="never build a TensorRT plan: without a valid, verified one, dream on torch and say so "
                      "(for shows that must not build during opening hours; site config: network.no_build)")
    _add_model_options(run, default_weights=None, defaults=False)
    add_param_flags(run)
    _add_threads_option(run)
    run.set_defaults(handler=_cmd_run)

    ren = sub.add_parser("render", help="dream a video file frame by frame (every frame, sound kept)",
                         description="Dream every frame of a video file with the live show's look (flags, a "
                         "preset or a site config), flow feedback between frames and a fixed seed; the audio is "
                         "copied untouched. Ctrl-C leaves a playable file; --resume goes on from there.")
    ren.add_argument("input", type=Path, metavar="IN", help="a video file")
    ren.add_argument("output", type=Path, metavar="OUT", help=".mp4, .mov or .mkv (H.264)")
    ren.add_argument("--resume", action="store_true", help="continue a render that was broken off")
    ren.add_argument("--config", type=Path, default=None, metavar="FILE", help="a site config: its [dream] values")
    ren.add_argument("--preset", default=None, help="start from this preset (flags given here override it)")
    ren.add_argument("--presets", type=Path, default=None, metavar="DIR", help="presets directory")
    ren.add_argument("--size", default=None, metavar="WxH", help="dream size (fitted to the video's aspect)")
    ren.add_argument("--seed", type=int, default=0, help="seed for the jitter: same seed, same frames (default: 0)")
    ren.add_argument("--flow-preset", default="fast", choices=("ultrafast", "fast", "medium"))
    ren.add_argument("--codec", default=None, help="H.264 encoder (default: h264_nvenc where it opens, else libx264)")
    ren.add_argument("--bitrate", default=None, metavar="RATE", help="e.g. 8M (default: constant quality)")
    ren.add_argument("--crf", type=int, default=18, help="libx264 quality, 0 lossless .. 51 (default: %(default)s)")
    ren.add_argument("--no-progress", action="store_true", help="no progress bar")
    ren.add_argument("--audio-map", default=None, metavar="FILE|NAME",
                     help="the input's own sound drives parameters through this audio mapping (or a shipped one)")
    farm = ren.add_argument_group("in segments, on several processes or machines (README: Renders across machines)")
    farm.add_argument("--segments", type=_segments, default=None, metavar="auto|N",
                      help="split at scene cuts and at most every --segment-seconds (auto), or into N segments; "
                      "the plan is printed and saved as OUT.plan.json (default: auto with --workers or --ray)")
    farm.add_argument("--segment-seconds", type=_number(float, above=0), default=None, metavar="S",
                      help="longest segment inside a shot (default: 10)")
    farm.add_argument("--warmup", type=_number(int, 0, 10000), default=None, metavar="FRAMES",
                      help="frames dreamed before a segment that starts inside a shot, so the dream has built up "
                      "(default: enough for the feedback to settle, from --feedback)")
    farm.add_argument("--workers", type=_number(int, 1, 256), default=None, metavar="N",
                      help="render segments in N local processes (one per GPU, else a share of the cores each)")
    farm.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                      help="render segments as Ray tasks: no ADDRESS starts a local cluster, 'auto' joins the one "
                      "running here, or ray://HOST:10001 (needs pip install 'deepdream-live[cluster]')")
    farm.add_argument("--gpus-per-task", type=_number(float, 0, 64), default=None, metavar="F",
                      help="GPUs a Ray task asks for (default: 1 where the cluster has GPUs, else 0)")
    farm.add_argument("--keep-segments", action="store_true", help="keep OUT.segments/ after joining")
    _add_model_options(ren, default_weights=None, defaults=False)
    add_param_flags(ren)
    _add_threads_option(ren)
    ren.set_defaults(handler=_cmd_render)

    bench = sub.add_parser("bench", help="frames per second of the live loop here, against ordinary PyTorch loops",
                           description="The whole live loop (default look, headless, a panning clip and the test "
                           "scene) against ordinary live loops dreaming 4 steps a frame (naive, frozen, best "
                           "ordinary), with the dream strength each reaches, then the cost of outputs at the "
                           "camera's size; all measured in the same run.")
    bench.add_argument("--sizes", default=None, metavar="WxH[,WxH…]",
                       help="camera sizes; the dream runs at each rounded to 32 (default: 640x360 on CPU, "
                       "960x540 on CUDA)")
    bench.add_argument("--steps", type=_number(int, 0, 50), default=None,
                       help="steps per frame (default: the default look's)")
    bench.add_argument("--frames", type=_number(int, 1), default=20, help="frames timed per run (default: %(default)s)")
    bench.add_argument("--warmup", type=_number(int, 0), default=60,
                       help="frames before timing, so the carried dream settles (default: %(default)s)")
    bench.add_argument("--layer", default="inception4c")
    _add_model_options(bench)
    _add_threads_option(bench)
    bench.set_defaults(handler=_cmd_bench, weights="random")

    check = sub.add_parser("check", help="is this machine ready for the show? one line per check, with the fix",
                           description="One line per check: PASS, WARN (optional, with the fix), FAIL (the show "
                           "would stop on it) or SKIP. With --config, everything the site config names is opened "
                           "as `run --config` opens it. Exit code 69 when a required check fails.")
    check.add_argument("--config", type=Path, default=None, metavar="FILE", help="check what this site config needs")
    check.add_argument("--no-probe", action="store_true", help="do not start each backend (faster)")
    _add_midi_api(check)
    _add_model_options(check, default_weights=None, defaults=False)
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
                         "size and layer set, each verified against the torch gradient; plans are checked "
                         "against this machine before use. With --config: what that site's show will ask for.")
    eng.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="site config: sizes from its dream size (and the governor's sizes), layer sets from its "
                     "objective and every preset it names, its model, weights and precision")
    eng.add_argument("--sizes", default=None, metavar="WxH[,WxH…]",
                     help="dream sizes, e.g. 1280x720,1920x1080 (required without --config)")
    eng.add_argument("--layers", default=None, metavar="L[+L][,…]",
                     help="layer sets, ',' between sets, '+' within one (default: inception4c, or the config's)")
    eng.add_argument("--force", action="store_true", help="rebuild even when a valid plan exists (also a quarantined one)")
    _add_model_options(eng, default_weights=None, defaults=False)
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
        precision=args.precision,
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
    import time

    from live.app import run_show

    if args.audio_list:
        from live.audio.inputs import describe_devices

        print(describe_devices())
        return 0
    opts, registry, reloader = _show_setup(args)
    stop = threading.Event()
    finishing = threading.Event()
    reload_asked = threading.Event()
    asked: list[tuple[str, float]] = []  # the stop signals received, with when

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            reload_asked.set()  # applied on the loop's thread, between frames
            return
        name = signal.Signals(signum).name
        asked.append((name, time.monotonic()))
        if len(asked) == 1:
            # The loop looks in after every dream step, so this lands within a step, not a frame.
            log.info("%s: stopping after the current dream step, then closing the outputs "
                     "(again: abandon the step at once; a third time: quit without finalising)", name)
            stop.set()
        elif len(asked) == 2 and not finishing.is_set():
            log.warning("%s again: abandoning the current frame; the recording is still finalised", name)
            signal.signal(signum, signal.SIG_DFL)  # a third one ends the process at once
            raise KeyboardInterrupt  # unwinds run_show, whose exit closes every output properly
        else:
            log.warning("%s again: finalising the recording and closing the outputs; once more quits at once", name)
            signal.signal(signum, signal.SIG_DFL)

    def on_tick() -> None:
        if reload_asked.is_set():
            reload_asked.clear()
            reloader()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        report = run_show(opts, registry, stop, on_tick=on_tick, finishing=finishing)
    except KeyboardInterrupt:
        if asked:
            log.info("stopped %.2f s after %s, the current frame abandoned", time.monotonic() - asked[0][1],
                     asked[0][0])
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if asked:
        log.info("stopped %.2f s after %s; outputs closed", time.monotonic() - asked[0][1], asked[0][0])
    if report.stopped_because == "source failed":
        # A source that broke on an unexpected error: exit non-zero so systemd restarts the show.
        print("deepdream-live: error: the source stopped on an unexpected error (see the log)", file=sys.stderr)
        return 70  # EX_SOFTWARE
    return 0


def _show_setup(args: argparse.Namespace):
    """ShowOptions, the registry and a config reloader from the flags, the site config and the
    calibration profile. Lowest to highest: defaults, profile, config, preset, flags."""
    import dataclasses
    import os

    from live.web.security import TOKEN_ENV

    from live.app import ShowOptions
    from live.control.params import Registry
    from live.control.presets import PresetStore
    from live.control.schedule import OpeningHours
    from live.errors import UsageError

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
    if profile is not None:
        registry.update(profile.registry_values(), source="calibration")
    limit = _dream_limit(args, site, profile, registry)
    if site is not None:
        try:
            site.apply(registry)
        except UsageError as e:  # in range, but above a rule such as this machine's largest dream size
            raise UsageError(f"{args.config}: [dream] {e}") from None
    presets_dir = args.presets or (site.presets.directory if site else None)
    preset = args.preset or (site.presets.start if site else None)
    if preset:
        PresetStore(registry, presets_dir).load(preset)
    if site is not None and site.presets.morph_time is not None:
        registry.set("morph_time", site.presets.morph_time, source="config")
    apply_flags(registry, args)
    if args.size:
        w, h = _parse_size(args.size, "--size")
        try:
            registry.update({"width": w, "height": h}, source="cli")
        except UsageError as e:
            raise UsageError(f"--size {args.size}: {e}") from None

    fields: dict[str, object] = dict(site.show_options()) if site else {}
    if site is not None:
        sch, idle, gov = site.schedule, site.idle, site.governor
        fields.update(_control_fields(site), osc=site.osc.enabled, osc_port=site.osc.port)
        fields.update(preset_cycle=site.presets.cycle, preset_cycle_minutes=site.presets.cycle_minutes)
        w = site.web
        fields.update(web=w.enabled, web_host=w.host, mdns=w.mdns, config=site.path)
        if w.port is not None:
            fields["web_port"] = w.port
        if w.token_file is not None:
            fields["web_token_path"] = w.token_file
        fields.update(_audio_fields(site))
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
        "overlay": args.overlay, "present": args.present, "screenshot_dir": args.screenshot_dir,
        "weights": args.weights,
        "backend": args.backend, "device": args.device, "model": args.model, "flow_preset": args.flow_preset,
        "seed": args.seed, "max_frames": args.max_frames, "duration": args.duration,
        "status_every": args.status_every, "osc": args.osc, "osc_host": args.osc_host, "osc_port": args.osc_port,
        "osc_allow": tuple(args.osc_allow) if args.osc_allow else None,
        "osc_feedback": tuple(args.osc_feedback) if args.osc_feedback else None,
        "midi": args.midi, "midi_map": args.midi_map, "presets_dir": presets_dir, "target_fps": args.target_fps,
        "web": args.web, "web_host": args.web_host, "web_port": args.web_port, "mdns": args.mdns,
        "web_token": args.web_token or os.environ.get(TOKEN_ENV) or None,
        "web_token_path": args.web_token_file,
        **_encoder_fields(args),
        "precision": args.precision, "no_build": args.no_build,
        "midi_api": args.midi_api,
        "audio": args.audio, "audio_map": args.audio_map, "audio_link": args.audio_link,
    }
    if args.capture_size:
        cli["capture_width"], cli["capture_height"] = _parse_size(args.capture_size, "--capture-size")
    if args.output_size:
        from live.compose import check_output_size

        cli["output_size"] = check_output_size(_parse_size(args.output_size, "--output-size"))
    fields.update({k: v for k, v in cli.items() if v is not None})
    if args.web_token:
        log.warning("--web-token shows the web token to every user of this machine (ps, /proc); keep it in a file "
                    "(--web-token-file FILE, 0600) or pass it in $%s instead", TOKEN_ENV)
    if args.governor is False:
        fields["target_fps"] = None
    elif args.governor and not fields.get("target_fps"):
        fields["target_fps"] = 25.0
    fields["dream_limit"] = limit
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


def _encoder_fields(args: argparse.Namespace) -> dict[str, object]:
    """ShowOptions fields of the encoder flags (None where not given, so the config's stand)."""
    from live.outputs.encoder import parse_bitrate

    return {
        "record_dir": args.record_dir, "record_codec": args.record_codec,
        "record_bitrate": parse_bitrate(args.record_bitrate) if args.record_bitrate else None,
        "streams": tuple(args.stream) if args.stream else None,
        "stream_bitrate": parse_bitrate(args.stream_bitrate) if args.stream_bitrate else None,
        "keyframe_seconds": args.keyframe_interval, "ndi": args.ndi, "encoder_preset": args.encoder_preset,
    }


def _cmd_render(args: argparse.Namespace) -> int:
    from live.control.params import Registry
    from live.control.presets import PresetStore
    from live.outputs.encoder import parse_bitrate
    from live.render import RenderJob, render

    registry = Registry()
    network: dict[str, object] = {}
    presets_dir = args.presets
    audio_map, audio_settings = args.audio_map, {}
    if args.config is not None:
        from live.site import load_site

        site = load_site(args.config)
        site.apply(registry)
        if site.audio.enabled:
            audio_map = audio_map or site.audio.mapping
            audio_settings = dict(site.audio.settings)
        n = site.network
        network = {k: v for k, v in (("weights", n.weights), ("backend", n.backend), ("device", n.device)) if v}
        presets_dir = presets_dir or site.presets.directory
    if args.preset:
        PresetStore(registry, presets_dir).load(args.preset)
    apply_flags(registry, args)
    if args.size:
        w, h = _parse_size(args.size, "--size")
        registry.update({"width": w, "height": h}, source="cli")
    job = RenderJob(
        source=args.input, target=args.output, registry=registry,
        weights=args.weights or network.get("weights") or "imagenet", model=args.model or "torchvision",
        backend=args.backend or network.get("backend") or "auto", device=args.device or network.get("device") or "auto",
        seed=args.seed, flow_preset=args.flow_preset, codec=args.codec,
        bitrate=parse_bitrate(args.bitrate) if args.bitrate else None, crf=args.crf, resume=args.resume,
        progress=False if args.no_progress else None,
    )  # fmt: skip
    in_segments = args.segments is not None or args.workers is not None or args.ray is not None
    if audio_map is not None:
        if in_segments:
            from live.errors import UsageError

            raise UsageError("a render driven by its sound (--audio-map, or [audio] in the config) runs in one "
                             "process for now: drop --segments, --workers and --ray")
        from live.audio.timeline import audio_look

        job.look = audio_look(args.input, audio_map, registry, audio_settings, PresetStore(registry, presets_dir))
    if not in_segments:
        report = render(job)
        return 130 if report.interrupted else 0
    from live.render.farm import FarmJob, render_farm

    farm = FarmJob(job, segments=args.segments or "auto", segment_seconds=args.segment_seconds, warmup=args.warmup,
                   workers=args.workers, ray=args.ray, threads=args.threads, gpus_per_task=args.gpus_per_task,
                   keep_segments=args.keep_segments)
    return 130 if render_farm(farm).interrupted else 0


def _dream_limit(args: argparse.Namespace, site, profile, registry):
    """The largest dream size for the device this show will dream on (the profile's when it was
    measured here, else the device kind's default), installed as a registry rule so every later
    write, from any source, is checked against it (see live/limits.py). The size set so far is
    nobody's explicit choice (the default, or a profile from a faster machine): above the limit,
    it is brought down to fit, with a warning."""
    from live import limits

    backend = args.backend or (site.network.backend if site is not None else None) or "auto"
    device = args.device or (site.network.device if site is not None else None) or "auto"
    kind = limits.device_kind(backend, device)
    limit = (profile.limit(kind) if profile is not None else None) or limits.default_limit(kind)
    limits.enforce(registry, limit)
    log.debug("largest dream size: %s", limit.describe())
    return limit


def _dream_sizes(text: str, flag: str) -> list[tuple[int, int]]:
    """``WxH[,WxH…]`` from the command line, each a size the registry takes (64..3840 x 64..2160)."""
    from live.control.params import Registry
    from live.errors import UsageError

    sizes = [_parse_size(t.strip(), flag) for t in text.split(",")]
    registry = Registry()
    for w, h in sizes:
        try:
            registry.check({"width": w, "height": h})
        except UsageError as e:
            raise UsageError(f"{flag} {w}x{h}: {e}") from None
    return sizes


def _layer_names(names: list[str], flag: str, model: str = "torchvision") -> list[str]:
    """The catalog names of ``names`` (aliases resolved); UsageError, listing the valid layers, if
    one is not a layer of ``model``."""
    from live.errors import UsageError
    from live.model import catalog

    try:
        return [catalog.for_model(model).resolve(name).name for name in names]
    except UsageError as e:
        raise UsageError(f"{flag}: {e}") from None


def _cmd_bench(args: argparse.Namespace) -> int:
    from live.benchmark import loop_benchmark

    # checked before the network loads and the plain loop is timed (minutes on a CPU)
    sizes = _dream_sizes(args.sizes, "--sizes") if args.sizes else None
    (layer,) = _layer_names([args.layer], "--layer", args.model or "torchvision")
    loop_benchmark(sizes, args.steps, args.frames, layer, args.weights, args.backend, args.device,
                   warmup=args.warmup, precision=args.precision)
    return 0


def _audio_fields(site: Site) -> dict[str, object]:
    """The site config's [audio] table as ShowOptions fields (flags override them)."""
    a = site.audio
    if not a.enabled:
        return {}
    fields: dict[str, object] = {"audio_settings": dict(a.settings), "audio_link": a.link}
    if a.input is not None:
        fields["audio"] = a.input
    if a.mapping is not None:
        fields["audio_map"] = a.mapping
    return fields


def _control_fields(site: Site) -> dict[str, object]:
    """The site config's [osc] and [midi] keys as ``run`` and ``check`` both take them (the OSC
    port aside: for ``check`` OSC off is no port)."""
    o, m = site.osc, site.midi
    fields: dict[str, object] = {"osc_host": o.host, "osc_allow": tuple(str(n) for n in o.allow),
                                 "osc_feedback": tuple(f"{h}:{p}" for h, p in o.feedback), "midi": m.enabled}
    if m.mapping is not None:
        fields["midi_map"] = m.mapping
    if m.api is not None:
        fields["midi_api"] = m.api
    return fields


def _cmd_check(args: argparse.Namespace) -> int:
    from live.check import CheckOptions, exit_code, format_results, run_checks
    from live.control.midi import default_mapping_path
    from live.control.osc import DEFAULT_PORT as OSC_DEFAULT_PORT
    from live.control.presets import default_presets_dir

    # What `run` uses when told nothing, then the site config over it, as _show_setup layers them.
    fields: dict[str, object] = {"osc_port": OSC_DEFAULT_PORT, "midi": True, "midi_map": default_mapping_path()}
    if args.config is not None:
        from live.site import load_site

        site = load_site(args.config)  # a broken config stops here, with run's own message and exit code
        if site.log.level and args.log_level is None:
            logs.configure(site.log.level)
        o = site.show_options()
        fields.update({k: o[k] for k in ("source", "window", "monitor", "vcam", "vcam_device", "record",
                                         "screenshot_dir", "backend", "device", "weights", "streams", "ndi",
                                         "record_codec") if k in o})
        fields.update(_control_fields(site), osc_port=site.osc.port if site.osc.enabled else None,
                      calibration=site.calibration_path, preset=site.presets.start,
                      preset_cycle=site.presets.cycle)
        if site.presets.directory is not None:
            fields["presets_dir"] = site.presets.directory
        if "width" in site.dream or "height" in site.dream:
            fields["dream_size"] = (site.dream.get("width", 640), site.dream.get("height", 360))
    fields.setdefault("presets_dir", default_presets_dir())
    cli = {"weights": args.weights, "model": args.model, "backend": args.backend, "device": args.device,
           "midi_api": args.midi_api}
    fields.update({k: v for k, v in cli.items() if v is not None})
    fields["probe_backends"] = not args.no_probe
    results = run_checks(CheckOptions(**fields))
    print(format_results(results))
    return exit_code(results)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from live.calibrate import calibrate_from_args, format_report

    print(format_report(calibrate_from_args(args)))
    return 0


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from live.engines import engines_dir
    from live.model import load_model

    if args.config is None and args.sizes is None:
        from live.errors import UsageError

        raise UsageError("build-engines needs --sizes WxH[,WxH…] or --config FILE (the site config to build for)")
    plan = _engine_request(args)
    if plan is None:
        return 0
    model_name, weights, device, precision, sizes, layer_sets = plan
    from live.backends import resolve_device
    from live.backends.tensorrt_backend import build_engines

    model = load_model(weights, model=model_name)
    dev = resolve_device(device)

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)

    results = build_engines(model, sizes, layer_sets, precision=precision, progress=progress, force=args.force,
                            device=dev)
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            assert r.verification is not None
            print(f"ok  {r.plan}  (cosine {r.verification.cosine:.4f} to the torch gradient)")
        else:
            print(f"FAILED  {r.spec.label()}: {' '.join(r.error.split())}")
    if failed:
        print(f"deepdream-live: error: {len(failed)} of {len(results)} plan(s) failed (see above); `run` dreams "
              f"those on torch. Plans in {engines_dir()}", file=sys.stderr)
        return 65  # EX_DATAERR: a plan that gives a wrong gradient, or could not be built
    return 0


def _engine_request(args: argparse.Namespace):
    """(model, weights, device, precision, sizes, layer sets) for ``build-engines``: from the flags,
    or from a site config resolved exactly as ``run --config`` resolves it. None when the
    configured backend builds nothing ahead (said on stderr)."""
    # checked before anything loads or builds: a typo must not cost a build
    sizes = _dream_sizes(args.sizes, "--sizes") if args.sizes else []
    layer_sets = [[name for name in group.split("+") if name] for group in args.layers.split(",")] if args.layers else []
    model, weights, device, precision, backend = args.model, args.weights, args.device, args.precision, args.backend
    if layer_sets:
        _layer_names([n for group in layer_sets for n in group] or [""], "--layers", model or "torchvision")
    if args.config is not None:
        from live.engine_requests import show_engine_request
        from live.site import load_site

        # resolved exactly as `run --config FILE` resolves it: profile, config, start preset
        opts, registry, _reload = _show_setup(_build_parser().parse_args(["run", "--config", str(args.config)]))
        request = show_engine_request(opts, registry, load_site(args.config))
        sizes = sizes or request.sizes
        layer_sets = layer_sets or [list(s) for s in request.layer_sets]
        model, weights = model or request.model, weights or request.weights
        device, precision = device or request.device, precision or request.precision
        backend = backend or request.backend
    if backend in ("torch", "onnx"):
        print(f"backend {backend}: no TensorRT plans to build (the {backend} backend prepares itself in seconds "
              "when the show starts)", file=sys.stderr)
        return None
    if backend not in (None, "auto", "tensorrt"):
        from live.errors import UsageError

        raise UsageError(f"unknown backend {backend!r}; expected auto, torch, onnx or tensorrt")
    if backend in (None, "auto"):
        from live.backends.tensorrt_backend import import_tensorrt
        from live.errors import UnavailableError

        try:
            import_tensorrt()
        except UnavailableError as e:
            print(f"nothing to build: {e}; `run --backend auto` dreams on torch", file=sys.stderr)
            return None
    return (model or "torchvision", weights, device or "auto", precision, sizes,
            layer_sets or [["inception4c"]])


def _cmd_layers(args: argparse.Namespace) -> int:
    from live.model import catalog

    print(f"{'#':>2}  {'layer':<12} {'channels':>8}  aliases   ({args.model})")
    for layer in catalog.for_model(args.model).layers:
        print(f"{layer.index + 1:>2}  {layer.name:<12} {layer.channels:>8}  {', '.join(layer.aliases)}")
    print("\nObjectives: a layer (inception4c), a channel (inception4c:97), channels (inception4c:0..9,97)")
    print("or a weighted sum ('0.5*inception3b + inception4c').")
    return 0


def one_line(message: str) -> str:
    """A message of several lines (a list of problems, a hint below the error) as one line, so
    every error is one line on stderr and in the journal."""
    out = ""
    for line in (part.strip() for part in message.splitlines()):
        if not line:
            continue
        if out:
            out += " " if out.endswith((".", ":", ";", ",", ")")) else "; "
        out += line
    return out


def _tell_systemd(error: LiveError) -> None:
    """Under systemd, the reason the command stopped becomes the unit's status line, so
    `systemctl --user status deepdream-live` says why the show is down and whether it comes back
    by itself (the journal has the full message from stderr). No-op outside systemd."""
    from live.errors import CONFIG_EXIT_CODES
    from live.service import notify

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if error.exit_code in CONFIG_EXIT_CODES:
        then = "not restarted until it is fixed; then: systemctl --user restart deepdream-live"
    else:
        then = "systemd starts it again shortly"
    if notify.status(f"stopped: {first} (exit {error.exit_code}: {then})"):
        notify.barrier()  # the process ends next: let systemd read the status first


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepdream-live`` command; returns the process exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else 0
    logs.configure(args.log_level or "info")
    try:
        settings = threads.apply(args.threads)
        log.log(logging.INFO if args.command in ("run", "bench", "calibrate") else logging.DEBUG, "threads: %s",
                settings.describe())
        return args.handler(args)
    except LiveError as e:
        print(f"deepdream-live: error: {one_line(str(e))}", file=sys.stderr)
        _tell_systemd(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepdream-live: interrupted", file=sys.stderr)
        return 130
