"""Bytes of an uploaded image -> the canonical uint8 RGB array that every recipe starts from.

The container is decided by content (magic bytes), never by a file name. Before any pixel is decoded, the
header is read for the pixel limit, for variants OpenCV cannot decode (415) and for the memory the decode
will take (413 past ``max_bytes``); truncated, corrupt or forged files are refused before OpenCV sees them,
and a JPEG whose decoder reports damaged data while decoding is refused after it. Conversions, in this order:

- more than 8 bits (16-bit PNG/TIFF, float TIFF): min-max windowing of the colour channels to 0..255 -- for
  MRI, whose 16-bit data rarely fills the range, this keeps the contrast that ``>> 8`` would crush to near
  black; an alpha channel is scaled by its type's full range instead;
- alpha: composited onto black (MRI background is black), i.e. colour * alpha / 255;
- greyscale -> RGB by repeating the channel; OpenCV's BGR(A) -> RGB.

JPEG is decoded with EXIF orientation applied (JPEG has no alpha to lose); the others with
``cv2.IMREAD_UNCHANGED`` so that 16-bit depth and alpha survive. Decodes run one at a time per process, with
the codecs' stderr read rather than printed (see :func:`_imdecode`): libjpeg's warnings are the only signal
of a damaged scan, and no codec line reaches the log.

Memory. The worst case of one call is ``max_bytes`` plus about 3 MiB (the decoder's fixed state -- Huffman,
zlib and libtiff tables -- and allocator rounding, measured) plus the upload itself, which the caller holds:
anything whose estimate is over ``max_bytes`` is refused before decoding. The estimate is the larger of the
two peaks of a decode, each counted from what the header declares --

- decoding: OpenCV's array (width x height x channels x bytes per sample), plus the larger of its working
  buffers (a progressive JPEG's coefficients at 2 bytes per sample, a TIFF strip decoded to 4 bytes per pixel,
  an orientation copy) and the copy of that array that the Python binding returns;
- converting: the decoded array, the uint8 RGB result (none for 8-bit colour, swapped in place) and one chunk
  of at most 2**16 pixels of temporaries (4 MiB); conversions never make a whole-image float copy.

Measured peak RSS growth stays within the estimate + 16 MiB (tests/service/test_hostile_images.py, in a child
process; the overshoot seen is 2-3 MiB).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import sys
import tempfile
import threading
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
from service.preprocessing.headers import DeclaredImage, read_declared_image, read_dimensions
from service.preprocessing.integrity import verify_structure

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "decode_image",
    "estimate_decode_bytes",
    "read_dimensions",
    "sniff_format",
]

DEFAULT_MAX_PIXELS: Final = 50_000_000
"""Largest accepted width * height (a 7071 x 7071 image); MRI slices are under 1 Mpx."""
DEFAULT_MAX_DECODE_BYTES: Final = 256 * 1024 * 1024
"""Memory budget of one decode: the peak bytes a decode may allocate, estimated from what the container *and*
the codestream declare (every sample's depth, the decoder's working buffers, the conversion's copies; see
:func:`estimate_decode_bytes`) and checked before decoding; over it the upload is refused with 413. At this
default, 8- and 16-bit greyscale images are accepted up to the pixel limit, 8-bit RGB up to about 44 Mpx,
16-bit RGB up to about 22 Mpx and float64 RGBA up to about 4 Mpx. The setting ``MRI_MAX_DECODE_MIB``
overrides it."""
DEFAULT_MIN_SIDE: Final = 8
"""Smallest accepted width or height: anything smaller holds nothing a classifier could use."""

_DECODE_FLAGS: Final[dict[ImageFormat, int]] = {
    "jpeg": cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR,  # applies EXIF orientation; JPEG has no alpha
    "png": cv2.IMREAD_UNCHANGED,
    "bmp": cv2.IMREAD_UNCHANGED,
    "tiff": cv2.IMREAD_UNCHANGED,
}
_CHUNK_PIXELS: Final = 1 << 16
"""Pixels converted at a time: the temporaries of one chunk stay under 4 MiB."""
_CHUNK_BYTES_PER_PIXEL: Final = 64
"""Bound of the temporaries per pixel of a chunk of more than 8 bits or with alpha (float32 colour, its mask,
rint and clip results, alpha, the uint16 product of compositing); 8-bit BGR needs one 3-byte copy."""

# libjpeg(-turbo)'s warnings (jerror.h, JWRN_*), which it prints to stderr and otherwise ignores: data that
# ends early, bad Huffman codes, lost restart markers... It prints only the first warning of an image, so any
# of them -- even the harmless-looking "unknown JFIF revision" -- may hide a corrupt scan behind it.
_LIBJPEG_WARNING = re.compile(
    rb"Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression sequence"
    rb"|Invalid SOS parameters|Unknown Adobe color transform|Warning: unknown JFIF revision"
    rb"|Application transferred too many scanlines"
)
# libpng's own lines ("libpng warning: iCCP: known incorrect sRGB profile", "libpng error: ..."): a decode
# failure is already reported as a typed error, and a warning about metadata is no reason to refuse an image.
_LIBPNG_LINE = re.compile(rb"^libpng (warning|error): ")

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

    Raises ImageDecodeError (empty, not an image, truncated, corrupt, forged, too small), ImageTooLargeError
    (declared width * height over ``max_pixels``, or an estimated peak memory over ``max_bytes``; both refused
    before decoding) or UnsupportedImageFormatError (GIF, WebP...; 12-bit JPEG, half-float TIFF...). Nothing
    else: a malformed header that trips a parser is reported as corrupt.
    """
    fmt = _identify(data)
    try:
        declared = _check_header(data, fmt, max_pixels=max_pixels, min_side=min_side, max_bytes=max_bytes)
    except (struct.error, IndexError, ValueError, OverflowError) as error:  # a parser tripped on a bad header
        raise ImageDecodeError(f"The {fmt.upper()} image is corrupt: its header cannot be read.") from error
    image, warned = _imdecode(data, fmt)
    if warned:
        raise ImageDecodeError(
            "The JPEG image is corrupt or truncated: its decoder reported damaged image data."
        )
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"The {fmt.upper()} image could not be decoded: the file is corrupt or truncated."
        )
    if image.nbytes > declared.array_bytes:
        # the header model above does not match what OpenCV did; better no answer than an unbounded one
        raise ImageDecodeError(f"The {fmt.upper()} image decoded to more data than its header declares.")
    return _to_rgb(image)


