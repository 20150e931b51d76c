"""Bytes of a DICOM file -> the same canonical uint8 RGB (H, W, 3) array that ``decode_image`` gives.

One single-frame slice (MR, CT, secondary capture...) per upload. Before any pixel is decoded the pixel data
must exist, Rows x Columns must be within the pixel limit and the transfer syntax must have a decoder on this
server: compressed syntaxes (JPEG, JPEG-LS, JPEG 2000) decode through pylibjpeg or Pillow when installed, RLE
always. Multi-frame files are refused (which frame of a volume to classify is the sender's choice, not ours).

Greyscale: modality LUT (Rescale Slope / Intercept) -> VOI (the VOI LUT, else the first Window Center / Width,
else min-max) -> 0..255, inverted for MONOCHROME1 -> grey repeated to RGB. Colour: YBR is converted to RGB by
pydicom, PALETTE COLOR through its lookup table, more than 8 bits scaled by the stored bit depth.

Patient data never leaves this module: only pixel-module attributes are read, and no message or exception (nor
its chained cause) carries the text of pydicom's own errors, which can quote element values.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Final

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID

from service.preprocessing import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageDecodeError,
    ImageTooLargeError,
    NotBrainMriImageError,
    UnsupportedImageFormatError,
)

__all__ = ["DICOM_CONTENT_TYPE", "NOT_DICOM_MESSAGE", "NO_PIXEL_DATA_MESSAGE", "decode_dicom", "is_dicom"]

DICOM_CONTENT_TYPE: Final = "application/dicom"
NO_PIXEL_DATA_MESSAGE: Final = "The DICOM file holds no pixel data."
NOT_DICOM_MESSAGE: Final = "The upload is not a DICOM file with pixel data."
_MAGIC: Final = b"DICM"
_MAGIC_OFFSET: Final = 128  # after the 128-byte preamble (PS3.10 7.1)
_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_SEND_UNCOMPRESSED: Final = "Send an uncompressed (Explicit VR Little Endian) DICOM file."


def is_dicom(data: bytes, content_type: str | None = None) -> bool:
    """Whether ``data`` is a DICOM Part 10 file ("DICM" at offset 128) or declared ``application/dicom``."""
    if data[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] == _MAGIC:
        return True
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == DICOM_CONTENT_TYPE


def decode_dicom(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    require_brain_mri: bool = False,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> npt.NDArray[np.uint8]:
    """Decode one DICOM slice into a C-contiguous uint8 RGB array of shape (Rows, Columns, 3).

    Raises ImageDecodeError (empty, not DICOM, corrupt or truncated, no pixel data, too small),
    ImageTooLargeError (Rows x Columns over ``max_pixels``, refused before decoding) or
    UnsupportedImageFormatError (several frames, a transfer syntax or photometric interpretation this server
    cannot decode); with ``require_brain_mri``, NotBrainMriImageError (:func:`check_brain_mri`).
    """
    dataset = _read_dataset(data)
    if require_brain_mri:  # the service's uploads; a plain decode reads any modality
        check_brain_mri(dataset)
    _check_geometry(dataset, max_pixels=max_pixels, min_side=min_side)
    _check_transfer_syntax(dataset)
    try:
        pixels = dataset.pixel_array  # (H, W) or (H, W, 3); YBR already converted to RGB
    except Exception:  # ValueError (short data), RuntimeError (every decoder plugin failed), ...
        raise ImageDecodeError(
            "The DICOM pixel data could not be decoded: the file is corrupt or truncated."
        ) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2") and pixels.ndim == 2:
        grey = _grey_to_uint8(pixels, dataset)  # (H, W)
        if photometric == "MONOCHROME1":  # MONOCHROME1: the lowest value is white
            grey = 255 - grey
        rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)  # (H, W, 3)
    elif photometric == "PALETTE COLOR" and pixels.ndim == 2:
        rgb = _colour_to_uint8(_apply_palette(pixels, dataset), 16)  # the palette's entries are 16-bit
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        rgb = _colour_to_uint8(pixels, int(dataset.get("BitsStored", 8)))
    else:
        raise UnsupportedImageFormatError(
            f"DICOM images with the photometric interpretation {_printable(photometric)!r} are not "
            "supported; send a MONOCHROME1, MONOCHROME2, RGB, YBR or PALETTE COLOR image."
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)


_MODALITY_NAMES: Final = {
    "CT": "computed tomography", "CR": "computed radiography", "DX": "digital radiography",
    "MG": "mammography", "US": "ultrasound", "PT": "positron emission tomography", "NM": "nuclear medicine",
    "XA": "X-ray angiography", "RF": "radio fluoroscopy", "OT": "other", "SC": "secondary capture",
    "OP": "ophthalmic photography", "XC": "external-camera photography", "SM": "slide microscopy",
}  # fmt: skip
_BRAIN_PARTS: Final = frozenset({"BRAIN", "HEAD", "SKULL", "HEADNECK", "CEREBRUM", "CEREBELLUM", "NEURO"})
_OTHER_PARTS: Final = (
    "SPINE", "LSPINE", "CSPINE", "TSPINE", "LUMBAR", "CERVICAL", "THORACIC", "SACRUM", "CHEST", "THORAX",
    "LUNG", "BREAST", "HEART", "CARDIAC", "ABDOMEN", "LIVER", "KIDNEY", "PANCREAS", "PELVIS", "PROSTATE",
    "KNEE", "HIP", "SHOULDER", "ELBOW", "WRIST", "HAND", "ANKLE", "FOOT", "LEG", "ARM", "EXTREMITY",
)  # fmt: skip
"""Words of BodyPartExamined (and the study and series descriptions) that name a part other than the head."""


def check_brain_mri(dataset: Dataset) -> None:
    """NotBrainMriImageError when the attributes say it is not MR, or name a body part other than the head.

    Absent attributes pass: many exports drop them, and the pixels still meet the input-validity check.
    The sentence names the standard meaning of a Modality code, never an attribute's own text.
    """
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if modality and modality != "MR":
        what = _MODALITY_NAMES.get(modality, "not magnetic resonance")
        raise NotBrainMriImageError(
            f"The DICOM file's Modality is {what}, not MR (magnetic resonance): this service classifies "
            "brain MRI slices only, so no tumour label is given."
        )
    part = str(dataset.get("BodyPartExamined", "") or "").strip().upper().replace(" ", "")
    if part and part not in _BRAIN_PARTS and any(word in part for word in _OTHER_PARTS):
        raise NotBrainMriImageError(
            "The DICOM file's Body Part Examined names a part of the body other than the head: this service "
            "classifies brain MRI slices only, so no tumour label is given."
        )
    descriptions = " ".join(
        str(dataset.get(keyword, "") or "").upper() for keyword in ("StudyDescription", "SeriesDescription")
    )
    words = set(re.split(r"[^A-Z]+", descriptions))
    if not words & _BRAIN_PARTS and words & set(_OTHER_PARTS):
        raise NotBrainMriImageError(
            "The DICOM file's study or series description names a part of the body other than the head: this "
            "service classifies brain MRI slices only, so no tumour label is given."
        )


def _read_dataset(data: bytes) -> Dataset:
    if len(data) == 0:
        raise ImageDecodeError("The upload is empty. Send a DICOM file.")
    # Without the "DICM" marker (a bare dataset declared as application/dicom) pydicom must be forced.
    force = data[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] != _MAGIC
    try:
        dataset = pydicom.dcmread(BytesIO(data), force=force)
    except Exception:  # InvalidDicomError, EOFError, struct.error, ValueError, ...: never quote their text
        raise ImageDecodeError("The DICOM file could not be read: it is corrupt or truncated.") from None
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        # with force, any bytes "parse"; without the marker, say what they most likely are
        raise ImageDecodeError(NOT_DICOM_MESSAGE if force else NO_PIXEL_DATA_MESSAGE)
    return dataset


def _check_geometry(dataset: Dataset, *, max_pixels: int, min_side: int) -> None:
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except Exception:  # missing, empty or not a number
        raise ImageDecodeError(
            "The DICOM file does not declare its image size (Rows, Columns, Number of Frames)."
        ) from None
    if rows * columns > max_pixels:
        raise ImageTooLargeError(
            f"The DICOM image is {columns} x {rows} pixels ({rows * columns:,} in all), "
            f"more than the limit of {max_pixels:,} pixels."
        )
    if min(rows, columns) < min_side:
        raise ImageDecodeError(
            f"The DICOM image is {columns} x {rows} pixels, too small to classify; "
            f"each side must be at least {min_side} pixels."
        )
    if frames != 1:
        raise UnsupportedImageFormatError(
            f"The DICOM file holds {frames} frames; send a single slice (a file with one frame)."
        )


def _check_transfer_syntax(dataset: Dataset) -> None:
    """415 naming the transfer syntax when no decoder for it is installed on this server."""
    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid is None:
        return  # a bare dataset read with force: pydicom falls back to the default (uncompressed) syntax
    syntax = UID(str(uid))
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # video (MPEG, HEVC) or an unknown UID
        available = False
    if not available:
        name = syntax.name if syntax.is_valid else _printable(str(syntax))
        raise UnsupportedImageFormatError(
            f"DICOM files compressed as {name!r} cannot be decoded on this server. {_SEND_UNCOMPRESSED}"
        )


def _grey_to_uint8(pixels: npt.NDArray[np.generic], dataset: Dataset) -> npt.NDArray[np.uint8]:
    """(H, W) stored values -> (H, W) uint8 display values through the modality and VOI transforms."""
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)  # (H, W) e.g. Hounsfield units
    if "VOILUTSequence" in dataset:
        return _min_max(np.asarray(apply_voi_lut(values, dataset, prefer_lut=True), dtype=np.float64))
    window = _first_window(dataset)
    if window is not None:
        return _apply_window(values, *window, str(dataset.get("VOILUTFunction", "LINEAR")).upper())
    if pixels.dtype == np.uint8 and "RescaleSlope" not in dataset and "ModalityLUTSequence" not in dataset:
        return np.asarray(pixels, dtype=np.uint8)  # already display values, as decode_image keeps 8-bit data
    return _min_max(values)


def _first_window(dataset: Dataset) -> tuple[float, float] | None:
    """(center, width) of the first window of the file; None when absent or unusable."""
    try:
        center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
        if center is None or width is None:
            return None
        # multi-valued: several windows; the first is the one a viewer opens with
        first_center = float(center[0] if isinstance(center, MultiValue) else center)
        first_width = float(width[0] if isinstance(width, MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(first_center) and np.isfinite(first_width) and first_width > 0):
        return None
    return first_center, first_width


def _apply_window(
    values: npt.NDArray[np.float64], center: float, width: float, function: str
) -> npt.NDArray[np.uint8]:
    """DICOM PS3.3 C.11.2.1.2 windowing of (H, W) values straight onto 0..255."""
    if function == "SIGMOID":
        display = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        display = ((values - center) / width + 0.5) * 255.0
    else:  # LINEAR: the centre sits half a unit lower and the width counts one unit less
        if width < 1:
            return _min_max(values)
        display = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return np.clip(np.rint(np.nan_to_num(display, nan=0.0)), 0, 255).astype(np.uint8)


def _min_max(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Min-max window the finite values onto 0..255, rounded; a constant image maps to 0."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.where(finite, (values - low) * scale, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _apply_palette(pixels: npt.NDArray[np.generic], dataset: Dataset) -> npt.NDArray[np.generic]:
    try:
        return np.asarray(apply_color_lut(pixels, dataset))  # (H, W, 3) uint16 (or uint8)
    except Exception:
        raise ImageDecodeError("The DICOM palette colour lookup table is missing or corrupt.") from None


def _colour_to_uint8(rgb: npt.NDArray[np.generic], bits: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) RGB of ``bits`` stored bits -> (H, W, 3) uint8 by the full range of that depth."""
    if rgb.dtype == np.uint8:
        return np.asarray(rgb, dtype=np.uint8)
    if np.issubdtype(rgb.dtype, np.floating):
        return _min_max(np.asarray(rgb, dtype=np.float64))
    full = float(2 ** max(1, min(bits, 8 * rgb.dtype.itemsize)) - 1)
    return np.clip(np.rint(rgb.astype(np.float64) * (255.0 / full)), 0, 255).astype(np.uint8)


def _printable(text: str, limit: int = 64) -> str:
    """Only safe characters of a code string, for an error message."""
    return "".join(character for character in text[:limit] if character.isalnum() or character in " ._-^")
