"""decode_image against hostile JPEG, PNG, BMP and TIFF files, each generated here (numpy + cv2.imencode, then
byte patching; TIFFs OpenCV cannot write are written by hand).

What is checked: bytes per pixel are bounded by a memory budget estimated from the header (413), measured as
peak RSS in a child process; JPEG integrity is strict (a scan cut short, a lost restart marker, a frame header
that claims more pixels than its data can hold: 400, with libjpeg's warnings kept off stderr); valid files in
variants OpenCV cannot decode get 415 naming the variant, decided by the header; small hostile files are
refused (or decoded) fast; and no sentence echoes what the upload carried.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from service.errors import IMAGE_ERROR_TYPES, from_image_error
from service.preprocessing import (
    DEFAULT_MAX_DECODE_BYTES,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    decode_image,
)
from service.preprocessing.decode import estimate_decode_bytes
from service.preprocessing.headers import MAX_JPEG_SCANS, MAX_TIFF_PAGES, read_declared_image

SARTAJ_GLIOMA = "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg"  # baseline, 4:2:0, 512 x 512
PROGRESSIVE = "br35h/yes/y1298.jpg"
MIB = 2**20
RSS_SLACK = 16 * MIB  # the decoder's fixed state and allocator rounding, on top of the estimate


def _assert_refusal(error: ImageError, kind: type[ImageError], sentence: str) -> None:
    """Exactly ``kind``, with a short sentence that contains ``sentence`` and echoes no bytes."""
    assert type(error) is kind
    message = error.message
    assert sentence in message, message
    assert re.fullmatch(r"[A-Z0-9][^\n]{10,250}[.]", message), message
    assert "\\x" not in message and "b'" not in message
    assert from_image_error(error).to_body() == {"error": message, "error_type": IMAGE_ERROR_TYPES[kind]}


def _refuse(data: bytes, kind: type[ImageError], sentence: str, **limits: int) -> ImageError:
    with pytest.raises(kind) as caught:
        decode_image(data, **limits)
    _assert_refusal(caught.value, kind, sentence)
    return caught.value


def _forbid_imdecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test fail if the refusal needed a decode: it must come from the header."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("cv2.imdecode must not run: the header alone decides this refusal")

    monkeypatch.setattr(cv2, "imdecode", fail)


def _encode(image: npt.NDArray[np.generic], ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    assert ok
    return buf.tobytes()


def _sof(data: bytes) -> int:
    """Offset of the first SOFn marker of a JPEG that cv2 or a scanner wrote."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        found = data.find(marker)
        if found >= 0:
            return found
    raise AssertionError("no frame header")


def _with_frame(
    data: bytes, *, marker: int | None = None, precision: int | None = None, size: int = 0
) -> bytes:
    """The JPEG with its frame header patched: SOFn kind, sample precision, or width = height = ``size``."""
    patched = bytearray(data)
    at = _sof(data)
    if marker is not None:
        patched[at + 1] = marker
    if precision is not None:
        patched[at + 4] = precision
    if size:
        struct.pack_into(">HH", patched, at + 5, size, size)
    return bytes(patched)


# --- hand-made TIFF -----------------------------------------------------------------------------------------


def _ifd(entries: dict[int, tuple[int, list[int]]], at: int, next_ifd: int) -> bytes:
    """A little-endian IFD written at offset ``at``: ``{tag: (type, values)}``, SHORT (3) or LONG (4);
    values longer than 4 bytes follow the IFD."""
    size = 2 + 12 * len(entries) + 4
    body, extra = struct.pack("<H", len(entries)), b""
    for tag in sorted(entries):
        kind, values = entries[tag]
        payload = struct.pack("<" + ("H" if kind == 3 else "I") * len(values), *values)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", at + size + len(extra))
            extra += payload + b"\x00" * (len(payload) % 2)
        body += struct.pack("<HHI", tag, kind, len(values)) + field
    return body + struct.pack("<I", next_ifd) + extra


