"""Every slice classified in batched ONNX runs, the per-series rule, the key slice and its Grad-CAM.

Slices are decoded, preprocessed and classified ``batch_size`` at a time, each batch in a worker thread
holding one slot of the service's :class:`~service.inference.PredictionLimiter` (a long series does
not starve single predictions), with one ONNX Runtime run per batch.

The series rule (:func:`aggregate`), over the *valid* slices (classified, and accepted by the input-validity
check when it is enforced):

- the series is a tumour when at least ``k`` valid slices are labelled with a tumour class, ``k`` being
  ``min_tumour_slices`` or the number of valid slices when there are fewer (a one-slice series decides alone);
- its tumour type is the tumour class with the highest mean probability over those tumour slices (the
  evidence), and its probabilities are that mean; otherwise it is the model's no-tumour class, with the mean
  probabilities of all valid slices;
- the key slice is the valid slice with the highest probability of the series' label (among the evidence for
  a tumour); Grad-CAM is computed for it only;
- a series without a valid slice has no label (status ``no_valid_slices``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import numpy as np
import numpy.typing as npt

from service.dicom import decode_dicom
from service.errors import NotBrainMriError
from service.explanations import GradcamOutcome, explain_prediction
from service.hospital.instances import SeriesGroup, Slice, expand_parts, group_series, read_slices
from service.hospital.settings import HospitalSettings
from service.inference import InferenceService, InputValidity, Prediction
from service.model_repository import ServedModel
from service.preprocessing import BoundingBox, ImageError, apply_recipe_with_region

NO_TUMOUR_CLASSES = frozenset({"no_tumor", "no_tumour", "notumor", "normal", "healthy"})


@dataclass
class SliceResult:
    """The outcome of one slice: its probabilities and input-validity check, or the error that refused it."""

    slice: Slice
    probabilities: npt.NDArray[np.float32] | None = None
    validity: InputValidity | None = None
    error: Exception | None = None
    decode_s: float = 0.0

    @property
    def valid(self) -> bool:
        return self.error is None and self.probabilities is not None


@dataclass
class SeriesResult:
    """The slices of one series in order, the rule's answer and the key slice's Grad-CAM."""

    group: SeriesGroup
    slices: list[SliceResult]
    label: str | None
    probabilities: npt.NDArray[np.float32] | None
    evidence: list[int]
    """Positions (in ``slices``) of the slices that carry the label."""
    key: int | None
    """Position (in ``slices``) of the key slice."""
    tumour_slices: int
    required: int
    gradcam: GradcamOutcome | None = None
    key_prediction: Prediction | None = None

    @property
    def status(self) -> str:
        return "ok" if self.label is not None else "no_valid_slices"


@dataclass
class Analysis:
    """A request's series, the slices that belong to none, and the time spent in each stage."""

    model: ServedModel
    series: list[SeriesResult]
    unread: list[SliceResult]
    batches: int
    queue_s: float
    classify_s: float
    gradcam_s: float


def no_tumour_class(model: ServedModel) -> str | None:
    """The model's class that means "no tumour" (None if it has none: every class is then a tumour type)."""
    return next((name for name in model.classes if name.lower() in NO_TUMOUR_CLASSES), None)


async def analyze_parts(
    parts: Sequence[bytes],
    model: ServedModel,
    inference: InferenceService,
    limits: HospitalSettings,
    *,
    gradcam: bool,
) -> Analysis:
    """Parts (DICOM files or ZIPs of them) -> slices -> ordered series -> :func:`analyze_series`.

    Raises :class:`~service.errors.UploadTooLargeError` past ``limits.max_instances`` or ``limits.max_bytes``.
    """

    def read() -> tuple[list[SeriesGroup], list[Slice]]:
        objects = expand_parts(parts, max_instances=limits.max_instances, max_bytes=limits.max_bytes)
        return group_series(read_slices(objects, max_instances=limits.max_instances))

    groups, unread = await anyio.to_thread.run_sync(read)
    return await analyze_series(
        inference,
        model,
        groups,
        unread,
        batch_size=limits.batch_size,
        min_tumour_slices=limits.min_tumour_slices,
        gradcam=gradcam,
    )


async def analyze_series(
    inference: InferenceService,
    model: ServedModel,
    groups: Sequence[SeriesGroup],
    unread: Sequence[Slice],
    *,
    batch_size: int,
    min_tumour_slices: int,
    gradcam: bool,
) -> Analysis:
    """Classify every slice of ``groups``, apply the series rule, explain each key slice if ``gradcam``."""
    started = time.perf_counter()
    ordered = [item for group in groups for item in group.slices]
    results: list[SliceResult] = []
    queue_s = 0.0
    batches = 0
    for first in range(0, len(ordered), batch_size):
        async with inference.limiter.slot() as waited:
            queue_s += waited
            chunk = ordered[first : first + batch_size]
            results.extend(await anyio.to_thread.run_sync(_classify, inference, model, chunk))
        batches += 1
    classified = time.perf_counter()
    series: list[SeriesResult] = []
    position = 0
    for group in groups:
        own = results[position : position + len(group.slices)]
        position += len(group.slices)
        series.append(aggregate(model, group, own, min_tumour_slices))
    for result in results:
        probabilities = result.probabilities
        label = "refused" if probabilities is None else model.classes[int(np.argmax(probabilities))]
        inference.metrics.predictions.labels(model=model.name, label=label).inc()
    if gradcam:
        for outcome in series:
            if outcome.key is not None:
                async with inference.limiter.slot() as waited:
                    queue_s += waited
                    await anyio.to_thread.run_sync(_explain, inference, model, outcome)
    finished = time.perf_counter()
    return Analysis(
        model=model,
        series=series,
        unread=[SliceResult(item, error=item.error) for item in unread],
        batches=batches,
        queue_s=queue_s,
        classify_s=classified - started - queue_s,
        gradcam_s=finished - classified,
    )


