"""`python -m exporter` on a tiny real run: the entry, its manifest, the parity gate and what it refuses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import exporter.export
from exporter.cli import main
from exporter.convert import convert_keras_to_onnx
from exporter.manifest import REQUIRED_KEYS, file_sha256, load_entry, load_manifest, validate_manifest
from exporter.parity import preprocess_items
from exporter.quantize import MAKERS, Float32Baseline, measure_variant
from service.preprocessing import Recipe
from training.calibration import softmax
from training.splits import load_split

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

ENTRY_FILES = {"manifest.json", "model.onnx", "model.keras", "report.md", "confusion_matrix.png"}


def manifest_of(entry: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((entry / "manifest.json").read_text())
    return data


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_export_writes_an_entry_that_meets_the_contract(exported: Path, tiny_run: Path) -> None:
    manifest = manifest_of(exported)

    assert {p.name for p in exported.iterdir()} >= ENTRY_FILES
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]  # no staging folder left
    assert validate_manifest(manifest, exported) == []
    assert load_entry(exported) == manifest
    for key in REQUIRED_KEYS:
        value: Any = manifest
        for part in key.split("."):
            value = value[part]
    run = json.loads((tiny_run / "run.json").read_text())
    report = json.loads((tiny_run / "report.json").read_text())
    assert manifest["format"] == "brain-mri-model/1"
    assert (manifest["name"], manifest["version"], manifest["task"]) == ("tiny-cnn", "0.1", "4class")
    assert manifest["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert manifest["input"] == {"height": 64, "width": 64, "channels": 3, "layout": "NHWC",
                                 "dtype": "float32", "range": [0, 255], "color": "RGB"}  # fmt: skip
    assert manifest["preprocessing"] == run["recipe"]
    assert manifest["onnx"] == {"file": "model.onnx", "sha256": file_sha256(exported / "model.onnx"),
                                "size_bytes": (exported / "model.onnx").stat().st_size, "opset": 17,
                                "input": "image", "output": "probabilities"}  # fmt: skip
    assert manifest["keras"]["sha256"] == file_sha256(exported / "model.keras")
    # the twin is the run's model without optimizer state: the same weights in a smaller file
    twin = keras.models.load_model(exported / "model.keras", compile=False)
    trained = keras.models.load_model(tiny_run / "model.keras", compile=False)
    for mine, theirs in zip(twin.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert (exported / "model.keras").stat().st_size < (tiny_run / "model.keras").stat().st_size
    assert manifest["keras"]["gradcam_layer"] == "conv3"
    assert manifest["keras"]["gradcam_method"] == "gradcam"  # no measured choice for this backbone
    assert (manifest["backbone"], manifest["head"], manifest["weights_init"]) == (
        "seed002-cnn",
        "dense64",
        "none",
    )
    split = manifest["evaluation"]["split"]
    assert split == {"path": run["split"], "sha256": run["split_sha256"], "task": "4class", "seed": 0,
                     "sizes": {"train": 24, "val": 8, "test": 8}}  # fmt: skip
    expected_test = {k: v for k, v in report["metrics_test"].items() if k != "roc_curve"}
    assert manifest["evaluation"]["test"] == expected_test
    assert "roc_curve" not in manifest["evaluation"]["val"]
    assert manifest["training"]["backend"] == "tensorflow" and manifest["training"]["training_time_s"] > 0
    assert set(manifest["versions"]) >= {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "python"}
    assert manifest["latency"]["onnx_ms"] > 0
    assert (exported / "report.md").read_bytes() == (tiny_run / "report.md").read_bytes()


def test_parity_figures_are_recorded(exported: Path) -> None:
    parity = manifest_of(exported)["parity"]

    assert parity["images"] == 32
    assert parity["subsets"] == {"test": 8, "val": 8, "train": 16}  # the tiny split's test subset holds 8
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    assert parity["argmax_agreement"] == 1.0


def test_onnx_graph_has_named_tensors_and_a_dynamic_batch(exported: Path) -> None:
    graph = onnx.load(exported / "model.onnx").graph
    outputs = [o.name for o in graph.output]
    assert [i.name for i in graph.input] == ["image"] and outputs == ["probabilities", "logits", "ood_score"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    session = ort.InferenceSession(exported / "model.onnx", providers=["CPUExecutionProvider"])
    model = keras.models.load_model(exported / "model.keras", compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    temperature = load_manifest(exported)["calibration"]["temperature"]
    for batch in (x[:1], x):
        probabilities, logits, scores = session.run(
            ["probabilities", "logits", "ood_score"], {"image": batch}
        )
        assert probabilities.shape == (len(batch), 4) and scores.shape == (len(batch),)
        # the logits are the twin's; the probabilities are the tempered softmax of them
        np.testing.assert_allclose(softmax(logits), keras.ops.convert_to_numpy(model(batch)), atol=1e-5)
        np.testing.assert_allclose(probabilities, softmax(logits, temperature), atol=1e-5)


def test_a_taken_name_is_refused_without_force(
    exported: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(exported)

    code = main([str(tiny_run), "--repository", str(exported.parent), "--name", exported.name])

    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {exported} already exists (version 0.1); "
        "pass --force to replace it or choose another --name\n"
    )
    assert snapshot(exported) == before


def perturbed_converter(model: keras.Model, opset: int = 17) -> onnx.ModelProto:
    """The real conversion, then the output layer's bias shifted: a plausible but wrong graph."""
    proto = convert_keras_to_onnx(model, opset)
    shift = np.array([0.5, 0.0, 0.0, -0.5], dtype=np.float32)
    return with_class_bias(proto, lambda bias: bias + shift)