def _tiff(
    width: int,
    height: int,
    pixels: bytes,
    *,
    samples: int = 1,
    bits: int = 8,
    sample_format: int = 1,
    photometric: int | None = None,
    compression: int = 1,
    tile: int = 0,
    pages: int = 1,
    loop: bool = False,
    extra: dict[int, tuple[int, list[int]]] | None = None,
) -> bytes:
    """A TIFF whose first page is ``pixels`` (one strip, or -- with ``tile`` -- the same bytes for every
    tile), followed by ``pages - 1`` pages without pixels; ``loop`` points the last page back at the first."""
    if photometric is None:
        photometric = 1 if samples <= 2 else 2
    entries: dict[int, tuple[int, list[int]]] = {
        256: (4, [width]),
        257: (4, [height]),
        258: (3, [bits] * samples),
        259: (3, [compression]),
        262: (3, [photometric]),
        277: (3, [samples]),
        284: (3, [1]),
        339: (3, [sample_format] * samples),
    }
    if samples in (2, 4):
        entries[338] = (3, [2])  # the last sample is unassociated alpha
    if tile:
        count = math.ceil(width / tile) * math.ceil(height / tile)
        entries |= {
            322: (3, [tile]),
            323: (3, [tile]),
            324: (4, [8] * count),
            325: (4, [len(pixels)] * count),
        }
    else:
        entries |= {273: (4, [8]), 278: (4, [height]), 279: (4, [len(pixels)])}
    entries |= extra or {}
    first = 8 + len(pixels) + len(pixels) % 2
    body = b"II*\x00" + struct.pack("<I", first) + pixels + b"\x00" * (len(pixels) % 2)
    following = first + len(_ifd(entries, first, 0))
    body += _ifd(entries, first, following if pages > 1 else 0)
    # the other pages declare 60000 x 60000 float64 samples and hold none: OpenCV never reads them
    page = {256: (4, [60000]), 257: (4, [60000]), 258: (3, [64]), 339: (3, [3])}
    size = len(_ifd(page, 0, 0))
    for number in range(1, pages):
        at = len(body)
        last = number == pages - 1
        body += _ifd(page, at, (first if loop else 0) if last else at + size)
    return body


def _samples(shape: tuple[int, ...], dtype: str) -> bytes:
    rng = np.random.default_rng(7)
    return (rng.random(shape) * 100).astype(dtype).tobytes()


# --- 1. bytes per pixel: the memory budget ------------------------------------------------------------------


def test_float64_rgba_tiff_over_the_budget_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rgba = np.zeros((1024, 1024, 4), np.float64)
    rgba[..., 3] = 1.0
    data = _tiff(
        1024, 1024, zlib.compress(rgba.tobytes()), samples=4, bits=64, sample_format=3, compression=8
    )
    assert len(data) < 200_000  # a small file: 32 MiB of float64 samples compress to almost nothing
    declared = read_declared_image(data, "tiff")
    assert (declared.channels, declared.sample_bytes) == (4, 8)
    assert estimate_decode_bytes(declared) >= 2 * 1024 * 1024 * 32  # OpenCV's array and the binding's copy
    _forbid_imdecode(monkeypatch)
    error = _refuse(data, ImageTooLargeError, "more than the limit of 32 MiB", max_bytes=32 * MIB)
    assert "4 x 64-bit samples" in error.message and from_image_error(error).status_code == 413


def test_the_budget_counts_bytes_per_sample_not_pixels() -> None:
    # the same 512 x 512 pixels: 8-bit grey fits 4 MiB, float64 RGBA does not
    grey = _encode(np.zeros((512, 512), np.uint8), ".png")
    assert decode_image(grey, max_bytes=4 * MIB).shape == (512, 512, 3)
    deep = _tiff(512, 512, _samples((512, 512, 4), "<f8"), samples=4, bits=64, sample_format=3)
    _refuse(deep, ImageTooLargeError, "4 x 64-bit samples", max_bytes=4 * MIB)
    assert decode_image(deep, max_bytes=32 * MIB).shape == (512, 512, 3)


