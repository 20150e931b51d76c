"""crop_to_brain and brain_bounding_box on real MRI slices and on images built to break them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from service.preprocessing import brain_bounding_box, crop_to_brain, decode_image

SARTAJ = "sartaj-brain-tumor-mri/Training"
# Ten typical slices per class with a black background around the head (every 37th file; the few slices that
# fill their frame are left out here and covered by test_slices_that_fill_their_frame_are_kept_whole).
TYPICAL_SLICES = [
    *(f"{SARTAJ}/glioma_tumor/gg ({n}).jpg" for n in (1, 132, 166, 2, 232, 266, 3, 332, 366, 4)),
    *(f"{SARTAJ}/meningioma_tumor/{n}.jpg" for n in ("m (10)", "m (133)", "m (167)", "m (20)", "m (52)")),
    *(f"{SARTAJ}/meningioma_tumor/{n}.jpg" for n in ("m (86)", "m1(154)", "m1(189)", "m1(4)", "m1(73)")),
    *(f"{SARTAJ}/no_tumor/{n}.jpg" for n in ("1", "image (39)", "image(103)", "image(138)", "image(171)")),
    *(
        f"{SARTAJ}/no_tumor/{n}.jpg"
        for n in ("image(204)", "image(271)", "image(304)", "image(43)", "image(77)")
    ),
    *(f"{SARTAJ}/pituitary_tumor/p ({n}).jpg" for n in (1, 2, 232, 266, 3, 332, 366, 4, 432, 466)),
    *(f"br35h/yes/y{n}.jpg" for n in (0, 1064, 1098, 1130, 1164, 1198, 1230, 1264, 1330, 1)),
    *(f"br35h/no/{n}.jpg" for n in ("No12", "no1058", "no1091", "no1124", "no1191", "no1225", "no1259")),
    *(f"br35h/no/{n}.jpg" for n in ("no1292", "no1326", "no136")),
]
# Skull or a bright frame touching every border: the largest region is the whole image.
FRAME_FILLING_SLICES = ["br35h/yes/y134.jpg", "br35h/yes/y45.jpg", "br35h/yes/y350.jpg"]
# The seeds' largest contour is only part of the head here (the brain apart from its skull, a coronal slice
# cut off from the neck...): its box would crop the brain away, so min_tissue_kept keeps the whole image.
FRAGMENTED_SLICES = [
    f"{SARTAJ}/glioma_tumor/gg (581).jpg",
    f"{SARTAJ}/no_tumor/image(218).jpg",
    "br35h/no/no154.jpg",
]
TISSUE = 45  # the crop's default threshold
NEAR_BLACK = 20


def _grey(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), np.uint8)


@pytest.fixture(scope="module")
def slices(data_root: Path) -> dict[str, npt.NDArray[np.uint8]]:
    return {relative: decode_image((data_root / relative).read_bytes()) for relative in TYPICAL_SLICES}


@pytest.mark.realdata
def test_crop_keeps_the_brain_and_drops_the_black_border(slices: dict[str, npt.NDArray[np.uint8]]) -> None:
    assert len(slices) == 60
    removed_shares = []
    for relative, rgb in slices.items():
        grey = _grey(rgb)
        box = brain_bounding_box(rgb)
        assert box is not None, relative
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0], relative
        crop = crop_to_brain(rgb)
        np.testing.assert_array_equal(crop, rgb[y0:y1, x0:x1])
        assert crop.size < 0.95 * rgb.size, relative  # smaller
        ys, xs = np.nonzero(grey > TISSUE)
        assert x0 <= xs.mean() < x1 and y0 <= ys.mean() < y1, relative  # the tissue's centroid is kept
        dark_before = (grey < NEAR_BLACK).mean()
        dark_after = (_grey(crop) < NEAR_BLACK).mean()
        assert dark_after <= dark_before - 0.05, relative  # the share of near-black pixels drops
        removed_shares.append(1 - (_grey(crop) < NEAR_BLACK).sum() / (grey < NEAR_BLACK).sum())
    assert np.median(removed_shares) > 0.6  # most of the black is outside the box


@pytest.mark.realdata
@pytest.mark.parametrize("relative", FRAME_FILLING_SLICES)
def test_slices_that_fill_their_frame_are_kept_whole(data_root: Path, relative: str) -> None:
    rgb = decode_image((data_root / relative).read_bytes())
    assert crop_to_brain(rgb).shape == rgb.shape


@pytest.mark.realdata
def test_margin_widens_the_box_within_the_image(slices: dict[str, npt.NDArray[np.uint8]]) -> None:
    rgb = slices[TYPICAL_SLICES[0]]
    tight = brain_bounding_box(rgb)
    wide = brain_bounding_box(rgb, margin=10)
    huge = brain_bounding_box(rgb, margin=10_000)
    assert tight is not None and wide is not None
    assert wide == (tight[0] - 10, tight[1] - 10, tight[2] + 10, tight[3] + 10)
    assert huge == (0, 0, rgb.shape[1], rgb.shape[0])


@pytest.mark.realdata
@pytest.mark.parametrize("relative", FRAGMENTED_SLICES)
def test_a_fragment_of_the_head_is_not_cropped_to(data_root: Path, relative: str) -> None:
    rgb = decode_image((data_root / relative).read_bytes())
    seeds_box = brain_bounding_box(rgb, min_tissue_kept=0.0)
    assert seeds_box is not None
    x0, y0, x1, y1 = seeds_box
    assert (x1 - x0) * (y1 - y0) < 0.5 * rgb.shape[0] * rgb.shape[1]
    assert brain_bounding_box(rgb) is None
    assert crop_to_brain(rgb) is rgb


def _skull_touching_every_border() -> npt.NDArray[np.uint8]:
    """A head larger than the frame: grey brain inside a bright skull, cut by all four borders."""
    image = np.zeros((120, 100, 3), np.uint8)
    cv2.ellipse(image, (50, 60), (56, 66), 0, 0, 360, (90, 90, 90), thickness=-1)
    cv2.ellipse(image, (50, 60), (56, 66), 0, 0, 360, (220, 220, 220), thickness=8)
    return image


def _broken_skull_ring() -> npt.NDArray[np.uint8]:
    """Only a bright skull ring, which the borders cut into four corner arcs; the largest arc is no brain."""
    image = np.zeros((120, 100, 3), np.uint8)
    cv2.ellipse(image, (50, 60), (56, 66), 0, 0, 360, (220, 220, 220), thickness=8)
    return image


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((256, 256, 3), np.uint8),
        np.zeros((3, 3, 3), np.uint8),
        np.full((3, 3, 3), 255, np.uint8),
        np.full((1, 1, 3), 255, np.uint8),
        np.full((200, 150, 3), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8),
        _skull_touching_every_border(),
        _broken_skull_ring(),
    ],
    ids=["black", "3x3-black", "3x3-white", "1x1", "white", "noise", "skull-touching-borders", "broken-ring"],
)
def test_crop_never_raises_and_returns_a_valid_image(image: npt.NDArray[np.uint8]) -> None:
    crop = crop_to_brain(image)
    box = brain_bounding_box(image)
    if box is None:
        assert crop is image
    else:
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        np.testing.assert_array_equal(crop, image[y0:y1, x0:x1])
    assert crop.ndim == 3 and crop.shape[2] == 3 and crop.size > 0


def test_black_and_uniform_images_fall_back_to_the_whole_image() -> None:
    black = np.zeros((256, 256, 3), np.uint8)
    assert brain_bounding_box(black) is None
    assert crop_to_brain(black) is black
    white = np.full((200, 150, 3), 255, np.uint8)
    assert crop_to_brain(white).shape == white.shape
    for skull in (_skull_touching_every_border(), _broken_skull_ring()):
        assert crop_to_brain(skull).shape == skull.shape


def test_a_speck_is_not_a_brain() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[50:53, 50:53] = 255  # removed by erosion
    assert brain_bounding_box(image) is None
    image[10:14, 10:90] = 255  # a thin line survives erosion but is too low to be a brain
    assert brain_bounding_box(image) is None


def test_box_of_a_synthetic_head() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    cv2.ellipse(image, (150, 100), (80, 60), 0, 0, 360, (120, 120, 120), thickness=-1)
    assert brain_bounding_box(image, blur=1, erode=0, dilate=0) == (70, 40, 231, 161)