def with_class_bias(
    proto: onnx.ModelProto, change: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
) -> onnx.ModelProto:
    """A copy of the graph with the output layer's bias (the float (4,) initializer) changed."""
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    (bias,) = [
        t for t in changed.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and tuple(t.dims) == (4,)
    ]  # fmt: skip
    bias.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(bias)).astype(np.float32), bias.name))
    return changed


def renamed_converter(model: keras.Model, opset: int = 17) -> onnx.ModelProto:
    proto = convert_keras_to_onnx(model, opset)
    for node in proto.graph.node:
        node.output[:] = ["logits" if name == "probabilities" else name for name in node.output]
    proto.graph.output[0].name = "logits"
    return proto


@pytest.fixture
def repository_with_entry(exported: Path, tmp_path: Path) -> Path:
    """A repository holding a copy of the exported entry."""
    repository = tmp_path / "models"
    shutil.copytree(exported, repository / exported.name)
    return repository


def test_a_graph_that_fails_parity_is_refused_and_the_entry_kept(
    repository_with_entry: Path,
    tiny_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = repository_with_entry / "tiny-cnn"
    before = snapshot(entry)
    monkeypatch.setattr(exporter.export, "convert_keras_to_onnx", perturbed_converter)

    code = main([str(tiny_run), "--repository", str(repository_with_entry), "--name", "tiny-cnn", "--force"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: parity check failed on 32 images (8 test, 8 val, 16 train): max |Δ probability| is "
    )
    assert "> tolerance 0.0001 (worst on " in err and "Traceback" not in err and err.count("\n") == 1
    assert err.endswith(f"; nothing was written to {repository_with_entry}\n")
    assert [p.name for p in repository_with_entry.iterdir()] == ["tiny-cnn"]  # no staging folder left
    assert snapshot(entry) == before


def test_a_graph_with_another_output_name_is_refused(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(exporter.export, "convert_keras_to_onnx", renamed_converter)

    code = main([str(tiny_run), "--repository", str(tmp_path / "models"), "--name", "renamed"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error: the ONNX graph's output name is 'logits', expected 'probabilities'; "
        f"nothing was written to {tmp_path / 'models'}\n"
    )
    assert list((tmp_path / "models").iterdir()) == []


def test_force_replaces_the_entry_and_variants_carry_their_cost(
    repository_with_entry: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tiny_run), "--repository", str(repository_with_entry), "--name", "tiny-cnn",
                 "--version", "0.2", "--force", "--fp16", "--int8", "--parity-images", "8"])  # fmt: skip

    assert code == 0
    entry = repository_with_entry / "tiny-cnn"
    manifest = load_entry(entry)
    assert manifest["version"] == "0.2" and manifest["parity"]["subsets"] == {"test": 8}
    variants, refused = manifest.get("variants", {}), manifest.get("refused_variants", {})
    assert set(variants) | set(refused) == {"fp16", "int8"}
    assert "fp16" in variants  # float16 does not move a probability enough to change a class here
    out = capsys.readouterr().out
    for name, record in variants.items():
        assert record["file"] == f"model.{name}.onnx" and (entry / record["file"]).is_file()
        assert record["test_images"] == 8 and record["accuracy_change_points"] >= -0.5
        assert record["latency_ms"] > 0 and record["baseline_latency_ms"] > 0
    for name, reason in refused.items():
        assert not (entry / f"model.{name}.onnx").exists()
        assert reason.startswith(f"the {name} variant was not written: its test accuracy ")
        assert reason in out
    assert [p.name for p in repository_with_entry.iterdir()] == ["tiny-cnn"]


def test_a_variant_losing_accuracy_is_refused(
    exported: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = json.loads((tiny_run / "run.json").read_text())
    split = load_split(run["split"])
    images = preprocess_items(split.items("test"), Recipe.from_dict(run["recipe"]))
    proto = onnx.load(exported / "model.onnx")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": images})[0]
    # labels = the float32 graph's own classes: its accuracy is 1, and any changed class costs 12.5 points
    test = Float32Baseline(images, probabilities.argmax(axis=1), probabilities, 1.0)
    other = (int(probabilities[0].argmax()) + 1) % 4  # a class that image 0 does not get
    favour = np.eye(4, dtype=np.float32)[other] * 100.0
    monkeypatch.setitem(MAKERS, "fp16", lambda p, c: (with_class_bias(p, lambda b: b + favour), "biased"))

    outcome = measure_variant("fp16", proto, images, test)

    assert outcome.refused is not None
    assert outcome.refused.startswith("the fp16 variant was not written: its test accuracy ")
    assert outcome.refused.endswith("below the float32 graph's 1.0000 (at most 0.5 allowed)")
    assert outcome.record["accuracy_change_points"] < -0.5

    monkeypatch.setitem(MAKERS, "fp16", lambda p, c: (p, "unchanged"))
    kept = measure_variant("fp16", proto, images, test)
    assert kept.refused is None and kept.record["accuracy_change_points"] == 0


def test_validation_catches_a_tampered_onnx_file(exported: Path, tmp_path: Path) -> None:
    entry = tmp_path / exported.name
    shutil.copytree(exported, entry)
    data = bytearray((entry / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (entry / "model.onnx").write_bytes(bytes(data))

    assert validate_manifest(manifest_of(entry), entry) == [
        "The file model.onnx does not match its sha256 in the manifest: it was changed after export."
    ]


def test_images_that_moved_are_named_with_the_way_out(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "elsewhere"

    code = main([str(tiny_run), "--repository", str(tmp_path / "models"), "--name", "moved",
                 "--data-root", str(moved)])  # fmt: skip

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read the split image {moved}/Training/")
    assert err.endswith("; pass --data-root if the data moved\n")
    assert list((tmp_path / "models").iterdir()) == []
