"""Cropping an MRI slice to the brain (seeds 001 and 003): the black border around the head carries no signal.

grey -> Gaussian blur -> threshold -> erode/dilate -> largest external contour -> its extreme points -> crop.
Every failure mode (black, tiny or uniform image, no contour, degenerate box) falls back to the whole image.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

BoundingBox = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, end-exclusive: the crop is ``rgb[y0:y1, x0:x1]``."""

MIN_CROP_SIDE: Final = 8
"""A box narrower or lower than this is taken for noise, not a brain."""
_KERNEL_3X3: Final = np.ones((3, 3), dtype=np.uint8)  # what cv2.erode/dilate use for kernel=None


def brain_bounding_box(
    rgb: npt.NDArray[np.uint8],
    *,
    blur: int = 5,
    threshold: int = 45,
    erode: int = 2,
    dilate: int = 2,
    margin: int = 0,
    min_tissue_kept: float = 0.5,
) -> BoundingBox | None:
    """The box around the largest bright region of an RGB (H, W, 3) uint8 slice, or None when there is none.

    ``blur`` is the Gaussian kernel side (made odd; <= 1 disables it), ``threshold`` the grey level (0..255)
    above which a pixel is tissue, ``erode``/``dilate`` the 3x3 iterations that remove specks and close gaps,
    ``margin`` the pixels added on each side (clipped to the image). None when the image is smaller than
    MIN_CROP_SIDE, has no bright region, the region's box is smaller than MIN_CROP_SIDE on a side, or the box
    holds less than ``min_tissue_kept`` of all thresholded pixels (0 gives the seeds' behaviour).
    """
    height, width = rgb.shape[:2]
    if height < MIN_CROP_SIDE or width < MIN_CROP_SIDE:
        return None
    if rgb.dtype != np.uint8:  # e.g. float32 after a contrast stretch that a recipe placed first
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)  # (H, W) uint8
    if blur > 1:
        kernel = blur | 1  # GaussianBlur needs an odd side
        grey = cv2.GaussianBlur(grey, (kernel, kernel), 0)
    _, mask = cv2.threshold(grey, threshold, 255, cv2.THRESH_BINARY)  # (H, W) uint8, 0 or 255
    if erode > 0:
        mask = cv2.erode(mask, _KERNEL_3X3, iterations=erode)
    if dilate > 0:
        mask = cv2.dilate(mask, _KERNEL_3X3, iterations=dilate)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)  # (N, 1, 2) int32 points (x, y)
    points = largest.reshape(-1, 2)  # (N, 2)
    # extreme points (left, top) and (right, bottom); +1 makes the far edge exclusive
    x0, y0 = (int(v) for v in points.min(axis=0))
    x1, y1 = (int(v) + 1 for v in points.max(axis=0))
    if x1 - x0 < MIN_CROP_SIDE or y1 - y0 < MIN_CROP_SIDE:
        return None
    # A guard the seeds lack: when the largest region is only a fragment of the tissue (a skull ring broken
    # into arcs by the image border, a brain split from its skull by a dark gap), its box cuts the brain away.
    if cv2.countNonZero(mask[y0:y1, x0:x1]) < min_tissue_kept * cv2.countNonZero(mask):
        return None
    margin = max(margin, 0)
    return max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width), min(y1 + margin, height)


def crop_to_brain(
    rgb: npt.NDArray[np.uint8],
    *,
    blur: int = 5,
    threshold: int = 45,
    erode: int = 2,
    dilate: int = 2,
    margin: int = 0,
    min_tissue_kept: float = 0.5,
) -> npt.NDArray[np.uint8]:
    """RGB (H, W, 3) uint8 -> its brain crop (h, w, 3), or the whole image when no box is found; never raises.

    The parameters are those of :func:`brain_bounding_box`.
    """
    box = brain_bounding_box(
        rgb,
        blur=blur,
        threshold=threshold,
        erode=erode,
        dilate=dilate,
        margin=margin,
        min_tissue_kept=min_tissue_kept,
    )
    if box is None:
        return rgb
    x0, y0, x1, y1 = box
    return rgb[y0:y1, x0:x1]  # (y1 - y0, x1 - x0, 3), a view
