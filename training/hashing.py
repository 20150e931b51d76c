"""Per-file hashes (sha256 of the bytes, DCT pHash of the decoded pixels), cached and computed in parallel.

The cache is one JSON file per data root under the cache directory, keyed by (relative path, size, mtime), so
a second run over an unchanged data set decodes nothing. Decode failures are not cached: they are retried.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.preprocessing import decode_image
from training.datasets import ImageFile
from training.dedup import PHASH_NAME, phash_dct
from training.errors import TrainingError

CACHE_FORMAT = f"brain-mri-hash-cache/1+{PHASH_NAME}"
DEFAULT_CACHE_DIR = Path("~/.cache/brain-tumour-mri/hashes")
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
_POOL_MIN_FILES = 64  # below this a process pool costs more than it saves

ProgressCallback = Callable[[int, int], None]
"""Called with (done, total) while hashing."""


@dataclass(frozen=True)
class FileHashes:
    """Hashes of one file: ``phash`` is None (and ``error`` says why) when the bytes do not decode."""

    sha256: str
    phash: int | None
    error: str | None = None


def hash_bytes(data: bytes) -> FileHashes:
    """sha256 and pHash of an image file's bytes; a decode failure is returned, not raised."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        rgb = decode_image(data)  # (H, W, 3) uint8
    except Exception as exc:  # one bad file among thousands is reported, never fatal
        return FileHashes(digest, None, f"{type(exc).__name__}: {exc}")
    return FileHashes(digest, phash_dct(rgb))


def hash_file(path: Path) -> FileHashes:
    """sha256 and pHash of one file; :class:`TrainingError` if it cannot be read at all."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainingError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return hash_bytes(data)


def _cache_file(cache_dir: Path, root: Path) -> Path:
    return cache_dir / f"{hashlib.sha256(str(root).encode()).hexdigest()[:20]}.json"


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class HashCache:
    """Cached hashes of the files under one data root."""

    def __init__(self, cache_dir: Path, root: Path) -> None:
        self.path = _cache_file(cache_dir, root)
        self.root = root
        self.entries: dict[str, list[object]] = {}
        self.dirty = False
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(raw, dict) and raw.get("format") == CACHE_FORMAT and raw.get("root") == str(root):
            entries = raw.get("entries")
            self.entries = entries if isinstance(entries, dict) else {}

    def get(self, file: ImageFile) -> FileHashes | None:
        """The cached hashes of ``file`` if its size and mtime are unchanged."""
        entry = self.entries.get(file.rel_path)
        if not isinstance(entry, list) or len(entry) != 4:
            return None
        size, mtime_ns, sha, phash = entry
        if (size, mtime_ns) != _stat_key(file.path) or not isinstance(sha, str) or not isinstance(phash, str):
            return None
        return FileHashes(sha, int(phash, 16))

    def put(self, file: ImageFile, hashes: FileHashes) -> None:
        """Remember the hashes of a file that decoded."""
        if hashes.phash is None:
            return
        size, mtime_ns = _stat_key(file.path)
        self.entries[file.rel_path] = [size, mtime_ns, hashes.sha256, f"{hashes.phash:016x}"]
        self.dirty = True

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is only a warning."""
        if not self.dirty:
            return
        payload = {"format": CACHE_FORMAT, "root": str(self.root), "entries": self.entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError as exc:
            print(f"warning: could not write the hash cache {self.path}: {exc}", file=sys.stderr)


def _hash_paths(paths: Sequence[Path], workers: int) -> Iterator[FileHashes]:
    """Hashes of ``paths`` in order, from a pool of ``workers`` processes when that pays off."""
    if workers <= 1 or len(paths) < _POOL_MIN_FILES:
        yield from map(hash_file, paths)
        return
    # spawn, not fork: the parent may hold threads (OpenCV's, a caller's) that fork would copy mid-state
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(hash_file, paths, chunksize=16)


def compute_hashes(
    files: Sequence[ImageFile],
    roots: Sequence[Path],
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
) -> list[FileHashes]:
    """Hashes of ``files`` in order: from the cache where possible, else decoded by ``workers`` processes."""
    caches = [HashCache(cache_dir.expanduser(), root) for root in roots] if cache_dir is not None else None
    results: dict[int, FileHashes] = {}
    for index, file in enumerate(files):
        cached = caches[file.root].get(file) if caches is not None else None
        if cached is not None:
            results[index] = cached
    todo = [index for index in range(len(files)) if index not in results]
    if progress is not None:
        progress(len(results), len(files))
    for index, hashes in zip(todo, _hash_paths([files[i].path for i in todo], workers), strict=True):
        results[index] = hashes
        if caches is not None:
            caches[files[index].root].put(files[index], hashes)
        if progress is not None and (len(results) % 250 == 0 or len(results) == len(files)):
            progress(len(results), len(files))
    for cache in caches or ():
        cache.save()
    return [results[index] for index in range(len(files))]