def _classify(inference: InferenceService, model: ServedModel, chunk: Sequence[Slice]) -> list[SliceResult]:
    """Decode and preprocess each slice of ``chunk``, then one ONNX run for those that decoded (blocking)."""
    results = [SliceResult(item) for item in chunk]
    inputs: list[npt.NDArray[np.float32]] = []
    runnable: list[SliceResult] = []
    for result in results:
        if result.slice.error is not None:
            result.error = result.slice.error
            continue
        began = time.perf_counter()
        try:
            image = _decode(inference, result.slice)
            model_input, _region = apply_recipe_with_region(image, model.recipe)  # (height, width, 3)
        except ImageError as error:
            result.error = error
            continue
        result.decode_s = time.perf_counter() - began
        inputs.append(model_input)
        runnable.append(result)
    if not runnable:
        return results
    began = time.perf_counter()
    probabilities, scores = model.run(np.stack(inputs))  # (N, C), (N,) or None
    inference.metrics.inference_duration.labels(model=model.name, version=model.version).observe(
        time.perf_counter() - began
    )
    for row, result in enumerate(runnable):
        prediction = _prediction(model, probabilities[row], None if scores is None else float(scores[row]))
        validity = InputValidity.of(prediction, inference.enforce_input_validity)
        result.validity = validity
        if validity.enforced and validity.accepted is False:
            result.error = NotBrainMriError(
                "The slice does not look like a brain MRI slice (its input-validity score is above the "
                f"threshold of model {model.name}), so no tumour label is given.",
                in_distribution=validity,
            )
        else:
            result.probabilities = probabilities[row]
    return results


def _decode(inference: InferenceService, item: Slice) -> npt.NDArray[np.uint8]:
    return decode_dicom(
        item.data,
        max_pixels=inference.max_pixels,
        require_brain_mri=True,
        max_bytes=inference.max_decode_bytes,
    )


def _prediction(
    model: ServedModel,
    probabilities: npt.NDArray[np.float32],
    score: float | None,
    image: npt.NDArray[np.uint8] | None = None,
    model_input: npt.NDArray[np.float32] | None = None,
    region: BoundingBox | None = None,
) -> Prediction:
    empty_image = np.zeros((1, 1, 3), np.uint8) if image is None else image
    empty_input = np.zeros((1, 1, 1, 3), np.float32) if model_input is None else model_input
    return Prediction(
        model=model,
        probabilities=probabilities,
        image=empty_image,
        model_input=empty_input,
        region=region or (0, 0, 1, 1),
        decode_s=0.0,
        preprocess_s=0.0,
        inference_s=0.0,
        ood_score=score,
    )


def aggregate(
    model: ServedModel, group: SeriesGroup, results: list[SliceResult], min_tumour_slices: int
) -> SeriesResult:
    """The series rule of this module's docstring applied to the ordered ``results`` of one series."""
    valid = [position for position, result in enumerate(results) if result.valid]
    negative = no_tumour_class(model)
    negative_index = None if negative is None else model.classes.index(negative)
    required = max(1, min(min_tumour_slices, len(valid)))
    if not valid:
        return SeriesResult(group, results, None, None, [], None, 0, required)

    def label_of(position: int) -> int:
        probabilities = results[position].probabilities
        assert probabilities is not None  # a valid slice
        return int(np.argmax(probabilities))

    tumour = [position for position in valid if label_of(position) != negative_index]
    stacked = np.stack([results[position].probabilities for position in valid])  # type: ignore[misc]
    if len(tumour) >= required:
        evidence = tumour
        mean = np.stack([results[p].probabilities for p in evidence]).mean(axis=0)  # type: ignore[misc]
        candidates = [index for index in range(len(model.classes)) if index != negative_index]
        label_index = max(candidates, key=lambda index: float(mean[index]))
    else:
        assert negative_index is not None  # a model without a no-tumour class labels every slice a tumour
        evidence = valid
        mean = stacked.mean(axis=0)
        label_index = negative_index
    key = max(evidence, key=lambda p: float(results[p].probabilities[label_index]))  # type: ignore[index]
    return SeriesResult(
        group,
        results,
        model.classes[label_index],
        mean.astype(np.float32),
        evidence,
        key,
        len(tumour),
        required,
    )


def _explain(inference: InferenceService, model: ServedModel, outcome: SeriesResult) -> None:
    """Decode the key slice again (the batch kept no images) and compute its Grad-CAM (blocking)."""
    assert outcome.key is not None
    result = outcome.slices[outcome.key]
    image = _decode(inference, result.slice)
    model_input, region = apply_recipe_with_region(image, model.recipe)
    assert result.probabilities is not None
    prediction = _prediction(
        model,
        result.probabilities,
        None,
        image=image,
        model_input=model_input[np.newaxis],
        region=region,
    )
    outcome.key_prediction = prediction
    # the heat map of the series' label (on a tumour series, the type the evidence voted for)
    label_index = model.classes.index(outcome.label) if outcome.label is not None else None
    outcome.gradcam = explain_prediction(inference.gradcam_engines, prediction, label_index)
    inference.metrics.observe_stage(model.name, "gradcam", outcome.gradcam.seconds)
