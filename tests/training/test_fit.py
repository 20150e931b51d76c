"""Two-phase training through the ``train`` and ``evaluate`` commands, on a few real MRI images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras.src.utils import file_utils

from training.cli import build_parser, main
from training.commands.train import options_from_args
from training.fit import FINETUNE, TRANSFER, FitConfig, balanced_class_weights, set_phase_trainable
from training.runs import TrainedRun, read_run, train_run
from training.zoo.build import backbone_layers, build_model
from training.zoo.catalogue import BACKBONE_NAMES

REPORT_KEYS = {
    "run",
    "history",
    "training_time_s",
    "metrics_val",
    "metrics_test",
    "parameters",
    "inference_ms_per_image",
    "transfer_only",
}


@pytest.fixture(scope="module")
def trained(tiny_split: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, TrainedRun]:
    """One tiny run of both phases: seed002-cnn at 64 px, 1 transfer + 1 fine-tuning epoch."""
    work = tmp_path_factory.mktemp("run")
    run_dir, cache = work / "run", work / "cache"
    args = build_parser().parse_args(
        ["train", "--split", str(tiny_split), "--backbone", "seed002-cnn", "--out", str(run_dir),
         "--epochs-transfer", "1", "--epochs-finetune", "1", "--batch-size", "8", "--augment", "seed004",
         "--cache-dir", str(cache), "--keras-verbose", "0"]
    )  # fmt: skip
    return run_dir, cache, train_run(options_from_args(args))


@pytest.mark.realdata
@pytest.mark.slow
def test_train_writes_model_history_run_record_and_report(trained: tuple[Path, Path, TrainedRun]) -> None:
    run_dir, _, result = trained

    for name in ("model.keras", "history.json", "run.json", "report.json", "report.md"):
        assert (run_dir / name).is_file(), name
    for name in ("confusion_matrix.png", "curves.png", "roc.png"):
        assert (run_dir / name).read_bytes().startswith(b"\x89PNG"), name

    report = json.loads((run_dir / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert report["metrics_val"]["n"] == 8 and report["metrics_test"]["n"] == 8
    assert set(report["transfer_only"]) == {"metrics_val", "metrics_test"}
    assert (
        report["parameters"]["total"] == result.model.count_params() > report["parameters"]["trainable"] - 1
    )
    assert report["inference_ms_per_image"] > 0
    assert "## Test subset (n = 8)" in (run_dir / "report.md").read_text()

    history = json.loads((run_dir / "history.json").read_text())
    assert history["phase"] == [TRANSFER, FINETUNE]
    assert len(history["val_loss"]) == len(history["loss"]) == len(history["epoch_time_s"]) == 2

    run = read_run(run_dir)
    assert run["backbone"] == "seed002-cnn" and run["head"] == "dense64" and run["weights"] == "none"
    assert run["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"] and run["task"] == "4class"
    assert run["split_sha256"] == hashlib.sha256(Path(run["split"]).read_bytes()).hexdigest()
    assert run["split_sizes"] == {"train": 24, "val": 8, "test": 8}
    assert run["recipe"]["name"] == "crop" and run["recipe"]["size"] == [64, 64]
    assert run["input_size"] == [64, 64] and run["gradcam_layer"] == "conv3"
    assert run["hyperparameters"]["epochs_transfer"] == 1 and run["hyperparameters"]["augment"] == "seed004"
    assert run["backend"] == keras.backend.backend() and run["versions"]["keras"] == keras.__version__
    assert run["epochs_run"] == {TRANSFER: 1, FINETUNE: 1} and run["training_time_s"] > 0


@pytest.mark.realdata
@pytest.mark.slow
def test_saved_model_reloads_and_predicts_like_the_trained_one(
    trained: tuple[Path, Path, TrainedRun],
) -> None:
    run_dir, _, result = trained
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)

    reloaded = keras.models.load_model(run_dir / "model.keras")

    np.testing.assert_allclose(reloaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)
    assert reloaded.get_layer("conv3").output.shape[1:3] == (12, 12)


@pytest.mark.realdata
@pytest.mark.slow
def test_evaluate_updates_the_report_from_the_cached_arrays(
    trained: tuple[Path, Path, TrainedRun], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, cache, result = trained
    assert len(list(cache.glob("*.npz"))) == 3  # train, val, test, preprocessed once

    code = main(["evaluate", "--model", str(run_dir), "--subset", "test", "--cache-dir", str(cache)])

    assert code == 0
    assert "test: 8 images from the cache" in capsys.readouterr().err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["evaluated"]["subset"] == "test"
    assert report["metrics_test"]["accuracy"] == pytest.approx(result.report["metrics_test"]["accuracy"])
    assert report["metrics_val"] == json.loads(json.dumps(result.report["metrics_val"]))  # kept: same split
    assert report["history"]["phase"] == [TRANSFER, FINETUNE]


def test_train_help_names_every_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    for name in BACKBONE_NAMES:
        assert name in text


@pytest.mark.realdata
def test_imagenet_weights_offline_exit_with_one_sentence(
    tiny_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/w.h5: None -- [Errno 101] unreachable"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    code = main(
        ["train", "--split", str(tiny_split), "--backbone", "mobilenetv2", "--out", str(tmp_path / "run"),
         "--weights", "imagenet", "--input-size", "32", "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip

    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the ImageNet weights of mobilenetv2 could not be downloaded (URL fetch")
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # failed before any work


def test_phases_freeze_the_backbone_then_its_top_layers_with_batchnorm_frozen() -> None:
    model, _ = build_model("mobilenetv2", 4, input_size=32)
    backbone = backbone_layers(model)

    set_phase_trainable(model, TRANSFER, FitConfig())
    assert not any(layer.trainable for layer in backbone)
    assert model.get_layer("probabilities").trainable and model.get_layer("head_dropout").trainable
    assert not model.get_layer("preprocess_rescale").trainable

    set_phase_trainable(model, FINETUNE, FitConfig(fine_tune_layers=10))
    top = backbone[-10:]
    assert all(layer.trainable for layer in top if not isinstance(layer, keras.layers.BatchNormalization))
    assert not any(layer.trainable for layer in backbone[:-10])
    assert not any(
        layer.trainable for layer in backbone if isinstance(layer, keras.layers.BatchNormalization)
    )

    set_phase_trainable(model, FINETUNE, FitConfig(freeze_batchnorm=False))
    assert all(layer.trainable for layer in backbone)


def test_balanced_class_weights_follow_the_train_counts() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)

    assert weights == {0: pytest.approx(0.5), 1: pytest.approx(1.5), 2: pytest.approx(0.75), 3: 1.0}


def test_default_schedule_depends_on_the_weights() -> None:
    def options(*extra: str) -> Any:
        args = build_parser().parse_args(["train", "--split", "s.json", "--out", "r", *extra])
        return options_from_args(args)

    pretrained = options("--backbone", "resnet50")
    assert pretrained.weights == "imagenet"
    assert (pretrained.fit.epochs_transfer, pretrained.fit.lr, pretrained.fit.finetune_lr) == (10, 1e-4, 1e-5)
    assert pretrained.fit.freeze_batchnorm

    scratch = options("--backbone", "resnet50", "--weights", "none")
    assert (scratch.fit.epochs_transfer, scratch.fit.finetune_lr) == (0, 1e-4)
    assert not scratch.fit.freeze_batchnorm

    sgd = options("--backbone", "seed002-cnn", "--optimizer", "sgd")
    assert (sgd.weights, sgd.fit.lr, sgd.fit.weight_decay) == ("none", 1e-2, 5e-4)
