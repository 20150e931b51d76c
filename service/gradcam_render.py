"""A Grad-CAM heatmap drawn over the image it explains, as PNG bytes (OpenCV only, no TensorFlow)."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_ALPHA", "heatmap_canvas", "render_heatmap_png", "render_image_png", "render_overlay_png"]

DEFAULT_ALPHA: Final = 0.4
"""Weight of the colour map in the blend; the image keeps the rest, so the anatomy stays readable."""


def heatmap_canvas(
    shape: tuple[int, int], heatmap: npt.NDArray[np.floating], region: tuple[int, int, int, int] | None = None
) -> npt.NDArray[np.float32]:
    """(H, W) float32 in [0, 1]: ``heatmap`` (h', w') stretched smoothly over ``region`` of an H x W image,
    0 elsewhere (the model did not see those pixels)."""
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"the heatmap must be a non-empty (h, w) map, got shape {heatmap.shape}")
    height, width = shape
    x0, y0, x1, y1 = (0, 0, width, height) if region is None else region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"the region {region} does not lie inside the {width}x{height} image")
    small = np.nan_to_num(heatmap.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)  # (h', w')
    canvas = np.zeros((height, width), dtype=np.float32)  # (H, W)
    # bicubic: no blocks of the coarse grid; clipped because cubic overshoots
    canvas[y0:y1, x0:x1] = np.clip(cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC), 0, 1)
    return canvas


def render_heatmap_png(canvas: npt.NDArray[np.float32]) -> bytes:
    """8-bit greyscale PNG of a :func:`heatmap_canvas`: 255 is the hottest pixel, 0 cold or unseen."""
    grey = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)  # (H, W)
    return _png(grey)


def render_image_png(image_rgb: npt.NDArray[np.uint8]) -> bytes:
    """PNG of the decoded upload (H, W, 3) uint8 RGB: what the decoder gave the model (DICOM: windowed)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR).astype(np.uint8, copy=False)
    return _png(bgr)


def render_overlay_png(
    original_rgb: npt.NDArray[np.uint8],
    heatmap: npt.NDArray[np.floating],
    *,
    alpha: float = DEFAULT_ALPHA,
    region: tuple[int, int, int, int] | None = None,
    canvas: npt.NDArray[np.float32] | None = None,
) -> bytes:
    """PNG of ``heatmap`` (h', w') in [0, 1] in JET colours over ``original_rgb`` (H, W, 3) uint8.

    ``region`` (x0, y0, x1, y1), end-exclusive, is the part of the original that the model saw (a brain crop);
    the map is stretched over it (``canvas``, when given, is that stretched map already). The colour is
    blended in proportion to the heat, up to ``alpha``: cold and unseen pixels show the original, so there
    is no edge at the crop. A colour scale (cold to hot) is drawn along the bottom edge.
    The PNG has the original's width and height.
    """
    if original_rgb.dtype != np.uint8 or original_rgb.ndim != 3 or original_rgb.shape[2] != 3:
        raise ValueError(
            f"the image must be uint8 RGB (H, W, 3), got {original_rgb.dtype} {original_rgb.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = original_rgb.shape[:2]
    if canvas is None:
        canvas = heatmap_canvas((height, width), heatmap, region)  # (H, W)
    heat8 = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)  # (H, W)
    colour_bgr = cv2.applyColorMap(heat8, cv2.COLORMAP_JET).astype(np.float32)  # (H, W, 3) BGR
    image_bgr = cv2.cvtColor(np.ascontiguousarray(original_rgb), cv2.COLOR_RGB2BGR).astype(np.float32)
    weight = (alpha * np.sqrt(canvas))[:, :, np.newaxis]  # (H, W, 1): 0 where cold, alpha at the peak
    blended = np.clip(np.rint(image_bgr * (1.0 - weight) + colour_bgr * weight), 0, 255).astype(np.uint8)
    _draw_colour_scale(blended)
    return _png(blended)


def _draw_colour_scale(image_bgr: npt.NDArray[np.uint8]) -> None:
    """A JET bar from cold (left) to hot (right) along the bottom edge, in place; skipped on tiny images."""
    height, width = image_bgr.shape[:2]
    bar_height = max(4, height // 40)
    if height < 4 * bar_height or width < 32:
        return
    x0, x1 = width // 4, width - width // 4
    ramp = np.linspace(0, 255, x1 - x0).astype(np.uint8)[np.newaxis, :]  # (1, w)
    bar = cv2.applyColorMap(np.repeat(ramp, bar_height, axis=0), cv2.COLORMAP_JET)  # (bar_height, w, 3)
    y1 = height - max(2, bar_height // 2)
    image_bgr[y1 - bar_height : y1, x0:x1] = bar
    cv2.rectangle(image_bgr, (x0 - 1, y1 - bar_height - 1), (x1, y1), (255, 255, 255), 1)


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("OpenCV could not encode the Grad-CAM image as PNG")
    return bytes(png.tobytes())
