"""Bytes of a DICOM file -> the same canonical uint8 RGB (H, W, 3) array that ``decode_image`` gives.

One single-frame slice (MR, CT, secondary capture...) per upload: a Part 10 file, or a bare data set declared
``application/dicom`` (implicit or explicit VR is inferred). Multi-frame files are refused (which frame of a
volume to classify is the sender's choice, not ours).

An upload is hostile until its header says otherwise, so before any pixel is decoded:

- a deflated data set (Deflated Explicit VR Little Endian) is inflated in bounded chunks, never past the
  memory budget of one decode (``max_bytes``);
- every pixel-module attribute is validated (Rows, Columns, Samples per Pixel, Bits Allocated / Stored, Pixel
  Representation, Photometric Interpretation, Planar Configuration, Number of Frames), and Rows x Columns x
  samples x bytes per sample must fit the pixel limit and the budget;
- uncompressed pixel data must hold what Rows x Columns x samples x bits declare;
- a compressed frame's own codestream header (JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ, the RLE header and the
  length of each RLE segment) must fit the same limits and agree with Rows, Columns and Samples per Pixel:
  a codec trusts its codestream, not the DICOM header, so a forged frame header would otherwise allocate
  gigabytes from a kilobyte file;
- the transfer syntax must have a decoder on this server: compressed syntaxes (JPEG, JPEG-LS, JPEG 2000)
  decode through pylibjpeg or Pillow when installed, RLE always;
- the lookup tables and windows that the conversion below uses are validated before use.

Greyscale: modality LUT (Rescale Slope / Intercept) -> VOI (the VOI LUT, else the first Window Center / Width,
else min-max) -> 0..255, inverted for MONOCHROME1 -> grey repeated to RGB. Colour: YBR is converted to RGB by
pydicom, PALETTE COLOR through its lookup table, more than 8 bits scaled by the stored bit depth.

Every refusal is an ImageError subclass with a sentence; nothing else leaves :func:`decode_dicom`. Patient
data never leaves this module: a sentence may name an attribute but never quotes its value (a transfer syntax
is named only by pydicom's dictionary name of a registered UID), no exception carries pydicom's own text, and
pydicom's warnings and log records, which quote element values, are silenced.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from io import BytesIO
from typing import Final

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from service.preprocessing import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    NotBrainMriImageError,
    UnsupportedImageFormatError,
)

__all__ = ["DICOM_CONTENT_TYPE", "NOT_DICOM_MESSAGE", "NO_PIXEL_DATA_MESSAGE", "decode_dicom", "is_dicom"]

DICOM_CONTENT_TYPE: Final = "application/dicom"
NO_PIXEL_DATA_MESSAGE: Final = "The DICOM file holds no pixel data."
NOT_DICOM_MESSAGE: Final = "The upload is not a DICOM file with pixel data."
PIXEL_DATA_MISMATCH_MESSAGE: Final = (
    "The DICOM pixel data does not match the size that Rows x Columns x Samples per Pixel x Bits Allocated "
    "declare: the file is corrupt."
)
CORRUPT_MESSAGE: Final = "The DICOM file could not be decoded: it is corrupt or malformed."
_MAGIC: Final = b"DICM"
_MAGIC_OFFSET: Final = 128  # after the 128-byte preamble (PS3.10 7.1)
_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_SEND_UNCOMPRESSED: Final = "Send an uncompressed (Explicit VR Little Endian) DICOM file."
_SUPPORTED_PHOTOMETRIC: Final = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1,
    "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3, "YBR_ICT": 3, "YBR_RCT": 3,
}  # fmt: skip
"""Photometric interpretations this module turns into RGB, with the samples per pixel each one has."""
_INFLATE_CHUNK: Final = 1 << 20
_MAX_FRAGMENTS: Final = 16_384  # a 20 MiB frame cut into 1.3 KB fragments; real writers cut at 8 KB or more
_MAX_MARKERS: Final = 4096  # JPEG segments (and fill bytes) before the frame header; real files have < 20
_MAX_BOXES: Final = 256  # JP2 boxes before the codestream box

# pydicom logs element values verbatim ("Invalid value for VR DS: '...'"). Every problem it could describe
# reaches the client as a typed error instead, so no record of its logger (nor of its child loggers, which
# inherit the level) is even made, and any made after a change of level stops at pydicom's NullHandler.
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
logging.getLogger("pydicom").propagate = False

# warnings.catch_warnings swaps process-wide state (Python 3.11): two decodes overlapping in worker threads
# would restore each other's filters, leaving warnings silenced (or shown) for the whole process.
_QUIET_LOCK: Final = threading.Lock()


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

    Raises ImageDecodeError (empty, not DICOM, corrupt or truncated, malformed pixel-module attributes, pixel
    data or a compressed frame that disagrees with the header, no pixel data, too small),
    ImageTooLargeError (Rows x Columns, or the frame header of compressed pixel data, over ``max_pixels``;
    the decoded pixels, or the inflated data set of a deflated file, over ``max_bytes``: all refused before
    decoding) or UnsupportedImageFormatError (several frames, a transfer syntax, photometric interpretation
    or bit depth this server cannot decode); with ``require_brain_mri``, NotBrainMriImageError
    (:func:`check_brain_mri`). No other exception leaves it.
    """
    if len(data) == 0:
        raise ImageDecodeError("The upload is empty. Send a DICOM file.")
    with _quiet():
        try:
            return _decode(
                data,
                max_pixels=max_pixels,
                min_side=min_side,
                require_brain_mri=require_brain_mri,
                max_bytes=max_bytes,
            )
        except ImageError:
            raise
        except MemoryError:
            raise ImageTooLargeError(
                "The DICOM image needs more memory to decode than this server allows for one upload."
            ) from None
        except (
            Exception
        ):  # a case no check above foresaw: still a sentence, never pydicom's text, never a 500
            raise ImageDecodeError(CORRUPT_MESSAGE) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Python warnings are silenced while pydicom reads and decodes: their text quotes element values."""
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _decode(
    data: bytes, *, max_pixels: int, min_side: int, require_brain_mri: bool, max_bytes: int
) -> npt.NDArray[np.uint8]:
    dataset, syntax = _read_dataset(data, max_bytes=max_bytes)
    if require_brain_mri:  # the service's uploads; a plain decode reads any modality
        check_brain_mri(dataset)
    module = _pixel_module(dataset, max_pixels=max_pixels, min_side=min_side, max_bytes=max_bytes)
    _check_transfer_syntax(syntax)
    if syntax.is_encapsulated:
        _check_frame(module, syntax, max_pixels=max_pixels, max_bytes=max_bytes)
    else:
        _check_native_length(module)
    # every attribute the conversion uses is validated before decoding: a malformed one costs no decode
    little_endian = syntax != ExplicitVRBigEndian
    grey = module.samples == 1 and module.photometric != "PALETTE COLOR"
    transforms = _grey_transforms(dataset, little_endian, module.pixel_representation) if grey else None
    if module.photometric == "PALETTE COLOR":
        _check_palette(dataset, little_endian)
    try:
        pixels = dataset.pixel_array  # (H, W) or (H, W, 3); YBR already converted to RGB
    except Exception:  # ValueError (short data), RuntimeError (every decoder plugin failed), ...
        raise ImageDecodeError(
            "The DICOM pixel data could not be decoded: the file is corrupt or truncated."
        ) from None
    if pixels.shape != module.shape:
        raise ImageDecodeError(PIXEL_DATA_MISMATCH_MESSAGE)
    if transforms is not None:
        display = _grey_to_uint8(pixels, transforms)  # (H, W)
        if module.photometric == "MONOCHROME1":  # MONOCHROME1: the lowest value is white
            display = 255 - display
        rgb = np.repeat(display[:, :, np.newaxis], 3, axis=2)  # (H, W, 3)
    elif module.photometric == "PALETTE COLOR":
        rgb = _colour_to_uint8(_apply_palette(pixels, dataset), 16)  # the palette's entries are 16-bit
    else:
        rgb = _colour_to_uint8(pixels, module.bits_stored)
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
    modality = _text(dataset, "Modality")
    if modality and modality != "MR":
        what = _MODALITY_NAMES.get(modality, "not magnetic resonance")
        raise NotBrainMriImageError(
            f"The DICOM file's Modality is {what}, not MR (magnetic resonance): this service classifies "
            "brain MRI slices only, so no tumour label is given."
        )
    part = _text(dataset, "BodyPartExamined").replace(" ", "")
    if part and part not in _BRAIN_PARTS and any(word in part for word in _OTHER_PARTS):
        raise NotBrainMriImageError(
            "The DICOM file's Body Part Examined names a part of the body other than the head: this service "
            "classifies brain MRI slices only, so no tumour label is given."
        )
    descriptions = " ".join(_text(dataset, keyword) for keyword in ("StudyDescription", "SeriesDescription"))
    words = set(re.split(r"[^A-Z]+", descriptions))
    if not words & _BRAIN_PARTS and words & set(_OTHER_PARTS):
        raise NotBrainMriImageError(
            "The DICOM file's study or series description names a part of the body other than the head: this "
            "service classifies brain MRI slices only, so no tumour label is given."
        )


def _text(dataset: Dataset, keyword: str) -> str:
    """The upper-case text of a string attribute; "" when absent, empty or not text (bytes, a sequence...)."""
    try:
        value = dataset.get(keyword)
    except Exception:  # an undecodable value (character set, VR): as if absent
        return ""
    if isinstance(value, MultiValue) and len(value) > 0:
        value = value[0]
    if not isinstance(value, str):  # PersonName, bytes of an UN element, a Sequence...
        return ""
    return value.strip().upper()


# -- reading ----------------------------------------------------------------------------------------------


def _read_dataset(data: bytes, *, max_bytes: int) -> tuple[Dataset, UID]:
    """The data set with its pixel data, and the transfer syntax its pixel data is encoded in."""
    # Without the "DICM" marker (a bare dataset declared as application/dicom) pydicom must be forced.
    force = data[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] != _MAGIC
    try:
        stream = BytesIO(data)
        read_preamble(stream, force=True)
        # the same reading of the file meta information as pydicom's dcmread (a private helper of pydicom 3):
        # it must agree with dcmread on whether the data set is deflated
        file_meta = _read_file_meta_info(stream)
        declared = file_meta.get("TransferSyntaxUID")
        # pydicom's own test (an equality), and the same value with its padding stripped
        if (
            declared == DeflatedExplicitVRLittleEndian
            or str(declared).strip("\0 ") == DeflatedExplicitVRLittleEndian
        ):
            # pydicom would inflate it whole before any check (a 500 KB file can inflate to 500 MB)
            dataset = read_dataset(_inflate(data[stream.tell() :], max_bytes), False, True)
            dataset.file_meta = file_meta
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what was inside the deflate
        else:
            dataset = pydicom.dcmread(BytesIO(data), force=force)
    except ImageError:
        raise
    except Exception:  # InvalidDicomError, EOFError, struct.error, ValueError, ...: never quote their text
        raise ImageDecodeError("The DICOM file could not be read: it is corrupt or truncated.") from None
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        # with force, any bytes "parse"; without the marker, say what they most likely are
        raise ImageDecodeError(NOT_DICOM_MESSAGE if force else NO_PIXEL_DATA_MESSAGE)
    return dataset, _transfer_syntax(dataset)


def _inflate(deflated: bytes, max_bytes: int) -> BytesIO:
    """Inflate a raw deflate stream in 1 MiB steps; ImageTooLargeError as soon as it passes ``max_bytes``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = BytesIO()
    pending = deflated
    try:
        while not inflater.eof:
            piece = inflater.decompress(pending, _INFLATE_CHUNK)
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                break  # the input ended before the deflate stream did
            if inflated.tell() + len(piece) > max_bytes:
                raise ImageTooLargeError(
                    f"The deflated DICOM data set inflates to more than {_size(max_bytes)}, the memory limit "
                    f"of one decode. {_SEND_UNCOMPRESSED}"
                )
            inflated.write(piece)
    except zlib.error:
        raise ImageDecodeError("The deflated DICOM data set is corrupt: it could not be inflated.") from None
    if not inflater.eof:
        raise ImageDecodeError("The deflated DICOM data set ends early: the file is corrupt or truncated.")
    inflated.seek(0)
    return inflated


