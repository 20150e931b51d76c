"""Where an entry's heat maps point: the pointing game and the energy fraction on boxed tumour slices.

Every image goes the service's way: decoded by :func:`service.preprocessing.decode_image`, through the entry's
recipe (:func:`apply_recipe_with_region`: the brain crop and its region), explained by the Keras twin with
:func:`service.gradcam.gradcam_tensors` and stretched over the uploaded image by
:func:`service.gradcam_render.heatmap_canvas`: the map a client gets as ``heatmap_png_base64``.

- *Pointing game*: a hit when the canvas's hottest pixel (its centre) lies inside a box grown by
  ``tolerance`` pixels on every side.
- *Energy fraction*: the canvas's sum inside the union of the boxes over its sum on the whole image; chance is
  the boxes' share of the image.

Images without a box (no tumour) are counted apart: how many the model calls a tumour.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from exporter.manifest import GRADCAM_METHODS
from service.gradcam_render import heatmap_canvas
from service.preprocessing import ImageError, Recipe, apply_recipe_with_region, decode_image
from training.errors import TrainingError

DEFAULT_TOLERANCE = 15.0
NO_TUMOUR = ("no_tumour", "no_tumor", "notumor", "no")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Variant:
    """One way of making the heat map: a weighting (``gradcam``, ``gradcam++``, ``layercam``) at a layer."""

    method: str
    layer: str

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``METHOD@LAYER``, e.g. ``layercam@block6d_expand_activation``."""
        method, at, layer = text.partition("@")
        if not at or not layer or method not in GRADCAM_METHODS:
            raise TrainingError(
                f"{text!r} is not METHOD@LAYER with METHOD one of {', '.join(GRADCAM_METHODS)} "
                "(e.g. layercam@block6d_expand_activation)"
            )
        return cls(method, layer)

    def __str__(self) -> str:
        return f"{self.method}@{self.layer}"


@dataclass(frozen=True)
class BoxedImage:
    """One annotated slice: its file, its class as the set names it and its boxes in its own pixels."""

    key: str
    path: Path
    label: str
    boxes: tuple[Box, ...]


