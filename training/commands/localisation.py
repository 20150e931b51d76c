"""`python -m training localisation`: where an entry's heat maps point on boxed tumour slices."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from training.commands import write_report

NAME = "localisation"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``localisation`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="pointing game and energy fraction of an entry's heat maps on boxed tumour slices",
        description=(
            "Explain each boxed slice of --boxes with the entry's Keras twin, the way the service does, and "
            "count per class how often the hottest pixel lies within --tolerance px of a tumour box (the "
            "pointing game) and the share of the heat inside the boxes; compare weightings and layers with "
            "--method; write localisation.json and localisation.md."
        ),
    )
    add = parser.add_argument
    add("--model", required=True, type=Path, metavar="ENTRY", help="a model-repository entry (models/NAME)")
    add("--boxes", required=True, type=Path, metavar="FILE.json",
        help='boxes.json: {"<class>/<file>": {"image", "class", "boxes": [[x0, y0, x1, y1]]}}')  # fmt: skip
    add("--method", action="append", metavar="METHOD@LAYER",
        help="a heat map to measure, e.g. gradcam@top_activation (repeat; default: the entry's)")  # fmt: skip
    add("--target", choices=("predicted", "true"), default="predicted",
        help="explain the predicted class (what the service shows; default) or the true one")  # fmt: skip
    add("--tolerance", type=float, default=15.0, metavar="PX", help="grow each box by this much (default 15)")
    add("--out", type=Path, metavar="DIR", help="where to write the report (default: print only)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Explain, count, print the table, write the files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.errors import TrainingError
    from training.localisation import (
        TwinExplainer,
        Variant,
        evaluate_localisation,
        load_boxes,
        render_markdown,
    )

    command = "python -m training " + shlex.join(sys.argv[1:])
    try:
        manifest = json.loads((args.model / "manifest.json").read_text(encoding="utf-8"))
        own = Variant(manifest["keras"].get("gradcam_method", "gradcam"), manifest["keras"]["gradcam_layer"])
    except (OSError, ValueError, KeyError) as error:
        raise TrainingError(f"cannot read the manifest of {args.model}: {error}") from None
    variants = [Variant.parse(text) for text in args.method] if args.method else [own]
    images = load_boxes(args.boxes)
    explainer = TwinExplainer(args.model, variants)
    summary = evaluate_localisation(
        explainer, images, variants, target=args.target, tolerance=args.tolerance, say=print
    )
    markdown = render_markdown(summary, command)
    print(markdown)
    write_report(args.out, "localisation", summary, markdown, command)
    return 0
