"""Hostile DICOM uploads (issue #13), each generated here from pydicom's samples.

Every one is refused with its typed error (and, through the API, its status and ``error_type``) and a sentence
that quotes no DICOM value, within a second; the two memory bombs are also measured in a child process, whose
peak RSS must stay under the decode budget. A fuzzer of pixel-module attributes (type, VR, length,
multiplicity, sequence shape) gets nothing but an ImageError from ``decode_dicom`` and no 5xx from the API.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from service.app import create_app
from service.dicom import PIXEL_DATA_MISMATCH_MESSAGE, decode_dicom
from service.preprocessing import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("Doe", "Jane", "JD4711", "19700101")
"""Planted in patient fields and in the hostile values: none may reach a sentence, warning, log or stderr."""
HOSTILE_SECONDS = 1.0
"""The longest any one small hostile file may take to be refused."""
SLACK_MIB = 100
"""Peak RSS a refused bomb may add on top of its budget (allocator and interpreter noise)."""

# building hostile files makes pydicom warn (with their values): that is the test's doing, not the service's
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- building files ---------------------------------------------------------------------------------------


def _path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's sample {name} is not on this machine"
    return str(path)


def _dataset(name: str = "MR_small.dcm") -> Dataset:
    """A pydicom sample with a planted patient (MR_small.dcm: 64 x 64, 16-bit, Modality MR)."""
    dataset = pydicom.dcmread(_path(name))
    dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate = "Doe^Jane", "JD4711", "19700101"
    return dataset


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _encode_unchecked(dataset: Dataset) -> bytes:
    """Explicit VR Little Endian elements under whatever file meta ``dataset`` has, which dcmwrite checks."""
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, dataset.file_meta, enforce_standard=True)
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def _raw(dataset: Dataset, keyword: str | int, vr: str, value: bytes) -> None:
    """Set an element to exactly these value bytes under this VR, as a hostile writer could."""
    tag = Tag(keyword)
    dataset[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def _frame(name: str) -> bytearray:
    """The one encapsulated frame of a compressed sample."""
    return bytearray(next(generate_frames(pydicom.dcmread(_path(name)).PixelData, number_of_frames=1)))


def _with_frame(dataset: Dataset, frame: bytes, syntax: UID) -> bytes:
    dataset.PixelData = encapsulate([bytes(frame)])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = syntax
    return _encode(dataset)


def _jpeg(forged: tuple[int, int] | None = None, colour: bool = False) -> bytes:
    """A 64 x 64 baseline JPEG from OpenCV; ``forged``: (rows, columns) written into its SOF0 instead."""
    grey = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    image = np.dstack([grey, grey[::-1], grey.T]) if colour else grey
    jpeg = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
    if forged is not None:
        struct.pack_into(">HH", jpeg, jpeg.index(b"\xff\xc0") + 5, *forged)  # FFC0, Lf, P, then Y, X
    return bytes(jpeg)


def _jpeg_dicom(frame: bytes) -> bytes:
    """MR_small.dcm turned 8-bit, its pixel data replaced by one baseline JPEG frame."""
    dataset = _dataset()
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    del dataset.WindowCenter, dataset.WindowWidth
    return _with_frame(dataset, frame, JPEGBaseline8Bit)


def _jpeg_ls_bomb() -> bytes:
    frame = _frame("MR_small_jpeg_ls_lossless.dcm")
    struct.pack_into(">HH", frame, frame.index(b"\xff\xf7") + 5, 20000, 20000)  # SOF55: Y, X
    dataset = _dataset("MR_small_jpeg_ls_lossless.dcm")
    return _with_frame(dataset, frame, dataset.file_meta.TransferSyntaxUID)


def _jpeg2000_bomb(jp2: bool = False) -> bytes:
    codestream = _frame("MR_small_jp2klossless.dcm")
    assert codestream[:4] == b"\xff\x4f\xff\x51"  # SOC, SIZ
    struct.pack_into(">II", codestream, 8, 20000, 20000)  # Xsiz, Ysiz (XOsiz = YOsiz = 0)
    frame = bytes(codestream)
    if jp2:  # the same codestream in a JP2 file: signature box, then the codestream box
        frame = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 8 + len(frame), b"jp2c") + frame
    dataset = _dataset("MR_small_jp2klossless.dcm")
    return _with_frame(dataset, frame, dataset.file_meta.TransferSyntaxUID)


def _rle(segments: list[bytes], count: int | None = None) -> bytes:
    """MR_small.dcm (16-bit: two segments) with this RLE frame: the 64-byte header, then ``segments``."""
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = struct.pack(
        "<16L", len(segments) if count is None else count, *offsets, *[0] * (15 - len(offsets))
    )
    return _with_frame(_dataset(), header + b"".join(segments), RLELossless)


def _rle_bomb() -> bytes:
    # each pair of bytes is a replicate run of 128: 8 KiB segments that decode to 512 KiB, not 4 KiB
    return _rle([b"\x81\x00" * 4096, b"\x81\x00" * 4096])


def _deflated(body: bytes, pieces: int = 0, *, truncate: bool = False) -> bytes:
    """A Deflated Explicit VR Little Endian file: ``body``, then, as DataSetTrailingPadding, ``pieces`` MiB of
    zeros made by repeating one independently deflated MiB (a 1 KB stream per inflated MiB)."""
    if pieces:
        body += struct.pack("<HH2sHL", 0xFFFC, 0xFFFC, b"OB", 0, pieces << 20)
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = head.compress(body) + head.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no history carried on
    zeros = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream += (zeros.compress(bytes(1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)) * pieces
    stream = stream[: len(stream) // 2] if truncate else stream + b"\x03\x00"  # the final, empty block
    dataset = _dataset()
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    write_file_meta_info(meta, dataset.file_meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + stream


def _bare_body(implicit: bool) -> bytes:
    """MR_small.dcm's data set alone: no preamble, no "DICM", no file meta information."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, _dataset())
    return buffer.getvalue()


