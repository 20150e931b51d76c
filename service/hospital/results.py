"""The DICOM objects written back to the study, built with highdicom: a Secondary Capture and an SR.

- :func:`secondary_capture`: the Grad-CAM overlay of a series' key slice as an RGB Secondary Capture image in
  the same study, a new series, ``DERIVED\\SECONDARY``, referencing the key slice (Source Image Sequence) and
  saying "research use only" in its series description and derivation description.
- :func:`structured_report`: a Comprehensive 3D SR following TID 1500 (Measurement Report) with one
  measurement group (TID 1501) for the series: the finding as a qualitative evaluation (DCM 121071
  "Finding"), each class probability as a measurement (UCUM "1"), the model's name, version and ONNX sha256 as
  the algorithm identification of each item and as the observer device (in the spirit of IHE AI Results),
  the source instances (and frames) as the group's source images, and the Secondary Capture among the
  evidence.

The classes are coded in the service's own coding scheme ``99BTMRI`` (a private "99" designator): the data
sets' labels are not clinical diagnoses, so they are not dressed up as SNOMED CT concepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from service.hospital.analysis import SeriesResult
from service.model_repository import ServedModel

MANUFACTURER: Final = "brain-tumour-mri-inference"
CODING_SCHEME: Final = "99BTMRI"
RESEARCH_ONLY: Final = "research use only"
SC_SERIES_DESCRIPTION: Final = f"AI Grad-CAM overlay - {RESEARCH_ONLY}"
SR_SERIES_DESCRIPTION: Final = f"AI brain tumour classification - {RESEARCH_ONLY}"
SC_SERIES_NUMBER: Final = 9901
SR_SERIES_NUMBER: Final = 9902


def class_code(name: str) -> hd.sr.CodedConcept:
    """The service's code of a class name (e.g. ``glioma``)."""
    return hd.sr.CodedConcept(value=name[:16], scheme_designator=CODING_SCHEME, meaning=_meaning(name))


def probability_code(name: str) -> hd.sr.CodedConcept:
    """The service's code of "probability of <class>"."""
    return hd.sr.CodedConcept(
        value=f"p-{name}"[:16], scheme_designator=CODING_SCHEME, meaning=f"Probability of {_meaning(name)}"
    )


def _meaning(name: str) -> str:
    return name.replace("_", " ").capitalize()


def device_uid(model: ServedModel) -> str:
    """A UID derived from the ONNX file's sha256: the same model always has the same device UID."""
    return str(generate_uid(entropy_srcs=[model.name, model.version, model.onnx_sha256]))


def algorithm(model: ServedModel) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name[:64], version=model.version[:64], parameters=[f"onnx-sha256={model.onnx_sha256}"]
    )


def secondary_capture(
    key_source: Dataset, overlay: npt.NDArray[np.uint8], frame: int | None, *, instance_number: int = 1
) -> Dataset:
    """The overlay (H, W, 3) RGB of the key slice ``key_source`` as a Secondary Capture in its study."""
    orientation = _patient_orientation(key_source)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=key_source,
        pixel_array=np.ascontiguousarray(overlay, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=orientation or ("L", "P"),
        series_instance_uid=hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        series_description=SC_SERIES_DESCRIPTION,
    )
    if orientation is None:  # unknown: Type 2, left empty rather than guessed
        image.PatientOrientation = []
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.Laterality = ""
    image.BurnedInAnnotation = "NO"
    image.DerivationDescription = (
        f"Grad-CAM heat map of an AI classification overlaid on the source slice; {RESEARCH_ONLY}, "
        "not for diagnosis"
    )
    image.ImageComments = f"AI output, {RESEARCH_ONLY}"
    reference = Dataset()
    reference.ReferencedSOPClassUID = key_source.SOPClassUID
    reference.ReferencedSOPInstanceUID = key_source.SOPInstanceUID
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    image.SourceImageSequence = [reference]
    return image


_AXES: Final = (("L", "R"), ("P", "A"), ("H", "F"))


def _patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """The main patient direction of the rows and of the columns, from Image Orientation (Patient)."""
    try:
        values = [float(value) for value in source.get("ImageOrientationPatient") or ()]
    except (TypeError, ValueError):
        return None
    if len(values) != 6:
        return None
    letters = []
    for vector in (values[:3], values[3:]):
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_AXES[axis][0 if vector[axis] > 0 else 1])
    return letters[0], letters[1]


def structured_report(
    model: ServedModel,
    series: SeriesResult,
    sources: Sequence[tuple[Dataset, int | None]],
    capture: Dataset | None,
) -> Dataset:
    """The Comprehensive 3D SR (TID 1500) of one analysed series.

    ``sources`` are the (header, frame) of the slices that were classified; ``capture`` is the Secondary
    Capture already stored (referenced as evidence), or None.
    """
    assert series.label is not None and series.probabilities is not None
    identification = algorithm(model)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(model),
            name=model.name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=f"{model.name} {model.version}"[:64],
            serial_number=model.onnx_sha256[:64],
        ),
    )
    source_images = [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=header.SOPClassUID,
            referenced_sop_instance_uid=header.SOPInstanceUID,
            referenced_frame_numbers=None if frame is None else [frame],
        )
        for header, frame in sources
    ]
    measurements = [
        hd.sr.Measurement(
            name=probability_code(name),
            value=round(float(probability), 6),
            unit=codes.UCUM.NoUnits,
            algorithm_id=identification,
        )
        for name, probability in zip(model.classes, series.probabilities, strict=True)
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="AI series classification"),
        finding_type=codes.DCM.Finding,
        algorithm_id=identification,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=class_code(series.label))
        ],
        source_images=source_images,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.BrainMRI,
        imaging_measurements=[group],
    )
    evidence = [header for header, _frame in _unique(sources)]
    if capture is not None:
        evidence.append(capture)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SR_SERIES_DESCRIPTION,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "brain-tumour-mri-inference classes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _unique(sources: Sequence[tuple[Dataset, int | None]]) -> list[tuple[Dataset, int | None]]:
    """One entry per SOP instance (the frames of a multi-frame object share theirs)."""
    seen: set[str] = set()
    unique = []
    for header, frame in sources:
        uid = str(header.SOPInstanceUID)
        if uid not in seen:
            seen.add(uid)
            unique.append((header, frame))
    return unique


def analysed_sources(series: SeriesResult) -> list[tuple[Dataset, int | None]]:
    """(header, frame) of each slice of ``series`` that was classified, in slice order."""
    return [
        (result.slice.header, result.slice.frame)
        for result in series.slices
        if result.valid and result.slice.header is not None
    ]


def overlay_pixels(png: bytes) -> npt.NDArray[np.uint8]:
    """The Grad-CAM overlay PNG as (H, W, 3) RGB."""
    import cv2

    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
    if decoded is None:
        raise ValueError("the overlay PNG could not be decoded")
    return np.ascontiguousarray(decoded[:, :, ::-1])


def series_results(model: ServedModel, series: SeriesResult) -> tuple[Dataset | None, Dataset | None]:
    """(Secondary Capture, SR) of an analysed series: the capture only when its key slice has a Grad-CAM,
    neither when the series has no label."""
    if series.label is None or series.key is None:
        return None, None
    capture = None
    key = series.slices[series.key].slice
    if series.gradcam is not None and key.header is not None:
        capture = secondary_capture(key.header, overlay_pixels(series.gradcam.png), key.frame)
    return capture, structured_report(model, series, analysed_sources(series), capture)
