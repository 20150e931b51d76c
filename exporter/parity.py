"""The parity gate: the ONNX graph must give the Keras model's probabilities on real images of the split.

Images come from the split's test subset (val, then train, top it up when it is too small), interleaved by
class, through the shared preprocessing exactly as the service will feed them.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from exporter.defaults import DEFAULT_TOLERANCE
from exporter.errors import ConversionError, ExportError
from service.preprocessing import ImageError, Recipe, preprocess_bytes
from training.splits import SplitItem, SplitManifest

PARITY_SUBSETS = ("test", "val", "train")
BATCH = 16
LATENCY_RUNS, LATENCY_WARMUP = 20, 3

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ParityResult:
    """Keras vs ONNX Runtime on the same preprocessed images."""

    images: int
    subsets: dict[str, int]
    max_abs_diff: float
    argmax_agreement: float
    disagreements: list[str]
    """The images whose predicted class differs."""
    worst_image: str
    tolerance: float
    providers: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Within tolerance on every image and the same class on every image."""
        return self.max_abs_diff <= self.tolerance and not self.disagreements

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``parity`` object."""
        return {
            "images": self.images,
            "subsets": self.subsets,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "tolerance": self.tolerance,
            "keras": "model(x, training=False)",
            "onnxruntime_providers": self.providers,
        }


def parity_items(split: SplitManifest, count: int) -> tuple[list[SplitItem], dict[str, int]]:
    """``count`` items and how many came from each subset: the test subset first (then val, then train,
    when it holds fewer), interleaved by class so that a few images still cover every class."""
    if count < 1:
        raise ExportError(f"--parity-images must be at least 1, not {count}")
    chosen: list[SplitItem] = []
    subsets: dict[str, int] = {}
    for subset in PARITY_SUBSETS:
        taken = interleave_by_label(split.subsets.get(subset, ()), split.classes)[: count - len(chosen)]
        if taken:
            chosen += taken
            subsets[subset] = len(taken)
    if len(chosen) < count:
        raise ExportError(f"the split holds only {len(chosen)} images; --parity-images asks for {count}")
    return chosen, subsets


def interleave_by_label(items: Sequence[SplitItem], classes: Sequence[str]) -> list[SplitItem]:
    """One item of each class in turn (paths sorted within a class), so a prefix covers every class."""
    by_class = [sorted((i for i in items if i.label == c), key=lambda i: str(i.path)) for c in classes]
    rounds = itertools.zip_longest(*by_class)
    return [item for batch in rounds for item in batch if item is not None]


def preprocess_items(items: Sequence[SplitItem], recipe: Recipe) -> FloatArray:
    """(N, h, w, 3) float32 in [0, 255]: each file through the shared preprocessing, as the service does."""
    images = []
    for item in items:
        try:
            images.append(preprocess_bytes(Path(item.path).read_bytes(), recipe))  # (h, w, 3)
        except (OSError, ImageError) as error:
            raise ExportError(
                f"cannot read the split image {item.path} ({error}); pass --data-root if the data moved"
            ) from None
    return np.stack(images)  # (N, h, w, 3)


def onnx_session(model: bytes | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU ONNX Runtime session whose idle threads do not spin (they would slow Keras in this process)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def keras_probabilities(model: keras.Model, images: FloatArray) -> FloatArray:
    """(N, C) probabilities of the Keras model, in inference mode, in batches."""
    parts = [
        keras.ops.convert_to_numpy(model(images[i : i + BATCH], training=False))  # (b, C)
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)  # (N, C)


def onnx_probabilities(session: ort.InferenceSession, images: FloatArray) -> FloatArray:
    """(N, C) probabilities of an ONNX session, in batches."""
    name = session.get_inputs()[0].name
    parts = [
        np.asarray(session.run(None, {name: images[i : i + BATCH]})[0])  # (b, C)
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)  # (N, C)


def compare(
    expected: FloatArray,
    found: FloatArray,
    items: Sequence[SplitItem],
    tolerance: float,
    subsets: dict[str, int] | None = None,
    providers: list[str] | None = None,
) -> ParityResult:
    """Parity figures of two (N, C) probability arrays of the same images."""
    if expected.shape != found.shape:
        raise ConversionError(
            f"the ONNX model gives probabilities of shape {found.shape}, the Keras model {expected.shape}"
        )
    diff = np.abs(expected.astype(np.float64) - found.astype(np.float64)).max(axis=1)  # (N,)
    differs = np.flatnonzero(expected.argmax(axis=1) != found.argmax(axis=1))  # indices
    max_diff = float(diff.max())
    return ParityResult(
        images=len(items),
        subsets=subsets or {},
        max_abs_diff=max_diff if np.isfinite(max_diff) else float("inf"),
        argmax_agreement=1.0 - len(differs) / len(items),
        disagreements=[str(items[i].path) for i in differs],
        worst_image=str(items[int(np.nan_to_num(diff, nan=np.inf).argmax())].path),
        tolerance=tolerance,
        providers=providers or [],
    )


@dataclass(frozen=True)
class ParitySample:
    """The parity images: split items, how many came from each subset, and their model inputs."""

    items: list[SplitItem]
    subsets: dict[str, int]
    images: FloatArray  # (N, h, w, 3) float32 in [0, 255]


def load_parity_sample(split: SplitManifest, recipe: Recipe, count: int) -> ParitySample:
    """``count`` split images (see :func:`parity_items`) through the shared preprocessing."""
    items, subsets = parity_items(split, count)
    return ParitySample(items, subsets, preprocess_items(items, recipe))


def check_parity(
    model: keras.Model,
    session: ort.InferenceSession,
    sample: ParitySample,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityResult:
    """Compare Keras and ONNX Runtime on the sample; :class:`ConversionError` when they differ."""
    result = compare(
        keras_probabilities(model, sample.images),
        onnx_probabilities(session, sample.images),
        sample.items,
        tolerance,
        sample.subsets,
        list(session.get_providers()),
    )
    if not result.passed:
        raise ConversionError(describe_failure(result))
    return result


def describe_failure(result: ParityResult) -> str:
    """One sentence on how the ONNX model departs from the Keras model."""
    where = ", ".join(f"{n} {s}" for s, n in result.subsets.items()) or str(result.images)
    parts = []
    if not result.max_abs_diff <= result.tolerance:
        parts.append(
            f"max |Δ probability| is {result.max_abs_diff:.3g} > tolerance {result.tolerance:g} "
            f"(worst on {result.worst_image})"
        )
    if result.disagreements:
        parts.append(
            f"the predicted class differs on {len(result.disagreements)} of {result.images} images "
            f"(first {result.disagreements[0]})"
        )
    return f"parity check failed on {result.images} images ({where}): " + "; ".join(parts)


def median_latency_ms(
    session: ort.InferenceSession, image: FloatArray, runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP
) -> float:
    """Median wall time in ms of one batch-1 ``session.run`` on ``image`` (h, w, 3), after warm-up runs."""
    feed = {session.get_inputs()[0].name: image[None]}  # (1, h, w, 3)
    times = []
    for index in range(warmup + runs):
        started = time.perf_counter()
        session.run(None, feed)
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 3)


def latency_note(runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP) -> dict[str, Any]:
    """How the latencies in a manifest were measured."""
    how = "onnxruntime InferenceSession.run, CPUExecutionProvider, on the exporting machine"
    return {"batch_size": 1, "runs": runs, "warmup": warmup, "statistic": "median", "unit": "ms", "how": how}
