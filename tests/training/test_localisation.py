"""The pointing game and the energy fraction, and ``python -m training localisation`` on real boxed slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.errors import TrainingError
from training.localisation import Variant, box_mask, energy_fraction, load_boxes, pointing_hit

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "models" / "sartaj-4class"


@pytest.fixture(scope="module")
def boxes_file(data_root: Path) -> Path:
    path = data_root.parent / "extsets" / "localisation-dev" / "boxes.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the localisation set lives beside the data sets (../shared/extsets)")
    return path


def test_the_hottest_pixel_counts_within_the_tolerance_only() -> None:
    canvas = np.zeros((100, 120), np.float32)
    canvas[50, 80] = 1.0  # centre (80.5, 50.5)
    assert pointing_hit(canvas, [(60.0, 40.0, 81.0, 60.0)], 0.0)
    assert not pointing_hit(canvas, [(60.0, 40.0, 80.0, 60.0)], 0.0)  # x1 is outside the box
    assert pointing_hit(canvas, [(60.0, 40.0, 80.0, 60.0)], 15.0)
    assert not pointing_hit(canvas, [(10.0, 10.0, 50.0, 30.0)], 15.0)  # 30.5 px left of the box's grown edge
    assert pointing_hit(canvas, [(10.0, 10.0, 50.0, 30.0), (70.0, 45.0, 90.0, 55.0)], 15.0)  # any box
    assert not pointing_hit(np.zeros((10, 10), np.float32), [(0.0, 0.0, 10.0, 10.0)], 15.0)  # a cold map


def test_energy_fraction_is_the_share_inside_the_union_of_boxes() -> None:
    mask = box_mask((10, 10), [(0.0, 0.0, 5.0, 10.0), (2.0, 0.0, 6.0, 10.0)])  # overlapping: a 6 x 10 union
    assert mask.sum() == 60 and mask[:, :6].all() and not mask[:, 6:].any()
    assert energy_fraction(np.ones((10, 10), np.float32), mask) == pytest.approx(0.6)
    assert energy_fraction(np.zeros((10, 10), np.float32), mask) == 0.0
    clipped = box_mask((10, 10), [(-5.0, -5.0, 3.4, 20.0)])  # beyond the image: clipped; 3.4 ends in column 2
    assert clipped.sum() == 30


def test_variants_are_method_at_layer() -> None:
    parsed = Variant.parse("layercam@block6d_expand_activation")
    assert parsed == Variant("layercam", "block6d_expand_activation")
    for text in ("layercam", "scorecam@top_activation", "gradcam@"):
        with pytest.raises(TrainingError, match="is not METHOD@LAYER"):
            Variant.parse(text)


def test_the_shared_boxes_load_in_their_own_pixels(boxes_file: Path) -> None:
    images = load_boxes(boxes_file)
    assert len(images) == 220 and all(item.path.is_file() for item in images)
    boxed = [item for item in images if item.boxes]
    assert len(boxed) == 184 and sum(len(item.boxes) for item in boxed) == 190
    assert {item.label for item in images} == {"glioma", "meningioma", "pituitary", "no_tumour"}
    assert all(x0 < x1 and y0 < y1 for item in boxed for x0, y0, x1, y1 in item.boxes)


@pytest.mark.realdata
def test_the_command_measures_the_bundled_model(
    boxes_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two slices per class (and a negative) of the shared set, with their boxes
    raw = json.loads(boxes_file.read_text(encoding="utf-8"))
    picked: dict[str, dict[str, object]] = {}
    for label in ("glioma", "meningioma", "pituitary", "no_tumour"):
        keys = sorted(k for k, v in raw.items() if v["class"] == label)
        for key in keys[: 1 if label == "no_tumour" else 2]:
            picked[key] = {**raw[key], "image": str(boxes_file.parent / raw[key]["image"])}
    subset = tmp_path / "boxes.json"
    subset.write_text(json.dumps(picked), encoding="utf-8")
    out = tmp_path / "report"

    methods = ["--method", "layercam@block6d_expand_activation", "--method", "gradcam@top_activation"]
    args = ["localisation", "--model", str(BUNDLED), "--boxes", str(subset), "--out", str(out), *methods]
    code = main(args)

    assert code == 0
    summary = json.loads((out / "localisation.json").read_text(encoding="utf-8"))
    assert summary["variants"] == ["layercam@block6d_expand_activation", "gradcam@top_activation"]
    rows = {(row["variant"], row["class"]): row for row in summary["rows"]}
    assert set(rows) == {(v, c) for v in summary["variants"] for c in ("glioma", "meningioma", "pituitary")}
    for row in rows.values():
        assert row["images"] == 2 and 0 <= row["hits"] <= 2 and row["hit_rate"] == row["hits"] / 2
        assert 0.0 < row["energy_fraction"] < 1.0
    # the two weightings are different maps, not one map twice
    energies = [[rows[(v, c)]["energy_fraction"] for c in ("glioma", "meningioma")] for v in methods[1::2]]
    assert energies[0] != energies[1]
    assert summary["no_box_images"]["images"] == 1
    markdown = (out / "localisation.md").read_text(encoding="utf-8")
    assert "| layercam@block6d_expand_activation |" in markdown and markdown in capsys.readouterr().out


def test_an_unknown_layer_is_one_sentence(boxes_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["localisation", "--model", str(BUNDLED), "--boxes", str(boxes_file),
                 "--method", "layercam@no_such_layer"])  # fmt: skip
    assert code == 2
    assert "'no_such_layer' is not a layer of the model" in capsys.readouterr().err
