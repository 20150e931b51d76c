"""A tiny real training run (seed002-cnn at 64 px on 40 Sartaj images) and its export, shared by the tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

SARTAJ_FOLDERS = {
    "glioma": "glioma_tumor",
    "meningioma": "meningioma_tumor",
    "no_tumor": "no_tumor",
    "pituitary": "pituitary_tumor",
}
PER_CLASS = {"train": 6, "val": 2, "test": 2}  # 40 images: 24 train, 8 val, 8 test
ENTRY_NAME = "tiny-cnn"


def write_tiny_split(data_root: Path, path: Path) -> Path:
    """A ``brain-mri-split/1`` manifest of the first 10 Sartaj training images of each class."""
    root = data_root / "sartaj-brain-tumor-mri"
    subsets: dict[str, list[dict[str, Any]]] = {name: [] for name in PER_CLASS}
    for label, folder in SARTAJ_FOLDERS.items():
        files = iter(sorted((root / "Training" / folder).iterdir())[: sum(PER_CLASS.values())])
        for subset, count in PER_CLASS.items():
            for file in (next(files) for _ in range(count)):
                digest = hashlib.sha256(file.read_bytes()).hexdigest()
                item = {"root": 0, "path": str(file.relative_to(root)), "label": label, "sha256": digest}
                subsets[subset].append({**item, "group": len(subsets[subset]) + 100 * len(subsets)})
    manifest = {
        "format": "brain-mri-split/1",
        "roots": [str(root)],
        "task": "4class",
        "classes": list(SARTAJ_FOLDERS),
        "seed": 0,
        "subsets": subsets,
    }
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run directory: one epoch of seed002-cnn at 64 px, its report included."""
    from training.cli import build_parser
    from training.commands.train import options_from_args
    from training.runs import train_run

    work = tmp_path_factory.mktemp("tiny-run")
    split = write_tiny_split(data_root, work / "split.json")
    args = build_parser().parse_args(
        ["train", "--split", str(split), "--backbone", "seed002-cnn", "--out", str(work / "run"),
         "--epochs-finetune", "1", "--batch-size", "8", "--no-cache", "--keras-verbose", "0"]
    )  # fmt: skip
    train_run(options_from_args(args))
    return work / "run"


@pytest.fixture(scope="session")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/tiny-cnn`` exported from the tiny run with the command's defaults (32 parity images)."""
    from exporter.cli import main

    repository = tmp_path_factory.mktemp("repository") / "models"
    code = main([str(tiny_run), "--repository", str(repository), "--name", ENTRY_NAME, "--version", "0.1"])
    assert code == 0
    return repository / ENTRY_NAME
