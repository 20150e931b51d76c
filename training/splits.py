"""Grouped, stratified train/val/test assignment and the split manifest (``brain-mri-split/1``).

A manifest lists, per subset, the distinct images (one representative per sha256) with their task label and
near-duplicate group; every group lies in exactly one subset. Training and evaluation read it with
:func:`load_split`.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError

FORMAT = "brain-mri-split/1"
SUBSETS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
DEFAULT_SEED = 42


class SplitError(TrainingError):
    """Invalid split parameters, or a manifest that cannot be read."""


def validate_ratios(ratios: Sequence[float]) -> dict[str, float]:
    """``{"train": r0, "val": r1, "test": r2}``; :class:`SplitError` unless 3 non-negative ratios sum to 1."""
    if len(ratios) != len(SUBSETS):
        raise SplitError(f"give {len(SUBSETS)} ratios (train val test), not {len(ratios)}")
    if any(not math.isfinite(r) or r < 0 for r in ratios):
        raise SplitError(f"ratios must be non-negative numbers, got {' '.join(map(str, ratios))}")
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise SplitError(f"ratios must sum to 1, got {' + '.join(map(str, ratios))} = {sum(ratios):g}")
    if ratios[0] == 0:
        raise SplitError("the train ratio must be greater than 0")
    return dict(zip(SUBSETS, (float(r) for r in ratios), strict=True))


def assign_subsets(
    labels: Sequence[str],
    groups: Sequence[int],
    classes: Sequence[str],
    ratios: Mapping[str, float],
    seed: int,
) -> list[str]:
    """Subset name per image, assigning whole groups and stratifying by class.

    Each group's stratum is its most common label (ties: first in ``classes``). Within a stratum the groups
    are visited in an order shuffled by ``seed``, and each goes to the subset furthest below its target image
    count (ties: train, val, test). Shuffling rather than largest-first keeps big near-duplicate groups from
    all landing in train.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    rank = {name: k for k, name in enumerate(classes)}
    strata: dict[str, list[int]] = {name: [] for name in classes}
    for group, indices in sorted(members.items()):
        counts = Counter(labels[i] for i in indices)
        strata[min(counts, key=lambda c: (-counts[c], rank[c]))].append(group)
    rng = random.Random(seed)
    subset_of: dict[int, str] = {}
    for name in classes:
        order = strata[name]
        rng.shuffle(order)
        total = sum(len(members[g]) for g in order)
        target = {s: ratios[s] * total for s in SUBSETS}
        filled = dict.fromkeys(SUBSETS, 0)
        for group in order:
            subset = max(SUBSETS, key=lambda s: (target[s] - filled[s], -SUBSETS.index(s)))
            subset_of[group] = subset
            filled[subset] += len(members[group])
    return [subset_of[g] for g in groups]


@dataclass(frozen=True)
class SplitItem:
    """One image of a split: absolute path, task label, content hash and near-duplicate group."""

    path: Path
    label: str
    sha256: str
    group: int


@dataclass(frozen=True)
class SplitManifest:
    """A loaded split manifest; ``raw`` is the JSON as read."""

    task: str
    classes: tuple[str, ...]
    seed: int
    subsets: dict[str, tuple[SplitItem, ...]]
    summary: dict[str, Any]
    raw: dict[str, Any]

    def items(self, subset: str) -> tuple[SplitItem, ...]:
        """The items of ``subset`` (``train``, ``val`` or ``test``)."""
        if subset not in self.subsets:
            raise SplitError(f"the split has no subset {subset!r}; it has {', '.join(self.subsets)}")
        return self.subsets[subset]

    def class_index(self, label: str) -> int:
        """Model-output index of a class name."""
        return self.classes.index(label)


def write_split(path: Path | str, manifest: Mapping[str, Any]) -> None:
    """Write a manifest as UTF-8 JSON, atomically, byte-identical for identical content."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


def load_split(path: Path | str, *, data_root_override: Sequence[Path] | None = None) -> SplitManifest:
    """Read a split manifest; ``data_root_override`` replaces its ``roots`` (same count, same order).

    The override lets a manifest made on one machine be used where the data lives elsewhere.
    """
    source = Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SplitError(f"cannot read the split manifest {source}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SplitError(f"{source} is not a split manifest (expected format {FORMAT!r})")
    try:
        roots = [Path(r) for r in raw["roots"]]
        if data_root_override is not None:
            if len(data_root_override) != len(roots):
                raise SplitError(
                    f"the manifest has {len(roots)} data roots but {len(data_root_override)} "
                    "overrides were given"
                )
            roots = [Path(r).expanduser().resolve() for r in data_root_override]
        subsets = {
            name: tuple(
                SplitItem(
                    roots[item["root"]] / item["path"], item["label"], item["sha256"], int(item["group"])
                )
                for item in items
            )
            for name, items in raw["subsets"].items()
        }
        return SplitManifest(
            task=raw["task"],
            classes=tuple(raw["classes"]),
            seed=int(raw["seed"]),
            subsets=subsets,
            summary=dict(raw.get("summary", {})),
            raw=raw,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SplitError(f"the split manifest {source} is malformed: {type(exc).__name__}: {exc}") from exc
