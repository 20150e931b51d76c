"""Classification heads: the backbone's feature map → class probabilities.

A head starts with the backbone's pooling (global average pooling for the ImageNet backbones, a
three-level spatial pyramid for ``resnet50-spp``, Flatten for the small seed-002 CNN) and ends in the
float32 softmax layer named ``probabilities``. Every head layer's name starts with ``head_``, so the
backbone's layers are told apart by name even in a reloaded model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras

from training.zoo.catalogue import HEAD_NAMES, Pooling

PREFIX = "head_"
OUTPUT_NAME = "probabilities"
SPP_LEVELS: tuple[int, ...] = (1, 2, 4)


def pool(features: keras.KerasTensor, pooling: Pooling) -> keras.KerasTensor:
    """(N, h, w, c) feature map → (N, features) vector."""
    if pooling == "gap":
        return keras.layers.GlobalAveragePooling2D(name=PREFIX + "gap")(features)
    if pooling == "flatten":
        return keras.layers.Flatten(name=PREFIX + "flatten")(features)
    if pooling == "spp":
        return spatial_pyramid_pool(features)
    raise ValueError(f"unknown pooling {pooling!r}")


def spp_window(size: int, bins: int) -> tuple[int, int, int]:
    """(upsampling factor, pool size, stride) max-pooling ``size`` cells into exactly ``bins`` bins.

    ``stride = ⌊size / bins⌋`` and ``pool = size - (bins - 1) · stride`` with 'valid' padding cover the whole
    map in ``bins`` windows; a map smaller than ``bins`` is first repeated (nearest upsampling) so that each
    bin has a cell.
    """
    factor = math.ceil(bins / size) if size < bins else 1
    scaled = size * factor
    stride = scaled // bins
    return factor, scaled - (bins - 1) * stride, stride


def spatial_pyramid_pool(
    features: keras.KerasTensor, levels: Sequence[int] = SPP_LEVELS
) -> keras.KerasTensor:
    """Spatial pyramid max pooling (He et al. 2014) for a fixed input size, in stock layers.

    (N, h, w, c) → concat over levels n of (N, n·n·c): MaxPooling2D with computed windows, Flatten,
    Concatenate.
    """
    height, width = int(features.shape[1]), int(features.shape[2])
    flat = []
    for bins in levels:
        fh, ph, sh = spp_window(height, bins)
        fw, pw, sw = spp_window(width, bins)
        x = features
        if fh > 1 or fw > 1:
            x = keras.layers.UpSampling2D(size=(fh, fw), name=f"{PREFIX}spp{bins}_upsample")(x)
        x = keras.layers.MaxPooling2D(pool_size=(ph, pw), strides=(sh, sw), name=f"{PREFIX}spp{bins}_pool")(x)
        flat.append(keras.layers.Flatten(name=f"{PREFIX}spp{bins}_flatten")(x))  # (N, bins·bins·c)
    return keras.layers.Concatenate(name=PREFIX + "spp")(flat)


def _output(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    # float32 even under the mixed_float16 policy: a float16 softmax loses small probabilities.
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)


def gap_dropout(vector: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Seed 003: Dropout 0.4 → softmax."""
    x = keras.layers.Dropout(0.4, name=PREFIX + "dropout")(vector)
    return _output(x, num_classes)


def deep_mlp(vector: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Seed 001: BN → Dense 2048 ReLU → Dense 1024 ReLU → BN → Dense 512 ReLU → Dropout 0.5 → softmax."""
    x = keras.layers.BatchNormalization(name=PREFIX + "bn1")(vector)
    x = keras.layers.Dense(2048, activation="relu", name=PREFIX + "dense2048")(x)
    x = keras.layers.Dense(1024, activation="relu", name=PREFIX + "dense1024")(x)
    x = keras.layers.BatchNormalization(name=PREFIX + "bn2")(x)
    x = keras.layers.Dense(512, activation="relu", name=PREFIX + "dense512")(x)
    x = keras.layers.Dropout(0.5, name=PREFIX + "dropout")(x)
    return _output(x, num_classes)


def dense64(vector: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Seed 002: Dense 64 ReLU → Dropout 0.3 → softmax."""
    x = keras.layers.Dense(64, activation="relu", name=PREFIX + "dense64")(vector)
    x = keras.layers.Dropout(0.3, name=PREFIX + "dropout")(x)
    return _output(x, num_classes)


HeadBuilder = Callable[[keras.KerasTensor, int], keras.KerasTensor]
HEAD_BUILDERS: dict[str, HeadBuilder] = {"gap-dropout": gap_dropout, "deep-mlp": deep_mlp, "dense64": dense64}
assert tuple(HEAD_BUILDERS) == HEAD_NAMES
