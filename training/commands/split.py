"""`python -m training split`: discover images, remove duplicates, write a leakage-free split manifest."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from training.dedup import DEFAULT_RADIUS, PHASH_NAME
from training.hashing import DEFAULT_CACHE_DIR, DEFAULT_WORKERS
from training.split_builder import build_split
from training.splits import DEFAULT_RATIOS, DEFAULT_SEED, SUBSETS, write_split
from training.tasks import TASK_NAMES

NAME = "split"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``split`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="discover images, dedup them and write a stratified, leakage-free split manifest",
        description=(
            "Discover class-per-folder MRI images (Sartaj, Br35H and Kaggle-7023 layouts), drop "
            "byte-identical copies, group near duplicates by perceptual hash so that no group straddles two "
            "subsets, and write a stratified train/val/test split manifest."
        ),
    )
    parser.add_argument(
        "--data", action="append", required=True, type=Path, metavar="DIR",
        help="a data set folder; repeat to pool several (e.g. Sartaj and Br35H for the binary task)",
    )  # fmt: skip
    parser.add_argument(
        "--task", required=True, metavar="TASK", help=f"one of {', '.join(TASK_NAMES)}",
    )  # fmt: skip
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE.json", help="where to write the manifest"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="shuffling seed (default %(default)s)")
    parser.add_argument(
        "--ratios", type=float, nargs=3, default=list(DEFAULT_RATIOS), metavar=("TRAIN", "VAL", "TEST"),
        help="subset fractions summing to 1 (default 0.8 0.1 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--radius", type=int, default=DEFAULT_RADIUS,
        help=f"near-duplicate Hamming radius in bits of the 64-bit {PHASH_NAME} (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
        help="per-file hash cache (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the hash cache")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="decoding processes (default %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build and write the manifest, then print its summary table."""
    started = time.monotonic()
    last_report = [-math.inf]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if not args.quiet and (now - last_report[0] >= 2.0 or done == total):
            last_report[0] = now
            print(f"hashing images: {done}/{total} ({now - started:.1f} s)", file=sys.stderr, flush=True)

    manifest = build_split(
        args.data,
        args.task,
        seed=args.seed,
        ratios=args.ratios,
        radius=args.radius,
        cache_dir=None if args.no_cache else args.cache_dir,
        workers=args.workers,
        progress=progress,
    )
    write_split(args.out, manifest)
    print(format_summary(manifest, args.out))
    return 0


def format_summary(manifest: dict[str, Any], out: Path) -> str:
    """The manifest's counts per class and subset as a text table, followed by the de-duplication figures."""
    summary = manifest["summary"]
    classes: list[str] = manifest["classes"]
    counts = summary["counts"]
    header = ["subset", *classes, "total"]
    rows = [
        [name, *(str(counts[name][c]) for c in classes), str(sum(counts[name].values()))] for name in SUBSETS
    ]
    totals = [sum(counts[name][c] for name in SUBSETS) for c in classes]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    ratios = "/".join(f"{manifest['ratios'][s]:g}" for s in SUBSETS)
    near = manifest["near_duplicates"]
    lines = [
        f"split manifest {out} (task {manifest['task']}, seed {manifest['seed']}, ratios {ratios})",
        "",
        line(header),
        line(["-" * w for w in widths]),
        *(line(row) for row in rows),
        "",
        f"files {summary['files']}, distinct {summary['distinct']}, exact duplicates removed "
        f"{summary['exact_duplicates_removed']}, label conflicts {summary['label_conflicts']}, "
        f"undecodable {summary['undecodable']}, excluded by task {summary['excluded_by_task']}",
        f"near duplicates ({near['hash']}, radius {near['radius']}): {summary['groups']} groups, "
        f"{summary['near_duplicate_groups']} with 2+ images holding "
        f"{summary['images_in_multi_image_groups']} images, "
        f"largest {summary['largest_group']}, mixed-label groups {summary['mixed_label_groups']}",
        "group sizes (size x count): " + ", ".join(f"{k} x {n}" for k, n in summary["group_sizes"].items()),
    ]
    for entry in manifest["undecodable"]:
        lines.append(f"undecodable: {manifest['roots'][entry['root']]}/{entry['path']}: {entry['error']}")
    for sha, copies in manifest["label_conflicts"].items():
        where = ", ".join(f"{c['path']} ({c['label']})" for c in copies)
        lines.append(f"label conflict {sha[:12]}: {where}")
    return "\n".join(lines)
