"""Fit what makes an entry's answers trustworthy and fold it into its ONNX graph.

* **Calibration**: one temperature fitted on the validation subset of the model's split (NLL), with ECE,
  Brier score and NLL before and after on the test subset, the reliability diagram and the selective
  prediction curve (accuracy against coverage as ``min_confidence`` rises).
* **Input validity**: a k-NN (k = 1, cosine) detector on the global-average-pooled maps of chosen layers.
  Its bank is the training subset of one or more brain MRI splits (by default the model's own); each layer's
  distance is scaled by its ``layer_quantile`` on the validation subsets, and the threshold on the worst
  scaled distance is its ``quantile`` on the same validation images. Nothing outside the brain MRI splits
  is used to fit or to set it: what it refuses is measured afterwards (``python -m training ood``).

Why k-NN on blocks 5 and 6 of EfficientNet-Lite (the default for that backbone): measured on the bundled
models against ``ood-a``, scikit-image photos and synthetic images, it refused more out-of-distribution images
at <= 1 % of in-distribution test images than class-conditional Mahalanobis distance on any single layer, than
k-NN on the penultimate features alone, and far more than the energy score (docs/trust.md, "Input validity").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import keras
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from exporter.errors import ExportError
from exporter.manifest import INPUT_NAME, file_sha256
from exporter.trust_graph import (
    LOGITS_OUTPUT,
    OOD_OUTPUT,
    FeatureTap,
    add_trust_head,
    choose_layout,
    layer_tensor,
    softmax_head,
    with_outputs,
)
from service.preprocessing import Recipe
from training.calibration import (
    calibration_figures,
    fit_temperature,
    selective_curve,
    softmax,
)
from training.data import load_subset
from training.splits import SplitManifest, load_split

DEFAULT_LAYER_QUANTILE: Final = 0.997
DEFAULT_QUANTILE: Final = 0.995
DEFAULT_OOD_LAYERS: Final[dict[str, tuple[str, ...]]] = {
    "efficientnet_lite0": ("block5c_add", "block6d_add"),
}
"""Measured per backbone; any other backbone uses its Grad-CAM layer (the last spatial map)."""
RELIABILITY_PNG: Final = "reliability.png"
SELECTIVE_PNG: Final = "selective.png"
TRUST_MD: Final = "trust.md"
BATCH: Final = 32

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrustData:
    """The images the fit reads: the model's own split (calibration) and the bank splits (input validity)."""

    own: SplitManifest
    own_path: Path
    banks: list[tuple[Path, SplitManifest]]
    recipe: Recipe
    cache_dir: Path | None = None


@dataclass(frozen=True)
class TrustFit:
    """The rewritten graph and what the manifest records about it."""

    proto: onnx.ModelProto
    calibration: dict[str, Any]
    input_validity: dict[str, Any]


def default_layers(backbone: str, gradcam_layer: str) -> tuple[str, ...]:
    """The layers whose maps feed the input-validity check of a model of ``backbone``."""
    return DEFAULT_OOD_LAYERS.get(backbone, (gradcam_layer,))


def load_trust_data(
    own_split: Path,
    bank_splits: Sequence[Path],
    recipe: Recipe,
    *,
    data_roots: Sequence[Path] | None = None,
    cache_dir: Path | None = None,
) -> TrustData:
    """Open the splits (the own split is always part of the bank)."""
    paths = [own_split, *[p for p in bank_splits if p.resolve() != own_split.resolve()]]
    banks = [
        (path, load_split(path, data_root_override=data_roots if path == own_split else None))
        for path in paths
    ]
    return TrustData(banks[0][1], own_split, banks, recipe, cache_dir)