def load_boxes(path: Path) -> list[BoxedImage]:
    """The entries of a ``boxes.json``, image paths resolved against its folder.

    The file: ``{"<class>/<file>": {"image": PATH, "class": NAME, "boxes": [[x0, y0, x1, y1], ...]}}``.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainingError(f"cannot read the boxes file {path}: {error}") from None
    if not isinstance(raw, dict):
        raise TrainingError(f"the boxes file {path} is not a JSON object keyed by image")
    images = []
    for key, entry in sorted(raw.items()):
        try:
            boxes = tuple((float(a), float(b), float(c), float(d)) for a, b, c, d in entry["boxes"])
            images.append(BoxedImage(key, path.parent / entry["image"], str(entry["class"]), boxes))
        except (KeyError, TypeError, ValueError):
            raise TrainingError(
                f"the entry {key!r} of {path} needs 'image', 'class' and 'boxes' as [[x0, y0, x1, y1], ...]"
            ) from None
    return images


def pointing_hit(canvas: npt.NDArray[np.float32], boxes: Sequence[Box], tolerance: float) -> bool:
    """Whether the hottest pixel of ``canvas`` (H, W) lies in a box grown by ``tolerance`` (cold map: no)."""
    if not boxes or float(canvas.max(initial=0.0)) <= 0.0:
        return False
    row, col = np.unravel_index(int(np.argmax(canvas)), canvas.shape)
    x, y = col + 0.5, row + 0.5  # the pixel's centre, in the boxes' continuous coordinates
    grown = [(x0 - tolerance, y0 - tolerance, x1 + tolerance, y1 + tolerance) for x0, y0, x1, y1 in boxes]
    return any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in grown)


def box_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> npt.NDArray[np.bool_]:
    """(H, W) True at the pixels whose centres lie in the union of ``boxes`` (edges: x0 <= x < x1)."""
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        c0, c1 = (min(max(math.ceil(v - 0.5), 0), width) for v in (x0, x1))
        r0, r1 = (min(max(math.ceil(v - 0.5), 0), height) for v in (y0, y1))
        mask[r0:r1, c0:c1] = True
    return mask


def energy_fraction(canvas: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> float:
    """The share of the (non-negative) heat inside ``mask``; 0 for a cold map."""
    heat = np.clip(canvas, 0.0, None)
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0.0 else 0.0


class TwinExplainer:
    """The entry's Keras twin with one compiled map per variant, run exactly as the service runs it."""

    def __init__(self, entry: Path, variants: Sequence[Variant]) -> None:
        import keras
        import tensorflow as tf

        from service.gradcam import GradcamError, build_grad_model, gradcam_tensors, normalise_cam

        try:
            self.manifest: dict[str, Any] = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
            model = keras.models.load_model(entry / self.manifest["keras"]["file"], compile=False)
        except (OSError, ValueError, KeyError) as error:
            raise TrainingError(f"cannot load the entry {entry}: {error}") from None
        self.classes: list[str] = list(self.manifest["classes"])
        self.recipe = Recipe.from_dict(self.manifest["preprocessing"])
        height, width = (int(v) for v in model.inputs[0].shape[1:3])
        signature = [tf.TensorSpec((1, height, width, 3), tf.float32), tf.TensorSpec((), tf.int32)]
        grad_models: dict[str, Any] = {}
        self._graphs: dict[Variant, Callable[..., Any]] = {}
        for variant in variants:
            try:
                grad_model = grad_models.get(variant.layer) or build_grad_model(model, variant.layer)
            except GradcamError as error:
                raise TrainingError(str(error)) from None
            grad_models[variant.layer] = grad_model
            self._graphs[variant] = tf.function(
                lambda images, index, g=grad_model, m=variant.method: gradcam_tensors(images, g, index, m),
                input_signature=signature,
            )
        self._tf = tf
        self._normalise = normalise_cam  # the service's own scaling of a map to [0, 1]

    def explain(
        self, x: npt.NDArray[np.float32], variant: Variant, class_index: int | None
    ) -> tuple[npt.NDArray[np.float32], int]:
        """(map (h', w') in [0, 1], class explained) for one model input (H, W, 3)."""
        tf = self._tf
        index = tf.constant(-1 if class_index is None else class_index, dtype=tf.int32)
        cam, explained, _ = self._graphs[variant](tf.convert_to_tensor(x[np.newaxis], tf.float32), index)
        return self._normalise(cam.numpy()), int(explained)

    def model_class(self, label: str) -> int | None:
        """The model's class index for a set's class name (a binary model: tumour or not), or None."""
        names = [c.lower() for c in self.classes]
        if label.lower() in names:
            return names.index(label.lower())
        tumour = label.lower() not in NO_TUMOUR
        for i, name in enumerate(names):
            if (name in NO_TUMOUR) != tumour and (name in NO_TUMOUR or len(self.classes) == 2):
                return i
        return None


