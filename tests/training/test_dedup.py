"""Perceptual hash, Hamming grouping and the per-file hash cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training import hashing
from training.datasets import ImageFile
from training.dedup import _POPCOUNT_TABLE, group_near_duplicates, hamming_matrix, near_pairs, phash_dct
from training.hashing import FileHashes, compute_hashes, hash_bytes


def picture(seed: int) -> np.ndarray:
    """A smooth random RGB picture, (80, 96, 3) uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    grey = cv2.resize(small, (96, 80), interpolation=cv2.INTER_CUBIC)  # (80, 96)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def encode(rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def test_phash_is_64_bit_balanced_and_ignores_brightness_and_reencoding() -> None:
    original = phash_dct(picture(1))
    brighter = np.clip(picture(1).astype(np.int16) + 12, 0, 255).astype(np.uint8)
    reencoded = hash_bytes(encode(brighter, ".jpg")).phash

    assert 0 <= original < 2**64
    assert original.bit_count() == 31  # 31 of the 63 AC coefficients lie above their median
    assert original >> 63 == 0  # the DC bit is always 0
    assert reencoded is not None and distance(original, reencoded) <= 4
    assert all(distance(original, phash_dct(picture(seed))) > 8 for seed in range(2, 12))


def test_popcount_fallback_matches_numpy() -> None:
    values = np.random.default_rng(0).integers(0, 2**63, size=(50,), dtype=np.uint64) * np.uint64(2)
    fallback = _POPCOUNT_TABLE[values.view(np.uint8).reshape(-1, 8)].sum(axis=1)
    assert np.array_equal(hamming_matrix(values, np.zeros(1, dtype=np.uint64))[:, 0], fallback)
    assert fallback.tolist() == [int(v).bit_count() for v in values]


def test_near_pairs_blockwise_equals_the_full_matrix() -> None:
    hashes = [int(v) for v in np.random.default_rng(1).integers(0, 2**16, size=(300,), dtype=np.uint64)]
    i, j = near_pairs(hashes, radius=3, block=64)
    full = np.array([[distance(a, b) for b in hashes] for a in hashes])
    expected = {(a, b) for a, b in zip(*np.nonzero(full <= 3), strict=True) if a < b}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected


def test_groups_are_connected_components_numbered_by_first_member() -> None:
    # 0 ~ 2 (2 bits), 2 ~ 4 (2 bits): one chain; 0 and 4 differ in 4 bits but are joined through 2
    hashes = [0b0000, 0xFFFF_0000, 0b0011, 0xFFFF_FF00, 0b1111, 0b111 << 40]
    assert group_near_duplicates(hashes, radius=2) == [0, 1, 0, 2, 0, 3]
    assert group_near_duplicates(hashes, radius=0) == [0, 1, 2, 3, 4, 5]
    assert group_near_duplicates([], radius=4) == []


def test_undecodable_bytes_are_reported_not_raised() -> None:
    result = hash_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    assert result.phash is None
    assert result.error is not None and result.error.startswith("ImageDecodeError: ")
    assert len(result.sha256) == 64


def test_png_data_under_a_jpg_name_is_decoded_by_content(tmp_path: Path) -> None:
    path = tmp_path / "y355.jpg"
    path.write_bytes(encode(picture(3), ".png"))
    assert hashing.hash_file(path).phash == phash_dct(picture(3))


def test_cache_serves_unchanged_files_and_rehashes_changed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    files = []
    for k in range(3):
        path = root / "no" / f"no{k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(picture(k)))
        files.append(ImageFile(0, f"no/{k}.jpg", "no_tumor", path))
    cache = tmp_path / "cache"
    first = compute_hashes(files, [root], cache_dir=cache, workers=1)

    calls: list[Path] = []
    real_hash_file = hashing.hash_file

    def counting_hash_file(path: Path) -> FileHashes:
        calls.append(path)
        return real_hash_file(path)

    monkeypatch.setattr(hashing, "hash_file", counting_hash_file)
    assert compute_hashes(files, [root], cache_dir=cache, workers=1) == first
    assert calls == []

    files[1].path.write_bytes(encode(picture(7)))
    second = compute_hashes(files, [root], cache_dir=cache, workers=1)
    assert calls == [files[1].path]
    assert second[0] == first[0] and second[1] != first[1]


@pytest.mark.realdata
def test_flips_and_quarter_turns_of_a_real_slice_join_its_group(data_root: Path) -> None:
    from service.preprocessing import decode_image
    from training.dedup import DIHEDRAL, dihedral_images, dihedral_phashes, group_near_duplicates_dihedral

    folder = data_root / "sartaj-brain-tumor-mri" / "Testing" / "glioma_tumor"
    first, other = (decode_image(path.read_bytes()) for path in sorted(folder.glob("*.jpg"))[:2])
    variants = dihedral_images(first)
    assert len(variants) == len(DIHEDRAL) == 8
    assert np.array_equal(variants[5], np.rot90(first, k=-1)) and np.array_equal(variants[6], np.rot90(first))
    copies = [np.ascontiguousarray(variant) for variant in variants[1:]]
    hash_sets = [dihedral_phashes(image) for image in (first, *copies, other)]
    # the plain hash does not see a mirrored copy as a near-duplicate; the dihedral grouping does
    plain = group_near_duplicates([hashes[0] for hashes in hash_sets])
    assert len(set(plain[:8])) > 1
    grouped = group_near_duplicates_dihedral(hash_sets)
    assert grouped[:8] == [0] * 8 and grouped[8] == 1  # an unrelated slice stays apart


@pytest.mark.realdata
def test_the_mirrors_command_reports_every_image_of_a_split(tiny_split: Path, tmp_path: Path) -> None:
    import json

    from training.cli import main

    assert main(["mirrors", "--split", str(tiny_split), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "mirrors.json").read_text(encoding="utf-8"))
    row = report["splits"][tiny_split.stem]
    assert row["images"] == 40 and report["unreadable"] == 0
    assert row["groups_with_flips"] <= row["groups_without_flips"] <= 40
    assert row["groups_straddling_subsets"] <= row["groups_with_flips"]
    assert "| split | images |" in (tmp_path / "mirrors.md").read_text(encoding="utf-8")
