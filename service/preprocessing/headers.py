"""Reading what an image's header declares, decoding no pixels.

Two guards rest on it. Decompression bombs: the size *and* the bytes a decoder will allocate are known, and
refused if too large, before any pixel buffer exists -- width x height alone bounds nothing when a sample can
be a float64 and a TIFF strip buffer can be as large as the image. Misleading errors: a valid image in a
variant OpenCV cannot decode (12-bit JPEG, half-float TIFF...) is refused with 415 naming the variant, instead
of failing later as "corrupt".

Every parser here is bounded: it reads fixed-size fields at offsets it checks against the data, walks at most
a fixed number of segments, pages or tag entries, and never allocates in proportion to what a header claims.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from service.preprocessing.errors import ImageDecodeError, UnsupportedImageFormatError
from service.preprocessing.formats import PNG_SIGNATURE, ImageFormat, sniff_format

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
# Frame kinds libjpeg-turbo (as built into OpenCV) decodes: baseline (C0), extended sequential (C1) and
# progressive (C2), all Huffman-coded. Lossless, hierarchical and arithmetic-coded frames are refused by name.
_JPEG_PROGRESSIVE = 0xC2
# The next marker after entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart marker
# (RST0-RST7, which belongs to the scan) or another 0xFF (fill). A regex finds it in C, not byte by byte.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
MAX_JPEG_SEGMENTS: Final = 4096
"""Marker segments walked before a JPEG is refused; real files have tens (APPn, DQT, DHT, SOF, SOS)."""
MAX_JPEG_SCANS: Final = 100
"""Scans accepted in one JPEG. Encoders write 1 (sequential) to about 10-20 (progressive); each scan makes the
decoder visit every block again, so a file of thousands of empty scans is a cheap way to burn CPU."""

_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_COMPRESSION = 259
_TIFF_PHOTOMETRIC = 262
_TIFF_ORIENTATION = 274
_TIFF_SAMPLES_PER_PIXEL = 277
_TIFF_ROWS_PER_STRIP = 278
_TIFF_TILE_WIDTH = 322
_TIFF_TILE_LENGTH = 323
_TIFF_SAMPLE_FORMAT = 339
_TIFF_TAGS_READ = frozenset(
    {
        _TIFF_IMAGE_WIDTH,
        _TIFF_IMAGE_LENGTH,
        _TIFF_BITS_PER_SAMPLE,
        _TIFF_COMPRESSION,
        _TIFF_PHOTOMETRIC,
        _TIFF_ORIENTATION,
        _TIFF_SAMPLES_PER_PIXEL,
        _TIFF_ROWS_PER_STRIP,
        _TIFF_TILE_WIDTH,
        _TIFF_TILE_LENGTH,
        _TIFF_SAMPLE_FORMAT,
    }
)
MAX_TIFF_PAGES: Final = 1024
"""Pages (IFDs) accepted in one TIFF. OpenCV decodes the first page only, but libtiff walks the whole chain to
count them, keeping state per page: a 20 MB file of a million empty pages costs +145 MiB and 0.2 s."""
# Compression schemes accepted: none, CCITT (bilevel), LZW, JPEG, Deflate (both codes), PackBits. The others
# (LZMA, ZSTD, WebP, JPEG XL, old-style JPEG, vendor codes) are rare in medical imaging and their decoders'
# working memory is not something this module can bound from the header.
_TIFF_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 7, 8, 32946, 32773})
# Photometric interpretations OpenCV's TIFF reader (libtiff's RGBA interface for 8-bit output) handles:
# min-is-white, min-is-black, RGB, palette, separated (CMYK), YCbCr and CIE L*a*b*.
_TIFF_PHOTOMETRICS = frozenset({0, 1, 2, 3, 5, 6, 8})
_TIFF_GREY = frozenset({0, 1})
_TIFF_PALETTE = 3
_TIFF_UINT, _TIFF_INT, _TIFF_FLOAT = 1, 2, 3

_PNG_BIT_DEPTHS: Final = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_SAMPLES: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_BMP_BIT_COUNTS = frozenset({1, 4, 8, 16, 24, 32})


@dataclass(frozen=True)
class DeclaredImage:
    """What a header says the decoder will produce, read before decoding.

    The decoder returns ``height`` x ``width`` x ``channels`` samples of ``sample_bytes`` bytes each (OpenCV's
    array, before any conversion); ``working_bytes`` is what it allocates besides that array while it runs:
    JPEG coefficient planes, TIFF strip and RGBA buffers, a copy made to apply an orientation tag.
    """

    width: int
    height: int
    channels: int
    sample_bytes: int
    working_bytes: int

    @property
    def array_bytes(self) -> int:
        """Bytes of the array the decoder returns."""
        return self.width * self.height * self.channels * self.sample_bytes


@dataclass(frozen=True)
class JpegComponent:
    """One colour component of a JPEG frame: its id, sampling factors and size in 8 x 8 blocks."""

    ident: int
    h: int
    v: int
    width_in_blocks: int
    height_in_blocks: int

    @property
    def blocks(self) -> int:
        """The component's 8 x 8 blocks, without the padding to whole MCUs that interleaved scans add."""
        return self.width_in_blocks * self.height_in_blocks


