"""Bytes of an uploaded image -> the canonical uint8 RGB array that every recipe starts from.

The container is decided by content (magic bytes), never by a file name. The declared size is checked against
the pixel limit before any pixels are decoded, and truncated or corrupt files are refused before OpenCV sees
them. Conversions, in this order:

- more than 8 bits (16-bit PNG/TIFF, float TIFF): min-max windowing of the colour channels to 0..255 -- for
  MRI, whose 16-bit data rarely fills the range, this keeps the contrast that ``>> 8`` would crush to near
  black; an alpha channel is scaled by its type's full range instead;
- alpha: composited onto black (MRI background is black), i.e. colour * alpha / 255;
- greyscale -> RGB by repeating the channel; OpenCV's BGR(A) -> RGB.

JPEG is decoded with EXIF orientation applied (JPEG has no alpha to lose); the others with
``cv2.IMREAD_UNCHANGED`` so that 16-bit depth and alpha survive.
"""

from __future__ import annotations

import os
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from service.preprocessing.errors import (
    SUPPORTED_FORMATS_SENTENCE,
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)
from service.preprocessing.formats import ImageFormat, sniff_format, sniff_unsupported_format
from service.preprocessing.headers import read_dimensions
from service.preprocessing.integrity import verify_structure

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "decode_image",
    "read_dimensions",
    "sniff_format",
]

DEFAULT_MAX_PIXELS: Final = 50_000_000
"""Largest accepted width * height (a 7071 x 7071 image); MRI slices are under 1 Mpx."""
DEFAULT_MAX_DECODE_BYTES: Final = 256 * 1024 * 1024
"""Memory budget of one decode: the largest array a decoder may be asked to produce (width x height x
samples per pixel x bytes per sample, as the container *and* the codestream declare), checked before decoding;
over it the upload is refused with 413. The setting ``MRI_MAX_DECODE_MIB`` overrides it."""
DEFAULT_MIN_SIDE: Final = 8
"""Smallest accepted width or height: anything smaller holds nothing a classifier could use."""

_DECODE_FLAGS: Final[dict[ImageFormat, int]] = {
    "jpeg": cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR,  # applies EXIF orientation; JPEG has no alpha
    "png": cv2.IMREAD_UNCHANGED,
    "bmp": cv2.IMREAD_UNCHANGED,
    "tiff": cv2.IMREAD_UNCHANGED,
}

# Every decode failure becomes a typed error with a sentence, so OpenCV's own error log lines
# ("[ERROR:0@0.04] ... TIFFReadDirectory ...") would only repeat it on stderr.
# An explicit OPENCV_LOG_LEVEL in the environment wins.
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> npt.NDArray[np.uint8]:
    """Decode JPEG, PNG, BMP or TIFF bytes into a C-contiguous uint8 RGB array of shape (H, W, 3).

    Raises ImageDecodeError (empty, not an image, truncated, corrupt, too small), ImageTooLargeError
    (declared width * height over ``max_pixels``, refused before decoding) or UnsupportedImageFormatError
    (GIF, WebP...).
    """
    fmt = _identify(data)
    width, height = read_dimensions(data)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width} x {height} pixels ({width * height:,} in all), "
            f"more than the limit of {max_pixels:,} pixels."
        )
    if min(width, height) < min_side:
        raise ImageDecodeError(
            f"The image is {width} x {height} pixels, too small to classify; "
            f"each side must be at least {min_side} pixels."
        )
    verify_structure(data, fmt)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DECODE_FLAGS[fmt])
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"The {fmt.upper()} image could not be decoded: the file is corrupt or truncated."
        )
    rgb = _to_rgb(_to_uint8(image))  # (H, W, 3) uint8
    return np.ascontiguousarray(rgb)


def _identify(data: bytes) -> ImageFormat:
    if len(data) == 0:
        raise ImageDecodeError(f"The upload is empty. {SUPPORTED_FORMATS_SENTENCE}")
    fmt = sniff_format(data)
    if fmt is not None:
        return fmt
    unsupported = sniff_unsupported_format(data)
    if unsupported is not None:
        raise UnsupportedImageFormatError(
            f"{unsupported} images are not supported. {SUPPORTED_FORMATS_SENTENCE}"
        )
    raise ImageDecodeError(f"The upload is not a recognised image. {SUPPORTED_FORMATS_SENTENCE}")


def _to_uint8(image: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """(H, W[, C]) of any depth -> same shape uint8; colour windowed, alpha scaled by its full range."""
    if image.dtype == np.uint8:
        return np.asarray(image, dtype=np.uint8)
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    colour = image[..., :3] if has_alpha else image  # (H, W[, C])
    out = _window_to_uint8(colour)
    if not has_alpha:
        return out
    alpha = image[..., 3:]  # (H, W, 1)
    # integer alpha spans its type's range; float alpha is in [0, 1]
    alpha_full = float(np.iinfo(alpha.dtype.name).max) if np.issubdtype(alpha.dtype, np.integer) else 1.0
    alpha8 = np.clip(np.rint(alpha.astype(np.float32) * (255.0 / alpha_full)), 0, 255).astype(np.uint8)
    return np.concatenate([out, alpha8], axis=2)  # (H, W, 4)


def _window_to_uint8(values: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """Min-max window the (finite) values onto 0..255, rounded; a constant image maps to 0."""
    if np.issubdtype(values.dtype, np.integer):
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        # saturate(|v * scale - low * scale|) in one pass, without a float copy of a large 16-bit image
        return np.asarray(cv2.convertScaleAbs(np.asarray(values), alpha=scale, beta=-low * scale), np.uint8)
    values32 = values.astype(np.float32)
    finite = np.isfinite(values32)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(values32[finite].min()), float(values32[finite].max())
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.where(finite, (values32 - low) * scale, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(H, W), (H, W, 1), BGR (H, W, 3) or BGRA (H, W, 4) uint8 -> RGB (H, W, 3) uint8."""
    if image.ndim == 2 or image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB), np.uint8)
    if image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), np.uint8)
    if image.shape[2] == 4:
        # composite onto black: colour * alpha / 255, rounded
        colour = image[..., :3].astype(np.uint16)  # (H, W, 3)
        alpha = image[..., 3:].astype(np.uint16)  # (H, W, 1)
        bgr = ((colour * alpha + 127) // 255).astype(np.uint8)
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
    raise ImageDecodeError(
        f"The image has {image.shape[2]} channels; only grey, RGB and RGBA images are supported."
    )
