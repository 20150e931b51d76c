"""Grad-CAM for a prediction, from the model's Keras twin, checked against the ONNX answer.

:mod:`service.gradcam` imports TensorFlow/Keras, so it is imported here only when the first Grad-CAM is
asked for, inside a worker thread: a service that never explains never loads TensorFlow.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import InternalServiceError
from service.gradcam_render import heatmap_canvas, render_heatmap_png, render_image_png, render_overlay_png

if TYPE_CHECKING:
    from service.inference import Prediction
    from service.model_repository import ServedModel

logger = logging.getLogger("service.gradcam")


@dataclass(frozen=True)
class GradcamOutcome:
    """The overlay PNG and what it shows; ``agrees_with_onnx`` compares the twin's argmax with ONNX's."""

    png: bytes
    heatmap_png: bytes
    class_index: int
    class_name: str
    layer: str
    method: str
    width: int
    height: int
    agrees_with_onnx: bool
    seconds: float
    image_png: bytes | None = None


def _gradcam_module() -> Any:
    """:mod:`service.gradcam`, imported on first use: TensorFlow comes in here, and only here, with its C++
    start-up lines turned into JSON log lines."""
    import sys

    module = sys.modules.get("service.gradcam")
    if module is None:
        from service.logging import native_stderr_to_log

        with native_stderr_to_log("tensorflow"):
            import service.gradcam as module
    return module


class GradcamEngines:
    """One Grad-CAM engine per model, created on first use; safe to call from several threads."""

    def __init__(self) -> None:
        self._engines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_model(self, model: ServedModel) -> Any:
        """The engine of ``model`` (it loads the Keras twin lazily, on its first ``compute``)."""
        with self._lock:
            engine = self._engines.get(model.name)
            if engine is None:
                engine_class = _gradcam_module().GradcamEngine
                engine = engine_class(model.keras_path, model.gradcam_layer, model.gradcam_method)
                self._engines[model.name] = engine
            return engine

    def warm_up(self, model: ServedModel) -> None:
        """Load the Keras twin of ``model`` and trace its Grad-CAM graph ahead of the first request."""
        self.for_model(model).warm_up()


def explain_prediction(
    engines: GradcamEngines, prediction: Prediction, class_index: int | None, with_image: bool = False
) -> GradcamOutcome:
    """Grad-CAM of ``class_index`` (None: the predicted class), overlaid on the original image (blocking);
    ``with_image`` adds the decoded upload as a PNG, for viewers that draw the heat map themselves."""
    started = time.perf_counter()
    model = prediction.model
    target = prediction.class_index if class_index is None else class_index
    GradcamError = _gradcam_module().GradcamError  # noqa: N806 (a class)

    try:
        result = engines.for_model(model).compute(prediction.model_input, target)
    except GradcamError:
        logger.exception("Grad-CAM of model %s failed", model.name, extra={"model": model.name})
        raise InternalServiceError(
            f"Grad-CAM is unavailable for model {model.name} (the failure was logged); "
            "ask again without gradcam=true."
        ) from None
    height, width = prediction.image.shape[:2]
    canvas = heatmap_canvas((height, width), result.heatmap, prediction.region)  # (H, W)
    png = render_overlay_png(prediction.image, result.heatmap, canvas=canvas)
    heatmap_png = render_heatmap_png(canvas)
    twin_index = int(np.argmax(result.probabilities))
    agrees = twin_index == prediction.class_index
    if not agrees:
        logger.warning(
            "the Keras twin of model %s predicts %s where ONNX predicts %s",
            model.name,
            model.classes[twin_index],
            prediction.label,
            extra={"model": model.name, "label": prediction.label},
        )
    height, width = prediction.image.shape[:2]
    return GradcamOutcome(
        png=png,
        heatmap_png=heatmap_png,
        class_index=int(result.class_index),
        class_name=model.classes[int(result.class_index)],
        layer=model.gradcam_layer,
        method=model.gradcam_method,
        width=width,
        height=height,
        agrees_with_onnx=agrees,
        seconds=time.perf_counter() - started,
        image_png=render_image_png(prediction.image) if with_image else None,
    )