def estimate_decode_bytes(declared: DeclaredImage) -> int:
    """Peak bytes one :func:`decode_image` of an image with this header allocates (see the module docstring).

    The larger of decoding -- OpenCV's array, plus the larger of its working buffers and the Python binding's
    copy of that array -- and converting -- the decoded array, the RGB result and one chunk of temporaries.
    """
    array = declared.array_bytes
    pixels = declared.width * declared.height
    decoding = array + max(array, declared.working_bytes)
    if declared.sample_bytes == 1 and declared.channels == 3:  # BGR swapped in place, a chunk at a time
        converting = array + 3 * min(pixels, _CHUNK_PIXELS)
    elif declared.sample_bytes == 1 and declared.channels == 1:  # grey repeated into a new RGB array
        converting = array + 3 * pixels
    else:  # windowed and/or composited into a new RGB array, a chunk at a time
        converting = array + 3 * pixels + _CHUNK_BYTES_PER_PIXEL * min(pixels, _CHUNK_PIXELS)
    return max(decoding, converting)


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


def _check_header(
    data: bytes, fmt: ImageFormat, *, max_pixels: int, min_side: int, max_bytes: int
) -> DeclaredImage:
    """Every refusal that needs no decoding, cheapest first: size (413/400), variant (415), memory (413),
    structure (400)."""
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
    declared = read_declared_image(data, fmt)
    needed = estimate_decode_bytes(declared)
    if needed > max_bytes:
        raise ImageTooLargeError(
            f"Decoding the image would take about {_mib(needed)} of memory ({width} x {height} pixels, "
            f"{declared.channels} x {8 * declared.sample_bytes}-bit samples), more than the limit of "
            f"{_mib(max_bytes)}."
        )
    verify_structure(data, fmt)
    return declared


def _mib(count: int) -> str:
    mib = count / 2**20
    return f"{mib:,.1f} MiB" if mib < 10 else f"{math.ceil(mib):,} MiB"


# --- decoding with libjpeg's warnings read, not printed ----------------------------------------------------

_STDERR_LOCK = threading.Lock()
_capture: tuple[int, int] | None = None  # (pid, fd) of the anonymous file fd 2 is pointed at while decoding