@dataclass(frozen=True)
class JpegFrame:
    """The frame header (SOFn) of a JPEG and what precedes the first scan."""

    marker: int
    precision: int
    width: int
    height: int
    components: tuple[JpegComponent, ...]
    first_scan_components: int  # components in the first scan; fewer than the frame's means several scans

    @property
    def progressive(self) -> bool:
        return self.marker == _JPEG_PROGRESSIVE


@dataclass(frozen=True)
class JpegScan:
    """One scan: the frame components it codes (indices), its spectral band ``ss``..``se``, successive
    approximation bits ``ah``/``al`` and the length of its entropy-coded data in bytes."""

    components: tuple[int, ...]
    ss: int
    se: int
    ah: int
    al: int
    data_bytes: int


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


def read_declared_image(data: bytes, fmt: ImageFormat) -> DeclaredImage:
    """What the decoder will allocate for ``data``, from its header alone (see :class:`DeclaredImage`).

    Raises UnsupportedImageFormatError (415) for a valid image in a variant OpenCV cannot decode -- 12-bit,
    lossless or arithmetic-coded JPEG; half-float, 32-bit unsigned or 64-bit integer TIFF... -- and
    ImageDecodeError (400) for a header that is truncated or inconsistent.
    """
    if fmt == "jpeg":
        return _jpeg_declared(read_jpeg_frame(data))
    if fmt == "png":
        return _png_declared(data)
    if fmt == "bmp":
        return _bmp_declared(data)
    return _tiff_declared(data)


# --- JPEG -----------------------------------------------------------------------------------------------


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


def read_jpeg_frame(data: bytes) -> JpegFrame:
    """The frame header of a JPEG, and how many components its first scan codes.

    Raises UnsupportedImageFormatError for frames OpenCV's libjpeg-turbo cannot decode (precision other than
    8 bits, lossless, hierarchical or arithmetic coding, 2 or more than 4 components) and ImageDecodeError for
    a frame header that is missing or malformed.
    """
    frame: tuple[int, int, int, int, bytes] | None = None
    for marker, start, end in iter_jpeg_segments(data):
        if marker in _JPEG_SOF_MARKERS:
            if frame is not None:
                raise ImageDecodeError("The JPEG image is corrupt: it has more than one frame header.")
            if end - start < 6:
                raise ImageDecodeError(
                    "The JPEG image has no valid frame header, so its size cannot be read."
                )
            precision, height, width, count = struct.unpack_from(">BHHB", data, start)
            if end - start != 6 + 3 * count:
                raise ImageDecodeError("The JPEG image is corrupt: its frame header has the wrong length.")
            frame = (marker, precision, width, height, data[start + 6 : end])
        elif marker == JPEG_SOS:
            if frame is None:
                break
            scan_components = data[start] if end > start else 0
            return _jpeg_frame(*frame, first_scan_components=scan_components)
    raise ImageDecodeError("The JPEG image has no valid frame header, so its size cannot be read.")


