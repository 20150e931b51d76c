"""`python -m training ood`: measure an entry's input-validity check on images it must accept and refuse."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from training.commands import write_report

NAME = "ood"
DEFAULT_SPLITS = (Path("splits/sartaj-4class.json"), Path("splits/br35h-binary.json"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ood`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="measure an entry's input-validity check (out-of-distribution refusals)",
        description=(
            "Run the entry's ONNX graph on the test subsets of brain MRI splits and on folders of other "
            "brain "
            "slices (all must be accepted), and on each kind folder of --ood-dir, scikit-image's photos and "
            "synthetic images (all must be refused); print per kind the share refused and the AUROC, and "
            "write ood.json and ood.md."
        ),
    )
    add = parser.add_argument
    add("--model", required=True, type=Path, metavar="ENTRY", help="a model-repository entry (models/NAME)")
    add("--split", type=Path, action="append", metavar="FILE.json",
        help="a split whose test subset must be accepted (repeat; default: both committed)")  # fmt: skip
    add("--brain-dir", type=Path, action="append", default=[], metavar="DIR",
        help="a folder of other brain MRI slices that must be accepted (repeat)")  # fmt: skip
    add("--ood-dir", type=Path, action="append", default=[], metavar="DIR",
        help="a folder of non-brain-MRI images, one subfolder per kind (repeat)")  # fmt: skip
    add("--no-builtin", action="store_true", help="leave out scikit-image's photos and the synthetic images")
    add("--out", type=Path, metavar="DIR", help="where to write ood.json and ood.md (default: print only)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Score, print the table, write the files."""
    from training.ood_eval import EntryScorer, evaluate_input_validity, render_markdown, summarise

    command = "python -m training " + shlex.join(sys.argv[1:])
    scorer = EntryScorer(args.model)
    groups = evaluate_input_validity(
        scorer,
        id_splits=args.split or list(DEFAULT_SPLITS),
        brain_dirs=args.brain_dir,
        ood_dirs=args.ood_dir,
        builtin=not args.no_builtin,
    )
    summary = summarise(groups, scorer.threshold)
    markdown = render_markdown(str(scorer.manifest.get("name", args.model.name)), summary, command)
    print(markdown)
    write_report(args.out, "ood", summary, markdown, command)
    return 0
