"""The report's figures as PNG files: confusion matrix, training curves, ROC curves (matplotlib, Agg backend).

Each function takes the plain dicts of a report (``compute_metrics`` output, the history), writes one PNG and
closes its figure, so that a long evaluation session does not accumulate open figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

DPI = 120


def plot_confusion_matrix(metrics: Mapping[str, Any], path: Path, title: str = "Confusion matrix") -> None:
    """Counts annotated in each cell, shaded by the row share (recall), class names on both axes."""
    matrix = metrics["confusion_matrix"]
    names = [str(n) for n in matrix["labels"]]
    counts = np.asarray(matrix["counts"], dtype=np.int64)  # (C, C), rows true, columns predicted
    row_totals = counts.sum(axis=1, keepdims=True)  # (C, 1)
    share = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)  # (C, C)

    size = 2.0 + 1.1 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), labels=names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{counts[i, j]}", ha="center", va="center", color=colour, fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def phase_boundaries(phases: Sequence[str]) -> list[int]:
    """0-based epoch indices where the phase changes (the first epoch of each new phase)."""
    return [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]


def plot_training_curves(history: Mapping[str, Sequence[Any]], path: Path) -> None:
    """Accuracy and loss per epoch, training and validation, with a dashed line where fine-tuning starts."""
    panels = [("accuracy", "val_accuracy", "accuracy"), ("loss", "val_loss", "loss")]
    phases = [str(p) for p in history.get("phase", [])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    try:
        for ax, (train_key, val_key, label) in zip(axes, panels, strict=True):
            for key, name in ((train_key, "training"), (val_key, "validation")):
                values = _as_floats(history.get(key, []))
                if values.size:
                    epochs = np.arange(1, values.size + 1)  # 1-based, as Keras prints them
                    ax.plot(epochs, values, marker="o", markersize=3, label=name)
            for boundary in phase_boundaries(phases):
                ax.axvline(boundary + 0.5, color="grey", linestyle="--", linewidth=1)
                ax.annotate(
                    phases[boundary],
                    xy=(boundary + 0.5, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    color="grey",
                    fontsize=9,
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{label} per epoch")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def plot_roc_curves(metrics: Mapping[str, Any], path: Path, title: str = "ROC, one class vs rest") -> None:
    """One-vs-rest ROC curve of each class with its AUC in the legend, and the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        for name, curve in metrics["roc_curve"].items():
            auc = metrics["per_class"].get(name, {}).get("roc_auc")
            label = f"{name} (AUC {auc:.3f})" if auc is not None else name
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.5, label=label)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def _as_floats(values: Sequence[Any]) -> np.ndarray:
    """History values as floats; ``None`` (a NaN in JSON) becomes NaN, which matplotlib leaves as a gap."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def plot_reliability(
    before: Mapping[str, Any], after: Mapping[str, Any], path: Path, title: str = "Reliability diagram"
) -> None:
    """Accuracy against mean confidence per confidence bin, before and after calibration."""
    fig, (ax, counts_ax) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        for figures, name, colour in ((before, "before", "tab:red"), (after, "after", "tab:blue")):
            rows = [row for row in figures["reliability"] if row["count"] > 0]
            ax.plot(
                [row["confidence"] for row in rows],
                [row["accuracy"] for row in rows],
                marker="o",
                color=colour,
                label=f"{name}: ECE {figures['ece']:.3f}",
            )
        centres = [(row["low"] + row["high"]) / 2 for row in after["reliability"]]
        width = 1.0 / max(len(centres), 1)
        counts_ax.bar(
            centres, [row["count"] for row in after["reliability"]], width=width * 0.9, color="tab:blue"
        )
        counts_ax.set_ylabel("images (after)")
        counts_ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def plot_selective(
    curve: Sequence[Mapping[str, Any]], path: Path, title: str = "Selective prediction"
) -> None:
    """Accuracy of the answered images against the share answered, as the confidence floor rises."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    try:
        coverage = [row["coverage"] for row in curve]
        accuracy = [row["accuracy"] for row in curve]
        ax.plot(coverage, accuracy, marker="o", color="tab:blue")
        for row in curve[::4]:
            ax.annotate(f"{row['min_confidence']:.2f}", (row["coverage"], row["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))  # fmt: skip
        ax.set_xlabel("coverage (share of images answered)")
        ax.set_ylabel("accuracy of the answered images")
        ax.set_xlim(0, 1.02)
        ax.set_title(title + " (labels: min_confidence)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
