"""Pixel filters of the recipes: contrast stretch (seed 004), bilateral smoothing (seed 003) and resize."""

from __future__ import annotations

from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8] | npt.NDArray[np.float32]
"""(H, W, 3) RGB, uint8 or float32 with values in [0, 255]."""
ImageT = TypeVar("ImageT", npt.NDArray[np.uint8], npt.NDArray[np.float32])


def stretch_contrast(
    image: Image, *, low_percentile: float = 1.0, high_percentile: float = 99.0
) -> npt.NDArray[np.float32]:
    """Map the image's ``low_percentile``..``high_percentile`` intensity range linearly onto 0..255, clipping.

    The percentiles are taken over all pixels and channels together, so the colour balance is kept. A flat
    image (both percentiles equal) is returned unchanged, as float32.
    (H, W, 3) -> (H, W, 3) float32 in [0, 255].
    """
    low, high = (float(v) for v in np.percentile(image, [low_percentile, high_percentile]))
    if high <= low:
        return image.astype(np.float32)
    scale = np.float32(255.0 / (high - low))
    stretched = (image.astype(np.float32) - np.float32(low)) * scale  # (H, W, 3) float32
    return np.clip(stretched, 0.0, 255.0, out=stretched)


def bilateral_filter(
    image: ImageT, *, d: int = 2, sigma_color: float = 50.0, sigma_space: float = 50.0
) -> ImageT:
    """Edge-preserving smoothing, ``cv2.bilateralFilter(image, d, sigma_color, sigma_space)``.

    (H, W, 3) -> (H, W, 3), dtype kept (uint8 or float32).
    """
    filtered = cv2.bilateralFilter(np.ascontiguousarray(image), d, sigma_color, sigma_space)
    return np.asarray(filtered, dtype=image.dtype)


def resize_to(image: ImageT, size: tuple[int, int]) -> ImageT:
    """Resize straight to ``size`` = (height, width), ignoring the aspect ratio as the seed papers do.

    INTER_AREA when neither side grows (it averages, so shrinking does not alias), INTER_LINEAR otherwise
    (it cannot overshoot the input range, unlike cubic). (H, W, 3) -> (height, width, 3), dtype kept.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)
    return np.asarray(resized, dtype=image.dtype)
