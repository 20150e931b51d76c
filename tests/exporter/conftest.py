"""A tiny real training run (seed002-cnn at 64 px on 40 Sartaj images) and its export, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ENTRY_NAME = "tiny-cnn"


@pytest.fixture(scope="session")
def tiny_run(tiny_split: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run directory: one epoch of seed002-cnn at 64 px, its report included."""
    from training.cli import build_parser
    from training.commands.train import options_from_args
    from training.runs import train_run

    work = tmp_path_factory.mktemp("tiny-run")
    args = build_parser().parse_args(
        ["train", "--split", str(tiny_split), "--backbone", "seed002-cnn", "--out", str(work / "run"),
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