def test_tiled_tiff_bomb_is_refused_by_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    # every tile points at the same 2 KB of Deflate: 2900 x 2900 float64 RGBA (257 MiB) in a 6 KB file
    tile = zlib.compress(bytes(256 * 256 * 4 * 8), 9)
    data = _tiff(2900, 2900, tile, samples=4, bits=64, sample_format=3, compression=8, tile=256)
    assert len(data) < 10_000
    _forbid_imdecode(monkeypatch)
    _refuse(data, ImageTooLargeError, "more than the limit of 256 MiB")


def test_tiff_strip_buffers_count_against_the_budget() -> None:
    # 1-bit TIFF: OpenCV reads 8-bit output through a 4-byte-per-pixel RGBA buffer as large as the strip
    side = 2048
    bits = np.packbits(np.zeros((side, side), np.uint8), axis=1).tobytes()
    data = _tiff(side, side, zlib.compress(bits), bits=1, compression=8)
    declared = read_declared_image(data, "tiff")
    assert declared.working_bytes >= 4 * side * side
    assert estimate_decode_bytes(declared) > 5 * side * side
    _refuse(data, ImageTooLargeError, "more than the limit", max_bytes=5 * side * side)
    assert decode_image(data).shape == (side, side, 3)


def test_png_bit_depth_and_colour_type_count_against_the_budget() -> None:
    rgba16 = _encode(np.zeros((600, 600, 4), np.uint16), ".png")
    declared = read_declared_image(rgba16, "png")
    assert (declared.channels, declared.sample_bytes) == (4, 2)
    _refuse(rgba16, ImageTooLargeError, "4 x 16-bit samples", max_bytes=4 * MIB)
    assert decode_image(rgba16, max_bytes=16 * MIB).shape == (600, 600, 3)