def stderr_swap_lock() -> threading.Lock:
    """The lock that every temporary redirection of file descriptor 2 in this process holds (the decoder's
    here, :func:`service.logging.native_stderr_to_log`'s): two overlapping swaps would restore each other's
    descriptors in the wrong order."""
    return _STDERR_LOCK


def _before_fork() -> None:
    _STDERR_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _STDERR_LOCK.release()


def _after_fork_in_child() -> None:
    global _STDERR_LOCK
    _STDERR_LOCK = threading.Lock()


# A fork waits for a decode in progress (milliseconds), so that no child starts with fd 2 swapped or the lock
# held by a thread it does not have -- the pattern the logging module uses for its own locks.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def _imdecode(data: bytes, fmt: ImageFormat) -> tuple[npt.NDArray[np.generic] | None, bool]:
    """``cv2.imdecode`` with the codec's stderr read instead of printed: (image or None, libjpeg warned).

    libjpeg reports damaged data (a scan cut short and padded with grey, a bad Huffman code) only as a warning
    printed on file descriptor 2, and OpenCV returns the damaged image regardless; neither cv2 nor Pillow
    exposes it to Python. So for the length of the call, fd 2 points at an anonymous file. fd 2 belongs to the
    whole process: the swap is serialised by a lock (decodes take milliseconds), and whatever other threads
    wrote meanwhile is written back to the real stderr afterwards, libjpeg's and libpng's lines excepted.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    with _STDERR_LOCK:
        capture = _capture_fd()
        if capture is None:  # no file to capture into: decode without reading warnings
            return _call_imdecode(buffer, fmt), False
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = _dup_or_none(2)
        try:
            os.dup2(capture, 2)
            image = _call_imdecode(buffer, fmt)
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
            warned = _drain(capture) and fmt == "jpeg"
    return image, warned


def _drain(capture: int) -> bool:
    """Empty the capture file: whether it held a libjpeg warning; lines of neither libjpeg nor libpng go to
    the real stderr."""
    warned = False
    pending = b""
    try:
        os.lseek(capture, 0, os.SEEK_SET)
        while chunk := os.read(capture, 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            warned = _forward(lines) or warned
        os.ftruncate(capture, 0)
        os.lseek(capture, 0, os.SEEK_SET)
    except OSError:
        pass  # the capture file failed: what it held is lost, the decode itself is not
    return _forward([pending] if pending else []) or warned


def _forward(lines: list[bytes]) -> bool:
    warned = False
    others = []
    for line in lines:
        if _LIBJPEG_WARNING.search(line):
            warned = True
        elif not _LIBPNG_LINE.match(line):
            others.append(line + b"\n")
    if others:
        with contextlib.suppress(OSError):
            os.write(2, b"".join(others))
    return warned


def _call_imdecode(buffer: npt.NDArray[np.uint8], fmt: ImageFormat) -> npt.NDArray[np.generic] | None:
    try:
        image = cv2.imdecode(buffer, _DECODE_FLAGS[fmt])
    except cv2.error:
        return None
    except MemoryError as error:
        raise ImageTooLargeError("The image could not be decoded within the memory available.") from error
    return None if image is None else np.asarray(image)


def _capture_fd() -> int | None:
    """The capture file of this process, made on first use (again in a forked child, whose copy of the
    parent's descriptor would share its file offset)."""
    global _capture
    if _capture is None or _capture[0] != os.getpid():
        try:
            fd, path = tempfile.mkstemp(prefix="decode-stderr-")
        except OSError:
            return None
        os.unlink(path)  # anonymous: gone with the process
        _capture = (os.getpid(), fd)
    return _capture[1]


def _dup_or_none(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:  # the process runs with fd 2 closed
        return None


# --- conversion to uint8 RGB --------------------------------------------------------------------------------


def _to_rgb(image: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """(H, W[, C]) of any depth, C in 1, 3, 4 (grey, BGR, BGRA) -> C-contiguous uint8 RGB (H, W, 3).

    Works on chunks of ``_CHUNK_PIXELS`` pixels, so that no conversion makes a whole-image copy in a wider
    type (a float64 image windowed at once would take 3 float32 copies of itself): peak memory is the decoded
    array, the RGB result and one chunk. 8-bit BGR is swapped in place and returned as is.
    """
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        raise ImageDecodeError(
            f"The image has {channels} channels; only grey, RGB and RGBA images are supported."
        )
    flat = image.reshape(height * width, channels)  # a view: OpenCV's arrays are contiguous
    chunks = [(start, min(start + _CHUNK_PIXELS, len(flat))) for start in range(0, len(flat), _CHUNK_PIXELS)]
    if image.dtype == np.uint8 and channels == 1:
        grey = np.asarray(image, dtype=np.uint8).reshape(height, width)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), np.uint8)
    if image.dtype == np.uint8 and channels == 3:
        for start, stop in chunks:
            part = flat[start:stop]
            part[:] = part[:, ::-1]  # NumPy copies the overlapping source first: one chunk at a time
        return np.ascontiguousarray(image, dtype=np.uint8).reshape(height, width, 3)
    colour = flat[:, :3] if channels == 4 else flat  # (N, 1) or (N, 3)
    window = _window(colour, chunks)
    out = np.empty((height * width, 3), dtype=np.uint8)
    for start, stop in chunks:
        colour8 = _colour_to_uint8(colour[start:stop], window)
        if channels == 4:
            alpha8 = np.repeat(_alpha_to_uint8(flat[start:stop, 3:]), 3, axis=1)  # (n, 3)
            # composite onto black: colour * alpha / 255, rounded (OpenCV's rounding equals
            # (c * a + 127) // 255 for every pair of 8-bit values: c * a / 255 is never a half)
            product = cv2.multiply(np.ascontiguousarray(colour8), alpha8, scale=1 / 255)
            colour8 = np.asarray(product, dtype=np.uint8)
        out[start:stop] = colour8 if colour8.shape[1] == 1 else colour8[:, ::-1]
    return out.reshape(height, width, 3)


def _window(colour: npt.NDArray[np.generic], chunks: list[tuple[int, int]]) -> tuple[float, float] | None:
    """``(low, scale)`` mapping the finite colour values min..max onto 0..255; None for uint8 (kept as is).

    A constant image, or one without a finite value, gets scale 0: all 0."""
    if colour.dtype == np.uint8:
        return None
    if np.issubdtype(colour.dtype, np.integer):
        low, high = float(colour.min()), float(colour.max())  # NumPy reduces a strided view in buffers
    else:
        low, high = math.inf, -math.inf
        for start, stop in chunks:
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, i.e. not finite
                values = colour[start:stop].astype(np.float32)
            finite = values[np.isfinite(values)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if low > high:  # no finite value at all
            return 0.0, 0.0
    return low, (255.0 / (high - low) if high > low else 0.0)


def _colour_to_uint8(
    values: npt.NDArray[np.generic], window: tuple[float, float] | None
) -> npt.NDArray[np.uint8]:
    """One chunk (n, C) -> uint8 (n, C): windowed with ``window``, rounded; non-finite values map to 0."""
    if window is None:
        return np.asarray(values, dtype=np.uint8)
    low, scale = window
    if np.issubdtype(values.dtype, np.integer):
        # saturate(|v * scale - low * scale|) in one pass, without a float copy
        contiguous = np.ascontiguousarray(values)
        return np.asarray(cv2.convertScaleAbs(contiguous, alpha=scale, beta=-low * scale), np.uint8).reshape(
            values.shape
        )
    # non-finite values are computed too (inf - low, inf * 0) and then replaced: no warning for them
    with np.errstate(over="ignore", invalid="ignore"):
        values32 = values.astype(np.float32)
        scaled = np.where(np.isfinite(values32), (values32 - low) * scale, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _alpha_to_uint8(alpha: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """Alpha (n, 1) -> uint8: integer alpha spans its type's range, float alpha is in [0, 1]."""
    if alpha.dtype == np.uint8:
        return np.asarray(alpha, dtype=np.uint8)
    full = float(np.iinfo(alpha.dtype.name).max) if np.issubdtype(alpha.dtype, np.integer) else 1.0
    if np.issubdtype(alpha.dtype, np.unsignedinteger):  # one pass, rounded like np.rint (checked for uint16)
        return np.asarray(cv2.convertScaleAbs(np.ascontiguousarray(alpha), alpha=255.0 / full), np.uint8)
    return np.clip(np.rint(alpha.astype(np.float32) * (255.0 / full)), 0, 255).astype(np.uint8)
