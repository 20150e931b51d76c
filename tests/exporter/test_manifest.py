"""The manifest schema on its own: build, validate, load; no TensorFlow, no real model needed."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import ManifestError
from exporter.manifest import (
    REQUIRED_KEYS,
    build_manifest,
    file_record,
    load_entry,
    load_manifest,
    validate_manifest,
    write_manifest,
)

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
RECIPE = {"name": "plain", "size": [32, 32], "steps": []}


def metrics(accuracy: float) -> dict[str, Any]:
    return {
        "n": 4,
        "accuracy": accuracy,
        "macro": {"f1": accuracy},
        "roc_curve": {"glioma": [[0, 0], [1, 1]]},
    }


def write_entry(folder: Path) -> dict[str, Any]:
    """An entry with stand-in model files and the manifest build_manifest makes for them."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "model.keras").write_bytes(b"keras bytes")
    run = {"task": "4class", "classes": CLASSES, "input_size": [32, 32], "recipe": RECIPE,
           "backbone": "seed002-cnn", "head": "dense64", "weights": "none", "split": "splits/s.json",
           "split_sha256": "a" * 64, "split_seed": 42, "split_sizes": {"train": 8, "val": 4, "test": 4},
           "backend": "tensorflow", "training_time_s": 1.0, "command": "train"}  # fmt: skip
    manifest = build_manifest(
        name=folder.name,
        version="1",
        run=run,
        report={"run": run, "metrics_val": metrics(0.5), "metrics_test": metrics(0.75)},
        onnx={**file_record(folder / "model.onnx"), "opset": 17, "input": "image", "output": "probabilities"},
        keras={**file_record(folder / "model.keras"), "gradcam_layer": "conv3"},
        parity={"images": 32, "max_abs_diff": 3e-8, "argmax_agreement": 1.0, "tolerance": 1e-4},
        versions={"onnxruntime": "1.32.0"},
        created="2026-01-01T00:00:00+00:00",
        calibration={"temperature": 1.25},
        input_validity={"threshold": 1.0, "output": "ood_score"},
    )
    write_manifest(folder / "manifest.json", manifest)
    return manifest


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    write_entry(tmp_path / "models" / "tiny")
    return tmp_path / "models" / "tiny"


def test_a_built_manifest_is_valid_and_loads(entry: Path) -> None:
    manifest = load_entry(entry)

    assert validate_manifest(manifest, entry) == []
    assert manifest["evaluation"]["test"] == {"n": 4, "accuracy": 0.75, "macro": {"f1": 0.75}}  # no ROC curve
    sizes = {"train": 8, "val": 4, "test": 4}
    assert manifest["evaluation"]["split"] == {
        "path": "splits/s.json", "sha256": "a" * 64, "task": "4class", "seed": 42, "sizes": sizes
    }  # fmt: skip
    assert load_manifest(entry) == load_manifest(entry / "manifest.json") == manifest


def test_a_tampered_file_fails_its_sha256(entry: Path) -> None:
    (entry / "model.onnx").write_bytes(b"ONNX bytes")  # same size, other bytes

    assert validate_manifest(load_manifest(entry), entry) == [
        "The file model.onnx does not match its sha256 in the manifest: it was changed after export."
    ]
    assert validate_manifest(load_manifest(entry), entry, check_files=False) == []
    with pytest.raises(ManifestError, match=r"^the model entry .*tiny is invalid: The file model\.onnx does"):
        load_entry(entry)


def test_missing_and_truncated_files_are_named(entry: Path) -> None:
    (entry / "model.keras").unlink()
    (entry / "model.onnx").write_bytes(b"onnx")

    assert validate_manifest(load_manifest(entry), entry) == [
        "The file model.onnx has 4 bytes, not the 10 of the manifest: it was changed after export.",
        f"The file model.keras listed under 'keras' is missing from {entry}.",
    ]


@pytest.mark.parametrize("key", sorted(REQUIRED_KEYS))
def test_every_required_key_is_checked(entry: Path, key: str) -> None:
    manifest = load_manifest(entry)
    *parents, last = key.split(".")
    holder = manifest
    for part in parents:
        holder = holder[part]
    del holder[last]

    assert f"The manifest lacks the key '{key}'." in validate_manifest(manifest, entry)


def test_contract_values_are_checked(entry: Path) -> None:
    manifest = load_manifest(entry)
    broken = copy.deepcopy(manifest)
    broken["format"] = "brain-mri-model/0"
    broken["classes"] = ["no_tumor", "glioma", "meningioma", "pituitary"]
    broken["input"]["channels"] = 1
    broken["input"]["range"] = [255, 0]
    broken["onnx"]["file"] = "../model.onnx"
    broken["onnx"]["opset"] = "17"
    broken["parity"]["max_abs_diff"] = 0.5
    broken["keras"]["gradcam_method"] = "scorecam"

    assert validate_manifest(broken, entry) == [
        "'onnx.opset' must be an integer, not a string.",
        "'format' must be 'brain-mri-model/1', not 'brain-mri-model/0'.",
        "The classes of task 4class must be ['glioma', 'meningioma', 'no_tumor', 'pituitary'] in that order, "
        "not ['no_tumor', 'glioma', 'meningioma', 'pituitary'].",
        "'input.channels' must be 3, not 1.",
        "'input.range' must be [low, high] with low < high, not [255, 0].",
        "The parity check failed: max |Δ probability| 0.5 exceeds 0.0001.",
        "'keras.gradcam_method' must be one of gradcam, gradcam++, layercam, not 'scorecam'.",
        "'onnx.file' must be a plain file name inside the entry, not '../model.onnx'.",
    ]


def test_the_folder_must_carry_the_name(entry: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(entry, other)

    assert validate_manifest(load_manifest(other), other) == [
        "The entry folder 'other' does not carry the model's name 'tiny'."
    ]


def test_variants_are_checked_like_the_model_files(entry: Path) -> None:
    manifest = load_manifest(entry)
    manifest["variants"] = {
        "int8": {"file": "model.int8.onnx", "sha256": "0" * 64, "size_bytes": 3},
        "fp16": {"file": "model.fp16.onnx"},
    }

    assert validate_manifest(manifest, entry) == [
        "'variants.fp16' must hold 'file' and 'sha256' strings.",
        f"The file model.int8.onnx listed under 'variants.int8' is missing from {entry}.",
    ]


def test_binary_and_pairwise_tasks_have_their_own_classes(entry: Path) -> None:
    manifest = load_manifest(entry)
    for task, classes in (("binary", ["no_tumor", "tumor"]), ("pairwise:glioma", ["no_tumor", "glioma"])):
        assert validate_manifest({**manifest, "task": task, "classes": classes}, entry) == []
    assert validate_manifest({**manifest, "task": "3class"}, entry) == [
        "The task '3class' is unknown; expected 4class, binary or pairwise:<tumour>."
    ]


def test_unreadable_manifests_raise_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text(json.dumps([1]))

    with pytest.raises(ManifestError, match=r"^the manifest .*bad\.json is not valid JSON: "):
        load_manifest(tmp_path / "bad.json")
    with pytest.raises(ManifestError, match=r"^the manifest .*list\.json is not a JSON object$"):
        load_manifest(tmp_path / "list.json")
    with pytest.raises(ManifestError, match=r"^cannot read the manifest .*missing\.json: No such file"):
        load_manifest(tmp_path / "missing.json")


def test_the_manifest_module_imports_nothing_heavy() -> None:
    heavy = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "cv2", "service", "training"}
    code = (
        "import sys, exporter.manifest, exporter.entry; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"