def fit_trust(
    proto: onnx.ModelProto,
    model: keras.Model,
    data: TrustData,
    layers: Sequence[str],
    *,
    layer_quantile: float = DEFAULT_LAYER_QUANTILE,
    quantile: float = DEFAULT_QUANTILE,
    say: Callable[[str], None] = print,
) -> TrustFit:
    """Fit the temperature and the input-validity detector, and build the graph that carries both."""
    for name, value in (("layer quantile", layer_quantile), ("quantile", quantile)):
        if not 0.5 <= value < 1.0:
            raise ExportError(f"the {name} must lie in [0.5, 1), not {value}")
    _, logits_tensor = softmax_head(proto)
    tensors = [layer_tensor(proto, layer) for layer in layers]
    probe = ort.InferenceSession(
        with_outputs(proto, [logits_tensor, *tensors]).SerializeToString(), providers=["CPUExecutionProvider"]
    )

    def run(images: npt.NDArray[np.uint8]) -> tuple[FloatArray, list[FloatArray]]:
        """(N, C) logits and, per layer, the (N, h, w, c) or (N, c, h, w) maps of a batch."""
        outputs = probe.run([logits_tensor, *tensors], {INPUT_NAME: images.astype(np.float32)})
        return np.asarray(outputs[0], np.float32), [np.asarray(o, np.float32) for o in outputs[1:]]

    # the model's own val (temperature) and test (figures, the final check), decoded once
    own_digest = file_sha256(data.own_path)
    own = {
        subset: load_subset(data.own, own_digest, subset, data.recipe, cache_dir=data.cache_dir, quiet=True)
        for subset in ("val", "test")
    }
    # the ONNX tensor of each layer, checked against Keras on a few real images
    head = own["val"].images[:4]
    _, maps = run(head)
    keras_maps = keras.Model(model.input, [model.get_layer(layer).output for layer in layers])(
        head.astype(np.float32), training=False
    )
    keras_maps = keras_maps if isinstance(keras_maps, list | tuple) else [keras_maps]
    taps = []
    for layer, tensor, onnx_map, reference in zip(layers, tensors, maps, keras_maps, strict=True):
        keras_gap = np.asarray(keras.ops.convert_to_numpy(reference), np.float32).mean(axis=(1, 2))  # (n, c)
        taps.append(FeatureTap(layer, tensor, choose_layout(onnx_map, keras_gap)))

    def features(images: npt.NDArray[np.uint8]) -> tuple[FloatArray, list[FloatArray]]:
        """(N, C) logits and, per layer, (N, D) unit-length pooled features."""
        logits: list[FloatArray] = []
        pooled: list[list[FloatArray]] = [[] for _ in taps]
        for start in range(0, len(images), BATCH):
            batch_logits, batch_maps = run(images[start : start + BATCH])
            logits.append(batch_logits)
            for i, (tap, value) in enumerate(zip(taps, batch_maps, strict=True)):
                pooled[i].append(value.mean(axis=tuple(tap.spatial_axes)))
        return np.concatenate(logits), [_unit(np.concatenate(p)) for p in pooled]

    # calibration: the model's own val (fit) and test (figures)
    subsets = {subset: (features(arrays.images)[0], arrays.labels) for subset, arrays in own.items()}
    val_logits, val_labels = subsets["val"]
    temperature = fit_temperature(val_logits, val_labels)
    test_logits, test_labels = subsets["test"]
    before = calibration_figures(softmax(test_logits), test_labels)
    after = calibration_figures(softmax(test_logits, temperature), test_labels)
    say(
        f"temperature {temperature:.3f} (fitted on {len(val_labels)} val images): test ECE "
        f"{before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}, "
        f"Brier {before['brier']:.4f} -> {after['brier']:.4f}"
    )
    calibration = {
        "method": "temperature scaling",
        "temperature": temperature,
        "fitted_on": {"split": str(data.own_path), "subset": "val", "n": len(val_labels)},
        "test": {"before": before, "after": after},
        "selective_test": selective_curve(softmax(test_logits, temperature), test_labels),
    }

    # input validity: bank = train subsets, scales and threshold = val subsets of the bank splits
    bank_parts: list[list[FloatArray]] = [[] for _ in taps]
    val_parts: list[list[FloatArray]] = [[] for _ in taps]
    bank_record = []
    for path, split in data.banks:
        digest = file_sha256(path)
        counts = {}
        for subset, parts in (("train", bank_parts), ("val", val_parts)):
            arrays = load_subset(split, digest, subset, data.recipe, cache_dir=data.cache_dir, quiet=True)
            for i, pooled in enumerate(features(arrays.images)[1]):
                parts[i].append(pooled)
            counts[subset] = len(arrays.images)
        bank_record.append(
            {"split": str(path), "sha256": digest, "train": counts["train"], "val": counts["val"]}
        )
        say(f"input validity: {counts['train']} train and {counts['val']} val images of {path}")
    banks = [np.concatenate(parts).astype(np.float32) for parts in bank_parts]
    val_features = [np.concatenate(parts) for parts in val_parts]
    val_distances = [nearest_distance(f, bank) for f, bank in zip(val_features, banks, strict=True)]
    scales = [max(float(np.quantile(d, layer_quantile)), 1e-6) for d in val_distances]
    val_scores = np.max([d / s for d, s in zip(val_distances, scales, strict=True)], axis=0)
    threshold = float(np.quantile(val_scores, quantile))
    say(
        f"input validity: k-NN on {', '.join(layers)}, bank of {len(banks[0])} images, "
        f"threshold {threshold:.4f} "
        f"({(val_scores > threshold).mean():.2%} of {len(val_scores)} val images above it)"
    )
    input_validity = {
        "method": "knn-cosine",
        "k": 1,
        "output": OOD_OUTPUT,
        "threshold": threshold,
        "higher_is": "less like the training brains",
        "layers": [
            {"layer": t.layer, "tensor": t.tensor, "layout": t.layout, "dims": int(b.shape[1]), "scale": s}
            for t, b, s in zip(taps, banks, scales, strict=True)
        ],
        "bank": {"subset": "train", "size": len(banks[0]), "splits": bank_record},
        "layer_quantile": layer_quantile,
        "quantile": quantile,
        "validation": {"n": len(val_scores), "refused": float((val_scores > threshold).mean())},
    }
    trusted = add_trust_head(proto, temperature=temperature, taps=taps, banks=banks, scales=scales)
    _check_head(trusted, own["test"].images[:16], temperature, banks, scales, features)
    return TrustFit(trusted, calibration, input_validity)


