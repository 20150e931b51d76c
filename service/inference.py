"""One prediction: decode -> preprocess (the model's own recipe) -> ONNX Runtime, timed stage by stage.

The work runs in worker threads (``anyio.to_thread.run_sync``), never on the event loop, and at most
``max_concurrency`` predictions run at once: the others wait up to ``queue_timeout_s`` for a slot, then 429.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import numpy as np
import numpy.typing as npt

from service.dicom import decode_dicom, is_dicom
from service.errors import RETRY_AFTER_S, NotBrainMriError, OverloadedError
from service.explanations import GradcamEngines, GradcamOutcome, explain_prediction
from service.metrics import ServiceMetrics
from service.model_repository import ServedModel
from service.preprocessing import (
    DEFAULT_MAX_DECODE_BYTES,
    BoundingBox,
    apply_recipe_with_region,
    decode_image,
)


class PredictionLimiter:
    """At most ``max_concurrency`` holders at once; a caller waits up to ``queue_timeout_s``, then 429."""

    def __init__(self, max_concurrency: int, queue_timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.queue_timeout_s = queue_timeout_s
        self._semaphore = anyio.Semaphore(max_concurrency)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one slot for the block; yields the seconds spent waiting for it."""
        started = time.perf_counter()
        try:
            self._semaphore.acquire_nowait()
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(self.queue_timeout_s):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise OverloadedError(
                    f"The service is busy: all {self.max_concurrency} prediction slots stayed taken for "
                    f"{self.queue_timeout_s:g} s. Retry in a moment.",
                    headers={"Retry-After": RETRY_AFTER_S},
                ) from None
        try:
            yield time.perf_counter() - started
        finally:
            self._semaphore.release()


@dataclass(frozen=True)
class Prediction:
    """The ONNX answer for one image, with what Grad-CAM needs and the time of each stage in seconds."""

    model: ServedModel
    probabilities: npt.NDArray[np.float32]  # (C,)
    image: npt.NDArray[np.uint8]  # (H, W, 3) the decoded upload
    model_input: npt.NDArray[np.float32]  # (1, height, width, 3)
    region: BoundingBox  # (x0, y0, x1, y1) of ``image`` that ``model_input`` shows (the brain crop, or all)
    decode_s: float
    preprocess_s: float
    inference_s: float
    ood_score: float | None = None
    """The input-validity score of the graph (higher: less like a brain MRI slice); None without a check."""

    @property
    def class_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        return self.model.classes[self.class_index]

    @property
    def confidence(self) -> float:
        return min(max(float(self.probabilities[self.class_index]), 0.0), 1.0)  # float32 rounding


@dataclass(frozen=True)
class InputValidity:
    """The input-validity check of one prediction: ``accepted`` is None when the model has no check."""

    checked: bool
    enforced: bool
    score: float | None
    threshold: float | None

    @property
    def accepted(self) -> bool | None:
        if self.score is None or self.threshold is None:
            return None
        return math.isfinite(self.score) and self.score <= self.threshold  # NaN is never accepted

    @classmethod
    def of(cls, prediction: Prediction, enforced: bool) -> InputValidity:
        threshold = prediction.model.ood_threshold
        checked = threshold is not None and prediction.ood_score is not None
        score = prediction.ood_score
        return cls(checked, enforced and checked, None if score is None else round(score, 6), threshold)


@dataclass(frozen=True)
class PredictionOutcome:
    """A prediction, its input-validity check, its optional Grad-CAM and the seconds spent waiting for a slot.

    ``uncertain``: the confidence is below the ``min_confidence`` the request asked for; no label is given.
    """

    prediction: Prediction
    validity: InputValidity
    gradcam: GradcamOutcome | None
    queue_s: float
    uncertain: bool = False


def decode_upload(
    data: bytes,
    content_type: str | None,
    *,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> npt.NDArray[np.uint8]:
    """Upload bytes -> uint8 RGB (H, W, 3): DICOM by its magic or content type, other images by content;
    ``max_bytes`` is the memory budget of the decode (413 past it)."""
    if is_dicom(data, content_type):
        return decode_dicom(data, max_pixels=max_pixels, require_brain_mri=True, max_bytes=max_bytes)
    return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)