def _deflate_bomb() -> bytes:
    return _deflated(_bare_body(implicit=False), pieces=512)  # ~0.5 MB that inflates to 512 MiB


def _pixel_data_twice() -> bytes:
    dataset = _dataset()
    dataset.PixelData = dataset.PixelData * 2
    return _encode(dataset)


def _pixel_data_short() -> bytes:
    dataset = _dataset()
    dataset.PixelData = dataset.PixelData[:4000]
    return _encode(dataset)


def _lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor, item.LUTData = descriptor, data
    item["LUTDescriptor"].VR, item["LUTData"].VR = "US", "US"
    return item


def _mutated(mutate: Callable[[Dataset], None], name: str = "MR_small.dcm") -> bytes:
    dataset = _dataset(name)
    mutate(dataset)
    return _encode(dataset)


def _palette(mutate: Callable[[Dataset], None]) -> bytes:
    return _mutated(mutate, "examples_palette.dcm")


# -- checking refusals ------------------------------------------------------------------------------------


def _texts_of(error: ImageError) -> list[str]:
    """The sentence and what a log line with exc_info would print of it (message and any chained cause)."""
    return [error.message, *traceback.format_exception(error)]


def _assert_clean(texts: list[str], *values: str) -> None:
    for text in texts:
        for secret in (*SECRETS, *values):
            assert secret not in text, (secret, text)


def _refused(data: bytes, error_type: type[ImageError], words: str, **limits: Any) -> ImageError:
    """The exact error type, a sentence containing ``words`` and no planted value, in under a second."""
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        decode_dicom(data, **limits)
    elapsed = time.perf_counter() - started
    error = caught.value
    assert type(error) is error_type, error.message
    assert words in error.message, error.message
    assert error.message[:1].isupper() and error.message.endswith("."), error.message
    _assert_clean(_texts_of(error))
    assert elapsed < HOSTILE_SECONDS, f"{elapsed:.2f} s"
    return error


