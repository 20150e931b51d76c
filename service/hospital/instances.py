"""Request parts -> DICOM slices: ZIPs expanded, multi-frame MR objects split, series grouped and ordered.

Bounds, checked before anything is decoded: at most ``max_instances`` slices (a frame of a multi-frame object
counts as one) and ``max_bytes`` in all (the parts, and what ZIP members inflate to, counted from their
declared sizes and again while they are read); past either, 413
(:class:`~service.errors.UploadTooLargeError`). Each slice is then decoded on its own by
:func:`service.dicom.decode_dicom` with the service's per-decode budget.

A part that cannot be read (not DICOM, corrupt, deflated, a modality other than MR) becomes a slice that
carries its own error; the other slices of the request are still classified.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Final

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from service.dicom import NO_PIXEL_DATA_MESSAGE, _quiet, check_brain_mri, is_dicom
from service.errors import UploadTooLargeError
from service.preprocessing import ImageDecodeError, ImageError, UnsupportedImageFormatError

ZIP_MAGIC: Final = b"PK\x03\x04"
_PIXEL_DATA: Final = 0x7FE00010
_FRAME_GROUPS: Final = (0x52009229, 0x52009230, 0x00280008, _PIXEL_DATA)
"""Shared and Per-frame Functional Groups, Number of Frames, Pixel Data: rebuilt for each frame."""


@dataclass
class Slice:
    """One image to classify: a single-frame instance, or one frame of a multi-frame one.

    ``instance`` is the index of the DICOM object in the request (ZIP members counted in archive order) and
    ``frame`` its 1-based frame number (None for a single-frame object): the only names a JSON answer uses.
    ``data`` is a single-frame DICOM file for :func:`~service.dicom.decode_dicom`; ``header`` the source
    object's attributes without pixel data (what the SR references); ``error`` a refusal found while reading.
    """

    instance: int
    frame: int | None = None
    data: bytes = b""
    header: Dataset | None = None
    series_key: str | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    instance_number: int | None = None
    error: ImageError | None = None


@dataclass
class SeriesGroup:
    """The slices of one Series Instance UID in slice order; ``ordered_by`` says how the order was found."""

    index: int
    slices: list[Slice] = field(default_factory=list)
    ordered_by: str = "upload"


def _too_many(max_instances: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"The request holds more than {max_instances:,} slices (instances and frames of multi-frame "
        "objects), the limit of one series request; send the series in several requests."
    )


def _too_big(max_bytes: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"The request's DICOM data (ZIP members counted inflated) is larger than {max_bytes:,} bytes, the "
        "limit of one series request; send the series in several requests."
    )


def expand_parts(parts: Iterable[bytes], *, max_instances: int, max_bytes: int) -> list[bytes | ImageError]:
    """Each part, or each member of a part that is a ZIP archive, as DICOM bytes (or the archive's error).

    413 as soon as the objects are more than ``max_instances`` or their bytes more than ``max_bytes``.
    """
    objects: list[bytes | ImageError] = []
    total = 0
    for part in parts:
        if part[: len(ZIP_MAGIC)] != ZIP_MAGIC:
            total += len(part)
            if total > max_bytes:
                raise _too_big(max_bytes)
            objects.append(part)
        else:
            total = _expand_zip(part, objects, total, max_bytes=max_bytes, max_instances=max_instances)
        if len(objects) > max_instances:
            raise _too_many(max_instances)
    return objects


def _expand_zip(
    data: bytes, objects: list[bytes | ImageError], total: int, *, max_bytes: int, max_instances: int
) -> int:
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(objects) + len(members) > max_instances:
            raise _too_many(max_instances)
        if total + sum(info.file_size for info in members) > max_bytes:  # declared sizes, before inflating
            raise _too_big(max_bytes)
        for info in members:
            with archive.open(info) as member:
                content = member.read(max_bytes - total + 1)  # a member that lies about its size stops here
            total += len(content)
            if total > max_bytes:
                raise _too_big(max_bytes)
            if info.filename.rsplit("/", 1)[-1].upper() == "DICOMDIR":
                continue  # the media directory, not an image
            objects.append(content)
    except UploadTooLargeError:
        raise
    except Exception:  # BadZipFile, an unsupported compression or encryption, a CRC error...
        objects.append(ImageDecodeError("The ZIP archive could not be read: it is corrupt or encrypted."))
    return total


def read_slices(objects: Sequence[bytes | ImageError], *, max_instances: int) -> list[Slice]:
    """The slices of the objects, in request order (frames in frame order); 413 past ``max_instances``."""
    slices: list[Slice] = []
    for index, item in enumerate(objects):
        if isinstance(item, ImageError):
            slices.append(Slice(index, error=item))
        else:
            slices.extend(_object_slices(index, item, max_instances - len(slices), max_instances))
        if len(slices) > max_instances:
            raise _too_many(max_instances)
    return slices


def _object_slices(index: int, data: bytes, room: int, max_instances: int) -> list[Slice]:
    if not is_dicom(data, None):
        error = ImageDecodeError(
            "The object is not a DICOM Part 10 file: series mode takes DICOM instances (or a ZIP of them)."
        )
        return [Slice(index, error=error)]
    try:
        with _quiet():
            dataset = _read(data)
            if "PixelData" not in dataset:
                raise ImageDecodeError(NO_PIXEL_DATA_MESSAGE)
            try:
                check_brain_mri(dataset)  # a non-MR object is refused in its series, whatever its frames
            except ImageError as error:
                refused = _slice(index, None, b"", dataset, dataset)
                refused.error = error
                return [refused]
            frames = _frames(dataset)
            if frames > room:
                raise _too_many(max_instances)
            if frames == 1:
                return [_slice(index, None, data, dataset, dataset)]
            return [
                _slice(index, number, _frame_file(dataset, pixels, frame), dataset, frame)
                for number, (pixels, frame) in enumerate(_split(dataset, frames), 1)
            ]
    except UploadTooLargeError:
        raise
    except ImageError as error:
        return [Slice(index, error=error)]
    except Exception:  # pydicom's own errors quote element values: never their text
        return [Slice(index, error=ImageDecodeError("The DICOM file could not be read: it is corrupt."))]


def _read(data: bytes) -> Dataset:
    stream = BytesIO(data)
    read_preamble(stream, force=True)
    declared = _read_file_meta_info(stream).get("TransferSyntaxUID")
    if declared is not None and str(declared).strip("\0 ") == DeflatedExplicitVRLittleEndian:
        # pydicom inflates a deflated data set whole before any check: refused rather than trusted
        raise UnsupportedImageFormatError(
            "Deflated DICOM files are not accepted in series mode; send Explicit VR Little Endian files."
        )
    return pydicom.dcmread(BytesIO(data))


def _frames(dataset: Dataset) -> int:
    value = dataset.get("NumberOfFrames", 1)
    try:
        frames = int(value if value not in (None, "") else 1)
    except (TypeError, ValueError):
        raise ImageDecodeError("The DICOM file's NumberOfFrames is not a whole number.") from None
    if frames < 1:
        raise ImageDecodeError("The DICOM file's NumberOfFrames is not a positive whole number.")
    return frames


def _split(dataset: Dataset, frames: int) -> Iterable[tuple[bytes, Dataset]]:
    """(pixel data of one frame, the frame's own attributes) for each frame of a multi-frame object."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.get("SamplesPerPixel", 1)), int(dataset.BitsAllocated)
    if bits % 8 or rows < 1 or columns < 1 or samples < 1:
        raise UnsupportedImageFormatError("Multi-frame DICOM files with this pixel layout cannot be split.")
    if "PixelData" not in dataset:
        raise ImageDecodeError("The DICOM file holds no pixel data.")
    pixel_data = dataset.PixelData
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        pieces: Iterable[bytes] = generate_frames(pixel_data, number_of_frames=frames)
    else:
        size = rows * columns * samples * bits // 8
        if len(pixel_data) < size * frames:
            raise ImageDecodeError("The multi-frame DICOM pixel data is shorter than its frames declare.")
        pieces = (pixel_data[number * size : (number + 1) * size] for number in range(frames))
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    for number, pixels in enumerate(pieces):
        yield pixels, _frame_attributes(shared, per_frame[number] if number < len(per_frame) else Dataset())


def _frame_attributes(shared: Dataset, own: Dataset) -> Dataset:
    """The functional-group attributes a single-frame decode and the ordering need, lifted up."""
    lifted = Dataset()
    for groups in (shared, own):  # the frame's own groups override the shared ones
        for sequence, keywords in (
            ("PlanePositionSequence", ("ImagePositionPatient",)),
            ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
            ("PixelValueTransformationSequence", ("RescaleIntercept", "RescaleSlope")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
            ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness")),
        ):
            items = groups.get(sequence)
            if items:
                for keyword in keywords:
                    if keyword in items[0]:
                        setattr(lifted, keyword, items[0][keyword].value)
    return lifted


def _frame_file(dataset: Dataset, pixels: bytes, own: Dataset) -> bytes:
    """A single-frame Part 10 file: the object's attributes, the frame's own, one frame of pixel data."""
    frame = Dataset()
    for element in dataset:
        if element.tag not in _FRAME_GROUPS:
            frame.add(element)
    frame.update(own)
    syntax = dataset.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        if not syntax.is_little_endian:
            raise UnsupportedImageFormatError("Big-endian multi-frame DICOM files cannot be split.")
        syntax = ExplicitVRLittleEndian  # the same little-endian pixel bytes, written with explicit VRs
    frame.PixelData = encapsulate([pixels]) if syntax.is_encapsulated else pixels
    frame["PixelData"].VR = "OB" if syntax.is_encapsulated or int(dataset.BitsAllocated) <= 8 else "OW"
    frame.file_meta = FileMetaDataset()
    frame.file_meta.TransferSyntaxUID = syntax
    frame.file_meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4.1")
    frame.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "1.2.3")
    buffer = BytesIO()
    frame.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def _slice(index: int, frame: int | None, data: bytes, dataset: Dataset, own: Dataset) -> Slice:
    header = Dataset()
    for element in dataset:
        if element.tag != _PIXEL_DATA:
            header.add(element)
    header.file_meta = dataset.file_meta
    return Slice(
        instance=index,
        frame=frame,
        data=data,
        header=header,
        series_key=_uid(dataset, "SeriesInstanceUID"),
        position=_floats(own, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=_floats(own, "ImageOrientationPatient", 6),
        instance_number=_integer(dataset, "InstanceNumber"),
    )


def _uid(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    return str(value).strip("\0 ") or None if value is not None else None


def _floats(dataset: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(value) for value in dataset.get(keyword) or ())
    except (TypeError, ValueError):
        return None
    return values if len(values) == count and all(math.isfinite(value) for value in values) else None


def _integer(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def group_series(slices: Sequence[Slice]) -> tuple[list[SeriesGroup], list[Slice]]:
    """Slices grouped by Series Instance UID (in order of first appearance) and ordered; and the slices
    whose object could not be read at all (no series to put them in).

    Order within a series: by the position along the slice normal (the cross product of the rows and
    columns directions of Image Orientation (Patient)) when every slice has a position and the series one
    orientation; else by Instance Number when every slice has one; else in request order.
    """
    groups: dict[str | None, SeriesGroup] = {}
    unread: list[Slice] = []
    for item in slices:
        if item.header is None:
            unread.append(item)
            continue
        group = groups.get(item.series_key)
        if group is None:
            group = groups[item.series_key] = SeriesGroup(len(groups))
        group.slices.append(item)
    for group in groups.values():
        _order(group)
    return list(groups.values()), unread


def _order(group: SeriesGroup) -> None:
    slices = group.slices
    orientation = next((item.orientation for item in slices if item.orientation is not None), None)
    if orientation is not None and all(item.position is not None for item in slices):
        normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
        if float(np.linalg.norm(normal)) > 1e-6:
            slices.sort(key=lambda item: float(np.dot(normal, np.asarray(item.position))))
            group.ordered_by = "position"
            return
    if all(item.instance_number is not None for item in slices):
        slices.sort(key=lambda item: (item.instance_number or 0, item.frame or 0))
        group.ordered_by = "instance_number"
