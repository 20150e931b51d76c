"""ONNX graph surgery for trustworthy answers: tempered probabilities and an input-validity score in one run.

The exported graph ends ``... -> logits -> Softmax -> probabilities``. :func:`add_trust_head` rewrites it to

    logits --Div(T)--> Softmax --> probabilities          (calibrated by temperature scaling)
    logits ----------------------> logits                 (untempered: the parity check against Keras)
    for each feature layer l:  map_l --GAP--> f_l --L2 normalise--> MatMul(bank_l^T) --ReduceMax--> s_l
    max_l ((1 - s_l) / scale_l) -----------------------------------------------------> ood_score

``bank_l`` holds the L2-normalised GAP features of the brain MRI training images (one row each), so
``1 - s_l`` is the cosine distance to the nearest training image in that layer (k-NN, k = 1, Sun et al. 2022),
and ``scale_l`` is that distance's high quantile on the validation images: the score is the worst layer's
distance in units of what in-distribution images reach. One ONNX Runtime run answers both questions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporter.errors import ExportError
from exporter.manifest import OUTPUT_NAME

LOGITS_OUTPUT: Final = "logits"
OOD_OUTPUT: Final = "ood_score"
_EPSILON: Final = 1e-12

Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class FeatureTap:
    """A spatial map inside the ONNX graph that stands for a Keras layer's output."""

    layer: str
    tensor: str
    layout: Layout

    @property
    def spatial_axes(self) -> list[int]:
        return [2, 3] if self.layout == "NCHW" else [1, 2]


def softmax_head(proto: onnx.ModelProto) -> tuple[onnx.NodeProto, str]:
    """The Softmax node that writes ``probabilities`` and the name of its input (the logits)."""
    for node in proto.graph.node:
        if OUTPUT_NAME in node.output:
            if node.op_type != "Softmax":
                raise ExportError(
                    f"the graph's {OUTPUT_NAME!r} comes from a {node.op_type} node, not a Softmax; "
                    "temperature "
                    "scaling needs the logits before a softmax"
                )
            return node, node.input[0]
    raise ExportError(f"the graph has no node that writes {OUTPUT_NAME!r}")


def layer_tensor(proto: onnx.ModelProto, layer: str) -> str:
    """The ONNX tensor of the Keras layer ``layer``: the last output written inside its name scope.

    tf2onnx names tensors after the TensorFlow ops, under a scope per Keras layer call
    (``<model>_1/<layer>_1/Add:0``); the caller checks the tensor against Keras (:func:`choose_layout`).
    """
    scope = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
    found = [output for node in proto.graph.node for output in node.output if scope.search(output)]
    if not found:
        raise ExportError(f"no tensor of the ONNX graph belongs to the Keras layer {layer!r}")
    return found[-1]


def choose_layout(tensor_value: npt.NDArray[np.float32], keras_gap: npt.NDArray[np.float32]) -> Layout:
    """Which axes of the ONNX map ``tensor_value`` (4-D) are spatial: the ones whose mean gives Keras' GAP."""
    for layout, axes in (("NCHW", (2, 3)), ("NHWC", (1, 2))):
        gap = tensor_value.mean(axis=axes)
        if gap.shape == keras_gap.shape and np.allclose(gap, keras_gap, rtol=1e-3, atol=1e-4):
            return layout  # type: ignore[return-value]
    raise ExportError(
        f"the ONNX tensor of shape {tensor_value.shape} does not average to the Keras layer's features "
        f"{keras_gap.shape}; name the layer with --ood-layer or check the conversion"
    )


