"""Grad-CAM on a tiny flat CNN trained on real MRI slices and on a zoo model; the PNG overlay."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import numpy.typing as npt
import pytest

import service.gradcam
from service.gradcam import GradcamEngine, GradcamError, build_grad_model, make_gradcam_heatmap
from service.gradcam_render import heatmap_canvas, render_heatmap_png, render_overlay_png
from service.preprocessing import apply_recipe, apply_recipe_with_region, decode_image, make_recipe

SIZE = 64
LAYER = "conv2"
LAYER_SIZE = (29, 29)  # 64 -conv3-> 62 -pool2-> 31 -conv3-> 29
CLASSES = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")
TRAINING = "sartaj-brain-tumor-mri/Training"
PER_CLASS = 8
SLICE = "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg"  # 488 x 512, not square


def tiny_cnn() -> keras.Model:
    """Flat functional CNN as the zoo builds them: 'image' in [0, 255] -> ... -> softmax 'probabilities'."""
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="preprocess_rescale")(image)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name=LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    probabilities = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="tiny")


def _model_input(data_root: Path, relative: str, size: int = SIZE) -> npt.NDArray[np.float32]:
    rgb = decode_image((data_root / relative).read_bytes())
    return apply_recipe(rgb, make_recipe("crop", size))[np.newaxis]  # (1, size, size, 3) in [0, 255]


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """The tiny CNN after a few epochs on 32 real slices, and its saved ``.keras`` file."""
    keras.utils.set_random_seed(0)
    images, labels = [], []
    for label, folder in enumerate(CLASSES):
        for path in sorted((data_root / TRAINING / folder).glob("*.jpg"))[:PER_CLASS]:
            images.append(_model_input(data_root, str(path.relative_to(data_root)))[0])
            labels.append(label)
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(np.stack(images), np.asarray(labels), batch_size=8, epochs=8, verbose=0)
    path = tmp_path_factory.mktemp("gradcam") / "tiny.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def engine(trained: tuple[keras.Model, Path]) -> GradcamEngine:
    return GradcamEngine(trained[1], LAYER)


@pytest.fixture
def mri(data_root: Path) -> npt.NDArray[np.float32]:
    return _model_input(data_root, SLICE)


@pytest.mark.realdata
def test_heatmap_has_the_layer_size_and_range_and_is_not_constant(
    trained: tuple[keras.Model, Path], mri: npt.NDArray[np.float32]
) -> None:
    model, _ = trained
    heatmap, index, probabilities = make_gradcam_heatmap(mri, build_grad_model(model, LAYER))
    assert heatmap.shape == LAYER_SIZE == tuple(model.get_layer(LAYER).output.shape[1:3])
    assert heatmap.dtype == np.float32 and np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.05
    assert index == int(np.argmax(probabilities))
    np.testing.assert_allclose(probabilities, model(mri).numpy()[0], atol=1e-6)


@pytest.mark.realdata
def test_gradients_are_taken_on_the_logit(
    trained: tuple[keras.Model, Path], mri: npt.NDArray[np.float32]
) -> None:
    # conv -> global average pooling -> Dense: d logit_c / d A_ij^k = W[k, c] / (h w) everywhere, so Grad-CAM
    # equals CAM (Zhou et al. 2016), relu(A . W[:, c]) up to scale. The softmax's gradient would mix classes.
    model, _ = trained
    features = keras.Model(model.input, model.get_layer(LAYER).output)(mri).numpy()[0]  # (29, 29, 16)
    kernel = model.get_layer("probabilities").get_weights()[0]  # (16, 4)
    grad_model = build_grad_model(model, LAYER)
    for class_index in range(len(CLASSES)):
        cam = np.maximum(features @ kernel[:, class_index], 0.0)  # (29, 29)
        expected = cam / cam.max() if cam.max() > 0 else cam
        heatmap, index, _ = make_gradcam_heatmap(mri, grad_model, class_index)
        assert index == class_index
        np.testing.assert_allclose(heatmap, expected, atol=1e-5)


@pytest.mark.realdata
def test_layercam_and_gradcam_plus_plus_have_their_closed_forms(
    trained: tuple[keras.Model, Path], mri: npt.NDArray[np.float32]
) -> None:
    # Under GAP -> Dense every pixel of channel k has the gradient g_k = W[k, c] / (h w), so
    # LayerCAM = relu(A . relu(g)) and Grad-CAM++ weighs channel k by
    # h w g_k^2 relu(g_k) / (2 g_k^2 + S_k g_k^3), with S_k the channel's sum over space.
    model, _ = trained
    features = keras.Model(model.input, model.get_layer(LAYER).output)(mri).numpy()[0].astype(np.float64)
    kernel = model.get_layer("probabilities").get_weights()[0].astype(np.float64)  # (16, 4)
    grad_model = build_grad_model(model, LAYER)
    area = features.shape[0] * features.shape[1]
    for class_index in range(len(CLASSES)):
        g = kernel[:, class_index] / area  # (16,)
        layercam = np.maximum(features @ np.maximum(g, 0.0), 0.0)
        denominator = 2 * g**2 + features.sum(axis=(0, 1)) * g**3
        weights = area * np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
        plus = np.maximum(features @ (weights * np.maximum(g, 0.0)), 0.0)
        for method, expected in (("layercam", layercam), ("gradcam++", plus)):
            expected = expected / expected.max() if expected.max() > 0 else expected
            heatmap, index, _ = make_gradcam_heatmap(mri, grad_model, class_index, method)
            assert index == class_index
            np.testing.assert_allclose(heatmap, expected, atol=1e-4, err_msg=method)


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GradcamError, match="'scorecam' is not known; choose one of gradcam, gradcam"):
        GradcamEngine(tmp_path / "tiny.keras", LAYER, "scorecam")


@pytest.mark.realdata
def test_each_class_has_its_own_map(engine: GradcamEngine, mri: npt.NDArray[np.float32]) -> None:
    top = engine.compute(mri)
    assert top.class_index == int(np.argmax(top.probabilities))
    least = int(np.argmin(top.probabilities))
    other = engine.compute(mri, class_index=least)
    assert other.class_index == least
    assert not np.allclose(top.heatmap, other.heatmap, atol=1e-3)
    np.testing.assert_array_equal(other.probabilities, top.probabilities)
    with pytest.raises(ValueError, match="class index 4 is out of range for a model of 4 classes"):
        engine.compute(mri, class_index=4)


@pytest.mark.realdata
def test_engine_loads_lazily_and_matches_the_model(
    trained: tuple[keras.Model, Path], mri: npt.NDArray[np.float32]
) -> None:
    model, path = trained
    fresh = GradcamEngine(path, LAYER)
    assert not fresh.loaded
    result = fresh.compute(mri)
    assert fresh.loaded and fresh.input_size == (SIZE, SIZE)
    np.testing.assert_allclose(result.probabilities, model(mri).numpy()[0], atol=1e-6)
    eager, index, _ = make_gradcam_heatmap(mri, build_grad_model(model, LAYER))
    assert result.class_index == index
    np.testing.assert_allclose(result.heatmap, eager, atol=1e-5)  # the compiled graph = the pure function
    with pytest.raises(ValueError, match=r"takes \(1, 64, 64, 3\), got \(1, 32, 32, 3\)"):
        fresh.compute(np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.realdata
def test_concurrent_calls_load_once_and_agree(
    trained: tuple[keras.Model, Path], mri: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    real_load = keras.models.load_model

    def counting_load(path: Path, **kwargs: Any) -> keras.Model:
        loads.append(path)
        return real_load(path, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", counting_load)
    fresh = GradcamEngine(trained[1], LAYER)
    start = threading.Barrier(8)

    def call(class_index: int) -> Any:
        start.wait()
        return fresh.compute(mri, class_index=class_index % 2)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(8)))
    assert len(loads) == 1
    for result in results:
        reference = results[result.class_index]
        np.testing.assert_array_equal(result.heatmap, reference.heatmap)
        np.testing.assert_array_equal(result.probabilities, reference.probabilities)


def test_all_zero_map_stays_zero(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = tiny_cnn()  # zero biases: a black image gives a zero feature map
    heatmap, _, _ = make_gradcam_heatmap(
        np.zeros((1, SIZE, SIZE, 3), np.float32), build_grad_model(model, LAYER)
    )
    assert heatmap.shape == LAYER_SIZE and not np.isnan(heatmap).any() and not heatmap.any()


def test_unknown_or_flat_layer_is_a_clear_error_at_load(tmp_path: Path) -> None:
    path = tmp_path / "tiny.keras"
    tiny_cnn().save(path)
    with pytest.raises(GradcamError) as caught:
        GradcamEngine(path, "out_relu").load()
    assert str(caught.value) == (
        "The Grad-CAM layer 'out_relu' is not a layer of the model 'tiny'; "
        "its last layers with a spatial map are conv1, pool1, conv2."
    )
    with pytest.raises(GradcamError, match=r"'head_gap' .* gives the shape \(None, 16\), not a spatial map"):
        GradcamEngine(path, "head_gap").load()
    with pytest.raises(GradcamError, match="could not be loaded"):
        GradcamEngine(tmp_path / "missing.keras", LAYER).load()


def test_other_backends_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.gradcam.keras.backend, "backend", lambda: "jax")
    with pytest.raises(GradcamError, match="needs the TensorFlow backend of Keras, but Keras runs on 'jax'"):
        build_grad_model(tiny_cnn(), LAYER)


@pytest.mark.realdata
@pytest.mark.slow
def test_zoo_model_reaches_its_last_convolution(data_root: Path, tmp_path: Path) -> None:
    from training.zoo.build import build_model

    model, spec = build_model("mobilenetv2", 4, weights="none", input_size=96)
    path = tmp_path / "mobilenetv2.keras"
    model.save(path)
    x = _model_input(data_root, SLICE, size=96)
    result = GradcamEngine(path, spec.gradcam_layer).compute(x)
    assert spec.gradcam_layer == "out_relu" and result.heatmap.shape == (3, 3)
    assert np.isfinite(result.heatmap).all() and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    np.testing.assert_allclose(result.probabilities, model(x).numpy()[0], atol=1e-5)


@pytest.fixture
def hot_corner() -> Iterator[npt.NDArray[np.float32]]:
    heatmap = np.zeros((7, 7), np.float32)  # (h', w'): hot top-left, cold elsewhere
    heatmap[:2, :2] = 1.0
    yield heatmap


@pytest.mark.realdata
def test_overlay_png_keeps_the_original_size(data_root: Path, hot_corner: npt.NDArray[np.float32]) -> None:
    original = decode_image((data_root / SLICE).read_bytes())  # (512, 488, 3)
    assert original.shape[0] != original.shape[1]
    png = render_overlay_png(original, hot_corner)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert decoded is not None and decoded.shape == original.shape
    assert decoded.std() > 10
    assert not np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), original)


def test_overlay_is_red_where_hot_and_the_image_where_cold(hot_corner: npt.NDArray[np.float32]) -> None:
    grey = np.full((70, 140, 3), 128, np.uint8)
    decoded = cv2.imdecode(np.frombuffer(render_overlay_png(grey, hot_corner), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == grey.shape
    rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    red, green, blue = (int(v) for v in rgb[2, 2])
    assert red > green + 30 and red > blue + 30  # 0.4 * JET's hot end, dark red (128, 0, 0), + 0.6 * grey
    np.testing.assert_array_equal(rgb[30, 5], [128, 128, 128])  # cold: the image itself, no blue wash
    with pytest.raises(ValueError, match="uint8 RGB"):
        render_overlay_png(grey[..., 0], hot_corner)


@pytest.mark.realdata
def test_overlay_has_no_edge_at_the_crop_and_the_raw_map_is_zero_outside(
    data_root: Path, hot_corner: npt.NDArray[np.float32]
) -> None:
    original = decode_image((data_root / SLICE).read_bytes())  # (H, W, 3)
    _, region = apply_recipe_with_region(original, make_recipe("crop", 64))
    x0, y0, x1, y1 = region
    assert (x1 - x0, y1 - y0) != (original.shape[1], original.shape[0])  # the crop found the brain
    png = render_overlay_png(original, hot_corner, region=region)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    outside = np.ones(original.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    bar_rows = original.shape[0] // 40 + original.shape[0] // 80 + 4  # the colour scale along the bottom
    outside[-bar_rows:] = False
    np.testing.assert_array_equal(rgb[outside], original[outside])  # untouched outside the crop
    # no hard rectangle: along the crop's far edges, where the map is cold, the overlay is the image itself
    far = rgb[y0 + (y1 - y0) // 2 : y1 - bar_rows, x1 - 1]
    np.testing.assert_array_equal(far, original[y0 + (y1 - y0) // 2 : y1 - bar_rows, x1 - 1])
    canvas = heatmap_canvas(original.shape[:2], hot_corner, region)
    raw = cv2.imdecode(np.frombuffer(render_heatmap_png(canvas), np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.shape == original.shape[:2] and raw.dtype == np.uint8  # greyscale, the upload's size
    assert raw[y0, x0] == 255 and raw.max() == 255 and not raw[outside].any()
    red, green, blue = (int(v) for v in rgb[y0 + 2, x0 + 2])  # the hot corner sits at the crop's corner
    assert red > green + 30 and red > blue + 30
    with pytest.raises(ValueError, match="does not lie inside"):
        render_overlay_png(original, hot_corner, region=(0, 0, original.shape[1] + 1, 10))
