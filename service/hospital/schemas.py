"""Pydantic models of the series answers: slices and series are named by per-request indexes, never by UIDs.

Study, Series and SOP Instance UIDs identify a patient's examination as surely as a name does in the PACS that
holds it, so they go only into the DICOM objects written back to that study, never into JSON.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, Field

from service.errors import ErrorType
from service.schemas import GradcamResponse, InDistribution, ModelReference

SERIES_RULE: Final = (
    "A series is a tumour when at least k of its valid slices (classified and accepted by the input-validity "
    "check) are labelled with a tumour class, k being MRI_SERIES_MIN_TUMOUR_SLICES or the number of valid "
    "slices when there are fewer; its type is the tumour class with the highest mean probability over those "
    "slices. Otherwise it is the no-tumour class. The key slice is the valid slice with the highest "
    "probability of the series' label."
)


class SliceError(BaseModel):
    """Why one slice was not classified (the other slices of the request were)."""

    error: str = Field(
        description="What went wrong with this slice, as a sentence.",
        examples=["The DICOM file's Modality is computed tomography, not MR (magnetic resonance)."],
    )
    error_type: ErrorType = Field(
        description="Machine-readable kind, from the service's closed list: invalid_image, image_too_large, "
        "unsupported_media_type or not_brain_mri for a slice.",
        examples=["not_brain_mri"],
    )


class SliceAnswer(BaseModel):
    """One slice: a single-frame instance, or one frame of a multi-frame object."""

    instance: int = Field(
        description="Index (from 0) of the DICOM object in the request: files in part order, ZIP members in "
        "archive order.",
        examples=[3],
    )
    frame: int | None = Field(
        description="Frame number (from 1) in a multi-frame object; null for a single-frame instance.",
        examples=[None],
    )
    status: Literal["ok", "error"] = Field(
        description="ok: classified; error: refused or undecodable (see error).", examples=["ok"]
    )
    label: str | None = Field(description="The slice's own most probable class.", examples=["glioma"])
    probabilities: dict[str, float] | None = Field(
        description="Probability of each class for this slice; null when it was not classified."
    )
    in_distribution: InDistribution | None = Field(
        description="The slice's input-validity check; null when it was not classified."
    )
    error: SliceError | None = Field(description="Why the slice was not classified; null when it was.")


class SeriesAnswer(BaseModel):
    """One series (one Series Instance UID) of the request, its slices in order and the series' finding."""

    index: int = Field(description="Index (from 0) of the series in order of first appearance.", examples=[0])
    status: Literal["ok", "no_valid_slices"] = Field(
        description="ok: the series has a label; no_valid_slices: none of its slices could be classified.",
        examples=["ok"],
    )
    label: str | None = Field(description="The series' finding by the rule (see rule).", examples=["glioma"])
    probabilities: dict[str, float] | None = Field(
        description="Mean probability of each class over the slices carrying the finding (evidence)."
    )
    tumour_slices: int = Field(description="Valid slices labelled with a tumour class.", examples=[5])
    required_tumour_slices: int = Field(
        description="k: tumour slices needed for a tumour finding in this series.", examples=[2]
    )
    evidence: list[int] = Field(description="Positions (in slices) of the slices that carry the finding.")
    key_slice: int | None = Field(
        description="Position (in slices) of the key slice, the one Grad-CAM explains.", examples=[7]
    )
    ordered_by: Literal["position", "instance_number", "upload"] = Field(
        description="How the slices were ordered: along the slice normal (Image Position / Orientation "
        "(Patient)), by Instance Number, or in request order.",
        examples=["position"],
    )
    rule: str = Field(description="The aggregation rule, in words.", examples=[SERIES_RULE])
    slices: list[SliceAnswer] = Field(description="The series' slices in slice order.")
    gradcam: GradcamResponse | None = Field(
        default=None, description="Grad-CAM of the key slice for the series' label; null unless asked for."
    )


class SeriesTimings(BaseModel):
    """Milliseconds spent in each stage of a series request."""

    queue: float = Field(description="Waiting for prediction slots (all batches).", examples=[0.0])
    classify: float = Field(description="Decoding, preprocessing and ONNX runs.", examples=[120.0])
    gradcam: float = Field(description="Grad-CAM of the key slices (0 when not asked for).", examples=[0.0])
    total: float = Field(description="The whole request, reading the upload included.", examples=[180.0])
    per_slice: float = Field(description="classify divided by the slices classified.", examples=[4.2])


class SeriesPredictResponse(BaseModel):
    """The answer of POST /predict/series."""

    request_id: str = Field(
        description="Id of this request (also in the X-Request-ID header).",
        examples=["6f1c2b0e4a8d4f7e9b3c5d2a1e0f9c8b"],
    )
    model: ModelReference = Field(description="The model that classified every slice.")
    series: list[SeriesAnswer] = Field(description="One entry per Series Instance UID.")
    unread: list[SliceAnswer] = Field(
        description="Objects that could not be read as DICOM at all (so belong to no series), with their "
        "error."
    )
    slices: int = Field(description="Slices in the request (frames counted one by one).", examples=[24])
    batches: int = Field(description="ONNX Runtime runs the slices took.", examples=[2])
    timings_ms: SeriesTimings = Field(description="Milliseconds per stage.")
    disclaimer: str = Field(description="Research use only.", examples=["Research use only: ..."])


class StoredObject(BaseModel):
    """One DICOM object the service wrote back to the PACS."""

    kind: Literal["secondary_capture", "structured_report"] = Field(
        description="secondary_capture: the Grad-CAM overlay of the key slice; structured_report: the SR.",
        examples=["structured_report"],
    )
    series: int = Field(description="Index of the analysed series it belongs to.", examples=[0])


class StudyAnalysisResponse(BaseModel):
    """The answer of POST /dicomweb/studies/{study_uid}/analyze."""

    request_id: str = Field(description="Id of this request.", examples=["6f1c2b0e4a8d4f7e9b3c5d2a1e0f9c8b"])
    analysis: SeriesPredictResponse = Field(description="The classification of the study's MR series.")
    stored: list[StoredObject] = Field(description="The objects stored back into the study, in order.")
    disclaimer: str = Field(description="Research use only.", examples=["Research use only: ..."])
