"""Named, parameterised, serialisable preprocessing recipes: what a model saw in training, exactly.

A recipe is its steps followed by a resize to the model's input size. It is recorded in the model's manifest
(``manifest["preprocessing"] = recipe.to_dict()``) and rebuilt by the service with ``Recipe.from_dict``.

Presets, from the seed papers:

- ``plain`` (seed 000): resize only;
- ``crop`` (seeds 001, 003): crop to the brain, resize;
- ``crop-bilateral`` (seed 003): crop, bilateral filter (d=2, sigma 50/50), resize;
- ``contrast`` (seed 004): 1st-99th percentile contrast stretch, resize;
- ``crop-contrast``: crop, contrast stretch, resize.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from service.preprocessing.crop import BoundingBox, brain_bounding_box
from service.preprocessing.decode import DEFAULT_MAX_PIXELS, decode_image
from service.preprocessing.filters import Image, resize_to
from service.preprocessing.steps import STEP_SPECS, ParamValue, Step

_PRESETS: Final[Mapping[str, tuple[str, ...]]] = {
    "plain": (),
    "crop": ("crop_to_brain",),
    "crop-bilateral": ("crop_to_brain", "bilateral"),
    "contrast": ("contrast_stretch",),
    "crop-contrast": ("crop_to_brain", "contrast_stretch"),
}
RECIPE_NAMES: Final = tuple(_PRESETS)


@dataclass(frozen=True)
class Recipe:
    """A named preprocessing: ``steps`` in order, then a resize to ``size`` = (height, width)."""

    name: str
    size: tuple[int, int]
    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"A recipe name must be a non-empty string, not {self.name!r}.")
        size = tuple(self.size) if isinstance(self.size, list | tuple) else ()
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ValueError(f"A recipe size must be two positive integers (height, width), not {self.size}.")
        if not all(isinstance(step, Step) for step in self.steps):
            raise ValueError("A recipe's steps must be Step objects.")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "steps", tuple(self.steps))

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "size": [height, width], "steps": [{"name", "params"}, ...]}``, JSON-serialisable."""
        return {"name": self.name, "size": list(self.size), "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`, also after a JSON round trip; ValueError on unknown keys or steps."""
        if not isinstance(data, Mapping) or set(data) != {"name", "size", "steps"}:
            raise ValueError("A recipe must be a mapping with exactly the keys 'name', 'size' and 'steps'.")
        size, steps = data["size"], data["steps"]
        if not isinstance(size, list | tuple) or not isinstance(steps, list | tuple):
            raise ValueError("A recipe's 'size' and 'steps' must be lists.")
        return cls(data["name"], tuple(size), tuple(Step.from_dict(step) for step in steps))


def make_recipe(name: str, size: tuple[int, int] | int, **overrides: ParamValue) -> Recipe:
    """The preset ``name`` (one of RECIPE_NAMES) at ``size`` ((height, width), or one int for a square).

    ``overrides`` set step parameters by name, e.g. ``make_recipe("crop", 224, threshold=30, margin=4)``;
    a parameter that none of the preset's steps takes raises ValueError.
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown recipe {name!r}; known recipes: {', '.join(RECIPE_NAMES)}.")
    hw = (size, size) if isinstance(size, int) else size
    step_names = _PRESETS[name]
    unused = sorted(set(overrides) - {key for step in step_names for key in STEP_SPECS[step].defaults})
    if unused:
        raise ValueError(f"Recipe {name!r} has no parameter {', '.join(unused)}.")
    steps = tuple(
        Step.of(step, **{key: value for key, value in overrides.items() if key in STEP_SPECS[step].defaults})
        for step in step_names
    )
    return Recipe(name, hw, steps)


def apply_recipe(rgb: npt.NDArray[np.uint8], recipe: Recipe) -> npt.NDArray[np.float32]:
    """uint8 RGB (H, W, 3) -> float32 (height, width, 3) in [0, 255]: one image's model input, no batch."""
    return apply_recipe_with_region(rgb, recipe)[0]


def apply_recipe_with_region(
    rgb: npt.NDArray[np.uint8], recipe: Recipe
) -> tuple[npt.NDArray[np.float32], BoundingBox]:
    """:func:`apply_recipe`, and the region ``(x0, y0, x1, y1)`` (end-exclusive) of ``rgb`` the input shows.

    The region is the whole image unless a crop step found the brain; a heatmap of the model input belongs
    over that region of the original, not over the whole image.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"apply_recipe needs a uint8 RGB (H, W, 3) array, not {rgb.dtype} {rgb.shape}.")
    image: Image = rgb
    x0, y0, x1, y1 = 0, 0, rgb.shape[1], rgb.shape[0]
    for step in recipe.steps:
        if step.name == "crop_to_brain":
            # the box in the coordinates of ``image``, or None; a float image is clipped to uint8 inside
            kwargs = cast("dict[str, Any]", step.kwargs)
            box = brain_bounding_box(cast("npt.NDArray[np.uint8]", image), **kwargs)
            if box is not None:
                bx0, by0, bx1, by1 = box
                image = image[by0:by1, bx0:bx1]  # (by1 - by0, bx1 - bx0, 3), as crop_to_brain returns
                x0, y0, x1, y1 = x0 + bx0, y0 + by0, x0 + bx1, y0 + by1
            continue
        image = step.apply(image)  # (h', w', 3), uint8 or float32; the other steps keep the geometry
    # resizing in float32 keeps the fractions that averaging produces, whatever the last step returned
    resized = resize_to(image.astype(np.float32, copy=False), recipe.size)  # (height, width, 3) float32
    return np.ascontiguousarray(np.clip(resized, 0.0, 255.0, out=resized)), (x0, y0, x1, y1)


def preprocess_bytes(
    data: bytes, recipe: Recipe, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.float32]:
    """Image bytes -> the model input of ``recipe``: :func:`decode_image` then :func:`apply_recipe`."""
    return apply_recipe(decode_image(data, max_pixels=max_pixels), recipe)
