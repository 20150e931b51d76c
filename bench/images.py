"""Real images from a folder, read once into memory so that disk reads never enter a measurement."""

from __future__ import annotations

import mimetypes
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.errors import BenchError

IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"})


@dataclass(frozen=True)
class ImageFile:
    """One upload: a name (relative to the folder), its bytes and the content type it is sent with."""

    name: str
    data: bytes
    content_type: str


def load_images(folder: Path, limit: int, *, seed: int = 0) -> list[ImageFile]:
    """Up to ``limit`` images found under ``folder`` (recursively), a seeded sample when there are more."""
    if not folder.is_dir():
        raise BenchError(f"The image folder {folder} does not exist; pass --images with a folder of images.")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BenchError(
            f"There is no image ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}; pass --images with a "
            "folder of MRI slices."
        )
    if len(paths) > limit:
        paths = sorted(random.Random(seed).sample(paths, limit))
    return [
        ImageFile(
            name=path.relative_to(folder).as_posix(),
            data=path.read_bytes(),
            content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        )
        for path in paths
    ]
