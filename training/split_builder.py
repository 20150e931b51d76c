"""From data folders to a split manifest: discover, hash, drop exact duplicates, group near ones, assign.

Exact duplicates (same sha256) keep one representative: among the copies whose own folder label gives the
image's task label, the one with the lowest (root index, relative path); for the images in the split the
other copies are listed under ``duplicates``. Copies whose labels disagree under the task are all dropped
and listed under ``label_conflicts``; files that do not decode are dropped and listed under ``undecodable``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.datasets import ImageFile, discover
from training.dedup import DEFAULT_RADIUS, PHASH_NAME, group_near_duplicates
from training.hashing import DEFAULT_CACHE_DIR, DEFAULT_WORKERS, FileHashes, ProgressCallback, compute_hashes
from training.splits import (
    DEFAULT_RATIOS,
    DEFAULT_SEED,
    FORMAT,
    SUBSETS,
    SplitError,
    assign_subsets,
    validate_ratios,
)
from training.tasks import Task, decide_label, parse_task


@dataclass(frozen=True)
class DistinctImage:
    """One distinct image that enters the split."""

    file: ImageFile
    sha256: str
    phash: int
    label: str


@dataclass(frozen=True)
class ExactDedup:
    """The outcome of exact de-duplication under a task."""

    images: list[DistinctImage]
    removed: dict[str, list[ImageFile]]
    conflicts: dict[str, list[ImageFile]]
    undecodable: dict[str, list[tuple[ImageFile, str]]]
    excluded: int


def _ref(file: ImageFile) -> dict[str, Any]:
    return {"root": file.root, "path": file.rel_path}


def deduplicate(files: Sequence[ImageFile], hashes: Sequence[FileHashes], task: Task) -> ExactDedup:
    """Collapse byte-identical files into one representative each, deciding each image's task label."""
    by_sha: dict[str, list[tuple[ImageFile, FileHashes]]] = defaultdict(list)
    for file, hashed in sorted(zip(files, hashes, strict=True), key=lambda pair: pair[0]):
        by_sha[hashed.sha256].append((file, hashed))
    images: list[DistinctImage] = []
    removed: dict[str, list[ImageFile]] = {}
    conflicts: dict[str, list[ImageFile]] = {}
    undecodable: dict[str, list[tuple[ImageFile, str]]] = {}
    excluded = 0
    for sha, copies in by_sha.items():
        phash = copies[0][1].phash
        if phash is None:
            undecodable[sha] = [(file, hashed.error or "undecodable") for file, hashed in copies]
            continue
        decision = decide_label(task, (file.label for file, _ in copies))
        if decision.conflict:
            conflicts[sha] = [file for file, _ in copies]
            continue
        if decision.label is None:
            excluded += 1
            continue
        keep = next((f for f, _ in copies if task.label_for(f.label) == decision.label), copies[0][0])
        images.append(DistinctImage(keep, sha, phash, decision.label))
        if len(copies) > 1:
            removed[sha] = [file for file, _ in copies if file != keep]
    images.sort(key=lambda image: image.file)
    return ExactDedup(images, removed, conflicts, undecodable, excluded)


def build_split(
    data: Sequence[Path | str],
    task_name: str,
    *,
    seed: int = DEFAULT_SEED,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    radius: int = DEFAULT_RADIUS,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """The split manifest (a JSON-ready dict) for the data roots ``data`` and task ``task_name``."""
    task = parse_task(task_name)
    ratio_of = validate_ratios(ratios)
    if not 0 <= radius <= 64:
        raise SplitError(f"the near-duplicate radius must be between 0 and 64 bits, got {radius}")
    discovered = discover([Path(d) for d in data])
    roots = [d.root for d in discovered]
    files = [file for d in discovered for file in d.files]
    hashes = compute_hashes(files, roots, cache_dir=cache_dir, workers=workers, progress=progress)
    dedup = deduplicate(files, hashes, task)
    groups = group_near_duplicates([image.phash for image in dedup.images], radius)
    labels = [image.label for image in dedup.images]
    subset_of = assign_subsets(labels, groups, task.classes, ratio_of, seed)

    subsets: dict[str, list[dict[str, Any]]] = {name: [] for name in SUBSETS}
    for image, group, subset in zip(dedup.images, groups, subset_of, strict=True):
        subsets[subset].append(
            {
                "path": image.file.rel_path,
                "root": image.file.root,
                "sha256": image.sha256,
                "label": image.label,
                "group": group,
            }
        )
    counts = {
        name: {label: sum(1 for item in subsets[name] if item["label"] == label) for label in task.classes}
        for name in SUBSETS
    }
    group_sizes = Counter(groups)
    group_labels: dict[int, set[str]] = defaultdict(set)
    for group, label in zip(groups, labels, strict=True):
        group_labels[group].add(label)
    multi = [size for size in group_sizes.values() if size > 1]
    distinct = len({h.sha256 for h in hashes})
    summary = {
        "files": len(files),
        "distinct": distinct,
        "exact_duplicates_removed": len(files) - distinct,
        "label_conflicts": len(dedup.conflicts),
        "undecodable": len(dedup.undecodable),
        "excluded_by_task": dedup.excluded,
        "images": len(dedup.images),
        "groups": len(group_sizes),
        "near_duplicate_groups": len(multi),
        "images_in_multi_image_groups": sum(multi),
        "largest_group": max(group_sizes.values(), default=0),
        "group_sizes": {str(size): n for size, n in sorted(Counter(group_sizes.values()).items())},
        "mixed_label_groups": sum(1 for labels_ in group_labels.values() if len(labels_) > 1),
        "non_image_files_skipped": sum(d.skipped_non_images for d in discovered),
        "counts": counts,
    }
    return {
        "format": FORMAT,
        "task": task.name,
        "classes": list(task.classes),
        "seed": seed,
        "ratios": ratio_of,
        "roots": [str(root) for root in roots],
        "layouts": [d.layout for d in discovered],
        "near_duplicates": {"hash": PHASH_NAME, "radius": radius},
        "subsets": subsets,
        "summary": summary,
        "duplicates": {sha: [_ref(f) for f in copies] for sha, copies in sorted(dedup.removed.items())},
        "label_conflicts": {
            sha: [{**_ref(f), "label": f.label} for f in copies]
            for sha, copies in sorted(dedup.conflicts.items())
        },
        "undecodable": [
            {**_ref(f), "sha256": sha, "error": error}
            for sha, copies in sorted(dedup.undecodable.items())
            for f, error in copies
        ],
    }
