"""write_report on synthetic reports: every file written, PNGs decodable, Markdown with the seeds' tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest

from training.evaluation import compute_metrics
from training.report import (
    CONFUSION_PNG,
    CURVES_PNG,
    REPORT_FORMAT,
    ROC_PNG,
    format_duration,
    render_report_markdown,
    to_jsonable,
    write_report,
)

CLASSES = ["a", "b", "c"]
# The hand-checked example of test_evaluation: accuracy 6/10, macro precision (2/3 + 1/2 + 2/3) / 3 = 11/18,
# macro recall (1/2 + 2/3 + 2/3) / 3 = 11/18, macro F1 38/63.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])


def probabilities(predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    prob = np.repeat(((1 - confidence) / 2)[:, None], 3, axis=1)  # (N, 3)
    prob[np.arange(predicted.size), predicted] = confidence
    return prob


def synthetic_report() -> dict[str, Any]:
    confidence = np.linspace(0.4, 0.95, Y_TRUE.size)
    test = compute_metrics(Y_TRUE, probabilities(Y_PRED, confidence), CLASSES)
    val = compute_metrics(Y_TRUE, probabilities(Y_TRUE, confidence), CLASSES)  # all right: 100 %
    transfer_val = compute_metrics(Y_TRUE, probabilities(np.roll(Y_TRUE, 1), confidence), CLASSES)
    return {
        "run": {
            "backbone": "MobileNetV2",
            "head": "gap-dense",
            "weights": "imagenet",
            "recipe": "seed000",
            "task": "4class",
            "classes": CLASSES,
            "split": "splits/demo.json",
            "split_sha256": "0123456789abcdef" * 4,
            "seed": 42,
            "split_sizes": {"train": 80, "val": 10, "test": 10},
            "epochs": 4,
        },
        "metrics_val": val,
        "metrics_test": test,
        "transfer_only": {"metrics_val": transfer_val},
        "history": {
            "loss": [1.0, 0.8, 0.5, float("nan")],
            "accuracy": np.array([0.5, 0.6, 0.8, 0.9], dtype=np.float32),
            "val_loss": [1.1, 0.9, 0.6, 0.5],
            "val_accuracy": [0.4, 0.6, 0.7, 0.8],
            "phase": ["transfer", "transfer", "finetune", "finetune"],
        },
        "training_time_s": 3723.4,
        "parameters": {"total": np.int64(2_261_827), "trainable": 2_227_715},
        "inference_ms_per_image": np.float32(8.5),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    write_report(run_dir, synthetic_report())
    return run_dir


def test_every_file_is_written(written: Path) -> None:
    names = {p.name for p in written.iterdir()}
    assert {"report.json", "report.md", CONFUSION_PNG, CURVES_PNG, ROC_PNG} <= names
    assert plt.get_fignums() == []  # every figure closed


@pytest.mark.parametrize("name", [CONFUSION_PNG, CURVES_PNG, ROC_PNG])
def test_figures_decode_and_are_not_blank(written: Path, name: str) -> None:
    image = cv2.imread(str(written / name))
    assert image is not None
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert float(image.std()) > 10.0  # ink on the page, not a flat colour
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_report_json_is_plain_json_with_format_and_timestamp(written: Path) -> None:
    document = json.loads((written / "report.json").read_text(encoding="utf-8"))
    assert document["format"] == REPORT_FORMAT
    assert document["generated"].endswith("+00:00")
    assert document["parameters"]["total"] == 2_261_827
    assert document["inference_ms_per_image"] == pytest.approx(8.5)
    assert document["history"]["loss"][-1] is None  # NaN is not valid JSON
    assert document["metrics_test"]["accuracy"] == pytest.approx(0.6)


def test_report_md_has_the_seed_tables_and_the_figures(written: Path) -> None:
    text = (written / "report.md").read_text(encoding="utf-8")
    assert "| Model | Val acc | Test acc | Precision | Recall | F1 |" in text
    assert "| Class | Precision | Recall (sensitivity) | Specificity | F1 | ROC AUC | Support |" in text
    # final model: val 100 %, test 60 %, macro precision = recall = 11/18, macro F1 38/63
    assert "| MobileNetV2 + gap-dense, fine-tuned | 100.00% | 60.00% | 61.11% | 61.11% | 60.32% |" in text
    # transfer-only figures exist for validation only: 7 of 10 right; its test-subset columns stay empty
    assert "| MobileNetV2 + gap-dense, transfer only | 70.00% | — | — | — | — |" in text
    # class a: precision 2/3, recall 1/2, specificity 5/6, F1 4/7, support 4
    assert "| a | 66.67% | 50.00% | 83.33% | 57.14% |" in text
    assert "| true \\ predicted | a | b | c |" in text
    assert "| **a** | 2 | 1 | 1 |" in text
    assert "task `4class`" in text and "split manifest `splits/demo.json`" in text and "seed 42" in text
    assert "test figures on 10 images" in text
    assert "Training time: 1 h 02 min 03 s" in text
    assert "2,261,827 in all" in text
    assert "8.50 ms per image" in text
    assert "Epochs run: 2 transfer, 2 finetune" in text
    for name in (CONFUSION_PNG, CURVES_PNG, ROC_PNG):
        assert f"]({name})" in text


def test_a_bare_report_skips_what_it_lacks_and_removes_stale_figures(tmp_path: Path) -> None:
    (tmp_path / CURVES_PNG).write_bytes(b"stale")
    metrics = compute_metrics(Y_TRUE, probabilities(Y_PRED, np.full(10, 0.8)), CLASSES)
    write_report(tmp_path, {"metrics_val": metrics})
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"report.json", "report.md", CONFUSION_PNG, ROC_PNG}
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "does not record which split" in text
    assert "## Validation subset (n = 10)" in text and "## Test subset" not in text
    assert CURVES_PNG not in text
    assert "| model | 60.00% | — |" in text


def test_an_empty_report_still_renders() -> None:
    text = render_report_markdown({})
    assert text.startswith("# Brain MRI classification report")
    assert "| Model | Val acc | Test acc |" in text


def test_to_jsonable_unwraps_numpy_and_paths() -> None:
    value = {"a": np.float32(1.5), "b": np.arange(3), "c": Path("x/y"), "d": (np.inf, None, True)}
    assert to_jsonable(value) == {"a": 1.5, "b": [0, 1, 2], "c": "x/y", "d": [None, None, True]}


@pytest.mark.parametrize(
    ("seconds", "text"), [(12.34, "12.3 s"), (245, "4 min 05 s"), (3723.4, "1 h 02 min 03 s"), (None, "—")]
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text
