"""Exact and near-duplicate detection.

Exact duplicates share the sha256 of their bytes. Near duplicates (a re-encoded, resized or brightened copy,
or an adjacent slice of the same scan) share most bits of a 64-bit DCT perceptual hash; images within a small
Hamming radius are joined with union-find, and whole groups are later assigned to one subset.

Choice of the default radius (measured on the distinct images of both real sets): the hash is balanced (31 of
its 63 AC bits are set), so distances are always even and radius 4 equals radius 5. Up to radius 4 the largest
group in Sartaj holds 7 images and only ~1% of linked pairs cross class folders (mostly known label noise); at
radius 6 union-find starts chaining different patients (groups of 69 and 48; ~11% of the pairs at distance 6
cross classes), and at radius 8 one group swallows 815 of 3027 images. Hence radius 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

PHASH_NAME = "phash-dct-64"
DEFAULT_RADIUS = 4

_POPCOUNT_TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash_dct(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image (uint8, (H, W, 3) RGB or (H, W) grey).

    Greyscale, area-resize to 32x32, 2-D DCT, keep the top-left 8x8 low frequencies, set each bit where the
    coefficient exceeds the median of the 63 AC coefficients. The DC bit (overall brightness) is always 0.
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb  # (H, W) uint8
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)  # (32, 32)
    low = np.asarray(cv2.dct(small), dtype=np.float32)[:8, :8].ravel()  # (64,) row-major, low[0] is DC
    bits = low > np.median(low[1:])  # (64,) bool
    bits[0] = False
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (same shape, uint8)."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(values).astype(np.uint8)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)  # (..., 8)
    return _POPCOUNT_TABLE[as_bytes].sum(axis=-1, dtype=np.uint8)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two uint64 hash vectors: (len(a), len(b)) uint8."""
    return _popcount(a[:, None] ^ b[None, :])


def near_pairs(hashes: Sequence[int], radius: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose hashes differ in at most ``radius`` bits, computed block by block."""
    h = np.asarray(hashes, dtype=np.uint64)  # (n,)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for start in range(0, len(h), block):
        dist = hamming_matrix(h[start : start + block], h)  # (b, n)
        rows, cols = np.nonzero(dist <= radius)
        rows = rows + start
        upper = cols > rows
        firsts.append(rows[upper])
        seconds.append(cols[upper])
    if not firsts:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    return np.concatenate(firsts), np.concatenate(seconds)


def group_near_duplicates(hashes: Sequence[int], radius: int = DEFAULT_RADIUS) -> list[int]:
    """Group id per hash: connected components of the "within ``radius`` bits" graph.

    Ids are numbered in order of each group's first member, so they depend only on the input order.
    """
    return _components(len(hashes), [near_pairs(hashes, radius)])


def _components(count: int, edges: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """Union-find over ``count`` nodes joined by the index pairs of ``edges``: a group id per node, numbered
    in order of each group's first member."""
    parent = list(range(count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for firsts, seconds in edges:
        for i, j in zip(firsts, seconds, strict=True):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    ids: dict[int, int] = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(count)]


DIHEDRAL: tuple[str, ...] = ("identity", "flip-lr", "flip-ud", "rotate-180", "transpose", "rotate-90",
                             "rotate-270", "anti-transpose")  # fmt: skip
"""The 8 flips and quarter-turn rotations of a square (the dihedral group D4), in :func:`dihedral_images`'s
order."""


def dihedral_images(image: np.ndarray) -> list[np.ndarray]:
    """The image under each of the 8 transforms of :data:`DIHEDRAL` (left-right mirrors, upside-down copies
    and quarter turns, which public brain MRI collections hold of one another)."""
    transposed = np.swapaxes(image, 0, 1)
    return [
        image,
        image[:, ::-1],
        image[::-1, :],
        image[::-1, ::-1],
        transposed,
        transposed[:, ::-1],  # 90 degrees clockwise
        transposed[::-1, :],  # 90 degrees anticlockwise
        transposed[::-1, ::-1],
    ]


def dihedral_phashes(rgb: np.ndarray) -> tuple[int, ...]:
    """:func:`phash_dct` of the image under each of the 8 transforms (index 0: the image itself)."""
    return tuple(phash_dct(np.ascontiguousarray(variant)) for variant in dihedral_images(rgb))


def group_near_duplicates_dihedral(
    hash_sets: Sequence[Sequence[int]], radius: int = DEFAULT_RADIUS, block: int = 1024
) -> list[int]:
    """Like :func:`group_near_duplicates`, but two images are near when *some* flip or rotation of one is
    within ``radius`` bits of the other (``hash_sets[i]`` from :func:`dihedral_phashes`)."""
    base = np.asarray([hashes[0] for hashes in hash_sets], dtype=np.uint64)  # (n,)
    edges = []
    for transform in range(len(DIHEDRAL)):
        variants = np.asarray([hashes[transform] for hashes in hash_sets], dtype=np.uint64)  # (n,)
        for start in range(0, len(base), block):
            dist = hamming_matrix(variants[start : start + block], base)  # (b, n): T(image i) against j
            rows, cols = np.nonzero(dist <= radius)
            edges.append((rows + start, cols))  # (an image and itself join nothing)
    return _components(len(hash_sets), edges)
