"""Hospital integration: whole DICOM series in, DICOM results back over DICOMweb, FHIR for the record.

``POST /predict/series`` classifies every slice of one or more DICOM series sent in one request (several
``files`` parts, ZIP archives of instances, multi-frame objects);
``POST /dicomweb/studies/{study_uid}/analyze``
pulls a study from the configured PACS, classifies its MR series and stores a Secondary Capture of the key
slice's Grad-CAM and a Structured Report back. Either answers FHIR R4 on ``Accept: application/fhir+json``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, File, Path, Request, Response, UploadFile

from service.api.deps import InferenceDep, RepositoryDep, RequestContextDep, SettingsDep, require_api_key
from service.api.predict import GradcamQuery, ModelQuery
from service.api.responses import error_responses
from service.errors import NotReadyError, UploadTooLargeError
from service.hospital import fhir
from service.hospital.analysis import analyze_parts
from service.hospital.answers import series_answer
from service.hospital.dicomweb import analyze_study, open_client
from service.hospital.schemas import SeriesPredictResponse, StoredObject, StudyAnalysisResponse
from service.hospital.settings import hospital_settings
from service.model_repository import ServedModel
from service.schemas import DISCLAIMER, ErrorResponse

router = APIRouter(tags=["hospital integration"], dependencies=[Depends(require_api_key)])

FHIR_JSON: Final = "application/fhir+json"
FilesField = Annotated[
    list[UploadFile],
    File(
        description=(
            "The DICOM instances, one per part (repeat the field), or ZIP archives of them; multi-frame "
            "(enhanced) MR objects are split into their frames. Several series may be mixed."
        ),
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
    ),
]
_FHIR_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {
            FHIR_JSON: {
                "schema": {
                    "type": "object",
                    "description": "With Accept: application/fhir+json: a FHIR R4 DiagnosticReport (one "
                    "series) or a Bundle of type collection of DiagnosticReports (several series).",
                }
            }
        }
    }
}


def wants_fhir(request: Request) -> bool:
    """Whether the client asked for FHIR (``Accept: application/fhir+json``) rather than the JSON answer."""
    return FHIR_JSON in request.headers.get("accept", "").lower()


def _ready_model(repository: Any, name: str | None) -> ServedModel:
    served: ServedModel = repository.get(name)
    if not served.ready:
        raise NotReadyError(f"Model {served.name} is still warming up; retry when /health/ready answers 200.")
    return served


@router.post(
    "/predict/series",
    summary="Classify whole DICOM series",
    operation_id="predict_series",
    response_model=SeriesPredictResponse,
    responses={**_FHIR_RESPONSE, **error_responses(400, 401, 404, 408, 413, 415, 422, 429, 500, 503)},
)
async def predict_series(
    files: FilesField,
    request: Request,
    repository: RepositoryDep,
    inference: InferenceDep,
    settings: SettingsDep,
    context: RequestContextDep,
    model: ModelQuery = None,
    gradcam: GradcamQuery = None,
) -> Any:
    """Group the DICOM instances by series, order them, classify every slice in batched ONNX runs and
    answer per slice and per series (the rule is in each series' ``rule``), with Grad-CAM of the key slice
    when asked for.

    A slice that cannot be decoded, is not MR or fails the input-validity check carries its own error; the
    other slices are still classified. More slices or bytes than MRI_SERIES_MAX_INSTANCES /
    MRI_SERIES_MAX_BYTES: 413. The answer names slices and series by indexes of this request, never by DICOM
    UIDs. With ``Accept: application/fhir+json`` the answer is FHIR R4. Research use only.
    """
    started = time.perf_counter()
    served = _ready_model(repository, model)
    context.model = served.name
    limits = hospital_settings(settings)
    declared = sum(part.size or 0 for part in files)
    if len(files) > limits.max_instances or declared > limits.max_bytes:
        raise UploadTooLargeError(
            f"The request holds {len(files):,} parts and {declared:,} bytes, more than the limits of "
            f"{limits.max_instances:,} slices and {limits.max_bytes:,} bytes; send the series in several "
            "requests."
        )
    parts = [await part.read() for part in files]
    want_gradcam = settings.gradcam_default if gradcam is None else gradcam
    analysis = await analyze_parts(parts, served, inference, limits, gradcam=want_gradcam)
    labels = {series.label for series in analysis.series if series.label is not None}
    context.label = labels.pop() if len(labels) == 1 else None
    answer = series_answer(analysis, context.request_id, time.perf_counter() - started)
    if wants_fhir(request):
        return Response(json.dumps(fhir.report_of(answer)), media_type=FHIR_JSON)
    return answer


_PACS_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"examples": {kind: {"summary": kind, "value": example}}}},
    }
    for status, kind, description, example in (
        (
            502,
            "pacs_error",
            "The PACS could not be reached or answered an error; the sentence says what was already stored.",
            {
                "error": "The PACS answered HTTP 500 while storing the SR of series 0 (STOW-RS). Already "
                "stored: the Secondary Capture of series 0.",
                "error_type": "pacs_error",
            },
        ),
        (
            504,
            "pacs_timeout",
            "The PACS did not answer within MRI_DICOMWEB_TIMEOUT_S.",
            {
                "error": "The PACS did not answer in time while retrieving the study (WADO-RS). Nothing was "
                "stored.",
                "error_type": "pacs_timeout",
            },
        ),
    )
}
StudyUidPath = Annotated[
    str,
    Path(
        description="Study Instance UID of the study in the configured PACS (MRI_DICOMWEB_URL).",
        examples=["1.2.826.0.1.3680043.8.498.12345678901234567890"],
        max_length=64,
    ),
]


@router.post(
    "/dicomweb/studies/{study_uid}/analyze",
    summary="Analyse a study in the PACS and store the results back",
    operation_id="analyze_study",
    response_model=StudyAnalysisResponse,
    responses={**_FHIR_RESPONSE, **error_responses(401, 404, 413, 422, 429, 500, 503), **_PACS_ERRORS},
)
async def analyze_pacs_study(
    study_uid: StudyUidPath,
    request: Request,
    repository: RepositoryDep,
    inference: InferenceDep,
    settings: SettingsDep,
    context: RequestContextDep,
    model: ModelQuery = None,
) -> Any:
    """Retrieve the study's MR series from the PACS (QIDO-RS, WADO-RS), classify every slice, and store
    back into the same study a Secondary Capture of each key slice's Grad-CAM overlay, then a TID 1500
    Structured Report of the finding (STOW-RS).

    The PACS is MRI_DICOMWEB_URL (with MRI_DICOMWEB_AUTH_HEADER and MRI_DICOMWEB_CA_BUNDLE); it failing
    answers 502, its timeout (MRI_DICOMWEB_TIMEOUT_S) 504, each with what was already stored. The SR is
    stored only after its Secondary Capture was. The answer names series by index, never by UID. Research
    use only.
    """
    started = time.perf_counter()
    served = _ready_model(repository, model)
    context.model = served.name
    limits = hospital_settings(settings)
    client = open_client(limits)
    outcome = await analyze_study(client, study_uid, served, inference, limits)
    answer = series_answer(outcome.analysis, context.request_id, time.perf_counter() - started)
    if wants_fhir(request):
        return Response(json.dumps(fhir.report_of(answer)), media_type=FHIR_JSON)
    return StudyAnalysisResponse(
        request_id=context.request_id,
        analysis=answer,
        stored=[StoredObject(kind=kind, series=index) for kind, index, _uid in outcome.stored],  # type: ignore[arg-type]
        disclaimer=DISCLAIMER,
    )


__all__ = ["router", "wants_fhir"]