def _jpeg_frame(
    marker: int,
    precision: int,
    width: int,
    height: int,
    table: bytes,
    *,
    first_scan_components: int,
) -> JpegFrame:
    if marker in (0xC3, 0xC7, 0xCB, 0xCF):
        raise UnsupportedImageFormatError(
            "Lossless JPEG is not supported; send a baseline or progressive JPEG, or a PNG or TIFF."
        )
    if marker in (0xC5, 0xC6, 0xCD, 0xCE):
        raise UnsupportedImageFormatError(
            "Hierarchical JPEG is not supported; send a baseline or progressive JPEG, or a PNG or TIFF."
        )
    if marker >= 0xC9:
        # libjpeg-turbo could decode it, but arithmetic coding has no lower bound on the bytes per block, so a
        # few kilobytes can declare (and cost the decoding of) tens of megapixels; no scanner writes it.
        raise UnsupportedImageFormatError(
            "Arithmetic-coded JPEG is not supported; send a Huffman-coded (baseline or progressive) JPEG."
        )
    if precision != 8:
        raise UnsupportedImageFormatError(
            f"{precision}-bit JPEG is not supported; send an 8-bit JPEG, or a 16-bit PNG or TIFF."
        )
    count = len(table) // 3
    if count not in (1, 3, 4):
        raise UnsupportedImageFormatError(
            f"JPEG images with {count} colour components are not supported; send a greyscale or colour image."
        )
    factors = [(table[3 * k + 1] >> 4, table[3 * k + 1] & 0x0F) for k in range(count)]
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in factors):
        raise ImageDecodeError("The JPEG image is corrupt: its frame header has invalid sampling factors.")
    h_max, v_max = max(h for h, _ in factors), max(v for _, v in factors)
    components = tuple(
        JpegComponent(
            ident=table[3 * k],
            h=h,
            v=v,
            # as libjpeg computes them (jdinput.c): the component's own size, rounded up to whole blocks
            width_in_blocks=math.ceil(width * h / (h_max * 8)),
            height_in_blocks=math.ceil(height * v / (v_max * 8)),
        )
        for k, (h, v) in enumerate(factors)
    )
    return JpegFrame(marker, precision, width, height, components, first_scan_components)


def _jpeg_declared(frame: JpegFrame) -> DeclaredImage:
    channels = 1 if len(frame.components) == 1 else 3  # OpenCV converts YCbCr, RGB and CMYK to BGR
    # An EXIF orientation makes OpenCV rotate into a second array while the first lives: that fits in the two
    # arrays the Python binding's copy already counts.
    if frame.progressive or frame.first_scan_components < len(frame.components):
        # Several scans: libjpeg keeps every DCT coefficient of the image (2 bytes each, components padded to
        # whole MCUs) until the last scan has been read.
        working = sum(
            _round_up(c.width_in_blocks, c.h) * _round_up(c.height_in_blocks, c.v) * 64 * 2
            for c in frame.components
        )
    else:
        # One scan: a few rows of MCUs per component (measured: 2.2 MiB at 65000 pixels wide, 3 components)
        working = 64 * _round_up(frame.width, 16) * len(frame.components)
    return DeclaredImage(frame.width, frame.height, channels, 1, working)


