"""Cheap structural checks that refuse truncated or corrupt files before OpenCV sees them.

OpenCV can decode a damaged JPEG or PNG partially, printing a libjpeg/libpng warning to stderr and returning a
half-grey image; a classifier must not see such an image, and the log must not fill with those warnings.
"""

from __future__ import annotations

import struct
import zlib

from service.preprocessing.errors import ImageDecodeError
from service.preprocessing.formats import PNG_SIGNATURE, ImageFormat
from service.preprocessing.headers import JPEG_SOS, iter_jpeg_segments

_JPEG_EOI_BYTES = b"\xff\xd9"


def verify_structure(data: bytes, fmt: ImageFormat) -> None:
    """Raise ImageDecodeError when the JPEG or PNG ``data`` is truncated or has a corrupt chunk.

    JPEG: the header segments must be complete and an EOI marker must follow the start of the scan data (in
    entropy-coded data 0xFF is always stuffed, so FF D9 there is the end of the image). PNG: every chunk must
    be complete and carry a correct CRC-32, and the stream must reach IEND. BMP and TIFF are left to OpenCV,
    which refuses truncated files of both outright.
    """
    if fmt == "jpeg":
        _verify_jpeg(data)
    elif fmt == "png":
        _verify_png(data)


def _verify_jpeg(data: bytes) -> None:
    scan_start = next((start for marker, start, _ in iter_jpeg_segments(data) if marker == JPEG_SOS), None)
    if scan_start is None or data.rfind(_JPEG_EOI_BYTES, scan_start) < 0:
        raise ImageDecodeError("The JPEG image is truncated: it has no end-of-image marker.")


def _verify_png(data: bytes) -> None:
    view = memoryview(data)
    i = len(PNG_SIGNATURE)
    first = True
    # chunk: length (4) | type (4) | payload (length) | CRC-32 of type + payload (4)
    while i + 8 <= len(data):
        length, chunk_type = struct.unpack_from(">I4s", data, i)
        end = i + 8 + length + 4
        if length > 0x7FFFFFFF or end > len(data):
            break
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[i + 4 : end - 4]) != crc:
            name = chunk_type.decode("latin-1") if chunk_type.isalpha() else "a"
            raise ImageDecodeError(f"The PNG image is corrupt: the checksum of its {name} chunk is wrong.")
        if first and chunk_type != b"IHDR":
            raise ImageDecodeError("The PNG image is corrupt: it does not start with an IHDR chunk.")
        if chunk_type == b"IEND":
            return
        first = False
        i = end
    raise ImageDecodeError("The PNG image is truncated: it ends before its IEND chunk.")
