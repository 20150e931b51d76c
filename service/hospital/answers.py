"""An :class:`~service.hospital.analysis.Analysis` as the JSON answer (indexes only, no DICOM value)."""

from __future__ import annotations

import math
from typing import Any

from service.api.predict import _gradcam_answer
from service.errors import ErrorType, error_type_of
from service.hospital.analysis import Analysis, SeriesResult, SliceResult
from service.hospital.schemas import (
    SERIES_RULE,
    SeriesAnswer,
    SeriesPredictResponse,
    SeriesTimings,
    SliceAnswer,
    SliceError,
)
from service.model_repository import ServedModel
from service.schemas import DISCLAIMER, InDistribution, ModelReference


def series_answer(analysis: Analysis, request_id: str, total_s: float) -> SeriesPredictResponse:
    model = analysis.model
    classified = sum(result.valid for series in analysis.series for result in series.slices)
    slices = sum(len(series.slices) for series in analysis.series) + len(analysis.unread)
    return SeriesPredictResponse(
        request_id=request_id,
        model=ModelReference(name=model.name, version=model.version, sha256=model.onnx_sha256),
        series=[_series(model, series) for series in analysis.series],
        unread=[_slice(model, result) for result in analysis.unread],
        slices=slices,
        batches=analysis.batches,
        timings_ms=SeriesTimings(
            queue=_ms(analysis.queue_s),
            classify=_ms(analysis.classify_s),
            gradcam=_ms(analysis.gradcam_s),
            total=_ms(total_s),
            per_slice=_ms(analysis.classify_s / max(classified, 1)),
        ),
        disclaimer=DISCLAIMER,
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _series(model: ServedModel, series: SeriesResult) -> SeriesAnswer:
    return SeriesAnswer(
        index=series.group.index,
        status=series.status,  # type: ignore[arg-type]
        label=series.label,
        probabilities=None if series.probabilities is None else _probabilities(model, series.probabilities),
        tumour_slices=series.tumour_slices,
        required_tumour_slices=series.required,
        evidence=series.evidence,
        key_slice=series.key,
        ordered_by=series.group.ordered_by,  # type: ignore[arg-type]
        rule=SERIES_RULE,
        slices=[_slice(model, result) for result in series.slices],
        gradcam=None if series.gradcam is None else _gradcam_answer(series.gradcam),
    )


def _probabilities(model: ServedModel, values: Any) -> dict[str, float]:
    return {name: float(value) for name, value in zip(model.classes, values, strict=True)}


def _slice(model: ServedModel, result: SliceResult) -> SliceAnswer:
    validity = result.validity
    in_distribution = None
    if validity is not None:
        score = validity.score
        in_distribution = InDistribution(
            checked=validity.checked,
            enforced=validity.enforced,
            score=score if score is not None and math.isfinite(score) else None,
            threshold=validity.threshold,
            accepted=validity.accepted,
        )
    error = None
    if result.error is not None:
        message = getattr(result.error, "message", None) or "The slice could not be classified."
        error = SliceError(error=message, error_type=error_type_of(result.error, ErrorType.INVALID_IMAGE))
    probabilities = result.probabilities
    return SliceAnswer(
        instance=result.slice.instance,
        frame=result.slice.frame,
        status="ok" if result.valid else "error",
        label=None if probabilities is None else model.classes[int(probabilities.argmax())],
        probabilities=None if probabilities is None else _probabilities(model, probabilities),
        in_distribution=in_distribution,
        error=error,
    )