def test_progressive_jpeg_coefficients_count_against_the_budget() -> None:
    # a progressive (or multi-scan) JPEG keeps every coefficient, 2 bytes per sample, until its last scan
    image = np.zeros((1024, 1024, 3), np.uint8)
    params = [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    baseline = read_declared_image(_encode(image, ".jpg", params), "jpeg")
    progressive = read_declared_image(
        _encode(image, ".jpg", [*params, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), "jpeg"
    )
    assert progressive.working_bytes == 2 * 1024 * 1024 * 3 > 10 * baseline.working_bytes
    assert estimate_decode_bytes(progressive) > estimate_decode_bytes(baseline)


def test_bmp_bit_count_decides_the_channels() -> None:
    data = bytearray(_encode(np.zeros((16, 16, 3), np.uint8), ".bmp"))
    assert read_declared_image(bytes(data), "bmp").channels == 3
    struct.pack_into("<H", data, 28, 64)  # a 64-bit BMP: valid, but OpenCV cannot read it
    _refuse(bytes(data), UnsupportedImageFormatError, "64 bits per pixel are not supported")


def test_many_page_tiff_is_refused_and_only_the_first_page_counts() -> None:
    first = _samples((64, 64), "u1")
    # OpenCV's imdecode reads the first page only: a huge second page costs nothing
    two = _tiff(64, 64, first, pages=2)
    assert np.asarray(cv2.imdecode(np.frombuffer(two, np.uint8), cv2.IMREAD_UNCHANGED)).shape == (64, 64)
    assert decode_image(two).shape == (64, 64, 3)
    # ... but libtiff walks the whole chain to count pages (a million cost +145 MiB), so the chain is bounded
    _refuse(
        _tiff(64, 64, first, pages=MAX_TIFF_PAGES + 1), UnsupportedImageFormatError, "more than 1024 pages"
    )
    _refuse(_tiff(64, 64, first, pages=3, loop=True), ImageDecodeError, "chain of pages loops")


# --- peak RSS in a child process ----------------------------------------------------------------------------

# The child reads its own peak from /proc/self/status (VmHWM, the high-water mark of its address space):
# ru_maxrss would do elsewhere, but on Linux it carries the parent's peak across fork and exec, so a child of
# a large pytest process would report no growth at all.
_CHILD = """
import json, resource, sys
from service.preprocessing import ImageError, decode_image
from service.preprocessing.decode import estimate_decode_bytes
from service.preprocessing.formats import sniff_format
from service.preprocessing.headers import read_declared_image

def peak():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

data = open(sys.argv[1], "rb").read()
budget = int(sys.argv[2])
estimate = estimate_decode_bytes(read_declared_image(data, sniff_format(data)))
before = peak()
try:
    result = list(decode_image(data, max_bytes=budget).shape)
except ImageError as error:
    result = type(error).__name__
print(json.dumps({"growth": peak() - before, "estimate": estimate, "result": result}))
"""


def _peak_rss(tmp_path: Path, data: bytes, budget: int = DEFAULT_MAX_DECODE_BYTES) -> dict[str, object]:
    """Decode ``data`` in a fresh interpreter: peak RSS growth over the call, the estimate, the outcome."""
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(budget)],
        cwd=tmp_path,  # not the working directory's ``service``: the one next to this test
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    outcome: dict[str, object] = json.loads(done.stdout)
    return outcome


def test_peak_rss_of_a_refused_bomb_stays_flat(tmp_path: Path) -> None:
    # the 2900 x 2900 float64 RGBA tiled bomb: before, +850 MiB of RSS for a 6 KB upload
    tile = zlib.compress(bytes(256 * 256 * 4 * 8), 9)
    outcome = _peak_rss(
        tmp_path, _tiff(2900, 2900, tile, samples=4, bits=64, sample_format=3, compression=8, tile=256)
    )
    assert outcome["result"] == "ImageTooLargeError"
    assert int(str(outcome["growth"])) < 8 * MIB


@pytest.mark.parametrize(
    "case",
    ["float64-rgba-tiff", "uint16-rgba-png", "progressive-444-jpeg", "float32-grey-tiff-rotated"],
)
def test_peak_rss_of_an_accepted_image_stays_within_its_estimate(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(1)
    if case == "float64-rgba-tiff":  # 1200 x 1200 x 4 float64: 44 MiB decoded, windowed in chunks
        rgba = rng.random((1200, 1200, 4))
        data = _encode(
            rgba, ".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE]
        )
    elif case == "uint16-rgba-png":  # composited onto black in chunks: before, 4 x the decoded array
        data = _encode(rng.integers(0, 65535, (1500, 1500, 4), dtype=np.uint16), ".png")
    elif case == "progressive-444-jpeg":  # libjpeg's coefficient buffer: 2 bytes per sample
        image = rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
        params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR]
        data = _encode(image, ".jpg", [*params, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    else:  # one strip transposed by the Orientation tag (6): the strip, the array and its transposition
        pixels = _samples((1000, 1500), "<f4")
        data = _tiff(1500, 1000, pixels, bits=32, sample_format=3, extra={274: (3, [6])})
    outcome = _peak_rss(tmp_path, data)
    assert isinstance(outcome["result"], list), outcome
    growth, estimate = int(str(outcome["growth"])), int(str(outcome["estimate"]))
    assert growth <= estimate + RSS_SLACK, (growth / MIB, estimate / MIB)
    assert growth <= DEFAULT_MAX_DECODE_BYTES + 100 * MIB


# --- 2. strict JPEG integrity -------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_jpeg_cut_short_with_end_marker_reappended_is_refused(
    data_root: Path, fraction: float, capfd: pytest.CaptureFixture[str]
) -> None:
    data = (data_root / SARTAJ_GLIOMA).read_bytes()
    cut = data[: int(len(data) * fraction)] + b"\xff\xd9"
    _refuse(cut, ImageDecodeError, "its decoder reported damaged image data")
    assert capfd.readouterr().err == ""  # libjpeg's "Corrupt JPEG data: premature end..." stayed off stderr


@pytest.mark.realdata
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_progressive_jpeg_cut_short_is_refused(
    data_root: Path, fraction: float, capfd: pytest.CaptureFixture[str]
) -> None:
    data = (data_root / PROGRESSIVE).read_bytes()
    assert decode_image(data).shape == (380, 310, 3)  # progressive JPEGs still decode
    # cut between scans, libjpeg shows a blurred image without a word; inside one, it warns
    error = _refuse(data[: int(len(data) * fraction)] + b"\xff\xd9", ImageDecodeError, "truncated")
    assert "progressive scans end" in error.message or "decoder reported" in error.message
    assert capfd.readouterr().err == ""


def test_progressive_jpegs_decode_like_opencv() -> None:
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), (9, 9), 3)
    for source in (image, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)):
        data = _encode(source, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
        expected = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB))
        np.testing.assert_array_equal(decode_image(data), expected)