def _transfer_syntax(dataset: Dataset) -> UID:
    """The declared transfer syntax; for a bare data set, the one pydicom inferred while reading it."""
    file_meta = dataset.file_meta
    declared = file_meta.get("TransferSyntaxUID")
    if declared is not None and str(declared).strip("\0 "):
        return UID(str(declared).strip("\0 "))
    implicit, little_endian = dataset.original_encoding
    if implicit:
        inferred = ImplicitVRLittleEndian
    else:
        inferred = ExplicitVRLittleEndian if little_endian is not False else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = inferred  # pydicom decodes pixel data by the file meta's transfer syntax
    return inferred


def _check_transfer_syntax(syntax: UID) -> None:
    """415 when no decoder for the transfer syntax is installed here (naming it only if it is registered)."""
    registered = not syntax.is_private and syntax.type == "Transfer Syntax"
    try:
        available = registered and bool(get_decoder(syntax).is_available)
    except Exception:  # NotImplementedError: video (MPEG, HEVC) or a syntax pydicom cannot decode
        available = False
    if available:
        return
    if registered:  # the dictionary's name of a registered UID, never the uploaded string
        raise UnsupportedImageFormatError(
            f"DICOM files compressed as {syntax.name!r} cannot be decoded on this server. "
            + _SEND_UNCOMPRESSED
        )
    raise UnsupportedImageFormatError(
        f"The DICOM file's TransferSyntaxUID is not a transfer syntax this server knows. {_SEND_UNCOMPRESSED}"
    )


