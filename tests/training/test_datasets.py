"""Discovery of the three published folder layouts, and the tasks built on their labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets import DiscoveryError, detect_layout, discover, discover_root, looks_like_image
from training.tasks import TaskError, decide_label, parse_task


def write_image(path: Path, seed: int = 0, ext: str = ".jpg") -> Path:
    """A small smooth random picture encoded as ``ext`` (the encoding, not only the name)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    image = cv2.resize(small, (48, 40), interpolation=cv2.INTER_CUBIC)  # (40, 48) uint8
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path


def test_sartaj_layout_maps_folders_and_keeps_awkward_names(tmp_path: Path) -> None:
    for split in ("Training", "Testing"):
        for folder in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
            write_image(tmp_path / split / folder / "gg (1).jpg")
    write_image(tmp_path / "Training" / "glioma_tumor" / "image(2) copy.jpg")

    found = discover_root(tmp_path)

    assert found.layout == "sartaj"
    assert len(found.files) == 9
    by_path = {f.rel_path: f.label for f in found.files}
    assert by_path["Training/glioma_tumor/gg (1).jpg"] == "glioma"
    assert by_path["Training/glioma_tumor/image(2) copy.jpg"] == "glioma"
    assert by_path["Testing/meningioma_tumor/gg (1).jpg"] == "meningioma"
    assert by_path["Testing/no_tumor/gg (1).jpg"] == "no_tumor"
    assert by_path["Training/pituitary_tumor/gg (1).jpg"] == "pituitary"
    assert all(f.path == tmp_path.resolve() / f.rel_path for f in found.files)


def test_kaggle_layout_is_detected_case_insensitively(tmp_path: Path) -> None:
    names = {"Glioma": "glioma", "MENINGIOMA": "meningioma", "notumor": "no_tumor", "Pituitary": "pituitary"}
    for folder in names:
        write_image(tmp_path / "TRAINING" / folder / "Tr-x_0001.jpg")
        write_image(tmp_path / "testing" / folder / "Te-x_0001.jpg")

    found = discover_root(tmp_path)

    assert found.layout == "kaggle-7023"
    labels = {f.rel_path: f.label for f in found.files}
    assert len(labels) == 8
    for folder, label in names.items():
        assert labels[f"TRAINING/{folder}/Tr-x_0001.jpg"] == label
        assert labels[f"testing/{folder}/Te-x_0001.jpg"] == label


def test_br35h_layout_ignores_the_unlabelled_pred_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "yes" / "y0.jpg")
    write_image(tmp_path / "no" / "no0.jpg")
    write_image(tmp_path / "pred" / "pred0.jpg")

    found = discover_root(tmp_path)

    assert found.layout == "br35h"
    assert [(f.rel_path, f.label) for f in found.files] == [
        ("no/no0.jpg", "no_tumor"),
        ("yes/y0.jpg", "tumor"),
    ]


def test_class_folders_directly_under_the_root(tmp_path: Path) -> None:
    write_image(tmp_path / "glioma_tumor" / "a.jpg")
    write_image(tmp_path / "no_tumor" / "b.jpg")

    layout, folders = detect_layout(tmp_path)

    assert layout.name == "sartaj"
    assert [label for _, label in folders] == ["glioma", "no_tumor"]


def test_png_inside_jpg_and_extensionless_images_are_found_non_images_skipped(tmp_path: Path) -> None:
    png_as_jpg = write_image(tmp_path / "no" / "no396.jpg", ext=".png")
    extensionless = write_image(tmp_path / "no" / "scan", ext=".png")
    (tmp_path / "no" / "notes.txt").write_text("not an image")
    (tmp_path / "no" / ".DS_Store").write_bytes(b"\x00\x01")
    write_image(tmp_path / "yes" / "y1.jpg")

    found = discover_root(tmp_path)

    assert png_as_jpg.read_bytes().startswith(b"\x89PNG")
    assert looks_like_image(extensionless)
    assert [f.rel_path for f in found.files] == ["no/no396.jpg", "no/scan", "yes/y1.jpg"]
    assert found.skipped_non_images == 1


def test_several_roots_are_indexed_in_order(tmp_path: Path) -> None:
    write_image(tmp_path / "sartaj" / "Testing" / "no_tumor" / "1.jpg")
    write_image(tmp_path / "br35h" / "no" / "no1.jpg")

    roots = discover([tmp_path / "sartaj", tmp_path / "br35h"])

    assert [(r.layout, r.files[0].root) for r in roots] == [("sartaj", 0), ("br35h", 1)]


def test_missing_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        DiscoveryError, match=r"data directory .*missing does not exist or is not a directory"
    ):
        discover_root(tmp_path / "missing")


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(
        DiscoveryError, match=r"no class folders found under .*; expected one of the layouts sartaj"
    ):
        discover_root(tmp_path)


def test_the_same_root_twice_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "yes" / "y0.jpg")
    with pytest.raises(DiscoveryError, match="more than once"):
        discover([tmp_path, tmp_path / "yes" / ".."])


def test_tasks_have_canonical_classes() -> None:
    assert parse_task("4class").classes == ("glioma", "meningioma", "no_tumor", "pituitary")
    assert parse_task("binary").classes == ("no_tumor", "tumor")
    assert parse_task("Pairwise:Glioma").classes == ("no_tumor", "glioma")
    binary = parse_task("binary")
    assert [binary.label_for(x) for x in ("glioma", "tumor", "no_tumor")] == ["tumor", "tumor", "no_tumor"]
    pairwise = parse_task("pairwise:pituitary")
    assert [pairwise.label_for(x) for x in ("pituitary", "glioma", "tumor")] == ["pituitary", None, None]


@pytest.mark.parametrize("name", ["3class", "pairwise:no_tumor", "pairwise:", "tumour"])
def test_unknown_task_names_the_valid_ones(name: str) -> None:
    with pytest.raises(TaskError) as caught:
        parse_task(name)
    assert str(caught.value) == (
        f"unknown task {name!r}; valid tasks are 4class, binary, pairwise:glioma, pairwise:meningioma, "
        "pairwise:pituitary"
    )


@pytest.mark.parametrize(
    ("task", "labels", "label", "conflict"),
    [
        ("4class", {"glioma"}, "glioma", False),
        ("4class", {"glioma", "meningioma"}, None, True),
        ("binary", {"glioma", "meningioma"}, "tumor", False),
        ("4class", {"glioma", "tumor"}, "glioma", False),  # Br35H "yes" refined by a Sartaj copy
        ("4class", {"tumor"}, None, False),  # a tumour of unknown type is left out
        ("binary", {"no_tumor", "tumor"}, None, True),
        ("pairwise:glioma", {"meningioma"}, None, False),
        ("pairwise:glioma", {"meningioma", "no_tumor"}, None, True),
    ],
)
def test_labels_of_identical_copies(task: str, labels: set[str], label: str | None, conflict: bool) -> None:
    decision = decide_label(parse_task(task), labels)
    assert (decision.label, decision.conflict) == (label, conflict)
