"""Images that are not brain MRI slices, made here: synthetic patterns and scikit-image's bundled photos.

They complement the external sets (``../shared/extsets/ood-a``) in the input-validity evaluation and its
tests. Every image is uint8 RGB (H, W, 3); the generators are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]

SKIMAGE_PHOTOS: Final = (
    "astronaut", "coffee", "chelsea", "camera", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
    "page", "text", "horse", "moon", "coins", "clock", "checkerboard", "grass", "gravel", "brick",
    "colorwheel",
    "retina", "logo",
)  # fmt: skip
"""The scikit-image data images that ship inside its wheel (no download)."""
SIZE: Final = 256


def skimage_photos() -> Iterator[tuple[str, Image]]:
    """(name, image) for each bundled scikit-image picture, as RGB uint8."""
    import skimage.data

    for name in SKIMAGE_PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        yield name, as_rgb(image.astype(np.uint8))


def as_rgb(image: npt.NDArray[np.uint8]) -> Image:
    """Grey (H, W), RGB or RGBA -> C-contiguous RGB (H, W, 3)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def synthetic_images(seed: int = 0) -> Iterator[tuple[str, Image]]:
    """(kind, image): noise, flat fields, gradients, text pages and line charts (42 images)."""
    rng = np.random.default_rng(seed)
    side = SIZE
    for _ in range(6):
        yield "noise-uniform-rgb", rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        yield "noise-uniform-grey", as_rgb(rng.integers(0, 256, (side, side), dtype=np.uint8))
        yield "noise-gaussian", np.clip(rng.normal(128, 40, (side, side, 3)), 0, 255).astype(np.uint8)
    for value in (0, 30, 128, 255):
        yield "flat", np.full((side, side, 3), value, np.uint8)
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    yield "gradient", as_rgb(np.tile(ramp, (side, 1)))
    yield "gradient", as_rgb(np.tile(ramp[:, np.newaxis], (1, side)))
    yy, xx = np.mgrid[:side, :side]
    radius = np.sqrt((yy - side / 2) ** 2 + (xx - side / 2) ** 2)
    yield "gradient-radial", as_rgb(np.clip(255 - radius * 2, 0, 255).astype(np.uint8))
    for i in range(4):
        page = np.full((side, side, 3), 255, np.uint8)
        for line in range(8):
            cv2.putText(page, f"Lorem ipsum {i * 8 + line}", (5, 25 + 28 * line), cv2.FONT_HERSHEY_SIMPLEX,
                        0.7, (0, 0, 0), 2)  # fmt: skip
        yield "text", page
        yield "text-inverted", 255 - page
    for i in range(4):
        chart = np.full((side, side, 3), 255, np.uint8)
        xs = np.linspace(20, side - 20, 30)
        ys = side / 2 + 80 * np.sin(np.linspace(0, 6, 30) + i) * rng.uniform(0.3, 1)
        points = np.stack([xs, ys], axis=1).astype(np.int32)
        cv2.polylines(chart, [points], False, (0, 0, 255) if i % 2 else (0, 0, 0), 2)
        cv2.line(chart, (20, side - 20), (side - 20, side - 20), (0, 0, 0), 2)
        cv2.line(chart, (20, 20), (20, side - 20), (0, 0, 0), 2)
        yield "line-chart", chart
        yield "line-chart-inverted", 255 - chart
    yield "checkerboard", as_rgb(((xx // 32 + yy // 32) % 2 * 255).astype(np.uint8))
