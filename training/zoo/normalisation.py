"""Each backbone's input normalisation, inside the model, in stock Keras layers only.

Every model of the zoo takes RGB float32 pixels in [0, 255] (the output of the shared preprocessing), so the
service never needs to know which family a model belongs to. The layers here reproduce
``keras.applications.<family>.preprocess_input`` without ``Lambda`` or custom layers, so a saved model loads
anywhere and converts to ONNX as is. Layer names start with ``preprocess_``: they are never trained.
"""

from __future__ import annotations

import keras
import numpy as np

from training.zoo.catalogue import NormalisationMode

PREFIX = "preprocess_"

# keras.applications.imagenet_utils: 'caffe' mean (BGR order) and 'torch' mean / std (RGB order, on [0, 1]).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def add_normalisation(image: keras.KerasTensor, mode: NormalisationMode) -> keras.KerasTensor:
    """The normalisation of ``mode`` applied to ``image`` (N, H, W, 3) RGB in [0, 255].

    - ``tf``: to [-1, 1] (MobileNet, MobileNetV2, InceptionV3, Xception).
    - ``caffe``: RGB → BGR, minus the ImageNet mean, no scaling (ResNet50, VGG16, VGG19), as a frozen 1x1
      convolution whose kernel is the channel permutation and whose bias is minus the mean.
    - ``unit``: to [0, 1] (the small seed-002 CNN).
    - ``torch``: nothing here: EfficientNet carries its own Rescaling + Normalization layers, which
      :func:`set_efficientnet_normalisation` fills with the ImageNet statistics.
    """
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREFIX + "rescale")(image)
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name=PREFIX + "rescale")(image)
    if mode == "caffe":
        conv = keras.layers.Conv2D(3, 1, trainable=False, name=PREFIX + "caffe")
        out = conv(image)
        # out[..., j] = image[..., 2 - j] - mean_bgr[j]
        kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
        for j in range(3):
            kernel[0, 0, 2 - j, j] = 1.0
        conv.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)])
        return out
    if mode == "lite":  # EfficientNet-Lite's own statistics: (x - 127) / 128
        return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=PREFIX + "rescale")(image)
    if mode == "torch":
        return image
    raise ValueError(f"unknown normalisation mode {mode!r}")


def set_efficientnet_normalisation(model: keras.Model) -> None:
    """Give EfficientNet's built-in ``Normalization`` layer the ImageNet mean and variance (std²).

    Built with ``weights=None`` Keras leaves it at mean 0, variance 1. With these statistics the stem sees
    ``(x / 255 - mean) / std``: exactly what Keras' ImageNet EfficientNet computes (it stores std as the
    variance and adds a second ``Rescaling``), so a model is normalised the same way whatever its weights
    came from.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    if len(layers) != 1:
        raise ValueError(f"expected one Normalization layer in {model.name}, found {len(layers)}")
    layer = layers[0]
    layer.adapt_mean.assign(np.asarray(TORCH_MEAN_RGB, dtype=np.float32))
    layer.adapt_variance.assign(np.square(np.asarray(TORCH_STD_RGB, dtype=np.float32)))
    layer.finalize_state()
