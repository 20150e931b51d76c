"""Writing a model-repository entry all at once: a hidden staging folder inside the repository, renamed into
place only when everything in it is written and checked.

A failed or interrupted export leaves neither a half-written ``models/<name>/`` nor its staging folder, and
an existing entry of the same name is replaced (with ``--force``) only by a complete one. Staging folders
start with a dot so that a service scanning the repository skips them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.errors import ExportError
from exporter.manifest import MANIFEST_FILE, NAME_PATTERN, load_manifest

STAGING_PREFIX = ".staging-"


def check_target(repository: Path, name: str, force: bool) -> Path:
    """``repository/name``; :class:`ExportError` for a bad name, or an existing entry without ``force``."""
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(
            f"--name {name!r} is not usable as a folder and URL segment: use 1-64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    if repository.exists() and not repository.is_dir():
        raise ExportError(f"the repository {repository} is not a folder")
    target = repository / name
    if (target.exists() or target.is_symlink()) and not force:
        raise ExportError(
            f"{target} already exists{_describe(target)}; pass --force to replace it or choose another --name"
        )
    return target


def _describe(target: Path) -> str:
    try:
        version = load_manifest(target / MANIFEST_FILE).get("version")
    except ExportError:
        return ""
    return f" (version {version})" if version is not None else ""


@contextmanager
def staged_entry(repository: Path, name: str, force: bool) -> Iterator[tuple[Path, Path]]:
    """Yield ``(staging, target)``; fill ``staging`` then call :func:`publish`. On any exception the
    staging folder is removed and ``target`` is left as it was.

    ``staging`` is ``repository/.staging-<random>/<name>``: it carries the entry's name, so the manifest
    validates there exactly as it will in place, and it lies on the same file system, so the rename is atomic.
    """
    check_target(repository, name, force)
    repository.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=repository))
    staging = holder / name
    staging.mkdir()
    try:
        yield staging, repository / name
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def publish(staging: Path, target: Path, force: bool) -> None:
    """Rename the complete ``staging`` folder to ``target``; an old entry is swapped out, then deleted."""
    check_target(target.parent, target.name, force)  # another export may have written it meanwhile
    if not (target.exists() or target.is_symlink()):
        os.rename(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-replaced-", dir=target.parent))
    os.rename(target, retired / target.name)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(retired / target.name, target)  # should this fail too, the old entry stays in `retired`
        retired.rmdir()
        raise
    shutil.rmtree(retired, ignore_errors=True)
