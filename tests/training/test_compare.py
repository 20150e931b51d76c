"""`python -m training compare` on synthetic run directories: one table, and refusal of mixed splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.cli import main
from training.commands.compare import build_comparison
from training.evaluation import compute_metrics
from training.report import to_jsonable

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["no_tumor", "tumor"]
Y_TRUE = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
SHA_A = "a" * 64
SHA_B = "b" * 64


def metrics_with_correct(n_correct: int) -> dict[str, Any]:
    """Metrics of 10 images of which the first ``n_correct`` are classified right."""
    predicted = Y_TRUE.copy()
    predicted[n_correct:] = 1 - predicted[n_correct:]
    prob = np.stack([1 - predicted * 0.8 - 0.1, predicted * 0.8 + 0.1], axis=1)  # (10, 2)
    return compute_metrics(Y_TRUE, prob, CLASSES)


def make_run(
    root: Path,
    name: str,
    *,
    backbone: str,
    sha256: str | None = SHA_A,
    split: str = "splits/binary.json",
    finetuned: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    run: dict[str, Any] = {"backbone": backbone, "head": "gap-dense", "weights": "imagenet", "task": "binary"}
    run["split"] = split
    if sha256:
        run["split_sha256"] = sha256
    phases = ["transfer", "transfer"] + (["finetune", "finetune"] if finetuned else [])
    report: dict[str, Any] = {
        "format": "brain-mri-report/1",
        "run": run,
        "metrics_val": metrics_with_correct(9),
        "metrics_test": metrics_with_correct(8),
        "history": {"phase": phases, "accuracy": [0.5] * len(phases)},
        "training_time_s": 125.0,
        "parameters": {"total": 2_261_827, "trainable": 2_227_715},
        "inference_ms_per_image": 8.5,
    }
    if finetuned:
        report["transfer_only"] = {
            "metrics_val": metrics_with_correct(7),
            "metrics_test": metrics_with_correct(6),
        }
    report.update(extra or {})
    (run_dir / "report.json").write_text(json.dumps(to_jsonable(report)), encoding="utf-8")
    return run_dir


def test_two_runs_of_one_split_give_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = make_run(tmp_path, "mobilenet", backbone="MobileNetV2")
    second = make_run(tmp_path, "resnet", backbone="ResNet50", finetuned=False)
    out = tmp_path / "cmp"
    assert main(["compare", str(first), str(second), "--out", str(out)]) == 0

    text = (out / "comparison.md").read_text(encoding="utf-8")
    header = (
        "| Backbone | Head | Weights | Params | Train time | Transfer-only val/test acc "
        "| Fine-tuned val/test acc | Macro F1 | Inference ms |"
    )
    assert header in text
    assert (
        "| MobileNetV2 | gap-dense | imagenet | 2.26 M | 2 min 05 s | 70.00% / 60.00% | 90.00% / 80.00% |"
        in text
    )
    # a run that was never fine-tuned: its final figures are the transfer-only ones
    assert "| ResNet50 | gap-dense | imagenet | 2.26 M | 2 min 05 s | 90.00% / 80.00% | — |" in text
    assert "All 2 runs use one split" in text
    assert header in capsys.readouterr().out

    document = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert document["format"] == "brain-mri-comparison/1"
    assert document["mixed_splits"] is False
    rows = {row["backbone"]: row for row in document["runs"]}
    assert rows["MobileNetV2"]["finetuned_test_accuracy"] == pytest.approx(0.8)
    assert rows["MobileNetV2"]["transfer_only_val_accuracy"] == pytest.approx(0.7)
    assert rows["ResNet50"]["finetuned_test_accuracy"] is None
    assert rows["ResNet50"]["macro_f1"] == pytest.approx(metrics_with_correct(8)["macro"]["f1"])


def test_runs_of_different_splits_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = make_run(tmp_path, "one", backbone="MobileNetV2", sha256=SHA_A)
    second = make_run(tmp_path, "two", backbone="ResNet50", sha256=SHA_B)
    out = tmp_path / "cmp"
    assert main(["compare", str(first), str(second), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the runs come from different splits")
    assert "--allow-mixed-splits" in err and "Traceback" not in err
    assert not out.exists()


def test_mixed_splits_are_compared_when_allowed_and_flagged(tmp_path: Path) -> None:
    first = make_run(tmp_path, "one", backbone="MobileNetV2", sha256=SHA_A)
    second = make_run(tmp_path, "two", backbone="ResNet50", sha256=SHA_B)
    out = tmp_path / "cmp"
    assert main(["compare", str(first), str(second), "--out", str(out), "--allow-mixed-splits"]) == 0
    text = (out / "comparison.md").read_text(encoding="utf-8")
    assert "different (or unrecorded) splits" in text
    assert "| Inference ms | Split |" in text


def test_without_sha256_the_split_paths_decide(tmp_path: Path) -> None:
    same = [
        make_run(tmp_path, "one", backbone="A", sha256=None, split="splits/x.json"),
        make_run(tmp_path, "two", backbone="B", sha256=None, split="splits/./x.json"),
    ]
    assert build_comparison(same)["mixed_splits"] is False
    other = make_run(tmp_path, "three", backbone="C", sha256=None, split="splits/y.json")
    assert main(["compare", str(same[0]), str(other), "--out", str(tmp_path / "cmp")]) == 2


def test_a_run_without_report_json_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_run(tmp_path, "one", backbone="MobileNetV2")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(first), str(empty), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert f"{empty / 'report.json'} not found" in err and "Traceback" not in err


def test_run_json_completes_the_configuration(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "one", backbone="MobileNetV2")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    del report["run"]["weights"]
    (run_dir / "report.json").write_text(json.dumps(report), encoding="utf-8")
    (run_dir / "run.json").write_text(
        json.dumps({"weights": "random", "backbone": "ignored"}), encoding="utf-8"
    )
    row = build_comparison([run_dir])["runs"][0]
    assert (row["backbone"], row["weights"]) == ("MobileNetV2", "random")  # report.json wins where both say


def test_the_module_entry_point_exits_2_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "compare",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "report.json not found" in result.stderr and "Traceback" not in result.stderr
