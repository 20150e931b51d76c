"""decode_image, sniff_format and read_dimensions on real MRI files, encoded variants and hostile bytes."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from service.errors import from_image_error, image_error_type
from service.preprocessing import (
    DEFAULT_MIN_SIDE,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    decode_image,
    read_dimensions,
    sniff_format,
)

PNG_UNDER_JPG_NAME = [
    "br35h/no/no396.jpg",
    "br35h/no/no400.jpg",
    "br35h/no/no401.jpg",
    "br35h/no/no408.jpg",
    "br35h/no/no409.jpg",
    "br35h/yes/y355.jpg",
    "br35h/yes/y549.jpg",
    "br35h/yes/y623.jpg",
    "br35h/yes/y682.jpg",
    "br35h/yes/y885.jpg",
    "br35h/yes/y1163.jpg",
    "br35h/yes/y1264.jpg",
    "br35h/yes/y1349.jpg",
]
# single-channel files (cv2.IMREAD_UNCHANGED gives (H, W)): baseline and progressive JPEG, greyscale PNG
GREYSCALE_FILES = ["br35h/yes/y1071.jpg", "br35h/yes/y1301.jpg", "br35h/no/no388.jpg", "br35h/yes/y355.jpg"]
RGBA_FILES = ["br35h/no/no400.jpg", "br35h/no/no408.jpg", "br35h/no/no409.jpg", "br35h/pred/pred47.jpg"]
SARTAJ_GLIOMA = "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg"
REAL_JPEGS = [
    SARTAJ_GLIOMA,
    "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Training/no_tumor/image(103).jpg",
    "br35h/yes/y0.jpg",
    "br35h/yes/y1298.jpg",  # progressive
    "br35h/no/No12.jpg",
]


def _read(data_root: Path, relative: str) -> bytes:
    return (data_root / relative).read_bytes()


def _raw(data: bytes) -> npt.NDArray[np.generic]:
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw is not None
    return np.asarray(raw)


def _encode(image: npt.NDArray[np.generic], ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _forged_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"\x00garbage")[:12]


def _assert_rgb(image: npt.NDArray[np.uint8], height: int, width: int) -> None:
    assert image.dtype == np.uint8
    assert image.shape == (height, width, 3)
    assert image.flags.c_contiguous


def _assert_sentence(error: ImageError) -> None:
    message = str(error)
    assert message == error.message
    assert re.fullmatch(r"[A-Z][^\n]{10,250}[.]", message), message
    assert "\\x" not in message and "b'" not in message
    assert from_image_error(error).to_body() == {"error": message, "error_type": image_error_type(error)}


@pytest.fixture(scope="module")
def glioma_bytes(data_root: Path) -> bytes:
    return _read(data_root, SARTAJ_GLIOMA)


@pytest.fixture(scope="module")
def glioma_bgr(glioma_bytes: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.imdecode(np.frombuffer(glioma_bytes, np.uint8), cv2.IMREAD_COLOR), np.uint8)


# --- real files ------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("relative", PNG_UNDER_JPG_NAME)
def test_png_data_under_jpg_name_decodes_by_content(data_root: Path, relative: str) -> None:
    data = _read(data_root, relative)
    assert sniff_format(data) == "png"
    width, height = read_dimensions(data)
    _assert_rgb(decode_image(data), height, width)


@pytest.mark.realdata
@pytest.mark.parametrize("relative", GREYSCALE_FILES)
def test_greyscale_files_become_rgb(data_root: Path, relative: str) -> None:
    data = _read(data_root, relative)
    raw = _raw(data)
    assert raw.ndim == 2
    image = decode_image(data)
    _assert_rgb(image, *raw.shape)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], raw)


@pytest.mark.realdata
@pytest.mark.parametrize("relative", RGBA_FILES)
def test_rgba_files_are_composited_onto_black(data_root: Path, relative: str) -> None:
    data = _read(data_root, relative)
    raw = _raw(data).astype(np.float64)
    assert raw.shape[2] == 4
    expected = np.rint(raw[..., 2::-1] * raw[..., 3:] / 255.0)  # BGRA -> RGB * alpha
    image = decode_image(data)
    _assert_rgb(image, *raw.shape[:2])
    assert np.abs(image.astype(np.float64) - expected).max() <= 1


@pytest.mark.realdata
def test_file_name_with_spaces_and_parentheses(data_root: Path, glioma_bgr: npt.NDArray[np.uint8]) -> None:
    path = data_root / SARTAJ_GLIOMA
    assert " " in path.name and "(" in path.name
    image = decode_image(path.read_bytes())
    np.testing.assert_array_equal(image, glioma_bgr[..., ::-1])


@pytest.mark.realdata
@pytest.mark.parametrize("relative", REAL_JPEGS + PNG_UNDER_JPG_NAME[:3])
def test_read_dimensions_agrees_with_decoded_shape(data_root: Path, relative: str) -> None:
    data = _read(data_root, relative)
    width, height = read_dimensions(data)
    assert decode_image(data).shape == (height, width, 3)
    assert _raw(data).shape[:2] == (height, width)


@pytest.mark.realdata
@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".png"])
def test_lossless_8bit_encodings_decode_exactly(glioma_bgr: npt.NDArray[np.uint8], ext: str) -> None:
    bgr = glioma_bgr[:300, :200]  # not square, so width and height cannot be swapped unnoticed
    data = _encode(bgr, ext)
    assert sniff_format(data) == {".bmp": "bmp", ".tiff": "tiff", ".png": "png"}[ext]
    assert read_dimensions(data) == (200, 300)
    np.testing.assert_array_equal(decode_image(data), bgr[..., ::-1])


@pytest.mark.realdata
@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_images_are_min_max_windowed(
    glioma_bgr: npt.NDArray[np.uint8], ext: str, channels: int
) -> None:
    bgr = glioma_bgr[:, :400] if channels == 3 else cv2.cvtColor(glioma_bgr[:, :400], cv2.COLOR_BGR2GRAY)
    low, high = int(bgr.min()), int(bgr.max())
    # a scanner-like 16-bit range that does not start at 0 nor fill 65535
    deep = (bgr.astype(np.uint16) * 97 + 1200).astype(np.uint16)
    data = _encode(deep, ext)
    assert _raw(data).dtype == np.uint16
    assert read_dimensions(data) == (400, 512)
    image = decode_image(data)
    _assert_rgb(image, 512, 400)
    windowed = np.rint((bgr.astype(np.float64) - low) * 255.0 / (high - low))
    expected = windowed[..., ::-1] if channels == 3 else np.repeat(windowed[..., None], 3, axis=2)
    assert np.abs(image.astype(np.float64) - expected).max() <= 1
    assert image.min() == 0 and image.max() == 255


def test_16bit_rgba_alpha_uses_full_range() -> None:
    bgra = np.zeros((16, 16, 4), np.uint16)
    bgra[..., 2] = np.linspace(0, 60000, 16, dtype=np.uint16)[None, :]  # red ramp
    bgra[..., 3] = 65535
    bgra[:8, :, 3] = 32768  # top half half-transparent
    image = decode_image(_encode(bgra, ".png"))
    assert image[12, 15, 0] == 255 and image[12, 0, 0] == 0
    assert image[2, 15, 0] == 128  # 255 * 32768 / 65535, rounded
    assert image[..., 1:].max() == 0


def test_grey_alpha_png_is_composited_onto_black() -> None:
    # colour type 4 (grey + alpha), which cv2.imencode cannot write: grey 200 at alpha 128
    rows = b"".join(b"\x00" + bytes([200, 128]) * 16 for _ in range(16))
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 4, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(kind, payload)
        for kind, payload in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(rows)), (b"IEND", b""))
    )
    image = decode_image(data)
    _assert_rgb(image, 16, 16)
    assert (image == 100).all()  # 200 * 128 / 255, rounded


# --- decompression bombs ---------------------------------------------------------------------------------


def _forbid_imdecode(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("cv2.imdecode must not run for an oversized image")

    monkeypatch.setattr(cv2, "imdecode", fail)


def test_forged_png_header_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _forged_png(60000, 60000)
    assert read_dimensions(data) == (60000, 60000)
    _forbid_imdecode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data)
    answer = from_image_error(caught.value)
    assert answer.status_code == 413 and answer.error_type == "image_too_large"
    assert "60000 x 60000" in caught.value.message
    _assert_sentence(caught.value)


def test_forged_jpeg_header_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 8 + len(components), 8, 50000, 40000, 3) + components
    data = b"\xff\xd8" + app0 + sof0 + b"\x00" * 64
    assert sniff_format(data) == "jpeg"
    assert read_dimensions(data) == (40000, 50000)
    _forbid_imdecode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data)
    _assert_sentence(caught.value)


@pytest.mark.realdata
def test_max_pixels_is_configurable(glioma_bytes: bytes) -> None:
    with pytest.raises(ImageTooLargeError):
        decode_image(glioma_bytes, max_pixels=512 * 512 - 1)
    assert decode_image(glioma_bytes, max_pixels=512 * 512).shape == (512, 512, 3)


# --- refusals --------------------------------------------------------------------------------------------

GIF_1X1 = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"  # noqa: E501


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", ImageDecodeError),
        (b"Hello, this is a plain text file and not an image at all.\n", ImageDecodeError),
        (
            b"<!DOCTYPE html>\n<html><head><title>x</title></head><body>not an image</body></html>",
            ImageDecodeError,
        ),
        (b"\x89PNG\r\n\x1a\n", ImageDecodeError),  # a signature and nothing else
        (b"\xff\xd8\xff", ImageDecodeError),
        (b"BM", ImageDecodeError),
        (b"BMW and other makers of fine automobiles, a list.", ImageDecodeError),
        (_forged_png(0, 0), ImageDecodeError),  # zero-size
        (GIF_1X1, UnsupportedImageFormatError),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", UnsupportedImageFormatError),
    ],
    ids=[
        "empty",
        "text",
        "html",
        "png-signature",
        "jpeg-signature",
        "bmp-signature",
        "text-starting-with-BM",
        "zero-size",
        "gif",
        "webp",
    ],
)
def test_hostile_bytes_raise_typed_errors(data: bytes, error: type[ImageError]) -> None:
    with pytest.raises(error) as caught:
        decode_image(data)
    assert type(caught.value) is error
    _assert_sentence(caught.value)


def test_error_classes_map_to_their_error_type_and_status() -> None:
    # the decoder's refusals carry no HTTP: the service maps each class to one error type and its status
    for kind, (status, error_type) in {
        ImageDecodeError: (400, "invalid_image"),
        ImageTooLargeError: (413, "image_too_large"),
        UnsupportedImageFormatError: (415, "unsupported_media_type"),
    }.items():
        assert issubclass(kind, ImageError) and not hasattr(kind, "status_code")
        answer = from_image_error(kind("A sentence."))
        assert (answer.status_code, answer.error_type) == (status, error_type)


@pytest.mark.realdata
def test_real_webp_is_unsupported(glioma_bgr: npt.NDArray[np.uint8]) -> None:
    with pytest.raises(UnsupportedImageFormatError, match="WebP"):
        decode_image(_encode(glioma_bgr, ".webp"))


@pytest.mark.parametrize("side", [1, DEFAULT_MIN_SIDE - 1])
def test_tiny_images_are_too_small_to_classify(side: int) -> None:
    with pytest.raises(ImageDecodeError, match="too small to classify") as caught:
        decode_image(_encode(np.full((side, side, 3), 128, np.uint8), ".png"))
    _assert_sentence(caught.value)
    assert decode_image(_encode(np.zeros((DEFAULT_MIN_SIDE, 20), np.uint8), ".png")).shape == (
        DEFAULT_MIN_SIDE,
        20,
        3,
    )


@pytest.mark.realdata
@pytest.mark.parametrize("relative", [SARTAJ_GLIOMA, "br35h/yes/y1298.jpg", "br35h/yes/y355.jpg"])
@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_files_are_refused_silently(
    data_root: Path, relative: str, fraction: float, capfd: pytest.CaptureFixture[str]
) -> None:
    data = _read(data_root, relative)
    with pytest.raises(ImageDecodeError, match="truncated") as caught:
        decode_image(data[: int(len(data) * fraction)])
    _assert_sentence(caught.value)
    assert capfd.readouterr().err == ""  # no libjpeg/libpng warning reached stderr


@pytest.mark.realdata
def test_png_with_corrupt_chunk_crc_is_refused(data_root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = bytearray(_read(data_root, "br35h/yes/y355.jpg"))
    idat = data.index(b"IDAT")
    data[idat + 100] ^= 0xFF  # a bit flip inside the compressed pixels
    with pytest.raises(ImageDecodeError, match="checksum of its IDAT chunk") as caught:
        decode_image(bytes(data))
    _assert_sentence(caught.value)
    assert capfd.readouterr().err == ""


@pytest.mark.realdata
def test_truncated_bmp_and_tiff_are_refused(glioma_bgr: npt.NDArray[np.uint8]) -> None:
    for ext in (".bmp", ".tiff"):
        data = _encode(glioma_bgr, ext)
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(data[: len(data) // 2])
        _assert_sentence(caught.value)


# --- header parsing --------------------------------------------------------------------------------------


def _tiff_header(order: str, width: int, height: int, kind: int) -> bytes:
    """A minimal first IFD holding only ImageWidth and ImageLength (SHORT = 3 or LONG = 4)."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    value = "HH" if kind == 3 else "I"
    entries = b"".join(
        struct.pack(order + "HHI", tag, kind, 1)
        + struct.pack(order + value, *((v, 0) if kind == 3 else (v,)))
        for tag, v in ((256, width), (257, height))
    )
    return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 2) + entries + b"\x00" * 4


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", [3, 4])
def test_read_dimensions_of_tiff_in_both_byte_orders(order: str, kind: int) -> None:
    data = _tiff_header(order, 640, 480, kind)
    assert sniff_format(data) == "tiff"
    assert read_dimensions(data) == (640, 480)


def test_read_dimensions_of_top_down_bmp() -> None:
    data = bytearray(_encode(np.zeros((30, 20, 3), np.uint8), ".bmp"))
    struct.pack_into("<i", data, 22, -30)  # negative height: rows stored top-down
    assert read_dimensions(bytes(data)) == (20, 30)


def test_read_dimensions_refuses_what_it_cannot_read() -> None:
    for data in (b"", b"not an image", b"II*\x00\xff\xff\xff\x7f", b"\xff\xd8\xff\xe0\x00\x10JFIF"):
        with pytest.raises(ImageDecodeError):
            read_dimensions(data)


def test_sniff_format_uses_magic_bytes_only() -> None:
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"\x89PNG\r\n\x1a\n") == "png"
    assert sniff_format(b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00") == "bmp"
    assert sniff_format(b"BMW makes cars") is None
    assert sniff_format(b"II*\x00") == "tiff" and sniff_format(b"MM\x00*") == "tiff"
    assert sniff_format(GIF_1X1) is None
    assert sniff_format(b"photo.jpg") is None