def nearest_distance(features: FloatArray, bank: FloatArray) -> FloatArray:
    """(N,) cosine distance from each unit row of ``features`` to its nearest row of ``bank``."""
    nearest = np.empty(len(features), dtype=np.float32)
    for start in range(0, len(features), 256):
        nearest[start : start + 256] = (features[start : start + 256] @ bank.T).max(axis=1)
    return (1.0 - nearest).astype(np.float32)


def _unit(features: FloatArray) -> FloatArray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def _check_head(
    proto: onnx.ModelProto,
    images: npt.NDArray[np.uint8],
    temperature: float,
    banks: Sequence[FloatArray],
    scales: Sequence[float],
    features: Callable[[npt.NDArray[np.uint8]], tuple[FloatArray, list[FloatArray]]],
) -> None:
    """The new graph's outputs equal the NumPy computation on real test ``images`` (or ExportError)."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, logits, scores = session.run(
        ["probabilities", LOGITS_OUTPUT, OOD_OUTPUT], {INPUT_NAME: images.astype(np.float32)}
    )
    want_logits, pooled = features(images)
    want_scores = np.max(
        [nearest_distance(f, b) / s for f, b, s in zip(pooled, banks, scales, strict=True)], 0
    )
    problems = []
    if not np.allclose(logits, want_logits, atol=1e-4):
        problems.append("its logits differ from the original graph's")
    if not np.allclose(probabilities, softmax(want_logits, temperature), atol=1e-5):
        problems.append("its probabilities are not softmax(logits / T)")
    if not np.allclose(scores, want_scores, rtol=1e-3, atol=1e-3):
        problems.append(
            f"its ood_score differs from NumPy's by up to {np.abs(scores - want_scores).max():.3g}"
        )
    if problems:
        raise ExportError("the graph with the trust head failed its check: " + "; ".join(problems))


def write_trust_documents(entry: Path, fit: TrustFit, model_name: str) -> list[str]:
    """The reliability diagram, the selective-prediction curve and ``trust.md`` in ``entry``."""
    from training.plots import plot_reliability, plot_selective

    calibration = fit.calibration
    title = f"{model_name}: test reliability (T = {calibration['temperature']:.3f})"
    plot_reliability(
        calibration["test"]["before"], calibration["test"]["after"], entry / RELIABILITY_PNG, title
    )
    plot_selective(
        calibration["selective_test"], entry / SELECTIVE_PNG, title=f"{model_name}: selective prediction"
    )
    (entry / TRUST_MD).write_text(render_trust_markdown(model_name, fit), encoding="utf-8")
    return [TRUST_MD, RELIABILITY_PNG, SELECTIVE_PNG]


def _floor(figures: dict[str, Any]) -> str:
    floor = figures.get("ece_if_calibrated")
    return f"{floor['median']:.4f} ({floor['p90']:.4f})" if floor else "-"


def render_trust_markdown(model_name: str, fit: TrustFit) -> str:
    """``trust.md``: calibration before/after, the selective curve and the input-validity detector."""
    calibration, validity = fit.calibration, fit.input_validity
    before, after = calibration["test"]["before"], calibration["test"]["after"]
    lines = [
        f"# {model_name}: calibration and input validity",
        "",
        f"Temperature **{calibration['temperature']:.4f}**, fitted on the {calibration['fitted_on']['n']} "
        f"validation images of `{calibration['fitted_on']['split']}` (minimum NLL). Test subset, "
        f"{before['n']} images:",
        "",
        "| | accuracy | ECE (15 bins) | ECE of a calibrated model, median (90 %) | Brier | NLL |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {figs['accuracy']:.4f} | {figs['ece']:.4f} | {_floor(figs)} | {figs['brier']:.4f} "
            f"| {figs['nll']:.4f} |"
            for name, figs in (("before (T = 1)", before), ("after", after))
        ],
        "",
        "The fourth column is the ECE that a perfectly calibrated model with the same confidences shows on "
        f"{before['n']} images (labels drawn from its own probabilities): an ECE near it cannot be told "
        "apart from perfect calibration at this test size.",
        "",
        f"![reliability]({RELIABILITY_PNG})",
        "",
        "Selective prediction on the test subset (the service's `min_confidence`):",
        "",
        "| min_confidence | coverage | accuracy |",
        "|---:|---:|---:|",
        *[
            f"| {row['min_confidence']:.2f} | {row['coverage']:.3f} | {row['accuracy']:.4f} |"
            for row in calibration["selective_test"][::2]
        ],
        "",
        f"![selective prediction]({SELECTIVE_PNG})",
        "",
        "## Input validity",
        "",
        f"k-NN (k = 1, cosine distance) on the global-average-pooled maps of "
        f"{', '.join('`' + layer['layer'] + '`' for layer in validity['layers'])}; bank: the "
        f"{validity['bank']['size']} training images of "
        f"{', '.join('`' + s['split'] + '`' for s in validity['bank']['splits'])}. Each layer's distance is "
        f"divided by its {validity['layer_quantile']:.1%} quantile on the validation images; the score is "
        "the "
        f"largest, refused above **{validity['threshold']:.4f}** (its {validity['quantile']:.1%} quantile on "
        f"the {validity['validation']['n']} validation images: "
        f"{validity['validation']['refused']:.2%} of them "
        "lie above).",
        "",
        'Measured refusals: `python -m training ood --model <entry>` (docs/trust.md, "Input validity").',
        "",
    ]
    return "\n".join(lines)