def iter_jpeg_scans(data: bytes, frame: JpegFrame) -> Iterator[JpegScan]:
    """Every scan of a JPEG, in order, walking all its markers up to the end-of-image marker.

    Raises ImageDecodeError when the codestream is truncated (a segment runs past the end, or there is no
    end-of-image marker), when a scan header is malformed, or past MAX_JPEG_SEGMENTS / MAX_JPEG_SCANS.
    """
    index = {c.ident: k for k, c in enumerate(frame.components)}
    size = len(data)
    i = 2  # after SOI
    segments = scans = 0
    while True:
        found = _JPEG_NEXT_MARKER.search(data, i)
        if found is None:
            raise ImageDecodeError("The JPEG image is truncated: it has no end-of-image marker.")
        marker = data[found.end() - 1]
        i = found.end()
        if marker == _JPEG_EOI:
            return
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageDecodeError(
                f"The JPEG image has more than {MAX_JPEG_SEGMENTS} marker segments; it is refused as corrupt."
            )
        if i + 2 > size:
            raise ImageDecodeError("The JPEG image is truncated: it ends inside a marker segment.")
        (length,) = struct.unpack_from(">H", data, i)
        start, end = i + 2, i + length
        if length < 2 or end > size:
            raise ImageDecodeError("The JPEG image is truncated: it ends inside a marker segment.")
        i = end
        if marker != JPEG_SOS:
            continue
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise ImageDecodeError(
                f"The JPEG image has more than {MAX_JPEG_SCANS} scans; no encoder writes so many, "
                "so it is refused."
            )
        count = data[start] if end > start else 0
        if not 1 <= count <= 4 or end - start != 4 + 2 * count:
            raise ImageDecodeError("The JPEG image is corrupt: a scan header has the wrong length.")
        idents = [data[start + 1 + 2 * k] for k in range(count)]
        if any(ident not in index for ident in idents) or len(set(idents)) != count:
            raise ImageDecodeError("The JPEG image is corrupt: a scan names a component the frame lacks.")
        ss, se, approximation = data[end - 3], data[end - 2], data[end - 1]
        following = _JPEG_NEXT_MARKER.search(data, end)
        data_end = following.start() if following is not None else size
        yield JpegScan(
            tuple(index[ident] for ident in idents),
            ss,
            se,
            approximation >> 4,
            approximation & 0x0F,
            data_end - end,
        )
        i = data_end


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


# --- PNG ------------------------------------------------------------------------------------------------


def _png_dimensions(data: bytes) -> tuple[int, int]:
    # signature (8) | IHDR length (4) | b"IHDR" (4) | width (4) | height (4) | ...
    if len(data) < len(PNG_SIGNATURE) + 16 or data[12:16] != b"IHDR":
        raise ImageDecodeError("The PNG image is truncated or corrupt: it has no IHDR header chunk.")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _png_declared(data: bytes) -> DeclaredImage:
    width, height = _png_dimensions(data)
    if len(data) < 29:
        raise ImageDecodeError("The PNG image is truncated or corrupt: its IHDR header chunk is incomplete.")
    depth, colour_type = data[24], data[25]
    if depth not in _PNG_BIT_DEPTHS.get(colour_type, ()):
        raise ImageDecodeError(
            "The PNG image is corrupt: its header declares an invalid bit depth or colour type."
        )
    # OpenCV (IMREAD_UNCHANGED) returns grey as 1 channel, RGB and palette as 3, and anything with alpha as 4;
    # a tRNS chunk (transparency of grey, RGB or palette images) may add the alpha channel, so assume it.
    channels = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}[colour_type]
    if colour_type in (0, 2, 3) and b"tRNS" in data[33 : _png_first_idat(data)]:
        channels = 4
    row_bytes = math.ceil(width * _PNG_SAMPLES[colour_type] * depth / 8) + 1
    # libpng keeps the current and the previous (filter) row, and OpenCV one row of its own
    return DeclaredImage(width, height, channels, 2 if depth == 16 else 1, 3 * row_bytes)


def _png_first_idat(data: bytes) -> int:
    found = data.find(b"IDAT", 33)
    return found if found >= 0 else len(data)


# --- BMP ------------------------------------------------------------------------------------------------


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


def _bmp_declared(data: bytes) -> DeclaredImage:
    width, height = _bmp_dimensions(data)
    (dib_size,) = struct.unpack_from("<I", data, 14)
    offset = 24 if dib_size == 12 else 28  # the bit count follows the planes field
    if len(data) < offset + 2:
        raise ImageDecodeError("The BMP image is truncated: its header is incomplete.")
    (bit_count,) = struct.unpack_from("<H", data, offset)
    if bit_count not in _BMP_BIT_COUNTS:
        raise UnsupportedImageFormatError(
            f"BMP images with {bit_count} bits per pixel are not supported; send an 8-, 24- or 32-bit BMP."
        )
    # OpenCV returns palette and 16/24-bit images as 3 channels (grey palettes as 1), 32-bit ones as 3 or 4
    channels = 4 if bit_count == 32 else 3
    return DeclaredImage(width, height, channels, 1, 2 * 4 * width + 1024)  # a source row, a palette


