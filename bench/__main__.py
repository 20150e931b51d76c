"""``python -m bench load|benchmark|soak|hostile``: measure the service (see each --help)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import BenchError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(not 1 <= value <= 256 for value in values):
        raise argparse.ArgumentTypeError(
            "give one or more concurrency levels between 1 and 256, e.g. 1,2,4,8"
        )
    return values


def _gradcam_modes(text: str) -> tuple[bool, ...]:
    modes = {"off": False, "on": True}
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or any(part not in modes for part in parts):
        raise argparse.ArgumentTypeError("give off, on or off,on")
    return tuple(modes[part] for part in parts)


def _bounded(low: float, high: float, kind: type = int) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"give a value between {low:g} and {high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from bench.load import MAX_REQUESTS_PER_LEVEL, MAX_SECONDS_PER_LEVEL

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser(
        "load",
        help="drive a running service at several concurrency levels; table, load.json and load.png",
        description="Drive a running service with real images: per model, with and without Grad-CAM, at each "
        "concurrency, a warm-up then --requests requests or --duration seconds, whichever comes first.",
    )
    load.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: %(default)s)")
    load.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    load.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench/load"),
        help="where load.json and load.png go (default: %(default)s)",
    )
    load.add_argument(
        "--concurrency",
        dest="concurrencies",
        type=_positive_ints,
        default=(1, 2, 4, 8),
        help="levels, e.g. 1,2,4,8",
    )
    load.add_argument("--gradcam", type=_gradcam_modes, default=(False, True), help="off, on or off,on")
    load.add_argument(
        "--model", dest="models", action="append", default=[], help="model to load (repeatable; default: all)"
    )
    load.add_argument(
        "--requests", type=_bounded(1, MAX_REQUESTS_PER_LEVEL), default=200, help="requests per level"
    )
    load.add_argument(
        "--duration",
        dest="duration_s",
        type=_bounded(1, MAX_SECONDS_PER_LEVEL, float),
        default=60.0,
        help="most seconds per level (default: %(default)s)",
    )
    load.add_argument("--warmup", type=_bounded(0, 10_000), default=10, help="unmeasured requests per level")
    load.add_argument(
        "--timeout", dest="timeout_s", type=_bounded(1, 600, float), default=60.0, help="seconds per request"
    )
    load.add_argument(
        "--image-limit", type=_bounded(1, 100_000), default=64, help="images read from --images"
    )
    load.add_argument("--api-key", default=None, help="X-API-Key, when the service has keys")
    load.add_argument("--allow-remote", action="store_true", help="allow a host other than this machine")

    bench = commands.add_parser(
        "benchmark",
        help="bare ONNX Runtime vs Keras vs the service (in process and over HTTP) on the same images",
        description="The side-by-side benchmark; writes benchmark.json and benchmark.md.",
    )
    bench.add_argument("--repository", type=Path, default=Path("models"), help="model repository")
    bench.add_argument(
        "--model", default="sartaj-4class", help="model entry to measure (default: %(default)s)"
    )
    bench.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    bench.add_argument(
        "--out", type=Path, default=Path("runs/bench/benchmark"), help="output folder (default: %(default)s)"
    )
    bench.add_argument(
        "--image-limit", type=_bounded(1, 10_000), default=64, help="images read from --images"
    )
    bench.add_argument(
        "--rounds", type=_bounded(1, 100), default=3, help="passes for preprocessing and bare ORT"
    )
    bench.add_argument("--keras-calls", type=_bounded(1, 10_000), default=32, help="Keras model(x) calls")
    bench.add_argument("--predict-calls", type=_bounded(1, 10_000), default=16, help="Keras predict calls")
    bench.add_argument(
        "--service-requests", type=_bounded(1, 100_000), default=300, help="requests per level"
    )
    bench.add_argument("--gradcam-requests", type=_bounded(1, 10_000), default=20, help="Grad-CAM requests")

    soak = commands.add_parser(
        "soak",
        help="many requests against one service process; RSS at start and end, errors",
        description="Start a service (or use --url and --pid), send --requests requests, read its memory.",
    )
    soak.add_argument("--repository", type=Path, default=Path("models"), help="model repository to serve")
    soak.add_argument("--url", default=None, help="a running service on this machine instead (needs --pid)")
    soak.add_argument("--pid", type=int, default=None, help="process id of the service at --url")
    soak.add_argument("--model", default=None, help="model to ask for (default: the service's default)")
    soak.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    soak.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench/soak"),
        help="where soak.json goes (default: %(default)s)",
    )
    soak.add_argument(
        "--requests", type=_bounded(1, 1_000_000), default=10_000, help="requests after warm-up"
    )
    soak.add_argument("--concurrency", type=_bounded(1, 256), default=4, help="concurrent clients")
    soak.add_argument(
        "--warmup", type=_bounded(0, 100_000), default=1000, help="requests before the first RSS"
    )
    soak.add_argument("--chunk", type=_bounded(1, 100_000), default=500, help="requests between RSS readings")
    soak.add_argument("--gradcam-every", type=_bounded(0, 1_000_000), default=50, help="0: never")
    soak.add_argument("--bad-every", type=_bounded(0, 1_000_000), default=100, help="0: never")
    soak.add_argument(
        "--image-limit", type=_bounded(1, 100_000), default=256, help="images read from --images"
    )
    soak.add_argument("--max-seconds", type=_bounded(1, 86_400, float), default=3600.0, help="time bound")

    hostile = commands.add_parser(
        "hostile",
        help="send a generated corpus of hostile uploads to a service; statuses and peak memory growth",
        description="Start the service on --repository, send each hostile case (bombs, forged and truncated "
        "codestreams, deep pixels, malformed DICOM...) --repeats times, check its status and readiness, "
        "and read the service's peak RSS growth per case; writes hostile.json and hostile.md.",
    )
    hostile.add_argument("--repository", type=Path, default=Path("models"), help="model repository to serve")
    hostile.add_argument("--data-root", type=Path, default=Path("../shared/datasets"),
                         help="folder with the real MRI data sets (a real slice is the control)")  # fmt: skip
    hostile.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench/hostile"),
        help="where the report goes (default: %(default)s)",
    )
    hostile.add_argument("--repeats", type=_bounded(1, 100), default=3, help="sends per case")
    return parser


def _config(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The config dataclass ``cls`` from the parsed options of the same names, then ``overrides``."""
    values = {field.name: getattr(args, field.name) for field in fields(cls) if hasattr(args, field.name)}  # type: ignore[arg-type]
    return cls(**{**values, **overrides})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = getattr(args, "url", None)  # load and soak
    url = None if url is None else url.rstrip("/")
    try:
        if args.command == "load":
            from bench.load import LoadConfig, run_load_test

            report = run_load_test(_config(LoadConfig, args, url=url, models=tuple(args.models)))
            print(f"wrote {args.out / 'load.json'} and {args.out / 'load.png'}")
            return EXIT_OK if report["rows"] else EXIT_FAILED
        if args.command == "benchmark":
            from bench.sidebyside import BenchmarkConfig, run_benchmark

            run_benchmark(_config(BenchmarkConfig, args))
            print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.md'}")
            return EXIT_OK
        if args.command == "hostile":
            from bench.hostile import run_hostile

            report = run_hostile(args.repository, args.data_root, args.out, args.repeats)
            print(f"wrote {args.out / 'hostile.json'} and {args.out / 'hostile.md'}")
            return EXIT_OK if report["all_ok"] and not report["non_json_log_lines"] else EXIT_FAILED
        from bench.soak import SoakConfig, run_soak

        repository = None if url else args.repository
        report = run_soak(_config(SoakConfig, args, url=url, repository=repository))
        print(f"wrote {args.out / 'soak.json'}")
        return EXIT_OK if not report["unexpected"] and report["rss_mib"]["met"] else EXIT_FAILED
    except BenchError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
