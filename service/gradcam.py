"""Class activation maps on the Keras twin of a served model, on the TensorFlow backend.

Three ways of weighting a layer's feature map A (h', w', k) by the gradients G of the class score:

- ``gradcam`` (Selvaraju et al. 2017): one weight per channel, the spatial mean of G; ReLU(sum_k w_k A_k).
- ``gradcam++`` (Chattopadhay et al. 2018): per-channel weights from the positive gradients, each pixel's
  share set by the closed-form alpha = G^2 / (2 G^2 + sum(A) G^3).
- ``layercam`` (Jiang et al. 2021): a weight per pixel and channel, ReLU(G); ReLU(sum_k ReLU(G_k) A_k). It
  keeps where the gradient is positive instead of averaging it away, which is what lets a map point at a
  small lesion; ``python -m training localisation`` measures the three on boxed tumour slices.

The ONNX model answers the prediction; its Keras twin (``model.keras`` of the same repository entry, a flat
functional graph) gives the class activation map. Only this module imports TensorFlow, and only the service's
Grad-CAM path imports this module.

The class score is the pre-softmax logit: the grad model returns the Grad-CAM layer's feature map, the logits
(the output Dense layer's kernel and bias applied to its input, without the softmax) and the probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from exporter.manifest import GRADCAM_METHODS

__all__ = [
    "GRADCAM_METHODS",
    "GradcamEngine",
    "GradcamError",
    "GradcamResult",
    "build_grad_model",
    "check_method",
    "make_gradcam_heatmap",
    "normalise_cam",
    "require_tensorflow_backend",
]


class GradcamError(RuntimeError):
    """The Keras twin cannot give a Grad-CAM: not loadable, wrong backend, unknown or flat layer, odd output.

    A server-side fault, never the client's: the service answers 500 (or refuses to start) for it.
    """


@dataclass(frozen=True)
class GradcamResult:
    """One Grad-CAM: the map, the class it explains and the twin's probabilities."""

    heatmap: npt.NDArray[np.float32]
    """(h', w') in [0, 1], the Grad-CAM layer's spatial size; all zeros when no region raises the score."""
    class_index: int
    probabilities: npt.NDArray[np.float32]
    """(C,) the Keras twin's softmax output for the image."""


def require_tensorflow_backend() -> None:
    """GradcamError unless Keras runs on TensorFlow (GradientTape needs it)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise GradcamError(
            f"Grad-CAM needs the TensorFlow backend of Keras, but Keras runs on {backend!r}; "
            "unset KERAS_BACKEND or set it to 'tensorflow' before the service starts."
        )


def build_grad_model(model: keras.Model, layer: str) -> keras.Model:
    """(1, H, W, 3) image -> [(1, h', w', k) ``layer`` output, (1, C) logits, (1, C) probabilities]."""
    require_tensorflow_backend()
    try:
        feature_map = model.get_layer(layer).output
    except ValueError:
        raise GradcamError(
            f"The Grad-CAM layer {layer!r} is not a layer of the model {model.name!r}; "
            f"its last layers with a spatial map are {', '.join(_spatial_layer_names(model)[-3:])}."
        ) from None
    if len(feature_map.shape) != 4:
        raise GradcamError(
            f"The Grad-CAM layer {layer!r} of the model {model.name!r} gives the shape "
            f"{tuple(feature_map.shape)}, not a spatial map (N, h, w, channels)."
        )
    probabilities = model.outputs[0]
    output_layer = _output_layer(model)
    if not isinstance(output_layer, keras.layers.Dense):
        raise GradcamError(f"The output of the model {model.name!r} is not a Dense layer.")
    activation = keras.activations.serialize(output_layer.activation)
    if activation == "linear":
        logits = probabilities
    elif activation == "softmax":
        # the same kernel and bias without the softmax: the logit of class c is its score (keras-io grad_cam)
        linear = keras.layers.Dense(
            output_layer.units,
            use_bias=output_layer.use_bias,
            dtype=output_layer.dtype_policy,
            name=f"{output_layer.name}_logits",
        )
        logits = linear(output_layer.input)
        linear.set_weights(output_layer.get_weights())
    else:
        raise GradcamError(
            f"The output layer of the model {model.name!r} has the activation {activation!r}; "
            "Grad-CAM needs a softmax (or linear) Dense output."
        )
    # model.input: the bare tensor of a single-input model, so that the grad model takes a bare tensor too
    outputs = [feature_map, logits, probabilities]
    return keras.Model(model.input, outputs, name=f"{model.name}_gradcam")


def make_gradcam_heatmap(
    x: npt.NDArray[np.float32],
    grad_model: keras.Model,
    class_index: int | None = None,
    method: str = "gradcam",
) -> tuple[npt.NDArray[np.float32], int, npt.NDArray[np.float32]]:
    """Grad-CAM of one image: (heatmap (h', w') in [0, 1], the class explained, probabilities (C,)).

    ``x`` is the model input (1, H, W, 3) float32; ``grad_model`` comes from :func:`build_grad_model`;
    ``class_index`` None explains the most probable class. Runs eagerly; :class:`GradcamEngine` runs the same
    steps as a compiled graph.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"Grad-CAM takes one image of shape (1, H, W, 3), got {x.shape}")
    classes = int(grad_model.outputs[1].shape[-1])
    cam, index, probabilities = gradcam_tensors(
        tf.convert_to_tensor(x, dtype=tf.float32), grad_model, _index_tensor(class_index, classes), method
    )
    return normalise_cam(cam.numpy()), int(index), np.asarray(probabilities, dtype=np.float32)


