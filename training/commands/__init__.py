"""Subcommands of ``python -m training``, one module each (registered in :mod:`training.cli`)."""

import json
from pathlib import Path
from typing import Any


def write_report(out: Path | None, name: str, summary: dict[str, Any], markdown: str, command: str) -> None:
    """``out/name.json`` (the summary and the command that made it) and ``out/name.md``; nothing when
    ``out`` is None (the command then only printed)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    report = json.dumps({**summary, "command": command}, indent=2)
    (out / f"{name}.json").write_text(report + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