def with_outputs(proto: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs ``tensors`` (inner tensors, as they are)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {output.name for output in copy.graph.output}
    for name in tensors:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy


def add_trust_head(
    proto: onnx.ModelProto,
    *,
    temperature: float,
    taps: Sequence[FeatureTap],
    banks: Sequence[npt.NDArray[np.float32]],
    scales: Sequence[float],
) -> onnx.ModelProto:
    """A copy of ``proto`` with tempered ``probabilities``, untempered ``logits`` and ``ood_score`` outputs.

    ``banks[i]`` is (M_i, D_i), rows L2-normalised; ``scales[i]`` > 0 divides the cosine distance of tap i.
    """
    if not temperature > 0:
        raise ExportError(f"the temperature must be positive, not {temperature}")
    if not (len(taps) == len(banks) == len(scales)) or not taps:
        raise ExportError("each feature layer needs one bank and one scale")
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    softmax, logits = softmax_head(copy)
    nodes: list[onnx.NodeProto] = []
    initialisers: list[onnx.TensorProto] = []

    def constant(name: str, value: npt.NDArray[np.float32] | float) -> str:
        initialisers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    # probabilities = softmax(logits / T)
    tempered = "trust/tempered_logits"
    nodes.append(helper.make_node("Div", [logits, constant("trust/temperature", temperature)], [tempered]))
    softmax.input[0] = tempered
    nodes.append(helper.make_node("Identity", [logits], [LOGITS_OUTPUT]))

    distances = []
    for index, (tap, bank, scale) in enumerate(zip(taps, banks, scales, strict=True)):
        p = f"trust/f{index}"
        # (N, D): global average of the map, then unit length (a black image's zero vector stays finite)
        nodes.append(helper.make_node("ReduceMean", [tap.tensor], [f"{p}/gap"], axes=tap.spatial_axes))
        nodes.append(helper.make_node("Flatten", [f"{p}/gap"], [f"{p}/features"], axis=1))
        nodes.append(helper.make_node("ReduceL2", [f"{p}/features"], [f"{p}/norm"], axes=[1], keepdims=1))
        nodes.append(
            helper.make_node("Max", [f"{p}/norm", constant(f"{p}/epsilon", _EPSILON)], [f"{p}/safe"])
        )
        nodes.append(helper.make_node("Div", [f"{p}/features", f"{p}/safe"], [f"{p}/unit"]))
        # (N, M) cosine similarity to every bank row, (N,) to the nearest one
        bank_t = np.ascontiguousarray(np.asarray(bank, dtype=np.float32).T)  # (D, M)
        nodes.append(helper.make_node("MatMul", [f"{p}/unit", constant(f"{p}/bank", bank_t)], [f"{p}/cos"]))
        nodes.append(helper.make_node("ReduceMax", [f"{p}/cos"], [f"{p}/nearest"], axes=[1], keepdims=0))
        nodes.append(helper.make_node("Sub", [constant(f"{p}/one", 1.0), f"{p}/nearest"], [f"{p}/distance"]))
        nodes.append(
            helper.make_node("Div", [f"{p}/distance", constant(f"{p}/scale", scale)], [f"{p}/scaled"])
        )
        distances.append(f"{p}/scaled")
    nodes.append(helper.make_node("Max", distances, [OOD_OUTPUT]))

    # the Div must run before the Softmax that now reads it: keep the node list topologically sorted
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Softmax" and tempered in node.input:
            ordered.append(nodes[0])
        ordered.append(onnx.NodeProto.FromString(node.SerializeToString()))
    ordered.extend(nodes[1:])
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(initialisers)
    graph.output.append(helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["batch", None]))
    graph.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(copy)
    return copy


def strip_trust_head(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` without the head :func:`add_trust_head` added (unchanged when it has none)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    if OOD_OUTPUT not in {output.name for output in graph.output}:
        return copy
    logits = next(node.input[0] for node in graph.node if node.output and node.output[0] == LOGITS_OUTPUT)
    kept = []
    for node in graph.node:
        if any(name.startswith("trust/") or name in (LOGITS_OUTPUT, OOD_OUTPUT) for name in node.output):
            continue
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if node.op_type == "Softmax" and node.input[0].startswith("trust/"):
            node.input[0] = logits
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    initialisers = [i for i in graph.initializer if not i.name.startswith("trust/")]
    del graph.initializer[:]
    graph.initializer.extend(initialisers)
    outputs = [o for o in graph.output if o.name not in (LOGITS_OUTPUT, OOD_OUTPUT)]
    del graph.output[:]
    graph.output.extend(outputs)
    return copy
