"""`python -m exporter.refit --gradcam`: switching the heat map of an entry, on a copy of a bundled one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter.manifest import validate_manifest
from exporter.refit import main

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "sartaj-4class"


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    copy = tmp_path / "sartaj-4class"
    shutil.copytree(BUNDLED, copy)
    return copy


def test_gradcam_only_switches_the_heat_map_and_keeps_the_graph(entry: Path) -> None:
    before = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    onnx_bytes = (entry / "model.onnx").read_bytes()

    assert main([str(entry), "--gradcam", "gradcam++@block5c_add", "--gradcam-only"]) == 0

    after = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    assert (after["keras"]["gradcam_method"], after["keras"]["gradcam_layer"]) == ("gradcam++", "block5c_add")
    assert (entry / "model.onnx").read_bytes() == onnx_bytes
    assert after["onnx"] == before["onnx"] and after["calibration"] == before["calibration"]
    # the earlier refits stay on record, the newest last
    assert after["refit"]["earlier"] == [*before["refit"].get("earlier", []), before["refit"]["command"]]
    assert after["refit"]["command"].endswith("--gradcam gradcam++@block5c_add --gradcam-only")
    assert validate_manifest(after, entry) == []


def test_a_layer_without_a_map_is_refused_and_nothing_changes(
    entry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = (entry / "manifest.json").read_bytes()
    assert main([str(entry), "--gradcam", "layercam@head_gap", "--gradcam-only"]) == 2
    assert "the heat-map layer 'head_gap' gives (None, 1280), not a spatial map" in capsys.readouterr().err
    assert (entry / "manifest.json").read_bytes() == manifest


def test_gradcam_only_needs_a_heat_map(entry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(entry), "--gradcam-only"])
    assert exited.value.code == 2
    assert "--gradcam-only needs --gradcam METHOD@LAYER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(entry), "--gradcam", "scorecam@top_activation"])
    assert "is not METHOD@LAYER" in capsys.readouterr().err