def _grey(data: bytes) -> npt.NDArray[np.uint8]:
    rgb = decode_dicom(data)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    return rgb


MR_SMALL = Path(_path("MR_small.dcm")).read_bytes()


# -- 1. frame bombs: the codestream's own header decides ---------------------------------------------------


@pytest.mark.parametrize(
    ("build", "codec"),
    [
        (lambda: _jpeg_dicom(_jpeg(forged=(20000, 20000))), "JPEG"),
        (_jpeg_ls_bomb, "JPEG-LS"),
        (_jpeg2000_bomb, "JPEG 2000"),
        (lambda: _jpeg2000_bomb(jp2=True), "JPEG 2000"),
    ],
    ids=["jpeg", "jpeg-ls", "jpeg2000", "jp2"],
)
def test_frame_header_over_the_pixel_limit_is_413_before_decoding(
    build: Callable[[], bytes], codec: str
) -> None:
    data = build()
    assert len(data) < 20_000  # a few KB that would make the codec allocate 20000 x 20000 samples
    error = _refused(data, ImageTooLargeError, f"The {codec} frame of the DICOM pixel data declares 20000 x")
    assert error.message.endswith("more than the limit of 50,000,000 pixels.")
    # under the pixel limit but over the memory budget (OpenJPEG holds 4 bytes a sample): 413 as well
    budget = _refused(data, ImageTooLargeError, "more than the memory limit of 1 MiB", max_bytes=2**20,
                      max_pixels=500_000_000)  # fmt: skip
    assert "needs" in budget.message


def test_frame_header_that_disagrees_with_the_dicom_header_is_400() -> None:
    assert _grey(_jpeg_dicom(_jpeg())).shape == (64, 64, 3)  # the honest frame decodes
    words = "frame header of the DICOM pixel data declares another size or number of samples"
    _refused(_jpeg_dicom(_jpeg(forged=(32, 32))), ImageDecodeError, words)
    _refused(_jpeg_dicom(_jpeg(colour=True)), ImageDecodeError, words)  # 3 components, SamplesPerPixel 1
    _refused(_jpeg_dicom(b"\xff\xd8\xff\xd9"), ImageDecodeError, "not a valid JPEG codestream")
    native = _dataset()
    native.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # but the pixel data is not encapsulated
    _refused(_encode_unchecked(native), ImageDecodeError, "not encapsulated")


def test_rle_segments_are_bounded_before_pydicom_inflates_them() -> None:
    segments = [bytes(segment) for segment in _rle_segments()]
    assert _grey(_rle(segments)).shape == (64, 64, 3)  # the honest frame decodes
    _refused(_rle_bomb(), ImageDecodeError, "An RLE segment of the DICOM pixel data decodes to more bytes")
    _refused(_rle(segments, count=3), ImageDecodeError, "declares another number of segments")


def _rle_segments() -> list[bytes]:
    frame = _frame("MR_small_RLE.dcm")
    count, *offsets = struct.unpack_from("<16L", frame)
    bounds = [*offsets[:count], len(frame)]
    return [bytes(frame[start:end]) for start, end in itertools.pairwise(bounds)]


# -- 2. deflated data sets: inflated in bounded steps -------------------------------------------------------


def test_deflated_files_decode_and_a_deflate_bomb_is_413() -> None:
    expected = _grey(MR_SMALL)
    deflated = _dataset()
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # pydicom deflates on writing
    assert np.array_equal(_grey(_encode(deflated)), expected)
    assert np.array_equal(_grey(_deflated(_bare_body(implicit=False))), expected)
    assert _grey(Path(_path("image_dfl.dcm")).read_bytes()).shape == (512, 512, 3)
    bomb = _deflate_bomb()
    assert len(bomb) < 700_000
    error = _refused(bomb, ImageTooLargeError, "inflates to more than 64 MiB", max_bytes=64 * 2**20)
    assert error.message.startswith(
        "The deflated DICOM data set inflates to more than 64 MiB, the memory limit"
    )
    _refused(
        _deflated(_bare_body(implicit=False), truncate=True), ImageDecodeError, "deflated DICOM data set"
    )


