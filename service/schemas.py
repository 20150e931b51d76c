"""Pydantic models of every JSON body the service answers: they are the documented HTTP contract."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.errors import ErrorType

DISCLAIMER: Final = (
    "Research use only: this output is not a medical diagnosis and must not be used for clinical decisions."
)
_SHA256_EXAMPLE: Final = "3f5a0c9e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f"


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: str = Field(
        description="What went wrong, as a sentence a person understands.",
        examples=["The upload is not a recognised image. Send a JPEG, PNG, BMP or TIFF image."],
    )
    error_type: ErrorType = Field(
        description="Machine-readable kind of error, from a closed list (statuses: docs/service.md).",
        examples=["invalid_image"],
    )


class InDistribution(BaseModel):
    """The input-validity check: does the upload look like the brain MRI slices the model was made for?"""

    checked: bool = Field(
        description="Whether the model has an input-validity check (every bundled model has one).",
        examples=[True],
    )
    enforced: bool = Field(
        description=(
            "Whether an upload that fails the check is refused (422 not_brain_mri). false only when the "
            "service "
            "runs with MRI_INPUT_VALIDITY=false (research use): the answer is then given whatever the score."
        ),
        examples=[True],
    )
    score: float | None = Field(
        description=(
            "Input-validity score: the cosine distance of the image's features to the nearest training brain "
            "slice, in units of what validation slices reach (higher: less like a brain MRI slice). null "
            "when "
            "not checked, or when the score is not a number."
        ),
        examples=[0.41],
    )
    threshold: float | None = Field(
        description="Scores above this are refused (set on the validation subset at export time).",
        examples=[1.0],
    )
    accepted: bool | None = Field(
        description="score <= threshold: the upload looks like a brain MRI slice. null when not checked.",
        examples=[True],
    )


class NotBrainMriResponse(ErrorResponse):
    """A 422 body: ``validation_error``, or ``not_brain_mri`` (not a brain MRI slice: no tumour label)."""

    in_distribution: InDistribution | None = Field(
        default=None,
        description=(
            "not_brain_mri only: the input-validity check that refused the pixels; null when the DICOM "
            "attributes (Modality, body part) refused the file."
        ),
    )


class ModelReference(BaseModel):
    """Which model answered, exactly."""

    name: str = Field(description="Name of the model in the repository.", examples=["mobilenetv2-4class"])
    version: str = Field(description="Version of the model (from its manifest).", examples=["1.0.0"])
    sha256: str = Field(description="sha256 of the ONNX file that ran.", examples=[_SHA256_EXAMPLE])


class GradcamResponse(BaseModel):
    """A Grad-CAM heat map of one class, overlaid on the uploaded image."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    png_base64: str = Field(
        description=(
            "PNG of the heat map blended over the whole original image (colour in proportion to the heat, "
            "JET "
            "from blue to red, a colour scale along the bottom edge), base64 (standard alphabet)."
        ),
        examples=["iVBORw0KGgoAAAANSUhEUgAA..."],
    )
    heatmap_png_base64: str = Field(
        description=(
            "The raw heat map as an 8-bit greyscale PNG at the uploaded image's size, base64: 255 is the "
            "hottest pixel, 0 cold or outside the region the model saw. Draw it yourself with any colour map."
        ),
        examples=["iVBORw0KGgoAAAANSUhEUgAA..."],
    )
    class_name: str = Field(
        alias="class",
        description="Class the heat map explains: the predicted one unless gradcam_class was given.",
        examples=["glioma"],
    )
    layer: str = Field(
        description="Convolutional layer of the Keras model the gradients were taken at.",
        examples=["out_relu"],
    )
    # a plain string: generated clients choke on an enum member spelt "gradcam++"
    method: str = Field(
        description=(
            "How the layer's gradients weight its feature map, one of: gradcam (one weight per channel), "
            "gradcam++ (per-channel weights from the positive gradients) or layercam (a weight per pixel "
            "and channel); the model entry chooses it by a measured pointing game."
        ),
        examples=["layercam"],
    )
    width: int = Field(description="Width of the PNG in pixels (that of the uploaded image).", examples=[512])
    height: int = Field(
        description="Height of the PNG in pixels (that of the uploaded image).", examples=[512]
    )
    image_png_base64: str | None = Field(
        default=None,
        description=(
            "Only with gradcam_image=true: the decoded upload as an 8-bit RGB PNG at its own size, base64 "
            "(for a DICOM, after windowing): the picture to draw heatmap_png_base64 over."
        ),
        examples=[None],
    )
    agrees_with_onnx: bool = Field(
        description=(
            "Whether the Keras twin that computed the heat map predicts the label the ONNX model answered; "
            "false means the explanation comes from a model that disagrees and should not be trusted."
        ),
        examples=[True],
    )


