"""Shared fixtures: where the real MRI data sets live.

Tests that depend on real images use ``data_root``. When the data cannot be found the test *fails*:
a green run that silently skipped every real-data check would prove nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding ``sartaj-brain-tumor-mri/`` and ``br35h/`` (``MRI_DATA_ROOT`` overrides)."""
    root = Path(os.environ.get("MRI_DATA_ROOT", DEFAULT_DATA_ROOT)).resolve()
    if not (root / "sartaj-brain-tumor-mri").is_dir() or not (root / "br35h").is_dir():
        pytest.fail(
            f"The real MRI data sets were not found at {root}. Set MRI_DATA_ROOT to the folder that holds "
            "sartaj-brain-tumor-mri/ and br35h/."
        )
    return root