def predict_upload(
    model: ServedModel,
    data: bytes,
    content_type: str | None,
    *,
    max_pixels: int,
    metrics: ServiceMetrics,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> Prediction:
    """Decode, preprocess and classify one upload (blocking: call it from a worker thread)."""
    started = time.perf_counter()
    image = decode_upload(data, content_type, max_pixels=max_pixels, max_bytes=max_bytes)  # (H, W, 3) uint8
    decoded = time.perf_counter()
    single_input, region = apply_recipe_with_region(image, model.recipe)  # (height, width, 3) float32
    model_input = single_input[np.newaxis]  # (1, height, width, 3)
    preprocessed = time.perf_counter()
    probabilities, scores = model.run(model_input)  # (1, C), (1,) or None
    finished = time.perf_counter()
    prediction = Prediction(
        model=model,
        probabilities=probabilities[0],
        ood_score=None if scores is None else float(scores[0]),
        image=image,
        model_input=model_input,
        region=region,
        decode_s=decoded - started,
        preprocess_s=preprocessed - decoded,
        inference_s=finished - preprocessed,
    )
    metrics.observe_stage(model.name, "decode", prediction.decode_s)
    metrics.observe_stage(model.name, "preprocess", prediction.preprocess_s)
    metrics.observe_stage(model.name, "inference", prediction.inference_s)
    metrics.inference_duration.labels(model=model.name, version=model.version).observe(prediction.inference_s)
    return prediction


class InferenceService:
    """Runs predictions (and Grad-CAM when asked) in worker threads under the concurrency limit."""

    def __init__(
        self,
        *,
        metrics: ServiceMetrics,
        limiter: PredictionLimiter,
        gradcam_engines: GradcamEngines,
        max_pixels: int,
        max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
        enforce_input_validity: bool = True,
    ) -> None:
        self.enforce_input_validity = enforce_input_validity
        self.metrics = metrics
        self.limiter = limiter
        self.gradcam_engines = gradcam_engines
        self.max_pixels = max_pixels
        self.max_decode_bytes = max_decode_bytes

    async def predict(
        self,
        model: ServedModel,
        data: bytes,
        content_type: str | None,
        *,
        gradcam: bool,
        gradcam_class: int | None = None,
        min_confidence: float | None = None,
        gradcam_image: bool = False,
    ) -> PredictionOutcome:
        """Classify ``data`` with ``model``; with ``gradcam``, explain ``gradcam_class`` (None: the label).

        Raises :class:`NotBrainMriError` when the input-validity check is enforced and refuses the upload
        (before any Grad-CAM is computed).
        """
        async with self.limiter.slot() as queue_s:
            prediction = await anyio.to_thread.run_sync(self._predict_sync, model, data, content_type)
            validity = InputValidity.of(prediction, self.enforce_input_validity)
            if validity.enforced and validity.accepted is False:
                raise NotBrainMriError(
                    "The image does not look like a brain MRI slice (its input-validity score "
                    f"{_score_text(validity.score)} is above the threshold {validity.threshold:.4g} of model "
                    f"{model.name}), so no tumour label is given. Send an axial, coronal or sagittal brain "
                    "MRI "
                    "slice.",
                    in_distribution=validity,
                )
            uncertain = min_confidence is not None and prediction.confidence < min_confidence
            explanation = None
            if gradcam:
                explanation = await anyio.to_thread.run_sync(
                    explain_prediction, self.gradcam_engines, prediction, gradcam_class, gradcam_image
                )
                self.metrics.observe_stage(model.name, "gradcam", explanation.seconds)
        label = "uncertain" if uncertain else prediction.label
        self.metrics.predictions.labels(model=model.name, label=label).inc()
        return PredictionOutcome(prediction, validity, explanation, queue_s, uncertain)

    def _predict_sync(self, model: ServedModel, data: bytes, content_type: str | None) -> Prediction:
        return predict_upload(
            model,
            data,
            content_type,
            max_pixels=self.max_pixels,
            metrics=self.metrics,
            max_bytes=self.max_decode_bytes,
        )


def _score_text(score: float | None) -> str:
    return "not a number" if score is None or not math.isfinite(score) else f"{score:.4g}"
