"""Optional smaller ONNX variants (float16, int8), published only with their measured cost.

Each variant is scored on the split's whole test subset against the float32 graph: accuracy change in
percentage points, class agreement, max |Δ probability|, and batch-1 latency. A variant that loses more than
:data:`MAX_ACCURACY_DROP_POINTS` points of test accuracy is refused (not written).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from exporter.defaults import MAX_ACCURACY_DROP_POINTS
from exporter.errors import ExportError
from exporter.manifest import INPUT_NAME, OUTPUT_NAME
from exporter.parity import median_latency_ms, onnx_probabilities, onnx_session

CALIBRATION_IMAGES = 64
VARIANT_NAMES = ("fp16", "int8")

FloatArray = npt.NDArray[np.float32]


class VariantUnavailableError(ExportError):
    """This ONNX Runtime build cannot make the variant; the export goes on without it."""


@dataclass(frozen=True)
class Float32Baseline:
    """The split's test subset, preprocessed, and the float32 graph's figures on it."""

    images: FloatArray  # (N, h, w, 3)
    labels: npt.NDArray[np.int64]  # (N,)
    probabilities: FloatArray  # (N, C) of the float32 ONNX graph
    latency_ms: float  # batch-1 median of the float32 ONNX graph

    @property
    def accuracy(self) -> float:
        """Test accuracy of the float32 ONNX graph."""
        return float(np.mean(self.probabilities.argmax(axis=1) == self.labels))


@dataclass(frozen=True)
class VariantOutcome:
    """A measured variant: its manifest record, and why it was refused (None: published)."""

    name: str
    file: str
    data: bytes
    record: dict[str, Any]
    refused: str | None


def variant_file(name: str) -> str:
    """``model.<name>.onnx``."""
    return f"model.{name}.onnx"


def make_fp16(proto: onnx.ModelProto, calibration: FloatArray) -> tuple[onnx.ModelProto, str]:
    """Float16 weights and arithmetic; the input and output stay float32 so clients need not change."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as error:
        raise VariantUnavailableError(
            f"the fp16 variant needs onnxruntime.transformers.float16, which cannot be imported ({error})"
        ) from None
    converted = convert_float_to_float16(proto, keep_io_types=True)
    return (
        converted,
        "float16 weights and activations (onnxruntime.transformers.float16), float32 input/output",
    )


def make_int8(proto: onnx.ModelProto, calibration: FloatArray) -> tuple[onnx.ModelProto, str]:
    """Static QDQ quantisation: int8 per-channel weights, uint8 activations calibrated on train images."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise VariantUnavailableError(f"onnxruntime.quantization cannot be imported ({error})") from None

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{INPUT_NAME: image[None]} for image in calibration])  # (1, h, w, 3) each

        def get_next(self) -> dict[str, FloatArray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="exporter-int8-") as work:
        source, prepared, target = (Path(work) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(proto, source)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantized = onnx.load(target)
    method = (
        f"static QDQ: per-channel int8 weights, uint8 activations, MinMax calibration on "
        f"{len(calibration)} train images (onnxruntime.quantization)"
    )
    return quantized, method


MAKERS: dict[str, Callable[[onnx.ModelProto, FloatArray], tuple[onnx.ModelProto, str]]] = {
    "fp16": make_fp16,
    "int8": make_int8,
}


def measure_variant(
    name: str,
    proto: onnx.ModelProto,
    calibration: FloatArray,
    test: Float32Baseline,
    max_drop_points: float = MAX_ACCURACY_DROP_POINTS,
) -> VariantOutcome:
    """Make variant ``name`` of the float32 graph and score it on the test set against that graph."""
    variant, method = MAKERS[name](proto, calibration)
    data = variant.SerializeToString()
    session = onnx_session(data)
    names = (session.get_inputs()[0].name, session.get_outputs()[0].name)
    if names != (INPUT_NAME, OUTPUT_NAME):
        raise ExportError(f"the {name} variant renamed the graph's input/output to {names}")
    probabilities = onnx_probabilities(session, test.images)  # (N, C)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == test.labels))
    change = round((accuracy - test.accuracy) * 100.0, 4)
    record = {
        "file": variant_file(name),
        "method": method,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "test_images": len(test.labels),
        "test_accuracy": accuracy,
        "baseline_test_accuracy": test.accuracy,
        "accuracy_change_points": change,
        "argmax_agreement": float(np.mean(probabilities.argmax(axis=1) == test.probabilities.argmax(axis=1))),
        "max_abs_diff": float(np.abs(probabilities - test.probabilities).max()),
        "latency_ms": median_latency_ms(session, test.images[0]),
        "baseline_latency_ms": test.latency_ms,
    }
    refused = None
    if change < -max_drop_points:
        refused = (
            f"the {name} variant was not written: its test accuracy {accuracy:.4f} is {-change:.2f} points "
            f"below the float32 graph's {test.accuracy:.4f} (at most {max_drop_points:g} allowed)"
        )
    return VariantOutcome(name, variant_file(name), data, record, refused)


def labels_of(names: Sequence[str], classes: Sequence[str]) -> npt.NDArray[np.int64]:
    """(N,) class indices of label names."""
    return np.array([list(classes).index(n) for n in names], dtype=np.int64)
