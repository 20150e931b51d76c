"""``python -m service`` before it serves: ``--help`` lists the settings, a busy port is one sentence."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_setting_with_its_default() -> None:
    run = _run("--help")
    assert run.returncode == 0 and run.stderr == ""
    for line in (
        "usage: python -m service",
        "MRI_PORT = 8000",
        "MRI_MAX_DECODE_MIB = 256",
        "MRI_API_KEYS = (empty)",
    ):
        assert line in run.stdout


def test_a_busy_port_names_the_setting_to_change() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = _run(env={"MRI_PORT": str(port), "MRI_HOST": "127.0.0.1"})
    assert run.returncode == 2
    assert run.stderr == (
        f"Port {port} on 127.0.0.1 is already in use; set MRI_PORT to a free port "
        "(or stop the server that holds it).\n"
    )
