"""The Keras code runs on the other backends too: PyTorch here (the CPU build the pretrained extra installs).

A lent GPU machine has PyTorch and JAX but no TensorFlow, so training there means ``KERAS_BACKEND=torch`` or
``jax``. These tests run in subprocesses with ``KERAS_BACKEND=torch``: the bundled models' Keras twins answer
what their ONNX graphs answer, and a tiny two-phase run trains, reports and saves a model that TensorFlow
reloads to the same predictions. (JAX is not installed here.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.manifest import load_entry
from service.inference import decode_upload
from service.model_repository import ServedModel, SessionConfig
from service.preprocessing import DEFAULT_MAX_PIXELS, apply_recipe_with_region
from training.calibration import softmax

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCH_PREDICT = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])
print(json.dumps({"backend": keras.backend.backend(),
                  "p": np.asarray(keras.ops.convert_to_numpy(model(x, training=False))).tolist()}))
"""


def _run_torch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _torch_predictions(keras_file: Path, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    result = _run_torch("-c", TORCH_PREDICT, str(keras_file), str(tmp_path / "x.npy"))
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["backend"] == "torch"
    return np.asarray(answer["p"], dtype=np.float32)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sartaj-4class", "br35h-binary"])
def test_bundled_twins_answer_like_onnx_under_torch(name: str, data_root: Path, tmp_path: Path) -> None:
    entry = REPO_ROOT / "models" / name
    model = ServedModel.from_manifest(load_entry(entry), entry)
    paths = sorted((data_root / "sartaj-brain-tumor-mri" / "Testing").rglob("*.jpg"))[::50][:8]
    x = np.stack(
        [
            apply_recipe_with_region(
                decode_upload(p.read_bytes(), None, max_pixels=DEFAULT_MAX_PIXELS), model.recipe
            )[0]
            for p in paths
        ]
    )
    model.load(SessionConfig())
    assert model.session is not None
    (logits,) = model.session.run(["logits"], {"image": x})
    onnx = softmax(np.asarray(logits))  # the twin is not tempered: compare the graph's untempered answer
    torch = _torch_predictions(model.keras_path, x, tmp_path)
    if torch.shape[1] == 1:  # a sigmoid twin: P(tumor)
        torch = np.concatenate([1.0 - torch, torch], axis=1)
    assert np.abs(torch - onnx).max() < 1e-4
    assert (torch.argmax(1) == onnx.argmax(1)).all()


@pytest.mark.realdata
@pytest.mark.slow
def test_a_tiny_run_trains_under_torch_and_reloads_under_tensorflow(tiny_split: Path, tmp_path: Path) -> None:
    import keras

    run_dir = tmp_path / "run"
    result = _run_torch(
        "-m", "training", "train", "--split", str(tiny_split), "--backbone", "seed002-cnn",
        "--out", str(run_dir), "--epochs-transfer", "1", "--epochs-finetune", "1", "--batch-size", "8",
        "--no-cache", "--keras-verbose", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend torch" in result.stdout
    run = json.loads((run_dir / "run.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert run["backend"] == "torch" and report["metrics_test"]["n"] == 8
    x = np.random.default_rng(0).uniform(0, 255, (4, *run["input_size"], 3)).astype(np.float32)
    under_torch = _torch_predictions(run_dir / "model.keras", x, tmp_path)
    under_tensorflow = keras.saving.load_model(run_dir / "model.keras", compile=False).predict(x, verbose=0)
    assert keras.backend.backend() == "tensorflow"
    assert np.abs(under_torch - under_tensorflow).max() < 1e-4
