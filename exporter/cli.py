"""`python -m exporter RUN_DIR --repository models --name NAME`: publish a training run as a model entry."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter.defaults import (
    DEFAULT_PARITY_IMAGES,
    DEFAULT_TOLERANCE,
    MAX_ACCURACY_DROP_POINTS,
    OPSET,
    parse_heatmap,
)
from exporter.entry import check_target
from exporter.errors import ExportError

DEFAULT_REPOSITORY = Path("models")


def build_parser() -> argparse.ArgumentParser:
    """The exporter's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter",
        description=(
            f"Convert a training run's Keras model to ONNX (tf2onnx, opset {OPSET}, input 'image' "
            "(batch, H, W, 3) float32 in [0, 255], output 'probabilities'), check that ONNX Runtime "
            "gives the Keras probabilities on real images of the run's split, and write "
            "REPOSITORY/NAME/ (model.onnx, model.keras, manifest.json, report.md and figures) in one "
            "atomic rename. Nothing is written when a check fails."
        ),
    )
    add = parser.add_argument
    add("run_dir", type=Path, metavar="RUN_DIR", help="training run (python -m training train --out)")
    add("--repository", type=Path, default=DEFAULT_REPOSITORY,
        help="model repository folder (default %(default)s)")  # fmt: skip
    add("--name", required=True, help="entry name: a folder and URL segment (letters, digits, . _ -)")
    add("--version", default="1", help="version recorded in the manifest (default %(default)s)")
    add("--force", action="store_true", help="replace an existing entry of the same name")
    add("--parity-images", type=int, default=DEFAULT_PARITY_IMAGES, metavar="N",
        help="split images compared, test subset first (default %(default)s)")  # fmt: skip
    add("--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help="largest allowed |Δ probability| between Keras and ONNX (default %(default)g)")  # fmt: skip
    add("--split", type=Path, metavar="FILE.json", help="the run's split, when not where run.json says")
    add("--data-root", type=Path, action="append", metavar="DIR",
        help="replace the split's data roots (repeat, same order) for data that moved")  # fmt: skip
    add("--ood-bank-split", type=Path, action="append", default=[], metavar="FILE.json",
        help="another brain MRI split whose train subset joins the input-validity bank (repeat)")  # fmt: skip
    add("--ood-layer", action="append", metavar="LAYER",
        help="Keras layer feeding the input-validity check (repeat; default: per backbone)")  # fmt: skip
    add("--gradcam", type=heatmap_argument, metavar="METHOD@LAYER",
        help="the heat map the entry serves, e.g. layercam@block6d_expand_activation (default: per backbone, "
        "as measured by python -m training localisation)")  # fmt: skip
    add("--fp16", action="store_true",
        help=f"also publish model.fp16.onnx unless it loses > {MAX_ACCURACY_DROP_POINTS:g} points of test "
        "accuracy")  # fmt: skip
    add("--int8", action="store_true",
        help="also publish model.int8.onnx (static, calibrated on train images), same rule")  # fmt: skip
    return parser


def heatmap_argument(text: str) -> tuple[str, str]:
    """``--gradcam`` METHOD@LAYER as (method, layer); argparse turns the ValueError into a usage error."""
    try:
        return parse_heatmap(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Export one run; an :class:`ExportError` or a training-data error is one sentence, exit status 2."""
    args = build_parser().parse_args(argv)
    command = "python -m exporter " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        check_target(args.repository, args.name, args.force)  # a taken name fails before TensorFlow loads
        return run(args, command)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, command: str) -> int:
    """The export itself; the heavy imports (TensorFlow, tf2onnx, ONNX Runtime) happen here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's INFO lines drown the summary
    from exporter.export import ExportOptions, export_run
    from training.errors import TrainingError

    options = ExportOptions(
        run_dir=args.run_dir,
        repository=args.repository,
        name=args.name,
        version=args.version,
        parity_images=args.parity_images,
        tolerance=args.tolerance,
        split=args.split,
        data_roots=args.data_root,
        variants=[name for name in ("fp16", "int8") if getattr(args, name)],
        bank_splits=args.ood_bank_split,
        ood_layers=args.ood_layer,
        heatmap=args.gradcam,
        force=args.force,
        command=command,
    )
    try:
        export_run(options, say=lambda line: print(line, flush=True))
    except TrainingError as error:  # run.json or split problems, reported by the training package
        raise ExportError(str(error)) from None
    return 0
