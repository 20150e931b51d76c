"""is_dicom and decode_dicom on pydicom's bundled samples, datasets edited in memory and a real MRI slice."""

from __future__ import annotations

import logging
import traceback
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut, convert_color_space, get_decoder
from pydicom.uid import (
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

import service.dicom
from service.dicom import NO_PIXEL_DATA_MESSAGE, NOT_DICOM_MESSAGE, decode_dicom, is_dicom
from service.errors import from_image_error
from service.preprocessing import (
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    decode_image,
)

# MR_small.dcm (64 x 64, 16-bit, window 600 / 1600) in every encoding pydicom ships offline
MR_SMALL_ENCODINGS = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
]
SARTAJ_GLIOMA = "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg"
PATIENT_FIELDS = {
    "PatientName": "Doe^Jane",
    "PatientID": "JD-4711",
    "PatientBirthDate": "19700101",
    "OtherPatientNames": "Roe^Janet",
}
PATIENT_TEXTS = ["Doe", "Jane", "JD-4711", "19700101", "Roe"]


def _path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's sample {name} is not on this machine"
    return str(path)


def _sample(name: str) -> bytes:
    return Path(_path(name)).read_bytes()


def _dataset(name: str) -> Dataset:
    return pydicom.dcmread(_path(name))


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _can_decode(name: str) -> bool:
    return bool(get_decoder(_dataset(name).file_meta.TransferSyntaxUID).is_available)


def _without_pixels(dataset: Dataset) -> bytes:
    del dataset.PixelData
    return _encode(dataset)


def test_is_dicom_by_marker_or_content_type() -> None:
    assert is_dicom(_sample("MR_small.dcm"))
    assert is_dicom(b"\x00" * 10, "application/dicom")
    assert is_dicom(b"", "Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1")
    assert not is_dicom(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "image/png")
    assert not is_dicom(b"")
    assert not is_dicom(b"\x00" * 128 + b"DICX" + b"\x00" * 10, None)


@pytest.mark.parametrize("name", MR_SMALL_ENCODINGS)
def test_every_encoding_of_one_slice_decodes_to_the_same_rgb(name: str) -> None:
    if not _can_decode(name):  # without pylibjpeg: a 415 that names the transfer syntax
        syntax = _dataset(name).file_meta.TransferSyntaxUID
        with pytest.raises(UnsupportedImageFormatError, match=syntax.name):
            decode_dicom(_sample(name))
        return
    rgb = decode_dicom(_sample(name))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb.std() > 20
    assert np.array_equal(rgb, decode_dicom(_sample("MR_small.dcm")))  # all lossless


def test_window_is_applied_as_pydicom_applies_it() -> None:
    dataset = _dataset("MR_small.dcm")
    assert (float(dataset.WindowCenter), float(dataset.WindowWidth)) == (600.0, 1600.0)
    # pydicom maps the window onto the int16 range: bring that range to 0..255 for an independent reference
    windowed = apply_voi_lut(dataset.pixel_array.astype(np.float64), dataset)  # (64, 64) in [-32768, 32767]
    reference = (windowed + 32768.0) * (255.0 / 65535.0)
    grey = decode_dicom(_sample("MR_small.dcm"))[..., 0]
    assert np.abs(grey.astype(np.float64) - reference).max() <= 1.0


def test_modality_lut_without_window_is_min_max() -> None:
    dataset = _dataset("CT_small.dcm")
    assert "WindowCenter" not in dataset and "RescaleIntercept" in dataset
    grey = decode_dicom(_sample("CT_small.dcm"))[..., 0]
    assert grey.shape == (128, 128) and (grey.min(), grey.max()) == (0, 255)


def test_monochrome1_is_inverted() -> None:
    dataset = _dataset("MR_small.dcm")
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted = decode_dicom(_encode(dataset))
    assert np.array_equal(inverted, 255 - decode_dicom(_sample("MR_small.dcm")))


def test_rgb_and_ybr_colour_images() -> None:
    rgb = decode_dicom(_sample("SC_rgb_rle.dcm"))  # RLE is decoded by pydicom itself
    assert rgb.shape == (100, 100, 3) and np.array_equal(rgb, _dataset("SC_rgb_rle.dcm").pixel_array)
    ybr = _dataset("SC_ybr_full_422_uncompressed.dcm")
    raw = pydicom.pixels.pixel_array(_path("SC_ybr_full_422_uncompressed.dcm"), raw=True)  # YBR, not RGB
    expected = convert_color_space(raw, ybr.PhotometricInterpretation, "RGB")
    assert np.array_equal(decode_dicom(_sample("SC_ybr_full_422_uncompressed.dcm")), expected)
    # 16 bits a sample scale by the full 16-bit range, keeping the colours of the 8-bit version
    deep = decode_dicom(_sample("SC_rgb_rle_16bit.dcm")).astype(int)
    assert np.abs(deep - rgb.astype(int)).max() <= 1


def test_palette_colour_is_looked_up() -> None:
    rgb = decode_dicom(_sample("examples_palette.dcm"))
    dataset = _dataset("examples_palette.dcm")
    assert rgb.shape == (int(dataset.Rows), int(dataset.Columns), 3)
    assert not np.array_equal(rgb[..., 0], rgb[..., 2])  # coloured, not grey


def test_missing_pixel_data_is_a_typed_error_with_the_exact_sentence() -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_dicom(_without_pixels(_dataset("MR_small.dcm")))
    assert from_image_error(caught.value).to_body() == {
        "error": NO_PIXEL_DATA_MESSAGE,
        "error_type": "invalid_image",
    }
    assert from_image_error(caught.value).status_code == 400
    assert NO_PIXEL_DATA_MESSAGE == "The DICOM file holds no pixel data."