# --- TIFF -----------------------------------------------------------------------------------------------


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


def _tiff_first_page(data: bytes) -> dict[int, tuple[int, ...]]:
    """The tags of the first page that matter for decoding, and a bounded walk of the page chain.

    The chain is walked as libtiff walks it (entry count, then the offset of the next page), refusing a chain
    that loops, points outside the file or holds more than MAX_TIFF_PAGES pages.
    """
    order = "<" if data[:2] == b"II" else ">"
    size = len(data)
    (offset,) = struct.unpack_from(order + "I", data, 4)
    tags: dict[int, tuple[int, ...]] = {}
    seen: set[int] = set()
    while offset != 0:
        if len(seen) >= MAX_TIFF_PAGES:
            raise UnsupportedImageFormatError(
                f"TIFF images with more than {MAX_TIFF_PAGES} pages are not supported; send one slice."
            )
        if offset in seen or offset + 2 > size:
            raise ImageDecodeError("The TIFF image is corrupt: its chain of pages loops or leaves the file.")
        (count,) = struct.unpack_from(order + "H", data, offset)
        if offset + 2 + 12 * count + 4 > size:
            raise ImageDecodeError(
                "The TIFF image is truncated: a page directory runs past the end of the file."
            )
        if not seen:
            for k in range(count):
                entry = offset + 2 + 12 * k
                tag, kind, n = struct.unpack_from(order + "HHI", data, entry)
                if tag in _TIFF_TAGS_READ:
                    tags[tag] = _tiff_values(data, order, kind, n, entry + 8)
        seen.add(offset)
        (offset,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * count)
    return tags


def _tiff_values(data: bytes, order: str, kind: int, count: int, field: int) -> tuple[int, ...]:
    """The integer values of one tag (SHORT or LONG; at most 4 read), in the entry or at its offset."""
    if kind not in (3, 4) or count == 0:
        raise ImageDecodeError("The TIFF image is corrupt: a size or format tag has the wrong type.")
    code, width = ("H", 2) if kind == 3 else ("I", 4)
    where = field
    if width * count > 4:
        (where,) = struct.unpack_from(order + "I", data, field)
    wanted = min(count, 4)  # per-sample tags: OpenCV supports at most 4 samples, so more are refused anyway
    if where + width * wanted > len(data):
        raise ImageDecodeError("The TIFF image is truncated: a tag's values lie past the end of the file.")
    return struct.unpack_from(order + code * wanted, data, where)


