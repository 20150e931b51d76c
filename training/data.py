"""A split subset as arrays: images decoded and preprocessed once, then cached on disk as uint8.

Every image goes through the shared preprocessing (``service.preprocessing.preprocess_bytes`` with the run's
recipe), exactly what the service does to an upload, and is rounded to uint8 (at most 0.5 grey level away from
the float32 the service feeds the model). The arrays are cached as ``.npz`` under the cache folder, keyed by
the split file's sha256, the subset, the recipe and the preprocessing code, so a second run of any backend
(TensorFlow, JAX, PyTorch) starts training at once and a change to the preprocessing never reads stale images.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

import service.preprocessing
from service.preprocessing import ImageError, Recipe, preprocess_bytes
from training.errors import TrainingError
from training.splits import SplitItem, SplitManifest

DEFAULT_CACHE_DIR = Path("~/.cache/brain-tumour-mri/arrays").expanduser()
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
CACHE_FORMAT = 1
PROGRESS_EVERY_S = 5.0


class DataError(TrainingError):
    """An image of the split cannot be read or decoded, or a subset needed for training is empty."""


@dataclass(frozen=True)
class SubsetArrays:
    """One subset: ``images`` (N, h, w, 3) uint8 RGB, ``labels`` (N,) class indices, ``sha256`` per image."""

    name: str
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    sha256: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_sha256(recipe: Recipe) -> str:
    """Hex sha256 of the recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()


def preprocessing_code_sha256() -> str:
    """Hex sha256 of the shared preprocessing package's source: a code change invalidates the cache."""
    digest = hashlib.sha256()
    for source in sorted(Path(service.preprocessing.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def cache_path(cache_dir: Path, split_sha256: str, subset: str, recipe: Recipe) -> Path:
    """``<split>-<subset>-<recipe and code>.npz`` in ``cache_dir``."""
    key = hashlib.sha256(f"{CACHE_FORMAT}:{recipe_sha256(recipe)}:{preprocessing_code_sha256()}".encode())
    return cache_dir / f"{split_sha256[:16]}-{subset}-{recipe.name}-{key.hexdigest()[:16]}.npz"


def load_subset(
    manifest: SplitManifest,
    split_sha256: str,
    subset: str,
    recipe: Recipe,
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int = DEFAULT_WORKERS,
    quiet: bool = False,
) -> SubsetArrays:
    """The subset's images through ``recipe`` and their class indices, from the cache when it has them."""
    items = manifest.items(subset)
    labels = np.array([manifest.class_index(item.label) for item in items], dtype=np.int64)  # (N,)
    sha256 = tuple(item.sha256 for item in items)
    path = cache_path(cache_dir, split_sha256, subset, recipe) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = _read_cache(path, sha256)
        if cached is not None:
            if not quiet:
                print(f"{subset}: {len(items)} images from the cache {path}", file=sys.stderr)
            return SubsetArrays(subset, cached, labels, sha256)
    images = preprocess_items(items, recipe, workers=workers, label=subset, quiet=quiet)
    if path is not None:
        _write_cache(path, images, sha256)
    return SubsetArrays(subset, images, labels, sha256)


def preprocess_items(
    items: Sequence[SplitItem], recipe: Recipe, *, workers: int = 1, label: str = "images", quiet: bool = True
) -> npt.NDArray[np.uint8]:
    """(N, h, w, 3) uint8: each item's file through ``recipe``, rounded; threads share the decoding."""
    height, width = recipe.size
    images = np.empty((len(items), height, width, 3), dtype=np.uint8)
    started = last = time.monotonic()

    def one(index: int) -> None:
        images[index] = preprocess_file(items[index].path, recipe)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(one, range(len(items))), start=1):
            now = time.monotonic()
            if not quiet and (now - last >= PROGRESS_EVERY_S or done == len(items)):
                last = now
                print(f"preprocessing {label}: {done}/{len(items)} ({now - started:.1f} s)", file=sys.stderr)
    return images


def preprocess_file(path: Path, recipe: Recipe) -> npt.NDArray[np.uint8]:
    """(h, w, 3) uint8: one file through the shared preprocessing, rounded to the nearest grey level."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        pixels = preprocess_bytes(data, recipe)  # (h, w, 3) float32 in [0, 255]
    except ImageError as error:
        raise DataError(f"cannot use {path}: {error.message}") from None
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _read_cache(path: Path, sha256: tuple[str, ...]) -> npt.NDArray[np.uint8] | None:
    """The cached images, or None when the file is unreadable or holds other images."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if tuple(str(s) for s in cached["sha256"]) != sha256:
                return None
            images: npt.NDArray[np.uint8] = cached["images"]
            return images
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, images: npt.NDArray[np.uint8], sha256: tuple[str, ...]) -> None:
    """Write atomically: an interrupted run never leaves a half-written cache file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, images=images, sha256=np.array(sha256, dtype="U64"))
    os.replace(tmp.name, path)
