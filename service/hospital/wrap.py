"""Greyscale slices (e.g. the JPEG slices of the public data sets) wrapped as one DICOM MR series.

For demonstrations and tests: the PACS round trip needs MR instances, and the public data sets ship JPEGs.
The patient is a made-up "Anonymous^Demo"; every UID is generated (one study, one series), the slices are
axial and 5 mm apart along the slice normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

SLICE_SPACING_MM = 5.0


def wrap_as_mr_series(
    slices: Sequence[npt.NDArray[np.uint8]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "DEMO-0001",
    series_number: int = 1,
) -> list[Dataset]:
    """One MR Image Storage data set per (H, W) uint8 slice, in slice order, ready for ``dcmwrite``."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    now = datetime.now()
    frame_of_reference = generate_uid()
    datasets = []
    for number, pixels in enumerate(slices, 1):
        grey = np.ascontiguousarray(pixels, dtype=np.uint8)
        if grey.ndim != 2:
            raise ValueError("each slice must be a (H, W) greyscale array")
        dataset = Dataset()
        dataset.preamble = b"\0" * 128  # a Part 10 file even for writers that keep what the data set has
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
        dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.SpecificCharacterSet = "ISO_IR 100"
        dataset.PatientName = "Anonymous^Demo"
        dataset.PatientID = patient_id
        dataset.PatientBirthDate = ""
        dataset.PatientSex = "O"
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_of_reference
        dataset.PositionReferenceIndicator = ""
        dataset.StudyDate = dataset.SeriesDate = dataset.ContentDate = now.strftime("%Y%m%d")
        dataset.StudyTime = dataset.SeriesTime = dataset.ContentTime = now.strftime("%H%M%S")
        dataset.StudyID = "1"
        dataset.AccessionNumber = ""
        dataset.ReferringPhysicianName = ""
        dataset.StudyDescription = "MR brain (demonstration)"
        dataset.SeriesDescription = "Axial slices wrapped from images"
        dataset.Modality = "MR"
        dataset.BodyPartExamined = "BRAIN"
        dataset.Manufacturer = "brain-tumour-mri-inference"
        dataset.SeriesNumber = series_number
        dataset.InstanceNumber = number
        dataset.ImageType = ["DERIVED", "PRIMARY"]
        dataset.ScanningSequence = "SE"
        dataset.SequenceVariant = "NONE"
        dataset.ScanOptions = ""
        dataset.MRAcquisitionType = "2D"
        dataset.EchoTime = ""
        dataset.RepetitionTime = ""
        dataset.EchoTrainLength = ""
        dataset.SliceThickness = SLICE_SPACING_MM
        dataset.PixelSpacing = [1.0, 1.0]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [0.0, 0.0, SLICE_SPACING_MM * (number - 1)]
        dataset.SliceLocation = SLICE_SPACING_MM * (number - 1)
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.Rows, dataset.Columns = grey.shape
        dataset.BitsAllocated = 8
        dataset.BitsStored = 8
        dataset.HighBit = 7
        dataset.PixelRepresentation = 0
        dataset.PixelData = grey.tobytes()
        datasets.append(dataset)
    return datasets