# -- memory of the two bombs, in a child process ------------------------------------------------------------

CHILD = """
import json, resource, sys, time
from pathlib import Path
from pydicom.data import get_testdata_file
from service.dicom import decode_dicom
from service.preprocessing import ImageError

decode_dicom(Path(get_testdata_file("MR_small.dcm")).read_bytes())  # warm: pydicom's decoders imported
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
started = time.perf_counter()
try:
    decode_dicom(data, max_bytes=int(sys.argv[2]))
    outcome = "decoded"
except ImageError as error:
    outcome = type(error).__name__
seconds = time.perf_counter() - started
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"outcome": outcome, "growth_mib": growth, "seconds": seconds}))
"""


@pytest.mark.parametrize(
    ("build", "budget_mib"),
    [(lambda: _jpeg_dicom(_jpeg(forged=(20000, 20000))), 256), (_deflate_bomb, 64)],
    ids=["frame-bomb", "deflate-bomb"],
)
def test_peak_memory_of_a_bomb_stays_under_the_budget(
    build: Callable[[], bytes], budget_mib: int, tmp_path: Path
) -> None:
    path = tmp_path / "bomb.dcm"
    path.write_bytes(build())
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(budget_mib * 2**20)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["outcome"] == "ImageTooLargeError", result
    assert result["growth_mib"] < budget_mib + SLACK_MIB, result
    assert result["seconds"] < HOSTILE_SECONDS, result


# -- 3. malformed pixel-module attributes: a sentence naming the attribute, never a 500 ----------------------


def _set_slope_text(dataset: Dataset) -> None:
    _raw(dataset, "RescaleSlope", "DS", b"Doe^Jane")
    dataset.RescaleIntercept = 0


def _short_modality_lut(dataset: Dataset) -> None:
    dataset.ModalityLUTSequence = Sequence([_lut_item([4096, 0, 16], list(range(100)))])


def _two_value_voi_descriptor(dataset: Dataset) -> None:
    dataset.VOILUTSequence = Sequence([_lut_item([256, 0], list(range(256)))])


def _negative_rows(dataset: Dataset) -> None:
    _raw(dataset, "Rows", "SS", struct.pack("<h", -64))


def _bad_palette_descriptor(dataset: Dataset) -> None:
    _raw(dataset, "GreenPaletteColorLookupTableDescriptor", "US", struct.pack("<2H", 256, 0))


