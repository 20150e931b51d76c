"""Measure an entry's input-validity check: who is refused, per kind of image, through its own ONNX graph.

In distribution: the test subsets of brain MRI splits (and, optionally, folders of other brain slices that
must be accepted too). Out of distribution: each kind folder of ``--ood-dir`` (``ood-a/<kind>/...``),
scikit-image's bundled photos and synthetic images. An image counts as refused when the graph's
``ood_score`` exceeds the manifest's threshold, exactly as the service decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from service.preprocessing import ImageError, Recipe, apply_recipe, decode_image
from training.errors import TrainingError
from training.ood_images import skimage_photos, synthetic_images
from training.splits import load_split

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
BATCH = 32


@dataclass
class Group:
    """One kind of image and the scores its images got."""

    name: str
    role: str  # "in" (must be accepted) or "out" (must be refused)
    scores: npt.NDArray[np.float32]
    unreadable: int = 0


class EntryScorer:
    """An entry's ONNX graph and threshold: ``scores(images)`` gives the ``ood_score`` of each image."""

    def __init__(self, entry: Path) -> None:
        try:
            self.manifest: dict[str, Any] = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TrainingError(f"cannot read the manifest of {entry}: {error}") from None
        validity = self.manifest.get("input_validity")
        if not validity:
            raise TrainingError(
                f"the entry {entry} has no input-validity check; fit one with "
                f"`python -m exporter.refit {entry}`"
            )
        self.threshold = float(validity["threshold"])
        self.output = str(validity["output"])
        self.recipe = Recipe.from_dict(self.manifest["preprocessing"])
        self.input_name = str(self.manifest["onnx"]["input"])
        self.session = ort.InferenceSession(
            str(entry / self.manifest["onnx"]["file"]), providers=["CPUExecutionProvider"]
        )

    def scores(self, images: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """(N,) scores of decoded RGB images, each through the entry's recipe."""
        inputs = [apply_recipe(image, self.recipe) for image in images]
        parts = []
        for start in range(0, len(inputs), BATCH):
            batch = np.stack(inputs[start : start + BATCH])  # (b, h, w, 3)
            parts.append(np.asarray(self.session.run([self.output], {self.input_name: batch})[0], np.float32))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def read_images(paths: Iterable[Path]) -> tuple[list[npt.NDArray[np.uint8]], int]:
    """The decodable images among ``paths`` and how many could not be decoded."""
    images, unreadable = [], 0
    for path in paths:
        try:
            images.append(decode_image(path.read_bytes()))
        except (OSError, ImageError):
            unreadable += 1
    return images, unreadable


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def evaluate_input_validity(
    scorer: EntryScorer,
    *,
    id_splits: Sequence[Path],
    brain_dirs: Sequence[Path] = (),
    ood_dirs: Sequence[Path] = (),
    builtin: bool = True,
) -> list[Group]:
    """Score every group; ``ood_dirs`` are split into one group per first-level folder (its kind)."""
    groups = []
    for path in id_splits:
        split = load_split(path)
        images, bad = read_images(item.path for item in split.subsets.get("test", ()))
        groups.append(Group(f"{path.stem} test", "in", scorer.scores(images), bad))
    for folder in brain_dirs:
        images, bad = read_images(image_files(folder))
        groups.append(
            Group(
                f"{folder.resolve().parent.name}/{folder.name} (other brains)",
                "in",
                scorer.scores(images),
                bad,
            )
        )
    for folder in ood_dirs:
        kinds = sorted(p for p in folder.iterdir() if p.is_dir()) or [folder]
        for kind in kinds:
            images, bad = read_images(image_files(kind))
            groups.append(Group(kind.name, "out", scorer.scores(images), bad))
    if builtin:
        groups.append(Group("scikit-image photos", "out", scorer.scores([i for _, i in skimage_photos()])))
        groups.append(Group("synthetic", "out", scorer.scores([i for _, i in synthetic_images()])))
    return groups


def summarise(groups: Sequence[Group], threshold: float) -> dict[str, Any]:
    """Per group: images, refused share, AUROC against the in-distribution split tests; and the totals."""
    reference = np.concatenate(
        [g.scores for g in groups if g.role == "in" and g.name.endswith(" test")] or [np.zeros(0, np.float32)]
    )
    rows = []
    for group in groups:
        refused = _refused(group.scores, threshold)
        auroc = None
        if group.role == "out" and len(reference) and len(group.scores):
            truth = np.r_[np.zeros(len(reference)), np.ones(len(group.scores))]
            auroc = float(roc_auc_score(truth, np.r_[reference, group.scores]))
        rows.append({"group": group.name, "role": group.role, "images": len(group.scores),
                     "unreadable": group.unreadable, "refused": refused, "auroc": auroc})  # fmt: skip
    out = np.concatenate([g.scores for g in groups if g.role == "out"] or [np.zeros(0, np.float32)])
    inside = np.concatenate([g.scores for g in groups if g.role == "in"] or [np.zeros(0, np.float32)])
    total_auroc = None
    if len(out) and len(reference):
        truth = np.r_[np.zeros(len(reference)), np.ones(len(out))]
        total_auroc = float(roc_auc_score(truth, np.r_[reference, out]))
    return {
        "threshold": threshold,
        "groups": rows,
        "out_of_distribution": {
            "images": len(out),
            "refused": _refused(out, threshold),
            "auroc": total_auroc,
        },
        "in_distribution": {"images": len(inside), "refused": _refused(inside, threshold)},
    }


def _refused(scores: npt.NDArray[np.float32], threshold: float) -> float | None:
    if not len(scores):
        return None
    # a score that is not a finite number is refused, as the service does
    return float((~(np.isfinite(scores) & (scores <= threshold))).mean())


def render_markdown(name: str, summary: dict[str, Any], command: str) -> str:
    """The table of :func:`summarise` as Markdown."""
    lines = [
        f"# {name}: input validity (threshold {summary['threshold']:.4f})",
        "",
        f"`{command}`",
        "",
        "| images | kind | n | refused | AUROC vs the split tests |",
        "|---|---|---:|---:|---:|",
    ]
    for row in summary["groups"]:
        role = "must be accepted" if row["role"] == "in" else "must be refused"
        refused = "—" if row["refused"] is None else f"{row['refused']:.1%}"
        auroc = "" if row["auroc"] is None else f"{row['auroc']:.4f}"
        lines.append(f"| {row['group']} | {role} | {row['images']} | {refused} | {auroc} |")
    out, inside = summary["out_of_distribution"], summary["in_distribution"]
    lines += [
        "",
        f"Out of distribution: **{out['refused']:.1%} of {out['images']} refused** "
        f"(AUROC {out['auroc']:.4f}); "
        f"in distribution: **{inside['refused']:.1%} of {inside['images']} refused**.",
        "",
    ]
    return "\n".join(lines)