def evaluate_localisation(
    explainer: TwinExplainer,
    images: Sequence[BoxedImage],
    variants: Sequence[Variant],
    *,
    target: str = "predicted",
    tolerance: float = DEFAULT_TOLERANCE,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Per variant and class: images, hits, hit rate, mean energy fraction; and the boxes' area share."""
    if target not in ("predicted", "true"):
        raise TrainingError(f"the target must be 'predicted' or 'true', not {target!r}")
    per: dict[tuple[str, str], dict[str, Any]] = {}
    negatives: dict[str, Any] = {"images": 0, "called_tumour": 0}
    unreadable: list[str] = []
    area: dict[str, list[float]] = {}
    for count, item in enumerate(images, 1):
        try:
            image = decode_image(item.path.read_bytes())
        except (OSError, ImageError):
            unreadable.append(item.key)
            continue
        x, region = apply_recipe_with_region(image, explainer.recipe)
        shape = (int(image.shape[0]), int(image.shape[1]))
        truth = explainer.model_class(item.label)
        if not item.boxes:
            _, predicted = explainer.explain(x, variants[0], None)
            negatives["images"] += 1
            negatives["called_tumour"] += int(explainer.classes[predicted].lower() not in NO_TUMOUR)
            continue
        mask = box_mask(shape, item.boxes)
        area.setdefault(item.label, []).append(float(mask.mean()))
        for variant in variants:
            wanted = truth if target == "true" else None
            cam, explained = explainer.explain(x, variant, wanted)
            canvas = heatmap_canvas(shape, cam, region)
            row = per.setdefault(
                (str(variant), item.label), {"images": 0, "hits": 0, "energy": [], "correct": 0}
            )
            row["images"] += 1
            row["hits"] += int(pointing_hit(canvas, item.boxes, tolerance))
            row["energy"].append(energy_fraction(canvas, mask))
            row["correct"] += int(truth is not None and explained == truth)
        if count % 25 == 0:
            say(f"{count}/{len(images)} images")
    rows = []
    for (name, label), row in per.items():
        rows.append({
            "variant": name, "class": label, "images": row["images"], "hits": row["hits"],
            "hit_rate": row["hits"] / row["images"], "energy_fraction": float(np.mean(row["energy"])),
            "explained_true_class": row["correct"] / row["images"],
        })  # fmt: skip
    return {
        "model": explainer.manifest.get("name"),
        "target": target,
        "tolerance_px": tolerance,
        "variants": [str(v) for v in variants],
        "rows": rows,
        "box_area_share": {label: float(np.median(values)) for label, values in sorted(area.items())},
        "no_box_images": negatives,
        "unreadable": unreadable,
    }


def render_markdown(summary: dict[str, Any], command: str) -> str:
    """The pointing-game table: one line per variant, hit rate and energy per class."""
    labels = sorted({row["class"] for row in summary["rows"]})
    by = {(row["variant"], row["class"]): row for row in summary["rows"]}
    lines = [
        f"# Heat-map localisation — {summary['model']}",
        "",
        f"Command: `{command}`",
        "",
        f"Pointing game (hottest pixel within {summary['tolerance_px']:g} px of a tumour box) and energy "
        f"fraction (share of the heat inside the boxes); heat maps of the {summary['target']} class, "
        "stretched over the upload as the service sends them.",
        "",
        "| variant | " + " | ".join(f"{label} hit (n)" for label in labels) + " | min hit | "
        + " | ".join(f"{label} energy" for label in labels) + " |",
        "|---|" + "---:|" * (2 * len(labels) + 1),
    ]  # fmt: skip
    for variant in summary["variants"]:
        cells = [by.get((variant, label)) for label in labels]
        hits = [f"{c['hit_rate']:.2f} ({c['images']})" if c else "-" for c in cells]
        energies = [f"{c['energy_fraction']:.2f}" if c else "-" for c in cells]
        least = min((c["hit_rate"] for c in cells if c), default=float("nan"))
        cells_text = " | ".join(hits) + f" | {least:.2f} | " + " | ".join(energies)
        lines.append(f"| {variant} | {cells_text} |")
    share = ", ".join(f"{label} {value:.3f}" for label, value in summary["box_area_share"].items())
    negatives = summary["no_box_images"]
    lines += [
        "",
        f"Chance energy (median box area share): {share}.",
        f"Images without a box: {negatives['images']}, of which the model calls "
        f"{negatives['called_tumour']} a tumour.",
    ]
    if summary["unreadable"]:
        lines.append(f"Unreadable images skipped: {len(summary['unreadable'])}.")
    return "\n".join(lines) + "\n"
