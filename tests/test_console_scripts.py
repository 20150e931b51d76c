"""Every command has a console script (``pyproject.toml``), installed beside the interpreter and working."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_console_script_points_at_a_main_and_answers_help() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"mri-serve", "mri-train", "mri-export", "mri-refit", "mri-hospital", "mri-bench"} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        installed = Path(sys.executable).parent / name
        assert installed.is_file(), f"{name} is not installed beside {sys.executable}: pip install -e ."
    for name in ("mri-serve", "mri-train", "mri-bench"):
        run = subprocess.run(
            [str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0 and "usage:" in run.stdout, (name, run.stderr[-500:])
