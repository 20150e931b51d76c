"""Discovery of class-per-folder MRI data sets.

Three published layouts are recognised from their folder names (case-insensitive):

- ``sartaj``      — ``Training|Testing/{glioma_tumor,meningioma_tumor,no_tumor,pituitary_tumor}/``
- ``kaggle-7023`` — ``Training|Testing/{glioma,meningioma,notumor,pituitary}/``
- ``br35h``       — ``yes/``, ``no/`` (``pred/`` holds unlabelled images and is ignored)

Class folders may also sit directly under the root (e.g. the ``Training`` folder given on its own). Folder
names map to the canonical source labels ``glioma``, ``meningioma``, ``no_tumor``, ``pituitary`` and, for a
tumour of unknown type (Br35H ``yes``), ``tumor``.

Images are recognised by their first bytes (JPEG, PNG, BMP, TIFF, GIF, WebP) or a permissive extension list;
the name never decides how a file is decoded (Br35H has PNG data under ``.jpg`` names).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import TrainingError

#: Canonical labels a folder can carry; ``tumor`` is a tumour of unknown type.
GLIOMA, MENINGIOMA, NO_TUMOR, PITUITARY, TUMOR = "glioma", "meningioma", "no_tumor", "pituitary", "tumor"
TUMOUR_TYPES: tuple[str, ...] = (GLIOMA, MENINGIOMA, PITUITARY)
SOURCE_LABELS: tuple[str, ...] = (GLIOMA, MENINGIOMA, NO_TUMOR, PITUITARY, TUMOR)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}
)
_MAGIC_PREFIXES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"GIF87a",
    b"GIF89a",
)


class DiscoveryError(TrainingError):
    """A data directory does not exist or matches none of the known layouts."""


@dataclass(frozen=True)
class Layout:
    """A published folder layout: optional split folders, then one folder per class."""

    name: str
    class_dirs: dict[str, str]
    split_dirs: tuple[str, ...] = ()
    ignored_dirs: tuple[str, ...] = ()


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "sartaj",
        {
            "glioma_tumor": GLIOMA,
            "meningioma_tumor": MENINGIOMA,
            "no_tumor": NO_TUMOR,
            "pituitary_tumor": PITUITARY,
        },
        split_dirs=("training", "testing"),
    ),
    Layout(
        "kaggle-7023",
        {"glioma": GLIOMA, "meningioma": MENINGIOMA, "notumor": NO_TUMOR, "pituitary": PITUITARY},
        split_dirs=("training", "testing"),
    ),
    Layout("br35h", {"yes": TUMOR, "no": NO_TUMOR}, ignored_dirs=("pred",)),
)


@dataclass(frozen=True, order=True)
class ImageFile:
    """One labelled image file found under a data root."""

    root: int
    """Index of the data root (order of ``--data`` on the command line)."""
    rel_path: str
    """POSIX path relative to the root, as spelled on disk."""
    label: str = field(compare=False)
    """Canonical source label (one of :data:`SOURCE_LABELS`)."""
    path: Path = field(compare=False)
    """Absolute path."""


@dataclass(frozen=True)
class DiscoveredRoot:
    """What discovery found under one data root."""

    root: Path
    layout: str
    class_dirs: tuple[str, ...]
    """Class folders used, relative to the root."""
    files: tuple[ImageFile, ...]
    skipped_non_images: int


def looks_like_image(path: Path) -> bool:
    """True when the file has an image extension or starts with a known image signature."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return head.startswith(_MAGIC_PREFIXES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _subdirs(folder: Path) -> dict[str, Path]:
    """Visible subdirectories of ``folder`` keyed by lower-cased name."""
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _class_folders(root: Path, layout: Layout) -> list[tuple[Path, str]]:
    """(folder, label) of each class folder of ``layout`` under ``root``, directly or under a split folder."""
    found: list[tuple[Path, str]] = []
    top = _subdirs(root)
    parents = [root] + [top[name] for name in layout.split_dirs if name in top]
    for parent in parents:
        children = top if parent == root else _subdirs(parent)
        found.extend((children[name], label) for name, label in layout.class_dirs.items() if name in children)
    return sorted(found)


def detect_layout(root: Path) -> tuple[Layout, list[tuple[Path, str]]]:
    """The layout whose class folders ``root`` holds, and those folders; :class:`DiscoveryError` if none."""
    if not root.is_dir():
        raise DiscoveryError(f"data directory {root} does not exist or is not a directory")
    matches = [(layout, _class_folders(root, layout)) for layout in LAYOUTS]
    best = max(len(folders) for _, folders in matches)
    winners = [(layout, folders) for layout, folders in matches if len(folders) == best]
    if best == 0:
        expected = "; ".join(
            f"{layout.name}: {'|'.join(layout.split_dirs) + '/' if layout.split_dirs else ''}"
            f"{{{','.join(layout.class_dirs)}}}"
            for layout in LAYOUTS
        )
        raise DiscoveryError(f"no class folders found under {root}; expected one of the layouts {expected}")
    if len(winners) > 1:
        names = ", ".join(layout.name for layout, _ in winners)
        raise DiscoveryError(f"the folders under {root} fit several layouts equally well ({names})")
    return winners[0]


def _walk_files(folder: Path) -> Iterable[Path]:
    """Every visible regular file below ``folder``, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def discover_root(root: Path, index: int = 0) -> DiscoveredRoot:
    """Find every labelled image under one data root (``index`` is its position among the roots)."""
    root = root.resolve()
    layout, folders = detect_layout(root)
    files: list[ImageFile] = []
    skipped = 0
    for folder, label in folders:
        for path in _walk_files(folder):
            if not path.is_file():
                continue
            if not looks_like_image(path):
                skipped += 1
                continue
            files.append(ImageFile(index, path.relative_to(root).as_posix(), label, path))
    class_dirs = tuple(folder.relative_to(root).as_posix() for folder, _ in folders)
    return DiscoveredRoot(root, layout.name, class_dirs, tuple(sorted(files)), skipped)


def discover(roots: Sequence[Path]) -> list[DiscoveredRoot]:
    """Discover several roots; a root given twice is an error (it would duplicate every image)."""
    resolved = [Path(r).resolve() for r in roots]
    if len(set(resolved)) != len(resolved):
        raise DiscoveryError("the same data directory was given more than once")
    return [discover_root(root, index) for index, root in enumerate(resolved)]
