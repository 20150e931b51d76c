"""Confidence that means what it says: temperature scaling and the figures that judge a model's confidence.

Pure NumPy (and SciPy's bounded scalar search). ``logits`` are the pre-softmax scores (N, C); ``labels`` the
true class indices (N,). Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted
on the validation subset by minimising the negative log-likelihood: the argmax, so the accuracy, is unchanged.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar

ECE_BINS: Final = 15
TEMPERATURE_RANGE: Final = (0.05, 20.0)

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]


def softmax(logits: FloatArray, temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """(N, C) logits -> (N, C) probabilities of ``softmax(logits / temperature)``, computed stably."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature  # (N, C)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: FloatArray, labels: IntArray) -> float:
    """Mean -log p(true class), with p floored at 1e-12."""
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]  # (N,)
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def brier_score(probabilities: FloatArray, labels: IntArray) -> float:
    """Mean over images of the squared distance between the probability vector and the one-hot truth."""
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (N, C)
    onehot = np.eye(probabilities.shape[1])[labels]  # (N, C)
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(
    probabilities: FloatArray, labels: IntArray, bins: int = ECE_BINS
) -> list[dict[str, float | int]]:
    """Equal-width confidence bins over (0, 1]: per bin its edges, count, mean confidence and accuracy."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)  # (N,)
    correct = probabilities.argmax(axis=1) == labels  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin b holds confidences in (edge_b, edge_b+1]; a confidence of exactly 0 cannot happen (max >= 1/C)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (N,)
    table: list[dict[str, float | int]] = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else 0.0,
                "accuracy": float(correct[members].mean()) if count else 0.0,
            }
        )
    return table


def expected_calibration_error(probabilities: FloatArray, labels: IntArray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over ``bins`` equal-width confidence bins."""
    table = reliability_bins(probabilities, labels, bins)
    total = sum(int(row["count"]) for row in table)
    if total == 0:
        return 0.0
    return float(
        sum(int(row["count"]) * abs(float(row["accuracy"]) - float(row["confidence"])) for row in table)
        / total
    )


def ece_if_calibrated(
    probabilities: FloatArray, bins: int = ECE_BINS, draws: int = 500, seed: int = 0
) -> dict[str, float]:
    """The ECE that a *perfectly calibrated* model with these confidences would show on this many images.

    Each draw gives every image a label sampled from its own probabilities (so the model is calibrated by
    construction) and measures the ECE; the median and the 90th percentile over ``draws``. An ECE at or
    below the median cannot be told apart from perfect calibration at this test-set size.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (N, C)
    if len(probabilities) == 0:
        return {"median": 0.0, "p90": 0.0, "draws": draws}
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities, axis=1)  # (N, C)
    cumulative[:, -1] = 1.0
    values = []
    for _ in range(draws):
        uniform = rng.random((len(probabilities), 1))  # (N, 1)
        labels = (uniform > cumulative).sum(axis=1)  # (N,): the first class whose cumulative passes it
        values.append(expected_calibration_error(probabilities, labels, bins))
    return {"median": float(np.median(values)), "p90": float(np.quantile(values, 0.9)), "draws": draws}


def calibration_figures(probabilities: FloatArray, labels: IntArray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Accuracy, ECE, Brier score, NLL and the reliability table of one set of probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return {
        "n": len(labels),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()) if len(labels) else 0.0,
        "ece": expected_calibration_error(probabilities, labels, bins),
        "brier": brier_score(probabilities, labels),
        "nll": negative_log_likelihood(probabilities, labels),
        "bins": bins,
        "reliability": reliability_bins(probabilities, labels, bins),
        "ece_if_calibrated": ece_if_calibrated(probabilities, bins),
    }


def fit_temperature(logits: FloatArray, labels: IntArray) -> float:
    """The temperature in :data:`TEMPERATURE_RANGE` that minimises the NLL of ``softmax(logits / T)``.

    The search runs over log T (the NLL is smooth and unimodal there in practice).
    """
    if len(labels) == 0:
        raise ValueError("temperature scaling needs at least one labelled image")
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(softmax(logits, float(np.exp(log_t))), labels),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def selective_curve(probabilities: FloatArray, labels: IntArray, points: int = 21) -> list[dict[str, float]]:
    """Selective prediction: for each confidence floor, the share of images answered and their accuracy.

    The floors are ``points`` values from 0 to the highest confidence seen; an image is answered when its
    top probability is at least the floor (the service's ``min_confidence``).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)  # (N,)
    correct = probabilities.argmax(axis=1) == labels  # (N,)
    curve = []
    for floor in np.linspace(0.0, 1.0, points):
        answered = confidence >= floor
        count = int(answered.sum())
        curve.append(
            {
                "min_confidence": round(float(floor), 4),
                "coverage": count / len(labels) if len(labels) else 0.0,
                "accuracy": float(correct[answered].mean()) if count else 1.0,
                "answered": count,
            }
        )
    return curve