# -- the pixel module -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PixelModule:
    """The validated pixel-module attributes of one single-frame image, and its (still encoded) pixel data."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    data: bytes

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape pydicom must decode the pixel data to."""
        return (self.rows, self.columns) if self.samples == 1 else (self.rows, self.columns, self.samples)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array (1-bit data is unpacked to one byte a pixel)."""
        return self.rows * self.columns * self.samples * max(1, math.ceil(self.bits_allocated / 8))


def _pixel_module(dataset: Dataset, *, max_pixels: int, min_side: int, max_bytes: int) -> _PixelModule:
    rows, columns = _integer(dataset, "Rows"), _integer(dataset, "Columns")
    if rows is None or columns is None:
        raise ImageDecodeError("The DICOM file does not declare its image size (Rows, Columns).")
    frames = _integer(dataset, "NumberOfFrames")
    for keyword, value in (("Rows", rows), ("Columns", columns), ("NumberOfFrames", frames)):
        if value is not None and value < 1:
            raise ImageDecodeError(f"The DICOM file's {keyword} is not a positive whole number.")
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
    if frames is not None and frames != 1:
        raise UnsupportedImageFormatError(
            f"The DICOM file holds {frames} frames; send a single slice (a file with one frame)."
        )
    keyword = next(keyword for keyword in _PIXEL_KEYWORDS if keyword in dataset)
    photometric = _required_text(dataset, "PhotometricInterpretation")
    samples = _required_integer(dataset, "SamplesPerPixel")
    if samples < 1:
        raise ImageDecodeError("The DICOM file's SamplesPerPixel is not a positive whole number.")
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        raise UnsupportedImageFormatError(
            "The DICOM file's PhotometricInterpretation is not supported; send a MONOCHROME1, MONOCHROME2, "
            "RGB, YBR or PALETTE COLOR image."
        )
    if samples != _SUPPORTED_PHOTOMETRIC[photometric]:
        raise ImageDecodeError(
            "The DICOM file's SamplesPerPixel disagrees with its PhotometricInterpretation: the file is "
            "corrupt."
        )
    if samples == 3 and _integer(dataset, "PlanarConfiguration") not in (None, 0, 1):
        raise ImageDecodeError("The DICOM file's PlanarConfiguration is neither 0 nor 1.")
    bits_allocated = _required_integer(dataset, "BitsAllocated")
    if keyword == "PixelData":
        if bits_allocated < 1 or (bits_allocated != 1 and bits_allocated % 8):
            raise ImageDecodeError("The DICOM file's BitsAllocated is neither 1 nor a multiple of 8.")
        if bits_allocated not in (1, 8, 16, 32):
            raise UnsupportedImageFormatError(
                "DICOM images whose BitsAllocated is not 1, 8, 16 or 32 are not supported."
            )
        bits_stored = _required_integer(dataset, "BitsStored")
        if not 1 <= bits_stored <= bits_allocated:
            raise ImageDecodeError("The DICOM file's BitsStored is not between 1 and its BitsAllocated.")
        pixel_representation = _required_integer(dataset, "PixelRepresentation")
        if pixel_representation not in (0, 1):
            raise ImageDecodeError(
                "The DICOM file's PixelRepresentation is neither 0 (unsigned) nor 1 (signed)."
            )
    else:  # float pixel data: 32 or 64 bits a sample, greyscale only (PS3.3 C.7.6.24)
        if bits_allocated != (32 if keyword == "FloatPixelData" else 64) or samples != 1:
            raise ImageDecodeError(
                f"The DICOM file's BitsAllocated or SamplesPerPixel do not fit its {keyword}."
            )
        bits_stored, pixel_representation = bits_allocated, 0
    try:
        data = dataset[keyword].value
    except Exception:
        raise ImageDecodeError(f"The DICOM file's {keyword} could not be read: it is malformed.") from None
    if data is None or (isinstance(data, bytes | bytearray) and len(data) == 0):
        raise ImageDecodeError(NO_PIXEL_DATA_MESSAGE)
    if not isinstance(data, bytes | bytearray):  # a sequence, a list of numbers: a forged VR
        raise ImageDecodeError(f"The DICOM file's {keyword} is not a byte string: it is malformed.")
    module = _PixelModule(
        rows, columns, samples, bits_allocated, bits_stored, pixel_representation, photometric, bytes(data)
    )
    if module.decoded_bytes > max_bytes:
        raise ImageTooLargeError(
            f"The DICOM image needs {_size(module.decoded_bytes)} to decode (Rows x Columns x Samples per "
            f"Pixel x Bits Allocated), more than the memory limit of {_size(max_bytes)} for one decode."
        )
    return module


def _check_native_length(module: _PixelModule) -> None:
    """Uncompressed pixel data must hold one frame of what the header declares; less than a frame more is
    trailing padding (as pydicom reads it, PS3.5 8.1.1), a frame or more means the header is wrong."""
    bits = module.rows * module.columns * module.samples * module.bits_allocated
    expected = math.ceil(bits / 8)
    if module.photometric == "YBR_FULL_422":  # two chroma samples shared by each pair of pixels
        expected = expected // 3 * 2
    if len(module.data) < expected:
        raise ImageDecodeError(
            "The DICOM pixel data is shorter than Rows x Columns x Samples per Pixel x Bits Allocated "
            "declare: the file is corrupt or truncated."
        )
    if len(module.data) >= 2 * expected:
        raise ImageDecodeError(PIXEL_DATA_MISMATCH_MESSAGE)


# -- compressed frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FrameHeader:
    """What a compressed frame's own codestream header declares; the codec allocates by it, not by Rows."""

    codec: str
    rows: int
    columns: int
    samples: int
    precision: int
    bytes_per_sample: int  # of the codec's own buffers while it decodes


