"""A Grad-CAM heatmap drawn over the image it explains, as PNG bytes (OpenCV only, no TensorFlow)."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_ALPHA", "render_overlay_png"]

DEFAULT_ALPHA: Final = 0.4
"""Weight of the colour map in the blend; the image keeps the rest, so the anatomy stays readable."""


def render_overlay_png(
    original_rgb: npt.NDArray[np.uint8],
    heatmap: npt.NDArray[np.floating],
    *,
    alpha: float = DEFAULT_ALPHA,
    region: tuple[int, int, int, int] | None = None,
) -> bytes:
    """PNG of ``heatmap`` (h', w') in [0, 1], stretched over ``original_rgb`` (H, W, 3) uint8, in JET colours.

    ``region`` (x0, y0, x1, y1), end-exclusive, is the part of the original that the model saw (a brain crop):
    the map covers that part only and the rest of the image is left as it is. None: the whole image.
    The PNG has the original's width and height; hot (red) is where the map is 1, cold (blue) where it is 0.
    """
    if original_rgb.dtype != np.uint8 or original_rgb.ndim != 3 or original_rgb.shape[2] != 3:
        raise ValueError(
            f"the image must be uint8 RGB (H, W, 3), got {original_rgb.dtype} {original_rgb.shape}"
        )
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"the heatmap must be a non-empty (h, w) map, got shape {heatmap.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = original_rgb.shape[:2]
    x0, y0, x1, y1 = (0, 0, width, height) if region is None else region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"the region {region} does not lie inside the {width}x{height} image")
    small = np.nan_to_num(heatmap.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)  # (h', w')
    heat = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)  # (y1-y0, x1-x0)
    heat8 = np.clip(np.rint(heat * 255.0), 0, 255).astype(np.uint8)  # (y1-y0, x1-x0) in 0..255
    colour_bgr = cv2.applyColorMap(heat8, cv2.COLORMAP_JET)  # (y1-y0, x1-x0, 3) BGR, as OpenCV writes
    blended = cv2.cvtColor(np.ascontiguousarray(original_rgb), cv2.COLOR_RGB2BGR)  # (H, W, 3)
    inside = blended[y0:y1, x0:x1]  # (y1-y0, x1-x0, 3) view
    blended[y0:y1, x0:x1] = cv2.addWeighted(colour_bgr, alpha, inside, 1.0 - alpha, 0.0)
    ok, png = cv2.imencode(".png", blended)
    if not ok:
        raise RuntimeError("OpenCV could not encode the Grad-CAM overlay as PNG")
    return bytes(png.tobytes())
