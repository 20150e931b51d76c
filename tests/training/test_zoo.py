"""The backbone zoo: every entry builds flat, normalises like Keras' own preprocess_input, loads weights."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from training.zoo.build import ZooError, backbone_layers, build_model
from training.zoo.catalogue import BACKBONE_NAMES, BACKBONES
from training.zoo.heads import spp_window

HEAVY = {"resnet50", "resnet50-spp", "efficientnetb0", "efficientnetb3", "inceptionv3", "xception"}


def smallest_size(name: str) -> int:
    entry = BACKBONES[name]
    return 64 if name == "seed002-cnn" else entry.min_input_size


def pixels(size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in BACKBONE_NAMES]
)
def test_every_backbone_builds_flat_with_its_gradcam_layer(name: str) -> None:
    size = smallest_size(name)
    model, spec = build_model(name, 3, input_size=size)

    assert model.name == name
    assert model.layers[0].name == "image"
    assert model.layers[-1].name == "probabilities"
    assert model.output.shape == (None, 3)
    probabilities = keras.ops.convert_to_numpy(model(pixels(size), training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # flat: no nested model, so Grad-CAM reaches the backbone's last spatial layer by name
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert spec.gradcam_layer == BACKBONES[name].gradcam_layer
    assert len(model.get_layer(spec.gradcam_layer).output.shape) == 4
    grad_model = keras.Model(model.input, [model.get_layer(spec.gradcam_layer).output, model.output])
    assert len(grad_model.outputs) == 2
    assert backbone_layers(model)
    assert not any(layer.name.startswith(("preprocess_", "head_")) for layer in backbone_layers(model))


@pytest.mark.parametrize(
    ("name", "layer", "reference"),
    [
        ("mobilenetv2", "preprocess_rescale", keras.applications.mobilenet_v2.preprocess_input),
        ("inceptionv3", "preprocess_rescale", keras.applications.inception_v3.preprocess_input),
        ("resnet50", "preprocess_caffe", keras.applications.resnet50.preprocess_input),
        ("vgg16", "preprocess_caffe", keras.applications.vgg16.preprocess_input),
    ],
)
def test_in_model_normalisation_equals_keras_preprocess_input(
    name: str, layer: str, reference: object
) -> None:
    size = smallest_size(name)
    model, _ = build_model(name, 2, input_size=size)
    normalise = keras.Model(model.input, model.get_layer(layer).output)
    x = pixels(size, count=3, seed=1)

    inside = keras.ops.convert_to_numpy(normalise(x))
    expected = reference(x.copy())  # type: ignore[operator]

    np.testing.assert_allclose(inside, expected, atol=1e-4)
    assert not model.get_layer(layer).trainable_weights


def test_efficientnet_normalises_with_the_imagenet_statistics() -> None:
    model, _ = build_model("efficientnetb0", 2, input_size=32)
    normalisation = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    normalise = keras.Model(model.input, normalisation.output)
    x = pixels(32, seed=2)

    inside = keras.ops.convert_to_numpy(normalise(x))

    # what Keras' ImageNet EfficientNet computes: (x / 255 - mean) / std ('torch' mode)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    np.testing.assert_allclose(inside, expected, atol=1e-4)


@pytest.mark.parametrize("size", range(1, 16))
@pytest.mark.parametrize("bins", [1, 2, 4])
def test_spp_window_covers_the_map_in_exactly_the_bins(size: int, bins: int) -> None:
    factor, pool, stride = spp_window(size, bins)

    scaled = size * factor
    assert pool >= 1 and stride >= 1
    assert (scaled - pool) // stride + 1 == bins
    assert (bins - 1) * stride + pool == scaled


@pytest.mark.slow
def test_resnet50_spp_concatenates_three_pyramid_levels() -> None:
    model, _ = build_model("resnet50-spp", 4, input_size=224)

    assert model.get_layer("head_spp").output.shape == (None, 2048 * (1 + 4 + 16))
    assert model.get_layer("conv5_block3_out").output.shape == (None, 7, 7, 2048)


def test_deep_mlp_head_and_the_float32_output_under_mixed_precision() -> None:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, spec = build_model("seed002-cnn", 2, head="deep-mlp")
    finally:
        keras.mixed_precision.set_global_policy(previous)

    assert spec.head == "deep-mlp"
    assert model.get_layer("head_dense2048").output.shape == (None, 2048)
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.ops.convert_to_numpy(model(pixels(64))).dtype == np.float32


def test_unknown_backbone_head_or_too_small_input_is_one_sentence() -> None:
    with pytest.raises(ZooError, match="unknown backbone 'resnet18'; choose one of mobilenet, "):
        build_model("resnet18", 4)
    with pytest.raises(ZooError, match="unknown head 'mlp'"):
        build_model("mobilenet", 4, head="mlp")
    with pytest.raises(ZooError, match="inceptionv3 needs an input of at least 75 pixels a side, got 64x64"):
        build_model("inceptionv3", 4, input_size=64)
    with pytest.raises(ZooError, match="seed002-cnn has no ImageNet weights"):
        build_model("seed002-cnn", 4, weights="imagenet")
    with pytest.raises(ZooError, match="--weights must be 'imagenet', 'none' or a weights file"):
        build_model("mobilenet", 4, weights="/no/such/file.h5")


def test_imagenet_download_failure_is_a_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno 101] unreachable"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ZooError) as caught:
        build_model("mobilenetv2", 4, input_size=32, weights="imagenet")

    message = str(caught.value)
    assert message.startswith(
        "the ImageNet weights of mobilenetv2 could not be downloaded (URL fetch failure"
    )
    assert message.endswith(
        "pass its path with --weights, use --backbone efficientnet_lite0 --weights imagenet-offline, "
        "or use --weights none"
    )
    assert "\n" not in message


def test_weights_from_an_application_file_are_copied_into_the_flat_model(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v2_no_top.h5"  # the legacy layout of Keras' own ImageNet files
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)

    model, spec = build_model("mobilenetv2", 4, input_size=32, weights=str(path))

    assert spec.weights == str(path) and spec.pretrained
    for name in ("Conv1", "block_16_project", "Conv_1_bn"):
        for mine, theirs in zip(
            model.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)
    # the normalisation stays the fixed one
    x = pixels(32, seed=4)
    normalise = keras.Model(model.input, model.get_layer("preprocess_rescale").output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalise(x)), x / 127.5 - 1.0, atol=1e-5)


def test_weights_of_a_whole_model_file_reload(tmp_path: Path) -> None:
    keras.utils.set_random_seed(5)
    first, _ = build_model("seed002-cnn", 3)
    first.save_weights(tmp_path / "seed.weights.h5")
    keras.utils.set_random_seed(6)

    second, _ = build_model("seed002-cnn", 3, weights=str(tmp_path / "seed.weights.h5"))

    x = pixels(64, seed=7)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(second(x)), keras.ops.convert_to_numpy(first(x)), rtol=1e-6
    )
    with pytest.raises(ZooError, match=r"the weights in .*seed.weights.h5 do not fit seed002-cnn"):
        build_model("seed002-cnn", 4, weights=str(tmp_path / "seed.weights.h5"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnetb0", "resnet50-spp"])
def test_saved_model_reloads_without_custom_objects(name: str, tmp_path: Path) -> None:
    model, _ = build_model(name, 3, input_size=32)
    model.save(tmp_path / "model.keras")

    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False, safe_mode=True)

    x = pixels(32, seed=8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    assert not any(
        layer.trainable_weights for layer in reloaded.layers if layer.name.startswith("preprocess_")
    )


def batchnorm_momenta(model: keras.Model) -> set[float]:
    return {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}


def test_random_init_batchnorm_follows_within_an_epoch_and_survives_saving(tmp_path: Path) -> None:
    from_scratch, _ = build_model("mobilenetv2", 4, input_size=32, weights="none")
    assert batchnorm_momenta(from_scratch) == {0.9}
    path = tmp_path / "scratch.keras"
    from_scratch.save(path)
    reloaded = keras.models.load_model(path)
    assert batchnorm_momenta(reloaded) == {0.9}


def test_offline_imagenet_is_refused_for_a_backbone_without_it() -> None:
    with pytest.raises(ZooError, match="only for the EfficientNet-Lite backbones, not mobilenetv2"):
        build_model("mobilenetv2", 4, input_size=32, weights="imagenet-offline")