class StageTimings(BaseModel):
    """Milliseconds spent in each stage of this prediction."""

    queue: float = Field(description="Waiting for a free prediction slot.", examples=[0.0])
    decode: float = Field(description="Decoding the upload into RGB pixels.", examples=[3.1])
    preprocess: float = Field(
        description="The model's preprocessing recipe (crop, filters, resize).", examples=[1.8]
    )
    inference: float = Field(description="The ONNX Runtime run.", examples=[8.4])
    gradcam: float | None = Field(
        description="Computing and rendering Grad-CAM; null when not asked for.", examples=[None]
    )
    total: float = Field(
        description="From the start of processing (upload received) to the answer.", examples=[14.0]
    )


class PredictResponse(BaseModel):
    """The classification of one MRI slice."""

    request_id: str = Field(
        description="Id of this request (also the X-Request-ID header); quote it in reports.",
        examples=["6f1c2b0e4a8d4f7e9b3c5d2a1e0f9c8b"],
    )
    status: Literal["ok", "uncertain"] = Field(
        description=(
            "ok: label holds the most probable class. uncertain: its probability is below the min_confidence "
            "the request asked for, so no label is given (the probabilities still are). An upload that is "
            "not "
            "a brain MRI slice gets no 200 at all, but 422 not_brain_mri."
        ),
        examples=["ok"],
    )
    label: str | None = Field(
        description="The most probable class; null when status is 'uncertain'.", examples=["glioma"]
    )
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="Calibrated probability of the most probable class (0-1; temperature-scaled at export).",
        examples=[0.93],
    )
    min_confidence: float | None = Field(
        description="The confidence floor the request asked for (null: none).", examples=[None]
    )
    probabilities: dict[str, float] = Field(
        description=(
            "Calibrated probability of each class of the model (0-1, summing to 1), in the model's class "
            "order."
        ),
        examples=[{"glioma": 0.93, "meningioma": 0.04, "no_tumor": 0.01, "pituitary": 0.02}],
    )
    in_distribution: InDistribution = Field(description="The input-validity check of this upload.")
    model: ModelReference = Field(description="The model that answered.")
    gradcam: GradcamResponse | None = Field(description="The Grad-CAM heat map when asked for, else null.")
    timings_ms: StageTimings = Field(description="Time spent in each stage, in milliseconds.")
    disclaimer: str = Field(description="Always present: the limits of this answer.", examples=[DISCLAIMER])


class InputSpec(BaseModel):
    """The size of image the model sees after preprocessing."""

    height: int = Field(description="Model input height in pixels.", examples=[224])
    width: int = Field(description="Model input width in pixels.", examples=[224])
    channels: int = Field(description="Colour channels (RGB).", examples=[3])


class ModelSummary(BaseModel):
    """A model the service serves."""

    name: str = Field(description="Name to pass as ?model= to /predict.", examples=["mobilenetv2-4class"])
    version: str = Field(description="Version from the manifest.", examples=["1.0.0"])
    task: str = Field(description="4class, binary or pairwise:<tumour>.", examples=["4class"])
    classes: list[str] = Field(
        description="Class names in output order.",
        examples=[["glioma", "meningioma", "no_tumor", "pituitary"]],
    )
    input: InputSpec = Field(description="Model input size.")
    preprocessing: str = Field(
        description="Name of the preprocessing recipe applied server-side.", examples=["crop"]
    )
    backbone: str = Field(description="Network architecture.", examples=["mobilenetv2"])
    sha256: str = Field(description="sha256 of the ONNX file.", examples=[_SHA256_EXAMPLE])
    provider: str = Field(
        description="ONNX Runtime execution provider running it.", examples=["CPUExecutionProvider"]
    )
    ready: bool = Field(description="Whether the model is loaded and warmed.", examples=[True])
    default: bool = Field(description="Whether /predict uses this model when none is named.", examples=[True])


class ModelDetail(ModelSummary):
    """A model with its whole manifest (evaluation figures, parity check, versions...)."""

    manifest: dict[str, Any] = Field(
        description="The model's manifest.json as exported (format brain-mri-model/1).",
        examples=[{"format": "brain-mri-model/1", "name": "mobilenetv2-4class", "evaluation": {"test": {}}}],
    )


class ModelList(BaseModel):
    """Every model served."""

    default_model: str = Field(
        description="The model /predict uses when none is named.", examples=["mobilenetv2-4class"]
    )
    models: list[ModelSummary] = Field(description="The models, by name.")


class LivenessResponse(BaseModel):
    """The process is up."""

    status: Literal["alive"] = Field(description="Always 'alive'.", examples=["alive"])


class ModelReadiness(BaseModel):
    """Whether one model is ready."""

    name: str = Field(description="Model name.", examples=["mobilenetv2-4class"])
    version: str = Field(description="Model version.", examples=["1.0.0"])
    ready: bool = Field(description="Loaded and warmed.", examples=[True])


class ReadinessResponse(BaseModel):
    """Every model is loaded and warmed: the service takes predictions."""

    status: Literal["ready"] = Field(
        description="Always 'ready' (a service not ready answers 503).", examples=["ready"]
    )
    models: list[ModelReadiness] = Field(description="The models served.")