def _check_frame(module: _PixelModule, syntax: UID, *, max_pixels: int, max_bytes: int) -> None:
    """413 or 400 when the frame header of compressed pixel data is too large or disagrees with the file's."""
    frame = _single_frame(module.data)
    if syntax == RLELossless:
        _check_rle(frame, module)
        return
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        header = _jpeg_header(frame)
    elif syntax in JPEG2000TransferSyntaxes:
        header = _jpeg2000_header(frame)
    else:  # a codec whose header this module cannot read: its allocation could not be bounded
        raise UnsupportedImageFormatError(
            f"DICOM files compressed as {syntax.name!r} cannot be decoded on this server. "
            + _SEND_UNCOMPRESSED
        )
    pixels = header.rows * header.columns
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"The {header.codec} frame of the DICOM pixel data declares {header.columns} x {header.rows} "
            f"pixels ({pixels:,} in all), more than the limit of {max_pixels:,} pixels."
        )
    needed = pixels * header.samples * header.bytes_per_sample
    if needed > max_bytes:
        raise ImageTooLargeError(
            f"The {header.codec} frame of the DICOM pixel data needs {_size(needed)} to decode, more than "
            f"the memory limit of {_size(max_bytes)} for one decode."
        )
    if (header.rows, header.columns, header.samples) != (module.rows, module.columns, module.samples):
        raise ImageDecodeError(
            f"The {header.codec} frame header of the DICOM pixel data declares another size or number of "
            "samples than the file's Rows, Columns and SamplesPerPixel: the file is corrupt."
        )
    if header.precision > module.bits_allocated:
        raise ImageDecodeError(
            f"The {header.codec} frame header of the DICOM pixel data declares more bits a sample than the "
            "file's BitsAllocated: the file is corrupt."
        )


