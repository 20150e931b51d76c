"""`python -m training <command>`: one argparse subcommand per module in :mod:`training.commands`.

To add a command, write ``training/commands/<name>.py`` with ``register(subparsers)`` (which adds its
parser and sets ``handler`` to a ``run(args) -> int`` function) and list the module in :data:`COMMANDS`.
Command modules keep heavy imports (TensorFlow...) inside ``run`` so that ``--help`` and the other commands
stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from training.commands import compare, evaluate, localisation, mirrors, ood, split, train
from training.errors import TrainingError

COMMANDS: tuple[ModuleType, ...] = (split, train, evaluate, compare, ood, localisation, mirrors)
"""Registered command modules, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Data splits, training and evaluation of brain-tumour MRI classifiers.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`TrainingError` is printed as one sentence with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
