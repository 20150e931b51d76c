"""Cheap structural checks that refuse truncated, corrupt or forged files before OpenCV sees them.

OpenCV can decode a damaged JPEG or PNG partially, printing a libjpeg/libpng warning to stderr and returning a
half-grey image; a classifier must not see such an image, and the log must not fill with those warnings.
These checks read the container's structure only (markers, chunk CRCs, scan headers); what only the entropy
decoder can see -- a scan cut short with an end-of-image marker appended -- is caught while decoding
(decode.py reads libjpeg's own warnings).
"""

from __future__ import annotations

import struct
import zlib

from service.preprocessing.errors import ImageDecodeError
from service.preprocessing.formats import PNG_SIGNATURE, ImageFormat
from service.preprocessing.headers import JpegFrame, JpegScan, iter_jpeg_scans, read_jpeg_frame

_AC_BANDS = 64  # coefficient 0 is DC, 1-63 AC
_MAX_APPROXIMATION_BIT = 13  # the largest successive-approximation shift libjpeg accepts for 8-bit data
_PNG_STANDARD_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}
    | {b"tEXt", b"zTXt", b"iTXt", b"bKGD", b"pHYs", b"hIST", b"sPLT", b"tIME", b"eXIf"}
)


def verify_structure(data: bytes, fmt: ImageFormat) -> None:
    """Raise ImageDecodeError when the JPEG or PNG ``data`` is truncated, forged or has a corrupt chunk.

    JPEG: every marker segment must be complete up to an end-of-image marker; the scans must code every
    component completely (a progressive image whose last scans are missing is a truncated image, though
    libjpeg shows it blurred without a word); and each scan's entropy-coded data must be at least as long as
    the declared size requires (see :func:`_check_jpeg_scan_lengths`). PNG: every chunk must be complete and
    carry a correct CRC-32, and the stream must reach IEND. BMP and TIFF are left to OpenCV, which refuses
    truncated files of both outright.
    """
    if fmt == "jpeg":
        verify_jpeg(data, read_jpeg_frame(data))
    elif fmt == "png":
        _verify_png(data)


def verify_jpeg(data: bytes, frame: JpegFrame) -> None:
    """The JPEG checks of :func:`verify_structure`, for a frame header already read."""
    scans = list(iter_jpeg_scans(data, frame))
    if not scans:
        raise ImageDecodeError("The JPEG image has no image data.")
    if frame.progressive:
        _check_progression(frame, scans)
    else:
        _check_sequential(frame, scans)
    _check_jpeg_scan_lengths(frame, scans)


def _check_sequential(frame: JpegFrame, scans: list[JpegScan]) -> None:
    coded: set[int] = set()
    for scan in scans:
        if (scan.ss, scan.se, scan.ah, scan.al) != (0, 63, 0, 0) or coded.intersection(scan.components):
            raise ImageDecodeError(
                "The JPEG image is corrupt: its scan headers are invalid for a sequential JPEG."
            )
        coded.update(scan.components)
    if len(coded) < len(frame.components):
        raise ImageDecodeError("The JPEG image is truncated: its scans end before every component is coded.")


def _check_progression(frame: JpegFrame, scans: list[JpegScan]) -> None:
    """Replay the progression as libjpeg does (jdphuff.c), and require it to end with every bit of every
    coefficient of every component sent: ``state[c][k]`` is the bit coefficient ``k`` of component ``c`` is
    known down to, or -1 before its first scan."""
    state = [[-1] * _AC_BANDS for _ in frame.components]
    for scan in scans:
        dc = scan.ss == 0
        valid = (scan.se == 0 if dc else len(scan.components) == 1 and scan.ss <= scan.se < _AC_BANDS) and (
            scan.al <= _MAX_APPROXIMATION_BIT and (scan.ah == 0 or scan.al == scan.ah - 1)
        )
        expected = (
            scan.ah if scan.ah > 0 else -1
        )  # a refinement continues from Ah, a first scan finds nothing
        for c in scan.components:
            band = state[c][scan.ss : scan.se + 1]
            # every coefficient of the band where the previous scans left it, and no AC before the first DC
            valid = valid and all(bit == expected for bit in band) and (dc or state[c][0] >= 0)
            state[c][scan.ss : scan.se + 1] = [scan.al] * len(band)
        if not valid:
            raise ImageDecodeError("The JPEG image is corrupt: its progressive scans are inconsistent.")
    if any(bit != 0 for component in state for bit in component):
        raise ImageDecodeError(
            "The JPEG image is truncated: its progressive scans end before the image is complete."
        )


def _check_jpeg_scan_lengths(frame: JpegFrame, scans: list[JpegScan]) -> None:
    """Refuse a scan whose entropy-coded data is far shorter than its blocks need, before decoding it.

    Huffman codes are at least one bit long, so every 8 x 8 block costs at least 2 bits in a sequential scan
    (its DC difference and an end-of-block code) and 1 bit in a progressive DC scan (first or refinement);
    progressive AC scans can cover 32767 blocks with one end-of-band run, so they have no such bound. A file
    that declares more blocks than that is forged or cut: a 23 KB JPEG claiming 7000 x 7000 pixels would
    otherwise cost seconds and hundreds of MiB to decode into grey. Half the bound is required, to leave room
    for any arithmetic slip here; a forged file is short by orders of magnitude.
    """
    for scan in scans:
        if frame.progressive and scan.ss > 0:
            continue
        bits_per_block = 1 if frame.progressive else 2
        needed_bits = bits_per_block * sum(frame.components[c].blocks for c in scan.components)
        if 2 * 8 * scan.data_bytes < needed_bits:
            raise ImageDecodeError(
                "The JPEG image is truncated or forged: its compressed data is far too short for its "
                f"declared size of {frame.width} x {frame.height} pixels."
            )


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
            # only a standard chunk is named: nothing read from the upload is echoed
            which = (
                f"its {chunk_type.decode('ascii')} chunk" if chunk_type in _PNG_STANDARD_CHUNKS else "a chunk"
            )
            raise ImageDecodeError(f"The PNG image is corrupt: the checksum of {which} is wrong.")
        if first and chunk_type != b"IHDR":
            raise ImageDecodeError("The PNG image is corrupt: it does not start with an IHDR chunk.")
        if chunk_type == b"IEND":
            return
        first = False
        i = end
    raise ImageDecodeError("The PNG image is truncated: it ends before its IEND chunk.")
