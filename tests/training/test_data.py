"""Cached preprocessed arrays, augmentation presets and the seeded PyDataset, on real MRI images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.preprocessing import make_recipe, preprocess_bytes
from training.augmentation import AUGMENTATIONS, seed003, seed004
from training.batches import ImageBatches
from training.data import DataError, cache_path, load_subset, preprocess_file
from training.splits import SplitItem, SplitManifest


def manifest_of(data_root: Path, count: int = 6) -> SplitManifest:
    folder = data_root / "sartaj-brain-tumor-mri" / "Training" / "pituitary_tumor"
    files = sorted(folder.iterdir())[:count]
    items = tuple(
        SplitItem(f, "pituitary" if i % 2 else "glioma", f"{i:064x}", i) for i, f in enumerate(files)
    )
    return SplitManifest(
        "4class", ("glioma", "meningioma", "no_tumor", "pituitary"), 0, {"train": items}, {}, {}
    )


@pytest.mark.realdata
def test_subset_is_preprocessed_once_then_read_from_the_cache(data_root: Path, tmp_path: Path) -> None:
    manifest = manifest_of(data_root)
    recipe = make_recipe("crop", 48)

    first = load_subset(manifest, "ab" * 32, "train", recipe, cache_dir=tmp_path, quiet=True)
    path = cache_path(tmp_path, "ab" * 32, "train", recipe)
    assert path.is_file()
    second = load_subset(manifest, "ab" * 32, "train", recipe, cache_dir=tmp_path, quiet=True)

    assert first.images.shape == (6, 48, 48, 3) and first.images.dtype == np.uint8
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(first.labels, [0, 3, 0, 3, 0, 3])
    # the shared preprocessing, rounded: at most half a grey level from what the service feeds the model
    exact = preprocess_bytes(manifest.items("train")[1].path.read_bytes(), recipe)
    assert np.abs(first.images[1].astype(np.float32) - exact).max() <= 0.5 + 1e-4
    # another recipe is another cache entry
    assert cache_path(tmp_path, "ab" * 32, "train", make_recipe("plain", 48)) != path


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")

    with pytest.raises(DataError, match=r"cannot use .*broken\.jpg: "):
        preprocess_file(broken, make_recipe("plain", 32))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentations_keep_shape_and_type_and_are_seeded(name: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    augment = AUGMENTATIONS[name]

    out = augment(image, np.random.default_rng(1))

    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, augment(image, np.random.default_rng(1)))


def test_seed004_only_rotates_and_flips() -> None:
    image = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    seen = set()
    for seed in range(40):
        out = seed004(image, np.random.default_rng(seed))
        assert sorted(out.ravel()) == sorted(image.ravel())
        seen.add(out.tobytes())
    assert len(seen) == 8  # the dihedral group of the square


def test_seed003_moves_the_image_a_little() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[16:48, 16:48] = 200

    out = seed003(image, np.random.default_rng(3))

    assert 0 < np.abs(out.astype(int) - image).mean() < 60


def test_batches_are_seeded_per_epoch_and_cover_every_image() -> None:
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10) % 3

    def epoch_batches(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        batches = ImageBatches(images, labels, 3, 4, augment="seed004", shuffle=True, seed=seed)
        return [batches[i] for i in range(len(batches))]

    first, again = epoch_batches(7), epoch_batches(7)
    assert len(first) == 3 and first[-1][0].shape == (2, 8, 8, 3)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert first[0][0].dtype == np.float32 and first[0][1].shape == (4, 3)
    assert sorted(np.concatenate([y for _, y in first]).argmax(axis=1)) == sorted(labels)

    plain = ImageBatches(images, labels, 3, 4)
    np.testing.assert_array_equal(plain[0][0], images[:4].astype(np.float32))
    plain.on_epoch_end()
    np.testing.assert_array_equal(plain[0][0], images[:4].astype(np.float32))  # no shuffling unless asked
