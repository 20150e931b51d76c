"""``POST /predict``: classify one uploaded MRI slice, optionally with a Grad-CAM heat map."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile

from service.api.deps import InferenceDep, RepositoryDep, RequestContextDep, SettingsDep, require_api_key
from service.api.responses import error_responses
from service.errors import InvalidRequestError, NotReadyError, UploadTooLargeError, client_text
from service.explanations import GradcamOutcome
from service.inference import PredictionOutcome
from service.model_repository import ServedModel
from service.schemas import (
    DISCLAIMER,
    GradcamResponse,
    InDistribution,
    ModelReference,
    PredictResponse,
    StageTimings,
)

FHIR_JSON = "application/fhir+json"

router = APIRouter(tags=["prediction"], dependencies=[Depends(require_api_key)])

FileField = Annotated[
    UploadFile,
    File(
        description=(
            "The MRI slice: JPEG, PNG, BMP, TIFF (8 or 16 bit, grey, RGB or RGBA) or a single-frame "
            "DICOM file. The format is read from the content, not from the file name or its declared type."
        ),
        # OpenAPI 3.0's spelling of a file next to FastAPI's 3.1 contentMediaType: generated clients
        # (openapi-python-client 0.29) type the field as a file only with it
        json_schema_extra={"format": "binary"},
    ),
]
ModelQuery = Annotated[
    str | None,
    Query(
        description="Model to use (see GET /models); omitted: the service's default model.",
        examples=["mobilenetv2-4class"],
    ),
]
GradcamQuery = Annotated[
    bool | None,
    Query(
        description="Whether to return a Grad-CAM heat map (true/false); omitted: the service's default "
        "(MRI_GRADCAM_DEFAULT, normally false). Grad-CAM costs a Keras forward and backward pass.",
        examples=[True],
    ),
]
GradcamClassQuery = Annotated[
    str | None,
    Query(
        description="Class whose Grad-CAM to compute instead of the predicted one (one of the model's "
        "classes); implies gradcam=true.",
        examples=["meningioma"],
    ),
]
GradcamImageQuery = Annotated[
    bool,
    Query(
        description="With a Grad-CAM, also return the decoded upload as a PNG (gradcam.image_png_base64): "
        "what the model saw (a DICOM after windowing), for viewers that draw the heat map themselves.",
        examples=[True],
    ),
]
MinConfidenceQuery = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        description="Abstain below this calibrated confidence: the answer is then status 'uncertain' with no "
        "label (selective prediction; each model's report gives the accuracy reached at each floor).",
        examples=[0.9],
    ),
]


@router.post(
    "/predict",
    summary="Classify one brain MRI slice",
    operation_id="predict",
    response_model=PredictResponse,
    responses={
        200: {
            "content": {
                "application/fhir+json": {
                    "schema": {
                        "type": "object",
                        "description": "With Accept: application/fhir+json: a FHIR R4 DiagnosticReport "
                        "(status preliminary, no subject) of the slice.",
                    }
                }
            }
        },
        **error_responses(400, 401, 404, 408, 413, 415, 422, 429, 500, 503),
    },
)
async def predict(
    file: FileField,
    repository: RepositoryDep,
    inference: InferenceDep,
    settings: SettingsDep,
    context: RequestContextDep,
    response: Response,
    request: Request,
    model: ModelQuery = None,
    gradcam: GradcamQuery = None,
    gradcam_class: GradcamClassQuery = None,
    min_confidence: MinConfidenceQuery = None,
    gradcam_image: GradcamImageQuery = False,
) -> PredictResponse | Response:
    """Decode the upload, preprocess it with the model's own recipe and classify it with ONNX Runtime.

    An upload that does not look like a brain MRI slice is refused with 422 not_brain_mri (no label);
    below min_confidence the answer is status 'uncertain' without a label. Research use only: the answer is
    not a medical diagnosis.
    """
    started = time.perf_counter()
    served = repository.get(model)
    context.model = served.name
    if not served.ready:
        raise NotReadyError(f"Model {served.name} is still warming up; retry when /health/ready answers 200.")
    class_index = _gradcam_class_index(served, gradcam_class)
    if gradcam is False and class_index is not None:
        raise InvalidRequestError("The query parameter 'gradcam_class' asks for Grad-CAM, but gradcam=false.")
    want_gradcam = class_index is not None or (settings.gradcam_default if gradcam is None else gradcam)
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise UploadTooLargeError(
            f"The upload ({file.size:,} bytes) is larger than the limit of "
            f"{settings.max_upload_bytes:,} bytes; send a smaller image."
        )
    data = await file.read()
    outcome = await inference.predict(
        served,
        data,
        file.content_type,
        gradcam=want_gradcam,
        gradcam_class=class_index,
        min_confidence=min_confidence,
        gradcam_image=gradcam_image,
    )
    context.label = "uncertain" if outcome.uncertain else outcome.prediction.label
    timings = _timings(outcome, total_s=time.perf_counter() - started)
    response.headers["Server-Timing"] = ", ".join(
        f"{stage};dur={ms:.1f}" for stage, ms in timings.model_dump().items() if ms is not None
    )
    answer = _answer(outcome, context.request_id, timings, min_confidence)
    if FHIR_JSON in request.headers.get("accept", "").lower():
        from service.hospital import fhir

        report = fhir.report_of_prediction(answer)
        return Response(json.dumps(report), media_type=FHIR_JSON, headers=dict(response.headers))
    return answer


def _gradcam_class_index(model: ServedModel, gradcam_class: str | None) -> int | None:
    if gradcam_class is None:
        return None
    if gradcam_class not in model.classes:
        raise InvalidRequestError(
            f"The query parameter 'gradcam_class' must be one of the classes of model {model.name}: "
            f"{', '.join(model.classes)} (got {client_text(gradcam_class)})."
        )
    return model.classes.index(gradcam_class)


def _timings(outcome: PredictionOutcome, total_s: float) -> StageTimings:
    prediction = outcome.prediction
    return StageTimings(
        queue=round(outcome.queue_s * 1000.0, 3),
        decode=round(prediction.decode_s * 1000.0, 3),
        preprocess=round(prediction.preprocess_s * 1000.0, 3),
        inference=round(prediction.inference_s * 1000.0, 3),
        gradcam=None if outcome.gradcam is None else round(outcome.gradcam.seconds * 1000.0, 3),
        total=round(total_s * 1000.0, 3),
    )


def _answer(
    outcome: PredictionOutcome, request_id: str, timings: StageTimings, min_confidence: float | None
) -> PredictResponse:
    prediction = outcome.prediction
    served = prediction.model
    validity = outcome.validity
    score = validity.score
    return PredictResponse(
        request_id=request_id,
        status="uncertain" if outcome.uncertain else "ok",
        label=None if outcome.uncertain else prediction.label,
        confidence=prediction.confidence,
        min_confidence=min_confidence,
        in_distribution=InDistribution(
            checked=validity.checked,
            enforced=validity.enforced,
            score=score if score is not None and math.isfinite(score) else None,
            threshold=validity.threshold,
            accepted=validity.accepted,
        ),
        probabilities={
            name: float(p) for name, p in zip(served.classes, prediction.probabilities, strict=True)
        },
        model=ModelReference(name=served.name, version=served.version, sha256=served.onnx_sha256),
        gradcam=None if outcome.gradcam is None else _gradcam_answer(outcome.gradcam),
        timings_ms=timings,
        disclaimer=DISCLAIMER,
    )


def _gradcam_answer(gradcam: GradcamOutcome) -> GradcamResponse:
    return GradcamResponse.model_validate(
        {
            "png_base64": base64.b64encode(gradcam.png).decode("ascii"),
            "heatmap_png_base64": base64.b64encode(gradcam.heatmap_png).decode("ascii"),
            "class": gradcam.class_name,
            "layer": gradcam.layer,
            "method": gradcam.method,
            "width": gradcam.width,
            "height": gradcam.height,
            "agrees_with_onnx": gradcam.agrees_with_onnx,
            "image_png_base64": None
            if gradcam.image_png is None
            else base64.b64encode(gradcam.image_png).decode("ascii"),
        }
    )