def gradcam_tensors(
    images: tf.Tensor, grad_model: keras.Model, class_index: tf.Tensor, method: str = "gradcam"
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The steps of a class activation map in TensorFlow ops, eager or inside ``tf.function``.

    ``images`` (1, H, W, 3) float32; ``class_index`` an int32 scalar, negative for the most probable class;
    ``method`` one of :data:`GRADCAM_METHODS` (see the module docstring).
    Returns (cam (h', w') >= 0 not yet normalised, the class index explained, probabilities (C,)).
    """
    check_method(method)
    with tf.GradientTape() as tape:
        # Watching the input records every op, even when the model's variables are frozen (not trainable).
        tape.watch(images)
        feature_map, logits, probabilities = grad_model(images, training=False)  # (1, h', w', k), (1, C) x 2
        top = tf.argmax(probabilities[0], output_type=tf.int32)  # ()
        index = tf.where(class_index < 0, top, class_index)  # ()
        score = tf.cast(tf.gather(logits[0], index), tf.float32)  # (): the class's logit
    # gradients with respect to the map the logits were computed from (under mixed precision: float16)
    gradients = tf.cast(tape.gradient(score, feature_map), tf.float32)[0]  # (h', w', k)
    feature_map = tf.cast(feature_map[0], tf.float32)  # (h', w', k)
    if method == "layercam":
        # each pixel of each channel weighted by its own positive gradient
        cam = tf.nn.relu(tf.reduce_sum(tf.nn.relu(gradients) * feature_map, axis=-1))  # (h', w') >= 0
    else:
        if method == "gradcam":
            # (k,): how much each channel raises the score, averaged over space
            channel_weights = tf.reduce_mean(gradients, axis=(0, 1))
        else:  # gradcam++: alpha shares the positive gradients out over the pixels (closed form, exp score)
            squared = tf.square(gradients)  # (h', w', k)
            denominator = 2.0 * squared + tf.reduce_sum(feature_map, axis=(0, 1)) * squared * gradients
            alpha = tf.math.divide_no_nan(squared, denominator)  # (h', w', k)
            channel_weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(0, 1))  # (k,)
        cam = tf.nn.relu(tf.einsum("hwk,k->hw", feature_map, channel_weights))  # (h', w') >= 0
    return cam, index, tf.cast(probabilities[0], tf.float32)  # (h', w'), (), (C,)


def check_method(method: str) -> None:
    """GradcamError unless ``method`` is one of :data:`GRADCAM_METHODS`."""
    if method not in GRADCAM_METHODS:
        raise GradcamError(
            f"The heat-map method {method!r} is not known; choose one of {', '.join(GRADCAM_METHODS)}."
        )


def _index_tensor(class_index: int | None, classes: int) -> tf.Tensor:
    if class_index is None:
        return tf.constant(-1, dtype=tf.int32)
    if not 0 <= class_index < classes:
        raise ValueError(f"class index {class_index} is out of range for a model of {classes} classes")
    return tf.constant(class_index, dtype=tf.int32)


def normalise_cam(cam: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(h', w') >= 0 -> (h', w') in [0, 1] by its peak; a map without a positive finite peak is all zeros."""
    cam = np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(cam, dtype=np.float32)
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32)