def test_jpeg_with_a_lost_restart_marker_is_refused(capfd: pytest.CaptureFixture[str]) -> None:
    image = cv2.GaussianBlur(np.random.default_rng(4).integers(0, 255, (64, 64), dtype=np.uint8), (5, 5), 2)
    data = bytearray(_encode(image, ".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]))
    rst = data.index(b"\xff\xd3", data.index(b"\xff\xda"))
    data[rst + 1] = 0xD6  # RST6 where RST3 belongs: libjpeg resynchronises and fills the gap
    _refuse(bytes(data), ImageDecodeError, "its decoder reported damaged image data")
    assert capfd.readouterr().err == ""


def test_a_harmless_looking_first_warning_is_not_waved_through() -> None:
    # libjpeg prints only the first warning of an image, so "unknown JFIF revision" could hide a cut scan
    data = bytearray(_encode(np.zeros((64, 64), np.uint8), ".jpg"))
    data[data.index(b"JFIF\x00") + 5] = 3  # JFIF 3.01
    _refuse(bytes(data), ImageDecodeError, "its decoder reported damaged image data")


@pytest.mark.realdata
def test_jpeg_claiming_7000_x_7000_is_refused_without_decoding(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the 21 KB colour slice claiming 7000 x 7000: before, 200 after 2.6 s and +700 MiB
    forged = _with_frame((data_root / SARTAJ_GLIOMA).read_bytes(), size=7000)
    _forbid_imdecode(monkeypatch)
    _refuse(forged, ImageTooLargeError, "more than the limit of 256 MiB")


@pytest.mark.realdata
def test_jpeg_whose_data_is_far_too_short_for_its_size_is_refused(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grey = cv2.cvtColor(cv2.imread(str(data_root / SARTAJ_GLIOMA)), cv2.COLOR_BGR2GRAY)
    forged = _with_frame(_encode(grey, ".jpg"), size=6000)  # 36 Mpx of grey fit the budget, not the data
    _forbid_imdecode(monkeypatch)
    started = time.perf_counter()
    _refuse(forged, ImageDecodeError, "far too short for its declared size of 6000 x 6000 pixels")
    assert time.perf_counter() - started < 0.5


def test_jpeg_with_too_many_scans_or_segments_is_refused() -> None:
    data = _encode(np.zeros((64, 64), np.uint8), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    sos = data.index(b"\xff\xda")
    last_scan = data.rindex(b"\xff\xda")
    eoi = data.rindex(b"\xff\xd9")
    many_scans = data[:eoi] + data[last_scan:eoi] * MAX_JPEG_SCANS + data[eoi:]
    _refuse(many_scans, ImageDecodeError, f"more than {MAX_JPEG_SCANS} scans")
    comment = b"\xff\xfe\x00\x02"  # an empty COM segment
    many_segments = data[:sos] + comment * 5000 + data[sos:]
    _refuse(many_segments, ImageDecodeError, "more than 4096 marker segments")


def test_jpeg_progression_must_be_consistent_and_complete() -> None:
    data = _encode(np.zeros((64, 64), np.uint8), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    scans = [m.start() for m in re.finditer(b"\xff\xda", data)]
    eoi = data.rindex(b"\xff\xd9")
    # the first scan (DC) sent twice
    twice = data[: scans[1]] + data[scans[0] : scans[1]] + data[scans[1] :]
    _refuse(twice, ImageDecodeError, "progressive scans are inconsistent")
    # the last scan (a refinement) left out: libjpeg would show it without a warning
    without_last = data[: data.rindex(b"\xff\xc4", 0, scans[-1])] + data[eoi:]
    _refuse(without_last, ImageDecodeError, "progressive scans end before the image is complete")


# --- 3. valid but unsupported variants: 415 by the header ---------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "sentence"),
    [
        (
            {"marker": 0xC1, "precision": 12},
            "12-bit JPEG is not supported; send an 8-bit JPEG, or a 16-bit PNG or TIFF.",
        ),
        ({"marker": 0xC3}, "Lossless JPEG is not supported"),
        ({"marker": 0xC9}, "Arithmetic-coded JPEG is not supported"),
        ({"marker": 0xC5}, "Hierarchical JPEG is not supported"),
    ],
    ids=["12-bit", "lossless", "arithmetic", "hierarchical"],
)
def test_jpeg_variants_opencv_cannot_decode_get_415(
    patch: dict[str, int], sentence: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _with_frame(_encode(np.zeros((64, 64), np.uint8), ".jpg"), **patch)
    _forbid_imdecode(monkeypatch)
    error = _refuse(data, UnsupportedImageFormatError, sentence)
    assert from_image_error(error).status_code == 415


@pytest.mark.parametrize(
    ("bits", "sample_format", "samples", "sentence"),
    [
        (16, 3, 1, "16-bit floating-point (half-precision) TIFF is not supported"),
        (32, 1, 1, "TIFF images with 32-bit unsigned integer samples are not supported"),
        (64, 2, 1, "TIFF images with 64-bit signed integer samples are not supported"),
        (64, 6, 1, "TIFF images with 64-bit complex or untyped samples are not supported"),
        (2, 1, 1, "TIFF images with 2-bit unsigned integer samples are not supported"),
        (32, 3, 2, "two samples per pixel are only supported as 8- or 16-bit grey with alpha"),
        (8, 1, 5, "more than 4 samples per pixel are not supported"),
    ],
    ids=["float16", "uint32", "int64", "complex", "2-bit", "float32-grey-alpha", "5-samples"],
)
def test_tiff_variants_opencv_cannot_decode_get_415(
    bits: int, sample_format: int, samples: int, sentence: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = bytes(32 * 32 * samples * bits // 8)
    data = _tiff(32, 32, pixels, samples=samples, bits=bits, sample_format=sample_format)
    # before: OpenCV failed on each of them, answered as a corrupt file (400)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None
    _forbid_imdecode(monkeypatch)
    _refuse(data, UnsupportedImageFormatError, sentence)


def test_tiff_compression_outside_the_list_gets_415(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tiff(32, 32, bytes(1024), compression=34712)  # JPEG 2000 in TIFF
    _forbid_imdecode(monkeypatch)
    _refuse(data, UnsupportedImageFormatError, "compression scheme that is not supported")


@pytest.mark.parametrize(
    ("dtype", "samples"),
    [(d, s) for d in ("u1", "i1", "<u2", "<i2", "<i4", "<f4", "<f8") for s in (1, 3, 4)] + [("<u2", 2)],
)
def test_tiff_variants_opencv_decodes_are_accepted(dtype: str, samples: int) -> None:
    shape = (24, 40) if samples == 1 else (24, 40, samples)
    kind = np.dtype(dtype)
    sample_format = 3 if kind.kind == "f" else 2 if kind.kind == "i" else 1
    data = _tiff(
        40, 24, _samples(shape, dtype), samples=samples, bits=8 * kind.itemsize, sample_format=sample_format
    )
    declared = read_declared_image(data, "tiff")
    raw = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    assert raw.nbytes <= declared.array_bytes
    assert decode_image(data).shape == (24, 40, 3)


# --- 4. time: small hostile files are answered fast ---------------------------------------------------------


def test_small_hostile_files_are_answered_within_a_second() -> None:
    zero_tile = zlib.compress(bytes(256 * 256 * 4 * 8), 9)
    grey = _encode(np.zeros((64, 64), np.uint8), ".jpg")
    refused = [
        _tiff(2900, 2900, zero_tile, samples=4, bits=64, sample_format=3, compression=8, tile=256),
        _with_frame(grey, size=7000),
        _tiff(64, 64, bytes(4096), pages=MAX_TIFF_PAGES + 1),
        grey[: grey.index(b"\xff\xda")] + b"\xff\xfe\x00\x02" * 20000 + grey[grey.index(b"\xff\xda") :],
    ]
    for data in refused:
        started = time.perf_counter()
        with pytest.raises(ImageError):
            decode_image(data)
        assert time.perf_counter() - started < 1.0
    # a 47 KB PNG of 7000 x 7000 black pixels is valid and within the budget: decoded, not refused
    png = _encode(np.zeros((7000, 7000), np.uint8), ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert len(png) < 100_000
    started = time.perf_counter()
    assert decode_image(png).shape == (7000, 7000, 3)
    assert time.perf_counter() - started < 3.0  # 0.4 s measured; slack for a loaded machine


# --- 5. sentences echo nothing; stderr keeps what others wrote ----------------------------------------------


def test_png_chunk_names_are_not_echoed() -> None:
    def chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
        value = zlib.crc32(kind + payload) if crc is None else crc
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", value)

    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"evIl", b"payload", crc=0) + chunk(b"IEND", b"")
    )
    error = _refuse(data, ImageDecodeError, "the checksum of a chunk is wrong")
    assert "evIl" not in error.message


def test_other_stderr_output_during_a_decode_is_kept(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    real = cv2.imdecode

    def noisy(buf: npt.NDArray[np.uint8], flags: int) -> object:
        os.write(2, b"a line another thread wrote\n")
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", noisy)
    assert decode_image(_encode(np.zeros((16, 16, 3), np.uint8), ".png")).shape == (16, 16, 3)
    assert capfd.readouterr().err == "a line another thread wrote\n"


def test_png_decoder_errors_stay_off_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    # valid chunks and CRCs around a zlib stream that ends early: libpng prints "Not enough image data"
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    rows = zlib.compress(bytes(17 * 16))[:-30]
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    _refuse(data, ImageDecodeError, "could not be decoded")
    assert capfd.readouterr().err == ""


# --- no exception but ImageError, whatever the bytes --------------------------------------------------------


def test_mutated_files_raise_only_image_errors() -> None:
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), (5, 5), 2)
    seeds = [
        _encode(image, ".jpg"),
        _encode(image, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        _encode(image, ".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        _encode(image, ".png"),
        _encode(image.astype(np.uint16) * 200, ".png"),
        _encode(image, ".bmp"),
        _encode(image, ".tiff"),
        _encode(image.astype(np.float32), ".tiff"),
        _tiff(56, 40, _samples((40, 56, 4), "<f8"), samples=4, bits=64, sample_format=3),
    ]
    chooser = random.Random(0)
    for _ in range(600):
        data = bytearray(chooser.choice(seeds))
        for _ in range(chooser.randint(1, 4)):
            at = chooser.randrange(len(data))
            roll = chooser.random()
            if roll < 0.6:
                data[at] = chooser.randrange(256)
            elif roll < 0.75:
                data[at : at + 2] = bytes(chooser.choice([0, 1, 0x7F, 0x80, 0xFF]) for _ in range(2))
            elif roll < 0.85:
                del data[max(at, 8) :]
            else:
                data[at:at] = chooser.randbytes(chooser.randint(1, 8))
        try:
            decode_image(bytes(data))
        except ImageError as error:
            _assert_refusal(error, type(error), "")
