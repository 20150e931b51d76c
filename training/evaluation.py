"""Classification metrics as the seed papers report them, as one pure function.

``compute_metrics`` turns labels and predicted probabilities into a JSON-serialisable dict: accuracy; per
class precision, recall (sensitivity), specificity, F1, support and one-vs-rest ROC AUC; their macro and
support-weighted averages; the confusion matrix (rows true, columns predicted) and compact ROC curves.

Conventions, chosen so that a degenerate subset never raises and never warns:

- precision, recall, F1 and specificity of a class whose denominator is zero are 0 (scikit-learn's
  ``zero_division=0``);
- ROC AUC of a class is ``None`` when the subset lacks its positives or its negatives (undefined); the macro
  and weighted ROC AUC average the classes where it is defined and are ``None`` when none is;
- macro averages run over every class in ``classes``, present in ``y_true`` or not, as scikit-learn's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

ROC_CURVE_DIGITS = 6  # ROC curve points are rounded: they are for plotting, not for recomputing AUC


def as_probability_matrix(y_prob: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) probabilities; a binary model's single sigmoid column (N,) or (N, 1) becomes [1 - p, p]."""
    prob = np.asarray(y_prob, dtype=np.float64)
    if n_classes == 2 and (prob.ndim == 1 or (prob.ndim == 2 and prob.shape[1] == 1)):
        p = prob.reshape(-1)  # (N,)
        return np.stack([1.0 - p, p], axis=1)  # (N, 2)
    if prob.ndim != 2 or prob.shape[1] != n_classes:
        raise ValueError(
            f"y_prob must have shape (N, {n_classes}) for {n_classes} classes, got {prob.shape}."
        )
    return prob


def compute_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of one subset; ``y_true`` holds int labels (N,), ``y_prob`` probabilities (N, C)."""
    names = [str(c) for c in classes]
    n_classes = len(names)
    if n_classes < 2:
        raise ValueError(f"At least two classes are needed, got {names}.")
    labels = np.asarray(y_true).reshape(-1)  # (N,)
    prob = as_probability_matrix(y_prob, n_classes)  # (N, C)
    if labels.shape[0] == 0:
        raise ValueError("Cannot compute metrics on an empty subset.")
    if labels.shape[0] != prob.shape[0]:
        raise ValueError(f"y_true has {labels.shape[0]} labels but y_prob has {prob.shape[0]} rows.")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("y_true must hold integer class indices.")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"y_true holds labels outside 0..{n_classes - 1}.")
    if not np.all(np.isfinite(prob)):
        raise ValueError("y_prob holds NaN or infinite values.")

    index = list(range(n_classes))
    predicted = prob.argmax(axis=1)  # (N,)
    counts = confusion_matrix(labels, predicted, labels=index)  # (C, C), rows true, columns predicted
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=index, average=None, zero_division=0
    )  # each (C,)
    n = int(labels.shape[0])
    true_positive = np.diag(counts)  # (C,)
    false_positive = counts.sum(axis=0) - true_positive  # (C,)
    negatives = n - counts.sum(axis=1)  # (C,) = TN + FP
    specificity = np.divide(
        negatives - false_positive, negatives, out=np.zeros(n_classes), where=negatives > 0
    )  # (C,)
    auc = [_one_vs_rest_auc(labels == k, prob[:, k]) for k in index]

    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "specificity": float(specificity[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "roc_auc": auc[k],
        }
        for k, name in enumerate(names)
    }
    weights = support.astype(np.float64) / n  # (C,)
    per_metric = {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1}
    macro: dict[str, float | None] = {key: float(np.mean(v)) for key, v in per_metric.items()}
    weighted: dict[str, float | None] = {key: float(np.sum(v * weights)) for key, v in per_metric.items()}
    macro["roc_auc"], weighted["roc_auc"] = _average_auc(auc, weights)

    return {
        "n": n,
        "accuracy": float(true_positive.sum() / n),
        "per_class": per_class,
        "macro": macro,
        "weighted": weighted,
        "confusion_matrix": {"labels": names, "counts": counts.astype(int).tolist()},
        "roc_curve": _roc_curves(labels, prob, names),
    }


def _one_vs_rest_auc(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of one class against the rest; ``None`` when the subset lacks positives or negatives."""
    if is_positive.all() or not is_positive.any():
        return None
    return float(roc_auc_score(is_positive, score))


def _average_auc(auc: list[float | None], weights: np.ndarray) -> tuple[float | None, float | None]:
    """Macro and support-weighted means of the defined per-class AUCs."""
    defined = [k for k, value in enumerate(auc) if value is not None]
    if not defined:
        return None, None
    values = np.array([auc[k] for k in defined], dtype=np.float64)
    w = weights[defined]
    weighted = float(np.sum(values * w) / np.sum(w)) if np.sum(w) > 0 else None
    return float(np.mean(values)), weighted


def _roc_curves(labels: np.ndarray, prob: np.ndarray, names: list[str]) -> dict[str, dict[str, list[float]]]:
    """One-vs-rest ROC points per class (corners only); classes without an AUC left out."""
    curves: dict[str, dict[str, list[float]]] = {}
    for k, name in enumerate(names):
        is_positive = labels == k
        if is_positive.all() or not is_positive.any():
            continue
        fpr, tpr, _ = roc_curve(is_positive, prob[:, k], drop_intermediate=True)
        curves[name] = {
            "fpr": [round(float(v), ROC_CURVE_DIGITS) for v in fpr],
            "tpr": [round(float(v), ROC_CURVE_DIGITS) for v in tpr],
        }
    return curves