def _single_frame(data: bytes) -> bytes:
    """The one frame of encapsulated pixel data: its fragments joined (PS3.5 A.4)."""
    stream = BytesIO(data)
    try:
        parse_basic_offsets(stream)  # the Basic Offset Table item; one frame needs no offsets
        fragments = []
        for fragment in generate_fragments(stream):
            fragments.append(fragment)
            if len(fragments) > _MAX_FRAGMENTS:
                raise ImageDecodeError(
                    "The compressed DICOM pixel data is cut into too many fragments: the file is malformed."
                )
    except ImageError:
        raise
    except Exception:  # not item tags: pixel data that is not encapsulated as its transfer syntax requires
        raise ImageDecodeError(
            "The DICOM pixel data is not encapsulated as its compressed transfer syntax requires: the file "
            "is corrupt."
        ) from None
    frame = b"".join(fragments)
    if not frame:
        raise ImageDecodeError(NO_PIXEL_DATA_MESSAGE)
    return frame


_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB, 0xF7})
"""Frame headers of the baseline, extended, progressive and lossless processes (Huffman or arithmetic), and
JPEG-LS's SOF55 (0xF7): all have the layout length, P, Y, X, Nf."""
_HIERARCHICAL_MARKERS: Final = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF, 0xDE})
"""Differential frames and DHP: a hierarchical JPEG declares several frame sizes; no DICOM writer uses it."""
_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


def _jpeg_header(frame: bytes) -> _FrameHeader:
    """The first frame header (SOFn or SOF55) of a JPEG or JPEG-LS codestream, read without decoding."""
    corrupt = ImageDecodeError(
        "The compressed frame of the DICOM pixel data is not a valid JPEG codestream: the file is corrupt."
    )
    if frame[:2] != b"\xff\xd8":  # SOI
        raise corrupt
    position = 2
    for _ in range(_MAX_MARKERS):
        if position + 2 > len(frame) or frame[position] != 0xFF:
            raise corrupt
        marker = frame[position + 1]
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        position += 2
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI or SOS before any frame header
            raise corrupt
        if marker in _HIERARCHICAL_MARKERS:
            raise UnsupportedImageFormatError(
                "DICOM pixel data compressed as hierarchical JPEG is not supported. " + _SEND_UNCOMPRESSED
            )
        if position + 2 > len(frame):
            raise corrupt
        (length,) = struct.unpack_from(">H", frame, position)
        if length < 2:
            raise corrupt
        if marker in _SOF_MARKERS:
            if length < 8 or position + 8 > len(frame):
                raise corrupt
            precision, rows, columns, samples = struct.unpack_from(">BHHB", frame, position + 2)
            codec = "JPEG-LS" if marker == 0xF7 else "JPEG"
            return _FrameHeader(codec, rows, columns, samples, precision, 1 if precision <= 8 else 2)
        position += length
    raise corrupt


_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _jpeg2000_header(frame: bytes) -> _FrameHeader:
    """The SIZ marker segment of a JPEG 2000 codestream (bare, or in a JP2 file's jp2c box)."""
    corrupt = ImageDecodeError(
        "The compressed frame of the DICOM pixel data is not a valid JPEG 2000 codestream: the file is "
        "corrupt."
    )
    start = _jp2_codestream(frame, corrupt) if frame.startswith(_JP2_SIGNATURE) else 0
    if frame[start : start + 4] != b"\xff\x4f\xff\x51" or start + 44 > len(frame):  # SOC, then SIZ
        raise corrupt
    # Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz, then Ssiz XRsiz YRsiz per component
    fields = struct.unpack_from(">HHIIIIIIIIH", frame, start + 4)
    width, height, x_offset, y_offset, components = fields[2], fields[3], fields[4], fields[5], fields[10]
    if components == 0 or width <= x_offset or height <= y_offset or start + 42 + 3 * components > len(frame):
        raise corrupt
    precision = max((frame[start + 42 + 3 * index] & 0x7F) + 1 for index in range(components))
    # OpenJPEG holds every sample as a 32-bit integer while it decodes, whatever the precision
    return _FrameHeader("JPEG 2000", height - y_offset, width - x_offset, components, precision, 4)


def _jp2_codestream(frame: bytes, corrupt: ImageDecodeError) -> int:
    """Offset of the codestream inside a JP2 file: the contents of its jp2c box."""
    position = 0
    for _ in range(_MAX_BOXES):
        if position + 8 > len(frame):
            break
        length, kind = struct.unpack_from(">I4s", frame, position)
        header = 8
        if length == 1:  # a 64-bit XLBox follows
            if position + 16 > len(frame):
                break
            (length,) = struct.unpack_from(">Q", frame, position + 8)
            header = 16
        if kind == b"jp2c":
            return position + header
        if length == 0 or length < header:  # 0: the box runs to the end of the file; a box after it cannot be
            break
        position += length
    raise corrupt


