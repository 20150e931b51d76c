"""Keras → ONNX with tf2onnx: one input ``image`` (N, H, W, 3) float32, one output ``probabilities`` (N, C).

The batch axis stays dynamic (named ``batch``) so the service can run one image or a batch with one session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import onnx
import tensorflow as tf
import tf2onnx

from exporter.defaults import OPSET
from exporter.errors import ConversionError
from exporter.manifest import INPUT_NAME, OUTPUT_NAME

BATCH_AXIS = "batch"


@dataclass(frozen=True)
class OnnxSignature:
    """Name and shape of the graph's single input and single output; None marks a dynamic axis."""

    input_name: str
    input_shape: tuple[int | None, ...]
    output_name: str
    output_shape: tuple[int | None, ...]


def convert_keras_to_onnx(model: keras.Model, opset: int = OPSET) -> onnx.ModelProto:
    """The ONNX graph of ``model`` (input ``image``, output ``probabilities``, dynamic batch)."""
    height, width = model.input_shape[1:3]
    if model.input_shape[3] != 3 or height is None or width is None:
        raise ConversionError(f"the model takes {model.input_shape}, not a fixed-size (N, H, W, 3) image")
    # Keras 3 names functional outputs after their symbolic tensors ('keras_tensor_N'), which tf2onnx cannot
    # find in the traced graph (KeyError); naming the output also names the ONNX graph's output.
    model.output_names = [OUTPUT_NAME]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as error:  # tf2onnx raises anything from KeyError to ValueError on an unsupported op
        raise ConversionError(
            f"tf2onnx could not convert the model: {type(error).__name__}: {error}"
        ) from None
    name_batch_axis(proto)
    return proto


def name_batch_axis(proto: onnx.ModelProto) -> None:
    """Give the dynamic first axis of every graph input and output the readable name ``batch``."""
    for value in (*proto.graph.input, *proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):
            first.dim_param = BATCH_AXIS


def onnx_signature(proto: onnx.ModelProto) -> OnnxSignature:
    """The single input and output of the graph; :class:`ConversionError` when there are more."""
    inputs, outputs = list(proto.graph.input), list(proto.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(
            f"the ONNX graph has {len(inputs)} inputs and {len(outputs)} outputs, not one of each"
        )
    return OnnxSignature(inputs[0].name, _shape(inputs[0]), outputs[0].name, _shape(outputs[0]))


def _shape(value: Any) -> tuple[int | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)


def check_onnx_model(proto: onnx.ModelProto, model: keras.Model, opset: int = OPSET) -> OnnxSignature:
    """Check the graph against the Keras model and the manifest contract; raise :class:`ConversionError`."""
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ConversionError(f"the ONNX graph is not valid: {error}") from None
    signature = onnx_signature(proto)
    height, width = model.input_shape[1:3]
    classes = model.output_shape[-1]
    expected = {
        "input name": (signature.input_name, INPUT_NAME),
        "output name": (signature.output_name, OUTPUT_NAME),
        "input shape": (signature.input_shape, (None, height, width, 3)),
        "output shape": (signature.output_shape, (None, classes)),
    }
    for what, (found, wanted) in expected.items():
        if found != wanted:
            raise ConversionError(f"the ONNX graph's {what} is {_show(found)}, expected {_show(wanted)}")
    model_opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if model_opset != opset:
        raise ConversionError(f"the ONNX graph uses opset {model_opset}, expected {opset}")
    return signature


def _show(value: Any) -> str:
    if isinstance(value, tuple):  # a shape; None is a dynamic axis
        return "(" + ", ".join(BATCH_AXIS if d is None else str(d) for d in value) + ")"
    return repr(value)
