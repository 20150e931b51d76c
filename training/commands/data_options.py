"""The options that say where a command finds and caches its preprocessed images (train, evaluate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.data import DEFAULT_CACHE_DIR, DEFAULT_WORKERS


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--cache-dir, --no-cache, --data-root and --workers, spelled the same for every command."""
    add = parser.add_argument
    add(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="preprocessed-array cache (default %(default)s)",
    )
    add("--no-cache", action="store_true", help="neither read nor write the array cache")
    add("--data-root", type=Path, action="append", metavar="DIR",
        help="replace the manifest's data roots (repeat, same order) for data that moved")  # fmt: skip
    add("--workers", type=int, default=DEFAULT_WORKERS, help="preprocessing threads (default %(default)s)")
