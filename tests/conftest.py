"""Shared fixtures: where the real MRI data sets live, and a tiny split of them for training runs.

Tests that depend on real images use ``data_root``. When the data cannot be found, CI (``CI`` set) *fails*
such a test — a green run that silently skipped every real-data check would prove nothing — while a
newcomer's ``make test`` skips it, runs the rest, and ends with one line saying where to get the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "datasets"
SARTAJ_FOLDERS = {
    "glioma": "glioma_tumor",
    "meningioma": "meningioma_tumor",
    "no_tumor": "no_tumor",
    "pituitary": "pituitary_tumor",
}
TINY_PER_CLASS = {"train": 6, "val": 2, "test": 2}  # 40 images: 24 train, 8 val, 8 test


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding ``sartaj-brain-tumor-mri/`` and ``br35h/`` (``MRI_DATA_ROOT`` overrides)."""
    root = Path(os.environ.get("MRI_DATA_ROOT", DEFAULT_DATA_ROOT)).resolve()
    if not (root / "sartaj-brain-tumor-mri").is_dir() or not (root / "br35h").is_dir():
        message = (
            f"The real MRI data sets were not found at {root}. Set MRI_DATA_ROOT to the folder that holds "
            "sartaj-brain-tumor-mri/ and br35h/."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        _MISSING_DATA.append(message)
        pytest.skip(message)
    return root


_MISSING_DATA: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line at the end when tests were skipped for want of the data (never in CI: there they fail)."""
    if _MISSING_DATA:
        terminalreporter.write_line(
            f"{_MISSING_DATA[0]} The tests that need them were skipped; get the Sartaj and Br35H sets "
            "(README, 'The two commands') and run make test again.",
            yellow=True,
        )


@pytest.fixture(scope="session")
def tiny_split(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``brain-mri-split/1`` manifest of the first 10 Sartaj training images of each class (40 in all)."""
    root = data_root / "sartaj-brain-tumor-mri"
    subsets: dict[str, list[dict[str, Any]]] = {name: [] for name in TINY_PER_CLASS}
    for label, folder in SARTAJ_FOLDERS.items():
        files = iter(sorted((root / "Training" / folder).iterdir())[: sum(TINY_PER_CLASS.values())])
        for subset, count in TINY_PER_CLASS.items():
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
    path = tmp_path_factory.mktemp("tiny-split") / "split.json"
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path