def _check_rle(frame: bytes, module: _PixelModule) -> None:
    """The RLE header (PS3.5 G.5) must declare SamplesPerPixel x bytes per sample segments, and no segment may
    decode to more than twice the Rows x Columns bytes it should: pydicom inflates a segment whole before it
    compares its length (two bytes of a replicate run make 128)."""
    corrupt = ImageDecodeError("The RLE header of the DICOM pixel data is malformed: the file is corrupt.")
    if len(frame) < 64:
        raise corrupt
    count, *offsets = struct.unpack_from("<16L", frame)
    if module.bits_allocated % 8 or count != module.samples * module.bits_allocated // 8:
        raise ImageDecodeError(
            "The RLE header of the DICOM pixel data declares another number of segments than SamplesPerPixel "
            "and BitsAllocated need: the file is corrupt."
        )
    bounds = [*offsets[:count], len(frame)]
    if bounds[0] != 64 or any(end <= start for start, end in itertools.pairwise(bounds)):
        raise corrupt
    plane = module.rows * module.columns
    for start, end in itertools.pairwise(bounds):
        # a segment of the plane's bytes is at most twice as long (runs of single literal bytes)
        if end - start > 2 * plane + 64 or _rle_decoded_length(frame, start, end, 2 * plane) > 2 * plane:
            raise ImageDecodeError(
                "An RLE segment of the DICOM pixel data decodes to more bytes than Rows x Columns: the file "
                "is corrupt."
            )


def _rle_decoded_length(frame: bytes, start: int, end: int, limit: int) -> int:
    """Bytes that frame[start:end] decodes to as one RLE segment (PackBits); counting stops past ``limit``."""
    total, position = 0, start
    while position < end and total <= limit:
        header = frame[position]
        if header < 128:  # a literal run of header + 1 bytes
            total += header + 1
            position += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            total += 257 - header
            position += 2
        else:  # -128: no operation
            position += 1
    return total


# -- attribute values -------------------------------------------------------------------------------------


def _value(dataset: Dataset, keyword: str) -> object:
    """The value of an attribute; None when absent or empty. 400 when pydicom cannot convert it."""
    try:
        value = dataset.get(keyword)
    except Exception:
        raise ImageDecodeError(f"The DICOM file's {keyword} could not be read: it is malformed.") from None
    if value is None or (
        isinstance(value, str | bytes | MultiValue | list | tuple | Sequence) and len(value) == 0
    ):
        return None
    return value


