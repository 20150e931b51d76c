"""`python -m training evaluate`: score a run's model on a split subset; write its report and figures."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from training.commands.data_options import add_data_options
from training.splits import SUBSETS

NAME = "evaluate"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="evaluate a run's model on a split subset and write its report",
        description=(
            "Load RUN_DIR/model.keras and run.json, preprocess the subset with the run's own recipe, "
            "predict it, time batch-1 inference (median of 20 images after 3 warm-up calls), count "
            "parameters, and write report.json, report.md and the confusion-matrix, curve and ROC PNGs. "
            "The report already in the output folder is updated when it comes from the same split; "
            "otherwise a fresh one is written."
        ),
    )
    add = parser.add_argument
    add("--model", required=True, type=Path, metavar="RUN_DIR", help="a run directory written by train")
    add(
        "--split", type=Path, metavar="FILE.json", help="split manifest (default: the one the run trained on)"
    )
    add("--subset", choices=SUBSETS, default="test", help="(default %(default)s)")
    add("--out", type=Path, metavar="DIR", help="where to write the report (default: RUN_DIR)")
    add_data_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the report; Keras is imported here only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines drown the progress
    from training.runs import evaluate_run

    evaluate_run(
        args.model,
        split=args.split,
        subset=args.subset,
        out=args.out,
        cache_dir=None if args.no_cache else args.cache_dir,
        data_roots=args.data_root,
        workers=args.workers,
    )
    return 0
