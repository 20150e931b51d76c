"""`python -m training mirrors`: near-duplicates under flips and rotations that the committed splits miss."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from training.commands import write_report

NAME = "mirrors"
DEFAULT_SPLITS = (Path("splits/sartaj-4class.json"), Path("splits/br35h-binary.json"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mirrors`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="near-duplicates that only a flip or a quarter turn reveals, and those straddling subsets",
        description=(
            "Hash every image of each split under the 8 flips and quarter turns, group near-duplicates with "
            "and without them (same radius as the split builder), and report the groups that the flips merge "
            "and those whose members sit in different subsets (train/val/test): leakage the split's own "
            "grouping did not see. Pooled over all splits too. Writes mirrors.json and mirrors.md."
        ),
    )
    add = parser.add_argument
    add("--split", type=Path, action="append", metavar="FILE.json", help="a split (repeat; default: both)")
    add("--radius", type=int, default=4, help="Hamming radius of a near-duplicate (default 4, the builder's)")
    add("--out", type=Path, metavar="DIR", help="where to write the report (default: print only)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Hash, group, count, print, write."""
    from training.mirrors import measure_splits, render_markdown

    command = "python -m training " + shlex.join(sys.argv[1:])
    summary = measure_splits(args.split or list(DEFAULT_SPLITS), args.radius, say=print)
    markdown = render_markdown(summary, command)
    print(markdown)
    write_report(args.out, "mirrors", summary, markdown, command)
    return 0