def _as_number(value: object) -> float | None:
    """A finite number from an int, a float, a DS or IS value or a numeric string; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):  # DSfloat, IS too
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _integer(dataset: Dataset, keyword: str) -> int | None:
    """A single whole number; None when absent or empty; 400 when anything else (text, several values...)."""
    value = _value(dataset, keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        if len(value) != 1:
            raise ImageDecodeError(f"The DICOM file's {keyword} holds more than one value.")
        value = value[0]
    number = _as_number(value)
    if number is None or not number.is_integer():
        raise ImageDecodeError(f"The DICOM file's {keyword} is not a whole number.")
    if abs(number) >= 2**32:  # beyond any VR that holds it (UL): a forged value, and a sentence would echo it
        raise ImageDecodeError(f"The DICOM file's {keyword} is out of range.")
    return int(number)


def _required_integer(dataset: Dataset, keyword: str) -> int:
    value = _integer(dataset, keyword)
    if value is None:
        raise ImageDecodeError(f"The DICOM file lacks the pixel-module attribute {keyword}.")
    return value


def _required_text(dataset: Dataset, keyword: str) -> str:
    value = _value(dataset, keyword)
    if value is None:
        raise ImageDecodeError(f"The DICOM file lacks the pixel-module attribute {keyword}.")
    if not isinstance(value, str):
        raise ImageDecodeError(f"The DICOM file's {keyword} is not text: it is malformed.")
    return value[:64].strip().upper()


def _number(dataset: Dataset, keyword: str, *, several: bool = False) -> float | None:
    """A finite number (the first of several when ``several``); None when absent or empty; else 400."""
    value = _value(dataset, keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        if len(value) != 1 and not several:
            raise ImageDecodeError(f"The DICOM file's {keyword} holds more than one value.")
        value = value[0]
    number = _as_number(value)
    if number is None:
        raise ImageDecodeError(f"The DICOM file's {keyword} is not a finite number.")
    return number


def _size(count: int) -> str:
    """Bytes for a sentence: MiB when at least one, else bytes."""
    if count >= 2**20:
        return f"{count / 2**20:,.0f} MiB"
    return f"{count:,} bytes"


# -- greyscale --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LookupTable:
    """A validated LUT (PS3.3 C.11.1): values below ``first`` map to the first entry, above the last to it."""

    first: int
    entries: npt.NDArray[np.float32]

    def apply(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        index = np.rint(values)  # (H, W) float32, then in place
        index -= np.float32(self.first)
        np.clip(index, 0, len(self.entries) - 1, out=index)
        np.nan_to_num(index, copy=False, nan=0.0)
        return np.asarray(self.entries[index.astype(np.int32)], dtype=np.float32)


def _lookup_table(
    dataset: Dataset, keyword: str, little_endian: bool, pixel_representation: int
) -> _LookupTable | None:
    """The first item of a Modality or VOI LUT Sequence; None when absent or empty; 400 when malformed."""
    sequence = _value(dataset, keyword)
    if sequence is None:
        return None
    malformed = f"The DICOM file's {keyword} is malformed"
    if not isinstance(sequence, Sequence) or not isinstance(sequence[0], Dataset):
        raise ImageDecodeError(f"{malformed}: it is not a sequence of items.")
    item = sequence[0]
    descriptor = _descriptor(_value(item, "LUTDescriptor"), little_endian)
    if descriptor is None:
        raise ImageDecodeError(f"{malformed}: its LUTDescriptor does not hold three whole numbers.")
    count, first, bits = descriptor
    if first >= 32768 and pixel_representation == 1:  # read as US, meant as SS
        first -= 65536
    if not (bits == 8 or 10 <= bits <= 16):
        raise ImageDecodeError(f"{malformed}: its LUTDescriptor declares an impossible table.")
    data = _value(item, "LUTData")
    if data is None:
        raise ImageDecodeError(f"{malformed}: its LUTData is missing.")
    if isinstance(data, bytes | bytearray):  # OW: 16-bit words whatever the declared bits
        if len(data) < 2 * count:
            raise ImageDecodeError(
                f"{malformed}: its LUTData holds fewer entries than its LUTDescriptor says."
            )
        entries = np.frombuffer(data, dtype="<u2" if little_endian else ">u2", count=count)
    else:
        values = list(data) if isinstance(data, MultiValue | list | tuple) else [data]
        if len(values) < count:
            raise ImageDecodeError(
                f"{malformed}: its LUTData holds fewer entries than its LUTDescriptor says."
            )
        numbers = [_as_number(value) for value in values[:count]]
        if any(number is None for number in numbers):
            raise ImageDecodeError(f"{malformed}: its LUTData holds something other than numbers.")
        entries = np.asarray(numbers, dtype=np.float64)
    return _LookupTable(first, np.asarray(entries, dtype=np.float32))


def _descriptor(value: object, little_endian: bool) -> tuple[int, int, int] | None:
    """(entries, first mapped value, bits) of a LUT descriptor; None unless three whole numbers with a
    possible number of entries (0 means 2^16)."""
    if isinstance(value, bytes) and len(value) == 6:  # an ambiguous US or SS value pydicom left raw
        value = list(struct.unpack(("<" if little_endian else ">") + "3H", value))
    if not isinstance(value, MultiValue | list | tuple) or len(value) != 3:
        return None
    numbers = [_as_number(number) for number in value]
    if any(number is None or not number.is_integer() for number in numbers):
        return None
    count, first, bits = (int(number or 0) for number in numbers)
    count = count or 65536
    if not 1 <= count <= 65536:
        return None
    return count, first, bits


def _first_window(dataset: Dataset) -> tuple[float, float] | None:
    """(center, width) of the first window of the file; None when either is absent; 400 when unusable."""
    center = _number(dataset, "WindowCenter", several=True)
    width = _number(dataset, "WindowWidth", several=True)
    if center is None or width is None:
        return None
    if width <= 0:
        raise ImageDecodeError("The DICOM file's WindowWidth is not a positive number.")
    return center, width


@dataclass(frozen=True)
class _GreyTransforms:
    """The validated modality and VOI transforms of a greyscale image (PS3.3 C.11)."""

    modality_lut: _LookupTable | None
    slope: float | None
    intercept: float | None
    voi_lut: _LookupTable | None
    window: tuple[float, float] | None
    function: str  # of the window: LINEAR, LINEAR_EXACT or SIGMOID

    @property
    def rescaled(self) -> bool:
        return self.modality_lut is not None or self.slope is not None or self.intercept is not None


def _grey_transforms(dataset: Dataset, little_endian: bool, pixel_representation: int) -> _GreyTransforms:
    """Every attribute the greyscale conversion uses, validated before any pixel is decoded."""
    modality_lut = _lookup_table(dataset, "ModalityLUTSequence", little_endian, pixel_representation)
    slope, intercept = _number(dataset, "RescaleSlope"), _number(dataset, "RescaleIntercept")
    if modality_lut is None and slope == 0:
        raise ImageDecodeError("The DICOM file's RescaleSlope is zero: every pixel would be the same.")
    voi_lut = _lookup_table(dataset, "VOILUTSequence", little_endian, pixel_representation)
    window = _first_window(dataset)
    function = _text(dataset, "VOILUTFunction") or "LINEAR"
    return _GreyTransforms(modality_lut, slope, intercept, voi_lut, window, function)


def _grey_to_uint8(pixels: npt.NDArray[np.generic], transforms: _GreyTransforms) -> npt.NDArray[np.uint8]:
    """(H, W) stored values -> (H, W) uint8 display values through the modality and VOI transforms.

    float32 throughout, in place where it can: at the pixel limit every temporary would cost 200 MB, and
    float32 is exact for every integer a LUT can index."""
    untransformed = transforms.voi_lut is None and transforms.window is None and not transforms.rescaled
    if untransformed and pixels.dtype == np.uint8:
        return np.asarray(pixels, dtype=np.uint8)  # already display values, as decode_image keeps them
    values = np.array(pixels, dtype=np.float32)  # (H, W), always a copy: what follows works in place
    if transforms.modality_lut is not None:
        values = transforms.modality_lut.apply(values)  # e.g. Hounsfield units
    else:  # one of them alone still applies (pydicom would skip both)
        if transforms.slope is not None and transforms.slope != 1:
            values *= np.float32(transforms.slope)
        if transforms.intercept:
            values += np.float32(transforms.intercept)
    if transforms.voi_lut is not None:
        return _min_max(transforms.voi_lut.apply(values))
    if transforms.window is not None:
        return _apply_window(values, *transforms.window, transforms.function)
    return _min_max(values)


def _apply_window(
    values: npt.NDArray[np.float32], center: float, width: float, function: str
) -> npt.NDArray[np.uint8]:
    """DICOM PS3.3 C.11.2.1.2 windowing of (H, W) values straight onto 0..255, in place on ``values``
    (a float32 copy the caller owns: at the pixel limit each temporary would cost 200 MB)."""
    if function == "SIGMOID":
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore", divide="ignore"):  # far below the centre exp overflows: display 0
            np.exp(values, out=values)
            values += np.float32(1.0)
            np.divide(np.float32(255.0), values, out=values)
    elif function == "LINEAR_EXACT":
        values -= np.float32(center)
        values /= np.float32(width)
        values += np.float32(0.5)
        values *= np.float32(255.0)
    else:  # LINEAR: the centre sits half a unit lower and the width counts one unit less
        if width < 1:
            return _min_max(values)
        values -= np.float32(center - 0.5)
        values *= np.float32(255.0 / max(width - 1.0, 1.0))
        values += np.float32(127.5)
    return _to_uint8(values)


def _min_max(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Min-max window the finite values onto 0..255, rounded, in place on ``values`` (a float32 copy the
    caller owns); non-finite values map to 0, and so does a constant image."""
    values[np.isinf(values)] = np.nan
    low, high = float(np.nanmin(values)), float(np.nanmax(values))  # fmin / fmax reductions: no copy
    if math.isnan(low):  # nothing finite (nanmin's warning is silenced with pydicom's)
        return np.zeros(values.shape, dtype=np.uint8)
    values -= np.float32(low)
    values *= np.float32(255.0 / (high - low) if high > low else 0.0)
    return _to_uint8(values)


