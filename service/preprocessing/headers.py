"""Reading an image's declared size from its header, without decoding pixels.

This is the guard against decompression bombs: the size is known (and refused if too large) before any pixel
buffer is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from service.preprocessing.errors import ImageDecodeError
from service.preprocessing.formats import PNG_SIGNATURE, sniff_format

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257


def read_dimensions(data: bytes) -> tuple[int, int]:
    """``(width, height)`` declared by the header of a JPEG, PNG, BMP or TIFF image, decoding no pixels.

    Raises ImageDecodeError when the header is missing, truncated or declares a zero-size image.
    """
    fmt = sniff_format(data)
    if fmt == "jpeg":
        width, height = _jpeg_dimensions(data)
    elif fmt == "png":
        width, height = _png_dimensions(data)
    elif fmt == "bmp":
        width, height = _bmp_dimensions(data)
    elif fmt == "tiff":
        width, height = _tiff_dimensions(data)
    else:
        raise ImageDecodeError("The data is not a JPEG, PNG, BMP or TIFF image, so its size cannot be read.")
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"The {fmt.upper()} image declares an empty size, {width} x {height} pixels.")
    return width, height


def iter_jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(marker, payload_start, payload_end)`` of each JPEG header segment, up to and including SOS.

    Raises ImageDecodeError when a segment runs past the end of the data or the stream ends before SOS.
    """
    size = len(data)
    i = 2  # after SOI
    while i < size:
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips them with a warning, so do we
            i += 1
            continue
        while i < size and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= size:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE_MARKERS or marker == 0x00:
            continue
        if marker == _JPEG_EOI:
            raise ImageDecodeError("The JPEG image ends before any image data.")
        if i + 2 > size:
            break
        (length,) = struct.unpack_from(">H", data, i)
        end = i + length
        if length < 2 or end > size:
            break
        yield marker, i + 2, end
        if marker == JPEG_SOS:
            return
        i = end
    raise ImageDecodeError("The JPEG image is truncated: its header ends before the image data.")


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    for marker, start, end in iter_jpeg_segments(data):
        if marker in _JPEG_SOF_MARKERS:
            if end - start < 6:
                break
            # SOFn payload: precision (1 byte), height (2), width (2), components (1), ...
            height, width = struct.unpack_from(">HH", data, start + 1)
            return width, height
        if marker == JPEG_SOS:
            break
    raise ImageDecodeError("The JPEG image has no valid frame header, so its size cannot be read.")


def _png_dimensions(data: bytes) -> tuple[int, int]:
    # signature (8) | IHDR length (4) | b"IHDR" (4) | width (4) | height (4) | ...
    if len(data) < len(PNG_SIGNATURE) + 16 or data[12:16] != b"IHDR":
        raise ImageDecodeError("The PNG image is truncated or corrupt: it has no IHDR header chunk.")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _bmp_dimensions(data: bytes) -> tuple[int, int]:
    # file header (14) | DIB header size (4) | width, height: int16 in the old core header, int32 otherwise
    if len(data) < 26:
        raise ImageDecodeError("The BMP image is truncated: its header is incomplete.")
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib_size >= 16:
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise ImageDecodeError("The BMP image has an invalid header.")
    return width, abs(height)  # a negative height means rows are stored top-down


def _tiff_dimensions(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise ImageDecodeError("The TIFF image is truncated: its header is incomplete.")
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd < 8 or ifd + 2 > len(data):
        raise ImageDecodeError("The TIFF image is truncated or corrupt: its first directory is missing.")
    (count,) = struct.unpack_from(order + "H", data, ifd)
    found: dict[int, int] = {}
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(data):
            break
        # entry: tag (2) | type (2) | count (4) | value or offset (4); SHORT values sit in the first 2 bytes
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (_TIFF_IMAGE_WIDTH, _TIFF_IMAGE_LENGTH) and kind in (3, 4):
            (found[tag],) = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, entry + 8)
    if _TIFF_IMAGE_WIDTH not in found or _TIFF_IMAGE_LENGTH not in found:
        raise ImageDecodeError("The TIFF image does not declare its width and height.")
    return found[_TIFF_IMAGE_WIDTH], found[_TIFF_IMAGE_LENGTH]