def _output_layer(model: keras.Model) -> keras.Layer | None:
    """The layer that gives the model's (first) output; functional models list layers in graph order."""
    for layer in reversed(model.layers):
        try:
            if layer.output is model.outputs[0]:
                return layer
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
    return None


def _spatial_layer_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        try:
            if len(layer.output.shape) == 4:
                names.append(layer.name)
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
    return names


class GradcamEngine:
    """The Keras twin of one model, loaded on first use, with its grad model compiled as a graph.

    Loading is lazy, happens once and is guarded by a lock; :meth:`warm_up` does it ahead of time and traces
    the graph (a few seconds; afterwards a Grad-CAM costs about as much as two forward passes), so the
    service's lifespan calls it where Grad-CAM is on. :meth:`compute` holds a second lock: the Grad-CAMs of
    one engine run one at a time. They are CPU-bound and TensorFlow already spreads each over the cores, so
    running them side by side would only interleave them. ``compute`` blocks: call it from a worker thread,
    never on the event loop.
    """

    def __init__(self, keras_path: Path, layer: str, method: str = "gradcam") -> None:
        check_method(method)
        self.keras_path = Path(keras_path)
        self.layer = layer
        self.method = method
        self._load_lock = threading.Lock()
        self._compute_lock = threading.Lock()
        self._graph: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]] | None = None
        self._input_size = (0, 0)
        self._classes = 0

    @property
    def loaded(self) -> bool:
        """Whether the twin is loaded and its grad model built."""
        return self._graph is not None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the twin takes; loads it when needed."""
        self.load()
        return self._input_size

    def load(self) -> None:
        """Load the Keras twin and build the grad model, once; GradcamError when either fails."""
        if self._graph is not None:
            return
        with self._load_lock:
            if self._graph is not None:
                return
            require_tensorflow_backend()
            try:
                model = keras.models.load_model(self.keras_path, compile=False)
            except Exception as error:  # OSError, ValueError...: name the file and the first line of why
                reason = (str(error).strip() or type(error).__name__).splitlines()[0]
                raise GradcamError(
                    f"The Keras model {self.keras_path} could not be loaded: {reason}"
                ) from error
            grad_model = build_grad_model(model, self.layer)
            height, width = model.inputs[0].shape[1:3]
            if height is None or width is None:
                raise GradcamError(f"The Keras model {self.keras_path} does not fix its input size.")
            self._input_size = (int(height), int(width))
            self._classes = int(grad_model.outputs[1].shape[-1])
            signature = [
                tf.TensorSpec((1, *self._input_size, 3), tf.float32),
                tf.TensorSpec((), tf.int32),
            ]
            self._graph = tf.function(
                lambda images, index: gradcam_tensors(images, grad_model, index, self.method),
                input_signature=signature,
            )

    def warm_up(self) -> None:
        """Load, then run one Grad-CAM on a black image: traces the graph before the first request."""
        height, width = self.input_size
        self.compute(np.zeros((1, height, width, 3), dtype=np.float32))

    def compute(self, x: npt.NDArray[np.float32], class_index: int | None = None) -> GradcamResult:
        """Grad-CAM of ``x`` (1, H, W, 3) float32 in [0, 255] for ``class_index`` (None: the top class)."""
        self.load()
        assert self._graph is not None
        expected = (1, *self._input_size, 3)
        if x.shape != expected:
            raise ValueError(f"the Keras twin of {self.keras_path.name} takes {expected}, got {x.shape}")
        index = _index_tensor(class_index, self._classes)
        with self._compute_lock:
            cam, explained, probabilities = self._graph(tf.convert_to_tensor(x, dtype=tf.float32), index)
        return GradcamResult(
            normalise_cam(cam.numpy()), int(explained), np.asarray(probabilities, np.float32)
        )