def _to_uint8(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Round and clip display values (in place) onto 0..255; NaN becomes 0 (one mask, not nan_to_num's
    three)."""
    np.clip(values, 0, 255, out=values)
    values[np.isnan(values)] = 0
    np.rint(values, out=values)
    return values.astype(np.uint8)


# -- colour -----------------------------------------------------------------------------------------------

_PALETTE_MESSAGE: Final = "The DICOM palette colour lookup table is missing or corrupt."


def _check_palette(dataset: Dataset, little_endian: bool) -> None:
    """400 unless the red, green and blue palettes have valid, equal descriptors and data of that length."""
    shapes = set()
    for colour in ("Red", "Green", "Blue"):
        if f"Segmented{colour}PaletteColorLookupTableData" in dataset:
            # their expansion (indirect segments can repeat earlier ones) is not bounded by the file's size
            raise UnsupportedImageFormatError(
                "DICOM images with a segmented palette colour lookup table are not supported; send an RGB "
                "image."
            )
        descriptor = _descriptor(_value(dataset, f"{colour}PaletteColorLookupTableDescriptor"), little_endian)
        data = _value(dataset, f"{colour}PaletteColorLookupTableData")
        if descriptor is None or descriptor[2] not in (8, 16) or not isinstance(data, bytes | bytearray):
            raise ImageDecodeError(_PALETTE_MESSAGE)
        count = descriptor[0]
        if len(data) not in (count, 2 * count):  # 8 or 16 bits an entry
            raise ImageDecodeError(_PALETTE_MESSAGE)
        shapes.add((count, len(data)))
    if len(shapes) != 1:
        raise ImageDecodeError(_PALETTE_MESSAGE)


def _apply_palette(pixels: npt.NDArray[np.generic], dataset: Dataset) -> npt.NDArray[np.generic]:
    try:
        rgb = np.asarray(apply_color_lut(pixels, dataset))  # (H, W, 3) or, with an alpha table, (H, W, 4)
    except Exception:
        raise ImageDecodeError(_PALETTE_MESSAGE) from None
    return rgb[..., :3]


def _colour_to_uint8(rgb: npt.NDArray[np.generic], bits: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) RGB of ``bits`` stored bits -> (H, W, 3) uint8 by the full range of that depth."""
    if rgb.dtype == np.uint8:
        return np.asarray(rgb, dtype=np.uint8)
    if np.issubdtype(rgb.dtype, np.floating):
        return _min_max(rgb.astype(np.float32))  # a copy: _min_max works in place
    full = float(2 ** max(1, min(bits, 8 * rgb.dtype.itemsize)) - 1)
    return np.clip(np.rint(rgb.astype(np.float32) * np.float32(255.0 / full)), 0, 255).astype(np.uint8)