def _tiff_declared(data: bytes) -> DeclaredImage:
    """What OpenCV 4.x's TIFF reader (grfmt_tiff.cpp) will allocate for the first page, or a 415/400.

    Mirrors its readHeader: the output depth follows BitsPerSample and SampleFormat, output channels follow
    SamplesPerPixel (1 for greyscale, 3 for palette), and 8-bit output goes through libtiff's RGBA interface
    with a 4-byte-per-pixel buffer the size of one strip or tile.
    """
    width, height = _tiff_dimensions(data)
    tags = _tiff_first_page(data)

    def tag(number: int, default: int) -> int:
        return tags[number][0] if number in tags else default

    samples = tag(_TIFF_SAMPLES_PER_PIXEL, 1)
    bits = tags.get(_TIFF_BITS_PER_SAMPLE, (1,))
    formats = tags.get(_TIFF_SAMPLE_FORMAT, (_TIFF_UINT,))
    photometric = tag(_TIFF_PHOTOMETRIC, 1)
    if not 1 <= samples <= 4:
        raise UnsupportedImageFormatError(
            "TIFF images with more than 4 samples per pixel are not supported; send grey, RGB or RGBA."
        )
    if len(set(bits)) > 1 or len(set(formats)) > 1:
        raise UnsupportedImageFormatError(
            "TIFF images whose samples differ in bit depth or format are not supported."
        )
    compression = tag(_TIFF_COMPRESSION, 1)
    if compression not in _TIFF_COMPRESSIONS:
        raise UnsupportedImageFormatError(
            "The TIFF image uses a compression scheme that is not supported; send an uncompressed, LZW, "
            "Deflate, PackBits or JPEG-compressed TIFF."
        )
    if photometric not in _TIFF_PHOTOMETRICS:
        raise UnsupportedImageFormatError(
            "The TIFF image's colour space (photometric interpretation) is not supported; "
            "send a grey, RGB or palette TIFF."
        )
    grey = photometric in _TIFF_GREY
    depth, sample_format = bits[0], formats[0]
    if depth > 8 and (photometric > 2 or samples not in (1, 3, 4)):
        # OpenCV reads these through libtiff's 8-bit RGBA interface, which takes 16-bit integers at most
        if depth != 16 or sample_format not in (_TIFF_UINT, _TIFF_INT):
            raise UnsupportedImageFormatError(
                "TIFF images with two samples per pixel are only supported as 8- or 16-bit grey with alpha."
                if samples == 2
                else "TIFF images in a palette, CMYK, YCbCr or Lab colour space are only supported with "
                "8- or 16-bit integer samples."
            )
        depth = 8
    sample_bytes = _tiff_sample_bytes(depth, sample_format, photometric)
    channels = 1 if grey and sample_bytes <= 2 else 3 if photometric == _TIFF_PALETTE else samples
    if channels == 2:
        raise UnsupportedImageFormatError(
            "TIFF images with two samples per pixel are only supported as 8- or 16-bit grey with alpha."
        )

    if _TIFF_TILE_WIDTH in tags:
        tile_width, tile_height = tag(_TIFF_TILE_WIDTH, width), tag(_TIFF_TILE_LENGTH, height)
    else:
        tile_width, tile_height = width, min(tag(_TIFF_ROWS_PER_STRIP, height) or height, height)
    tile_pixels = max(tile_width, 1) * max(tile_height, 1)
    decoded_tile = math.ceil(tile_pixels * samples * bits[0] / 8)  # libtiff's decoded strip or tile
    if sample_bytes == 1:
        working = 4 * tile_pixels + decoded_tile  # the RGBA buffer OpenCV hands to TIFFReadRGBAStrip/Tile
    else:
        working = decoded_tile + (tile_pixels * samples * 2 if depth < 16 else 0)  # + 10/12/14-bit unpacking
    if compression != 1:
        working += len(data)  # a compressed strip may be read whole before it is decoded: at most the file
    if tag(_TIFF_ORIENTATION, 1) in (5, 6, 7, 8):
        # orientations 5-8 transpose (then flip) into new arrays while the strip buffer still lives: measured
        # 3.6 x the array for a 16-bit single-strip page, so two more arrays are counted
        working += 2 * width * height * channels * sample_bytes
    return DeclaredImage(width, height, channels, sample_bytes, working)


def _tiff_sample_bytes(depth: int, sample_format: int, photometric: int) -> int:
    """Bytes per sample of OpenCV's output for a TIFF of ``depth`` bits, or 415 for what it cannot read."""
    integer = sample_format in (_TIFF_UINT, _TIFF_INT)
    if depth == 16 and sample_format == _TIFF_FLOAT:
        raise UnsupportedImageFormatError(
            "16-bit floating-point (half-precision) TIFF is not supported; "
            "send 32- or 64-bit floating-point, or 8- or 16-bit integer samples."
        )
    if depth in (1, 8, 10, 12, 14, 16) and integer:
        return 1 if depth <= 8 else 2
    if depth == 4 and integer and photometric == _TIFF_PALETTE:
        return 1
    if depth == 32 and sample_format in (_TIFF_FLOAT, _TIFF_INT):
        return 4
    if depth == 64 and sample_format == _TIFF_FLOAT:
        return 8
    kind = {_TIFF_UINT: "unsigned integer", _TIFF_INT: "signed integer", _TIFF_FLOAT: "floating-point"}
    name = kind.get(sample_format, "complex or untyped" if sample_format in (4, 5, 6) else "unknown-format")
    raise UnsupportedImageFormatError(
        f"TIFF images with {depth}-bit {name} samples are not supported; "
        "send 8- or 16-bit integer, or 32- or 64-bit floating-point samples."
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