def test_patient_fields_never_reach_messages_warnings_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    dataset = _dataset("MR_small.dcm")
    for keyword, value in PATIENT_FIELDS.items():
        setattr(dataset, keyword, value)
    valid = _encode(dataset)
    truncated = valid[: len(valid) - 1000]  # inside the pixel data
    no_pixels = _without_pixels(dataset)
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        assert decode_dicom(valid).shape == (64, 64, 3)
        for data in (truncated, no_pixels, valid[:600]):
            with pytest.raises(ImageDecodeError) as caught:
                decode_dicom(data)
            # what a log line with exc_info would print: the message and any chained cause
            texts += [caught.value.message, *traceback.format_exception(caught.value)]
    texts += [str(warning.message) for warning in caught_warnings] + [caplog.text]
    assert str(pydicom.dcmread(BytesIO(valid)).PatientName) == "Doe^Jane"
    for text in texts:
        for secret in PATIENT_TEXTS:
            assert secret not in text


@pytest.mark.parametrize("keep", [200, 1500, 5000, 9000])
def test_truncated_files_are_decode_errors(keep: int) -> None:
    data = _sample("MR_small.dcm")  # 9830 bytes: header, 8192 bytes of pixel data from 1500, 138 of padding
    with pytest.raises(ImageDecodeError):
        decode_dicom(data[:keep])
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_dicom(_sample("MR_truncated.dcm"))


def test_not_dicom_and_empty_uploads() -> None:
    png = cv2.imencode(".png", np.full((16, 16), 7, np.uint8))[1].tobytes()
    with pytest.raises(ImageDecodeError) as caught:
        decode_dicom(png)  # e.g. declared application/dicom by a client
    assert caught.value.message == NOT_DICOM_MESSAGE
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_dicom(b"")


def test_too_many_pixels_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Dataset) -> None:
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_decoding))
    dataset = _dataset("MR_small.dcm")
    dataset.Rows, dataset.Columns = 60000, 50000  # declared; the 8 KB of pixel data are never decoded
    with pytest.raises(ImageTooLargeError) as caught:
        decode_dicom(_encode(dataset))
    assert from_image_error(caught.value).to_body() == {
        "error": "The DICOM image is 50000 x 60000 pixels (3,000,000,000 in all), "
        "more than the limit of 50,000,000 pixels.",
        "error_type": "image_too_large",
    }
    with pytest.raises(ImageTooLargeError, match="more than the limit of 4,095 pixels"):
        decode_dicom(_sample("MR_small.dcm"), max_pixels=64 * 64 - 1)


def test_too_small_and_multi_frame_refused() -> None:
    with pytest.raises(ImageDecodeError, match="too small to classify"):
        decode_dicom(_sample("MR_small.dcm"), min_side=65)
    with pytest.raises(UnsupportedImageFormatError) as caught:
        decode_dicom(_sample("SC_rgb_rle_2frame.dcm"))
    assert from_image_error(caught.value).to_body() == {
        "error": "The DICOM file holds 2 frames; send a single slice (a file with one frame).",
        "error_type": "unsupported_media_type",
    }


def test_transfer_syntax_without_decoder_is_415_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = _dataset("MR_small.dcm")
    dataset.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(100)])  # video: pydicom has no decoder
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(UnsupportedImageFormatError, match="'MPEG2 Main Profile / Main Level'"):
        decode_dicom(_encode(dataset))

    class Missing:  # the decoder of a server without pylibjpeg
        is_available = False

    real_get_decoder = service.dicom.get_decoder

    def get_decoder_without_plugins(uid: UID) -> Any:
        return Missing() if uid == JPEGLSLossless else real_get_decoder(uid)

    monkeypatch.setattr(service.dicom, "get_decoder", get_decoder_without_plugins)
    with pytest.raises(UnsupportedImageFormatError) as caught:
        decode_dicom(_sample("MR_small_jpeg_ls_lossless.dcm"))
    assert from_image_error(caught.value).to_body() == {
        "error": "DICOM files compressed as 'JPEG-LS Lossless Image Compression' cannot be decoded on this "
        "server. Send an uncompressed (Explicit VR Little Endian) DICOM file.",
        "error_type": "unsupported_media_type",
    }
    assert decode_dicom(_sample("MR_small.dcm")).shape == (64, 64, 3)  # uncompressed needs no plugin


def _mri_as_dicom(grey: npt.NDArray[np.uint8], transfer_syntax: UID) -> bytes:
    """A 16-bit MR slice whose rescale and exact-linear window map it back to ``grey`` exactly."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MR"
    dataset.set_pixel_data(grey.astype(np.uint16) * 4 + 100, "MONOCHROME2", 12)  # stored = 4 * grey + 100
    dataset.RescaleSlope, dataset.RescaleIntercept = 0.25, -25  # modality value = grey
    dataset.WindowCenter, dataset.WindowWidth, dataset.VOILUTFunction = 127.5, 255, "LINEAR_EXACT"
    if transfer_syntax != ExplicitVRLittleEndian:
        dataset.compress(transfer_syntax)
    return _encode(dataset)


@pytest.mark.realdata
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, RLELossless])
def test_real_mri_slice_round_trips_through_rescale_and_window(data_root: Path, transfer_syntax: UID) -> None:
    rgb = decode_image((data_root / SARTAJ_GLIOMA).read_bytes())  # (H, W, 3), not square
    grey = np.ascontiguousarray(rgb[..., 0])
    decoded = decode_dicom(_mri_as_dicom(grey, transfer_syntax))
    assert decoded.shape == (*grey.shape, 3)
    assert np.array_equal(decoded[..., 1], grey)
