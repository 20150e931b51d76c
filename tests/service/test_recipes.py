"""Recipes: the model input they make from real slices, their serialisation and the steps they hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from service.preprocessing import (
    RECIPE_NAMES,
    STEP_NAMES,
    ImageDecodeError,
    Recipe,
    Step,
    apply_recipe,
    apply_recipe_with_region,
    brain_bounding_box,
    crop_to_brain,
    decode_image,
    make_recipe,
    preprocess_bytes,
    resize_to,
    stretch_contrast,
)

SLICES = [
    "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg",
    "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(1).jpg",
    "br35h/yes/y1071.jpg",  # greyscale JPEG
    "br35h/no/no400.jpg",  # RGBA PNG under a .jpg name
]


def _json_round_trip(recipe: Recipe) -> Recipe:
    return Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))


@pytest.fixture(scope="module")
def slices(data_root: Path) -> dict[str, bytes]:
    return {relative: (data_root / relative).read_bytes() for relative in SLICES}


def test_recipe_names_are_the_seed_presets() -> None:
    assert RECIPE_NAMES == ("plain", "crop", "crop-bilateral", "contrast", "crop-contrast")
    assert set(STEP_NAMES) == {"crop_to_brain", "bilateral", "contrast_stretch"}


@pytest.mark.realdata
@pytest.mark.parametrize("name", RECIPE_NAMES)
@pytest.mark.parametrize("size", [224, (160, 192)])
def test_every_recipe_gives_the_model_input(
    slices: dict[str, bytes], name: str, size: int | tuple[int, int]
) -> None:
    recipe = make_recipe(name, size)
    height, width = (size, size) if isinstance(size, int) else size
    for data in slices.values():
        rgb = decode_image(data)
        x = apply_recipe(rgb, recipe)
        assert x.dtype == np.float32 and x.shape == (height, width, 3) and x.flags.c_contiguous
        assert x.min() >= 0.0 and x.max() <= 255.0 and x.max() > 50.0
        np.testing.assert_array_equal(x, apply_recipe(rgb.copy(), recipe))  # deterministic
        np.testing.assert_array_equal(x, preprocess_bytes(data, recipe))
        np.testing.assert_array_equal(x, apply_recipe(rgb, _json_round_trip(recipe)))


@pytest.mark.realdata
def test_recipes_differ_as_their_steps_say(slices: dict[str, bytes]) -> None:
    rgb = decode_image(slices[SLICES[0]])  # a 512 x 512 slice with a wide black border
    plain, crop, crop_bilateral, contrast = (
        apply_recipe(rgb, make_recipe(name, 224)) for name in ("plain", "crop", "crop-bilateral", "contrast")
    )
    np.testing.assert_allclose(plain, cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA), atol=1.0)
    assert (crop < 20).mean() < (plain < 20).mean()  # less black border
    np.testing.assert_allclose(crop, resize_to(crop_to_brain(rgb).astype(np.float32), (224, 224)))
    assert not np.array_equal(crop, crop_bilateral)
    assert np.abs(crop - crop_bilateral).mean() < 5.0  # smoothing, not a different image
    assert plain.max() < 255.0 and contrast.max() == 255.0 and contrast.min() == 0.0


@pytest.mark.realdata
def test_small_images_are_enlarged(slices: dict[str, bytes]) -> None:
    rgb = cv2.resize(decode_image(slices[SLICES[0]]), (60, 50), interpolation=cv2.INTER_AREA)
    for name in RECIPE_NAMES:
        x = apply_recipe(rgb, make_recipe(name, 224))
        assert x.shape == (224, 224, 3) and x.min() >= 0.0 and x.max() <= 255.0


def test_apply_recipe_refuses_what_is_not_uint8_rgb() -> None:
    recipe = make_recipe("plain", 32)
    for bad in (
        np.zeros((40, 40), np.uint8),
        np.zeros((40, 40, 4), np.uint8),
        np.zeros((40, 40, 3), np.float32),
    ):
        with pytest.raises(ValueError, match="uint8 RGB"):
            apply_recipe(bad, recipe)  # type: ignore[arg-type]


def test_preprocess_bytes_raises_the_decode_errors() -> None:
    with pytest.raises(ImageDecodeError):
        preprocess_bytes(b"not an image", make_recipe("crop", 224))


# --- serialisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_to_dict_round_trips_exactly_through_json(name: str) -> None:
    for recipe in (
        make_recipe(name, 224),
        make_recipe(name, (300, 240)),
        Recipe(name, (64, 48), (Step.of("contrast_stretch", low_percentile=2, high_percentile=98.5),)),
    ):
        restored = _json_round_trip(recipe)
        assert restored == recipe
        assert restored.to_dict() == recipe.to_dict()
        assert json.loads(json.dumps(recipe.to_dict())) == recipe.to_dict()
        assert hash(restored) == hash(recipe)


def test_to_dict_records_every_parameter() -> None:
    assert make_recipe("crop-bilateral", (224, 240), margin=3).to_dict() == {
        "name": "crop-bilateral",
        "size": [224, 240],
        "steps": [
            {
                "name": "crop_to_brain",
                "params": {
                    "blur": 5,
                    "dilate": 2,
                    "erode": 2,
                    "margin": 3,
                    "min_tissue_kept": 0.5,
                    "threshold": 45,
                },
            },
            {"name": "bilateral", "params": {"d": 2, "sigma_color": 50.0, "sigma_space": 50.0}},
        ],
    }
    assert make_recipe("plain", 224).to_dict() == {"name": "plain", "size": [224, 224], "steps": []}


def test_from_dict_fills_defaults_and_normalises_numbers() -> None:
    short = {"name": "crop", "size": [224, 224], "steps": [{"name": "crop_to_brain", "params": {}}]}
    assert Recipe.from_dict(short) == make_recipe("crop", 224)
    assert Step.of("bilateral", sigma_color=60) == Step.of("bilateral", sigma_color=60.0)
    assert Step.of("bilateral", sigma_color=60).kwargs["sigma_color"] == 60.0


def _crop_dict(**changes: Any) -> dict[str, Any]:
    data = make_recipe("crop", 224).to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        _crop_dict(steps=[{"name": "sharpen", "params": {}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {"threshhold": 40}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {"threshold": 40.5}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {"threshold": "40"}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {"threshold": True}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {"threshold": 300}}]),
        _crop_dict(steps=[{"name": "crop_to_brain", "params": {}, "extra": 1}]),
        _crop_dict(
            steps=[{"name": "contrast_stretch", "params": {"low_percentile": 99, "high_percentile": 1}}]
        ),
        _crop_dict(steps=[{"name": "bilateral", "params": {"sigma_color": float("nan")}}]),
        _crop_dict(steps=["crop_to_brain"]),
        _crop_dict(size=[224]),
        _crop_dict(size=[0, 224]),
        _crop_dict(size=[224.0, 224]),
        _crop_dict(size="224"),
        _crop_dict(size=224),
        _crop_dict(name=""),
        _crop_dict(interpolation="cubic"),
        {"name": "crop", "size": [224, 224]},
    ],
    ids=[
        "unknown-step",
        "unknown-param",
        "float-for-int",
        "string-param",
        "bool-param",
        "out-of-range",
        "extra-step-key",
        "percentiles-reversed",
        "nan",
        "step-not-a-mapping",
        "short-size",
        "zero-size",
        "float-size",
        "string-size",
        "int-size",
        "empty-name",
        "extra-key",
        "missing-steps",
    ],
)
def test_from_dict_refuses_what_to_dict_would_not_write(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Recipe.from_dict(data)


def test_make_recipe_overrides_and_refusals() -> None:
    recipe = make_recipe("crop-contrast", (256, 200), threshold=30, high_percentile=99.5)
    assert recipe.size == (256, 200)
    assert recipe.steps[0].kwargs["threshold"] == 30
    assert recipe.steps[1].kwargs["high_percentile"] == 99.5
    with pytest.raises(ValueError, match="Unknown recipe"):
        make_recipe("sharpen", 224)
    with pytest.raises(ValueError, match="no parameter"):
        make_recipe("plain", 224, threshold=30)


# --- filters ----------------------------------------------------------------------------------------------


def test_stretch_contrast_maps_the_percentiles_onto_the_full_range() -> None:
    ramp = np.repeat(np.arange(100, dtype=np.uint8)[None, :, None], 3, axis=2) + 50  # values 50..149
    out = stretch_contrast(ramp, low_percentile=0.0, high_percentile=100.0)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 255.0
    np.testing.assert_allclose(out[0, :, 0], np.arange(100) * 255.0 / 99.0, rtol=1e-5)
    flat = np.full((10, 10, 3), 77, np.uint8)
    np.testing.assert_array_equal(stretch_contrast(flat), flat.astype(np.float32))


def test_resize_interpolation_follows_the_direction() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (100, 80, 3)).astype(np.float32)
    shrunk = resize_to(image, (50, 40))
    np.testing.assert_array_equal(shrunk, cv2.resize(image, (40, 50), interpolation=cv2.INTER_AREA))
    grown = resize_to(image, (200, 60))
    np.testing.assert_array_equal(grown, cv2.resize(image, (60, 200), interpolation=cv2.INTER_LINEAR))
    assert resize_to(image, (100, 80)) is image


def test_steps_in_any_order_keep_the_output_contract() -> None:
    rng = np.random.default_rng(2)
    rgb = np.zeros((120, 100, 3), np.uint8)
    rgb[20:100, 15:85] = rng.integers(40, 200, (80, 70, 3), dtype=np.uint8)
    recipe = Recipe(
        "custom",
        (64, 64),
        (Step.of("contrast_stretch"), Step.of("crop_to_brain"), Step.of("bilateral", d=3)),
    )
    x = apply_recipe(rgb, recipe)
    assert x.dtype == np.float32 and x.shape == (64, 64, 3) and x.min() >= 0.0 and x.max() <= 255.0
    assert _json_round_trip(recipe) == recipe


@pytest.mark.realdata
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_the_region_is_the_crop_box_or_the_whole_image(name: str, slices: dict[str, bytes]) -> None:
    for data in slices.values():
        rgb = decode_image(data)
        recipe = make_recipe(name, 96)
        model_input, region = apply_recipe_with_region(rgb, recipe)
        np.testing.assert_array_equal(model_input, apply_recipe(rgb, recipe))
        whole = (0, 0, rgb.shape[1], rgb.shape[0])
        expected = (brain_bounding_box(rgb) or whole) if name.startswith("crop") else whole
        assert region == expected
