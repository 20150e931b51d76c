"""The command line without a model: help, refusals that come before TensorFlow loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--repository", "--name", "--version", "--parity-images", "--tolerance", "--data-root",
                   "--fp16", "--int8", "--force", "--split"):  # fmt: skip
        assert option in text


def test_a_name_that_is_not_a_url_segment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tmp_path / "run"), "--repository", str(tmp_path / "models"), "--name", "../escape"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error: --name '../escape' is not usable as a folder and URL segment: use 1-64 letters, digits, '.', "
        "'_' or '-', starting with a letter or digit\n"
    )
    assert not (tmp_path / "models").exists()


def test_a_taken_name_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    (tmp_path / "models" / "taken").mkdir(parents=True)
    code = (
        "import sys; from exporter.cli import main; code = main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules; raise SystemExit(code)"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, "run", "--repository", str(tmp_path / "models"), "--name", "taken"],
        capture_output=True,
        text=True,
    )

    assert done.returncode == 2
    assert done.stderr == (
        f"error: {tmp_path / 'models' / 'taken'} already exists; "
        "pass --force to replace it or choose another --name\n"
    )


@pytest.mark.slow
def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tmp_path), "--repository", str(tmp_path / "models"), "--name", "nothing"])

    assert code == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is not a training run: run.json is missing\n"
    assert list((tmp_path / "models").iterdir()) == []