MALFORMED = {
    "rescale-slope-text": (_set_slope_text, ImageDecodeError, "RescaleSlope is not a finite number"),
    "rescale-intercept-inf": (
        lambda ds: _raw(ds, "RescaleIntercept", "DS", b"1e999 "),
        ImageDecodeError,
        "RescaleIntercept is not a finite number",
    ),
    "rescale-slope-two-values": (
        lambda ds: _raw(ds, "RescaleSlope", "DS", b"1\\2 "),
        ImageDecodeError,
        "RescaleSlope holds more than one value",
    ),
    "modality-lut-short": (_short_modality_lut, ImageDecodeError, "fewer entries than its LUTDescriptor"),
    "voi-lut-two-values": (_two_value_voi_descriptor, ImageDecodeError, "LUTDescriptor does not hold three"),
    "window-center-text": (
        lambda ds: _raw(ds, "WindowCenter", "DS", b"JD4711"),
        ImageDecodeError,
        "WindowCenter is not a finite number",
    ),
    "window-width-zero": (
        lambda ds: _raw(ds, "WindowWidth", "DS", b"0 "),
        ImageDecodeError,
        "WindowWidth is not a positive number",
    ),
    "bits-stored-over-allocated": (
        lambda ds: setattr(ds, "BitsStored", 20),
        ImageDecodeError,
        "BitsStored is not between 1 and its BitsAllocated",
    ),
    "rows-zero": (lambda ds: setattr(ds, "Rows", 0), ImageDecodeError, "Rows is not a positive whole number"),
    "rows-negative": (_negative_rows, ImageDecodeError, "Rows is not a positive whole number"),
    "columns-text": (
        lambda ds: _raw(ds, "Columns", "IS", b"Doe "),
        ImageDecodeError,
        "Columns is not a whole number",
    ),
    "pixel-representation-2": (
        lambda ds: setattr(ds, "PixelRepresentation", 2),
        ImageDecodeError,
        "PixelRepresentation is neither 0",
    ),
    "bits-allocated-12": (
        lambda ds: setattr(ds, "BitsAllocated", 12),
        ImageDecodeError,
        "BitsAllocated is neither 1 nor a multiple of 8",
    ),
    "samples-3-monochrome": (
        lambda ds: setattr(ds, "SamplesPerPixel", 3),
        ImageDecodeError,
        "SamplesPerPixel disagrees with its PhotometricInterpretation",
    ),
    "photometric-unknown": (
        lambda ds: _raw(ds, "PhotometricInterpretation", "CS", b"JD4711"),
        UnsupportedImageFormatError,
        "PhotometricInterpretation is not supported",
    ),
    "photometric-missing": (
        lambda ds: delattr(ds, "PhotometricInterpretation"),
        ImageDecodeError,
        "lacks the pixel-module attribute PhotometricInterpretation",
    ),
    "frames-text": (
        lambda ds: _raw(ds, "NumberOfFrames", "IS", b"Jane"),
        ImageDecodeError,
        "NumberOfFrames is not a whole number",
    ),
    "pixel-data-as-sequence": (
        lambda ds: _raw(ds, "PixelData", "SQ", b""),
        ImageDecodeError,
        "PixelData is not a byte string",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_pixel_module_attribute_is_a_sentence(case: str) -> None:
    mutate, error_type, words = MALFORMED[case]
    _refused(_mutated(mutate), error_type, words)


def test_palette_tables_are_validated_and_an_alpha_table_is_dropped() -> None:
    rgb = _grey(Path(_path("examples_palette.dcm")).read_bytes())
    _refused(_palette(_bad_palette_descriptor), ImageDecodeError, "palette colour lookup table is missing")

    def short(dataset: Dataset) -> None:
        dataset.BluePaletteColorLookupTableData = dataset.BluePaletteColorLookupTableData[:-64]

    def segmented(dataset: Dataset) -> None:
        _raw(dataset, "SegmentedRedPaletteColorLookupTableData", "OW", b"\x02\x00" * 8)

    def with_alpha(dataset: Dataset) -> None:
        dataset.AlphaPaletteColorLookupTableData = dataset.RedPaletteColorLookupTableData

    _refused(_palette(short), ImageDecodeError, "palette colour lookup table is missing or corrupt")
    _refused(_palette(segmented), UnsupportedImageFormatError, "segmented palette colour lookup table")
    assert np.array_equal(_grey(_palette(with_alpha)), rgb)  # (H, W, 3): RGBA would break the recipes


def test_valid_lookup_tables_and_windows_still_apply() -> None:
    def identity_voi(dataset: Dataset) -> None:
        dataset.VOILUTSequence = Sequence([_lut_item([4096, 0, 16], [4095 - value for value in range(4096)])])

    inverted = _grey(_mutated(identity_voi))  # a decreasing VOI LUT: min-max of its output inverts the image
    plain = _mutated(lambda ds: [delattr(ds, keyword) for keyword in ("WindowCenter", "WindowWidth")])
    assert np.abs(inverted.astype(int) + _grey(plain).astype(int) - 255).max() <= 1
    _grey(_mutated(lambda ds: _raw(ds, "WindowCenter", "DS", b"")))  # empty: as if absent


# -- 4. a bare data set declared application/dicom ---------------------------------------------------------


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_bare_data_set_is_inferred_and_decoded(implicit: bool) -> None:
    body = _bare_body(implicit)
    assert body[:2] == b"\x08\x00"  # the first element is (0008,xxxx): no preamble, "DICM" or file meta
    assert np.array_equal(_grey(body), _grey(MR_SMALL))


# -- 5. no DICOM value in sentences, warnings, logs or stderr ----------------------------------------------


def test_unknown_transfer_syntax_is_415_without_its_uid() -> None:
    dataset = _dataset()
    _raw(dataset.file_meta, "TransferSyntaxUID", "UI", b"1.2.826.0.1.JD4711")
    error = _refused(
        _encode(dataset), UnsupportedImageFormatError, "TransferSyntaxUID is not a transfer syntax"
    )
    _assert_clean([error.message], "1.2.826")


def test_pydicom_warnings_and_logs_never_carry_values(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    def charset_and_description(dataset: Dataset) -> None:
        _raw(dataset, "SpecificCharacterSet", "CS", b"ISO_IR 999 JD4711 ")
        _raw(dataset, "StudyDescription", "LO", b"Doe^Jane brain")
        _raw(dataset, "SliceThickness", "DS", b"Jane")  # an invalid DS that decoding never reads

    decodes = _mutated(charset_and_description)
    refused = _mutated(_set_slope_text)
    capfd.readouterr()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode_dicom(decodes, require_brain_mri=True).shape == (64, 64, 3)
        with pytest.raises(ImageDecodeError) as error:
            decode_dicom(refused, require_brain_mri=True)
    out, err = capfd.readouterr()
    texts = [str(warning.message) for warning in caught] + [caplog.text, out, err, *_texts_of(error.value)]
    _assert_clean(texts, "ISO_IR 999")
    assert logging.getLogger("pydicom.pixels.decoders.base").getEffectiveLevel() > logging.CRITICAL


# -- 6. pixel data of another size than declared -----------------------------------------------------------


def test_pixel_data_twice_the_declared_size_is_400_saying_so() -> None:
    error = _refused(_pixel_data_twice(), ImageDecodeError, "does not match the size that Rows x Columns")
    assert error.message == PIXEL_DATA_MISMATCH_MESSAGE
    _refused(_pixel_data_short(), ImageDecodeError, "shorter than Rows x Columns x Samples per Pixel")
    assert _grey(Path(_path("MR_small_padded.dcm")).read_bytes()).shape == (64, 64, 3)  # padding < a frame


# -- the fuzzer ---------------------------------------------------------------------------------------------

FUZZ_SAMPLES = (
    "MR_small.dcm",
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle.dcm",
    "examples_palette.dcm",
)
FUZZ_KEYWORDS = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "ModalityLUTSequence", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData", "PixelData",
    "FloatPixelData", "Modality", "BodyPartExamined", "StudyDescription", "SpecificCharacterSet",
    "PixelPaddingValue", "SmallestImagePixelValue", "PixelAspectRatio", "ICCProfile", "PixelPresentation",
)  # fmt: skip
FUZZ_VRS = ("US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "CS", "LO", "UI", "AT", "OB", "OW", "UN", "SQ")
FUZZ_TEXTS = (
    b"0", b"-1", b"1", b"3", b"8", b"16", b"65536", b"4294967296", b"nan", b"inf", b"-inf", b"1e308",
    b"1e999", b"Doe^Jane", b" ", b"\x00\x00", b"1\\2", b"64\\64\\64", b"3.5", b"-0", b"MONOCHROME2",
    b"PALETTE COLOR", b"RGB", b"YBR_FULL_422", b"1.2.840.10008.1.2.4.50",
)  # fmt: skip
FUZZ_NUMBERS = (0, 1, 2, 3, 7, 8, 12, 16, 32, 33, 64, 255, 4096, 32767, 32768, 65535)
FUZZ_CASES = 360


def _fuzz_value(rng: random.Random, vr: str) -> bytes:
    """Bytes for ``vr``: numbers, text, multiplicity, odd lengths and random bytes, mixed at random."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(FUZZ_TEXTS)
    if kind == 1:
        fmt = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}.get(vr, "H")
        count = rng.choice((1, 1, 2, 3))
        if fmt == "h":
            numbers = [(rng.choice(FUZZ_NUMBERS) + 32768) % 65536 - 32768 for _ in range(count)]
        elif fmt in "fd":
            numbers = [rng.choice((0.0, -1.0, 1.5, float("nan"), float("inf"), 1e30)) for _ in range(count)]
        else:
            numbers = [rng.choice(FUZZ_NUMBERS) for _ in range(count)]
        return struct.pack(f"<{count}{fmt}", *numbers)
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 3, 5, 6, 8, 13, 64, 513))))
    if kind == 3:
        return b"\\".join(rng.choice(FUZZ_TEXTS) for _ in range(rng.randrange(1, 5)))
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) * rng.randrange(1, 300)


def _fuzz_item(rng: random.Random, depth: int) -> Dataset:
    item = Dataset()
    for _ in range(rng.randrange(4)):
        keyword = rng.choice(
            ("LUTDescriptor", "LUTData", "LUTExplanation", "ModalityLUTType", *FUZZ_KEYWORDS)
        )
        if keyword in ("ModalityLUTSequence", "VOILUTSequence") and depth < 3:
            setattr(item, keyword, Sequence([_fuzz_item(rng, depth + 1) for _ in range(rng.randrange(3))]))
        else:
            _raw(item, keyword, rng.choice(FUZZ_VRS[:13]), _fuzz_value(rng, "US"))
    return item


def _fuzz_case(index: int, samples: dict[str, bytes]) -> bytes | None:
    rng = random.Random(index)
    name = rng.choice(FUZZ_SAMPLES)
    original = pydicom.dcmread(BytesIO(samples[name]))
    dataset = pydicom.dcmread(BytesIO(samples[name]))
    try:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            keyword = rng.choice(FUZZ_KEYWORDS)
            kind = rng.randrange(6)
            if kind == 0 and keyword in dataset:  # gone
                del dataset[keyword]
            elif kind == 1:  # a sequence of some shape where a value was
                items = [_fuzz_item(rng, 0) for _ in range(rng.randrange(3))]
                dataset[Tag(keyword)] = pydicom.DataElement(Tag(keyword), "SQ", Sequence(items))
            elif (
                kind == 2 and keyword in original and original[keyword].VR != "SQ"
            ):  # its bytes, cut or grown
                encoded = _encode_value(original[keyword])
                cut = encoded[: rng.randrange(len(encoded) + 1)] + _fuzz_value(rng, "OB")[: rng.randrange(9)]
                _raw(dataset, keyword, str(original[keyword].VR)[:2], cut)
            else:  # a value of any VR
                vr = rng.choice(FUZZ_VRS[:-1])
                _raw(dataset, keyword, vr, _fuzz_value(rng, vr))
        return _encode(dataset)
    except Exception:  # pydicom could not write this combination: nothing to upload
        return None


def _encode_value(element: Any) -> bytes:
    probe = Dataset()
    probe.add(element)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, probe)
    return buffer.getvalue()[8:]  # after the implicit-VR tag and length


@pytest.fixture(scope="module")
def fuzz_corpus() -> list[bytes]:
    samples = {name: Path(_path(name)).read_bytes() for name in FUZZ_SAMPLES}
    corpus = [
        case for case in (_fuzz_case(index, samples) for index in range(FUZZ_CASES)) if case is not None
    ]
    assert len(corpus) > 0.8 * FUZZ_CASES
    rng = random.Random(13)
    for _ in range(120):  # and bytes flipped anywhere in the header of a sample
        data = bytearray(samples[rng.choice(FUZZ_SAMPLES[:5])])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(132, min(len(data), 1600))] = rng.randrange(256)
        corpus.append(bytes(data))
    return corpus


def test_fuzzed_attributes_give_only_image_errors(fuzz_corpus: list[bytes]) -> None:
    outcomes: dict[str, int] = {}
    for data in fuzz_corpus:
        started = time.perf_counter()
        try:
            rgb = decode_dicom(data)
        except ImageError as error:  # anything else fails the test: it would be a 500
            assert error.message[:1].isupper() and error.message.endswith("."), error.message
            _assert_clean(_texts_of(error))
            outcome = type(error).__name__
        else:
            assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
            outcome = "decoded"
        assert time.perf_counter() - started < HOSTILE_SECONDS
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # the corpus reaches every kind of answer, not only the first check
    assert {"decoded", "ImageDecodeError", "UnsupportedImageFormatError"} <= set(outcomes), outcomes


# -- through the API: status, error_type, and a service that stays healthy ----------------------------------


API_CASES = {
    "jpeg-frame-bomb": (lambda: _jpeg_dicom(_jpeg(forged=(20000, 20000))), 413, "image_too_large"),
    "jpeg2000-frame-bomb": (_jpeg2000_bomb, 413, "image_too_large"),
    "rle-segment-bomb": (_rle_bomb, 400, "invalid_image"),
    "deflate-bomb": (_deflate_bomb, 413, "image_too_large"),
    "rescale-slope-text": (lambda: _mutated(_set_slope_text), 400, "invalid_image"),
    "voi-lut-two-values": (lambda: _mutated(_two_value_voi_descriptor), 400, "invalid_image"),
    "modality-lut-short": (lambda: _mutated(_short_modality_lut), 400, "invalid_image"),
    "pixel-data-twice": (_pixel_data_twice, 400, "invalid_image"),
    "unknown-photometric": (
        lambda: _mutated(lambda ds: _raw(ds, "PhotometricInterpretation", "CS", b"JD4711")),
        415,
        "unsupported_media_type",
    ),
    "bare-implicit": (lambda: _bare_body(implicit=True), 200, None),
    "bare-explicit": (lambda: _bare_body(implicit=False), 200, None),
}


@pytest.fixture(scope="module")
def api_client(model_repository: Path) -> Iterator[TestClient]:
    """One started and ready client for the module, on the tiny models; a 500 is answered, not raised."""
    app = create_app(Settings.model_validate({"model_repository": model_repository, "max_decode_mib": 64}))
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready after 60 s"
            time.sleep(0.01)
        yield client


def _post(client: TestClient, data: bytes) -> Any:
    return client.post("/predict", files={"file": ("slice.dcm", data, "application/dicom")})


@pytest.mark.parametrize("case", list(API_CASES))
def test_hostile_upload_through_the_api(api_client: TestClient, case: str) -> None:
    build, status, error_type = API_CASES[case]
    response = _post(api_client, build())
    assert response.status_code == status, response.text
    if error_type is not None:
        body = response.json()
        assert body["error_type"] == error_type
        assert body["error"][:1].isupper() and body["error"].endswith(".")
        _assert_clean([response.text])
    assert api_client.get("/health/ready").status_code == 200


def test_fuzzed_uploads_never_get_a_5xx(api_client: TestClient, fuzz_corpus: list[bytes]) -> None:
    statuses = [_post(api_client, data).status_code for data in fuzz_corpus[::8]]
    assert all(status < 500 for status in statuses), statuses
    assert 'error_type="internal_error"' not in api_client.get("/metrics").text  # the catch-all never ran
    assert api_client.get("/health/ready").status_code == 200
