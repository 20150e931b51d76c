"""Two-phase training as the seeds do it, in backend-agnostic Keras 3.

1. ``transfer``: the backbone frozen, only the head learns (at ``lr``);
2. ``finetune``: the backbone (all of it, or its top ``fine_tune_layers`` layers) learns too, at the lower
   ``finetune_lr``. A pretrained backbone's BatchNormalization layers stay frozen, which in Keras 3 also keeps
   them in inference mode, so small batches of MRI slices do not overwrite their ImageNet statistics.

A randomly initialised backbone (weights ``none``) has nothing to transfer: the commands default to no
transfer epochs and to the transfer learning rate for the one ``finetune`` phase, which then trains every
layer, BatchNormalization included.

Each phase minimises class-weighted categorical cross-entropy (balanced weights from the train subset), stops
early on the validation loss and ends with the best weights on validation so far restored: phase 2 starts
from phase 1's best model, and the final model is the best of both phases. Only ``keras.*`` APIs are used, so
the same code trains under ``KERAS_BACKEND=tensorflow``, ``jax`` or ``torch``.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt

from training.batches import ImageBatches
from training.data import SubsetArrays
from training.zoo.build import backbone_layers

TRANSFER, FINETUNE = "transfer", "finetune"
Optimizer = Literal["adam", "sgd"]
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "sgd")
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4


@dataclass(frozen=True)
class FitConfig:
    """The hyper-parameters of a two-phase fit (all recorded in run.json)."""

    epochs_transfer: int = 10
    epochs_finetune: int = 20
    lr: float = 1e-4
    finetune_lr: float = 1e-5
    batch_size: int = 32
    optimizer: Optimizer = "adam"
    momentum: float = SGD_MOMENTUM
    weight_decay: float = SGD_WEIGHT_DECAY
    patience: int = 5
    fine_tune_layers: int | None = None
    """Top backbone layers trained in phase 2; None: all of them."""
    freeze_batchnorm: bool = True
    """Keep the backbone's BatchNormalization layers frozen (in inference mode) in phase 2."""
    augment: str = "none"
    class_weighting: bool = True
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What the fit did: per-epoch history of both phases, best validation loss and where, wall time."""

    history: dict[str, list[Any]]
    best_val_loss: float
    best_epoch: int
    """1-based epoch (counted over both phases) whose weights the model ends with; 0 if none improved."""
    training_time_s: float
    class_weight: dict[int, float] | None


def balanced_class_weights(labels: npt.NDArray[np.int64], num_classes: int) -> dict[int, float]:
    """``n / (C · n_c)`` per class (scikit-learn's "balanced"); a class absent from train gets 1."""
    counts = np.bincount(labels, minlength=num_classes)  # (C,)
    total = float(counts.sum())
    return {c: (total / (num_classes * counts[c]) if counts[c] else 1.0) for c in range(num_classes)}


def make_optimizer(config: FitConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam (seeds 000, 001, 003) or SGD with momentum and decoupled weight decay (seed 004)."""
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")


def set_phase_trainable(model: keras.Model, phase: str, config: FitConfig) -> None:
    """Freeze the backbone (``transfer``) or unfreeze it or its top layers (``finetune``); the head trains.

    The normalisation layers are never trained (their weights are the fixed ImageNet statistics).
    """
    backbone = backbone_layers(model)
    backbone_ids = {id(layer) for layer in backbone}
    for layer in model.layers:
        if id(layer) not in backbone_ids:
            layer.trainable = not layer.name.startswith("preprocess_")
    if phase == TRANSFER:
        for layer in backbone:
            layer.trainable = False
        return
    top = len(backbone) if config.fine_tune_layers is None else max(0, config.fine_tune_layers)
    for index, layer in enumerate(backbone):
        unfrozen = index >= len(backbone) - top
        if isinstance(layer, keras.layers.BatchNormalization) and config.freeze_batchnorm:
            unfrozen = False
        layer.trainable = unfrozen


def count_parameters(model: keras.Model) -> dict[str, int]:
    """``{"total", "trainable"}`` parameter counts under the model's current trainable flags."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"total": int(model.count_params()), "trainable": trainable}


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the lowest validation loss, across phases; restore them when a phase ends."""

    def __init__(self) -> None:
        super().__init__()
        self.best = math.inf
        self.best_epoch = 0
        self.epochs_seen = 0
        self.weights: list[npt.NDArray[Any]] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_seen += 1
        value = (logs or {}).get("val_loss")
        if value is not None and math.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), self.epochs_seen
            self.weights = self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class PhaseProgress(keras.callbacks.Callback):
    """Print each epoch's wall time and the phase's remaining time (at most: early stopping may end it)."""

    def __init__(self, phase: str, epochs: int, out: Callable[[str], None] = print) -> None:
        super().__init__()
        self.phase, self.epochs, self.out = phase, epochs, out
        self.times: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.times.append(round(time.monotonic() - self._started, 3))
        left = (self.epochs - epoch - 1) * float(np.mean(self.times))
        val = (logs or {}).get("val_loss")
        val_text = f", val_loss {val:.4f}" if val is not None else ""
        eta = f"phase ends in at most {format_seconds(left)}" if left > 0 else "last epoch of the phase"
        took = format_seconds(self.times[-1])
        self.out(f"[{self.phase}] epoch {epoch + 1}/{self.epochs} took {took}{val_text}; {eta}")


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def phases_of(config: FitConfig) -> list[tuple[str, int, float]]:
    """(phase, epochs, learning rate) of each phase that runs."""
    planned = [
        (TRANSFER, config.epochs_transfer, config.lr),
        (FINETUNE, config.epochs_finetune, config.finetune_lr),
    ]
    return [phase for phase in planned if phase[1] > 0]


def two_phase_fit(
    model: keras.Model,
    train: SubsetArrays,
    val: SubsetArrays,
    num_classes: int,
    config: FitConfig,
    *,
    after_transfer: Callable[[], None] | None = None,
    verbose: int | str = "auto",
) -> FitResult:
    """Train ``model`` in place; it ends with the best weights on validation. ``after_transfer`` runs between
    the phases (when both run), e.g. to evaluate the transfer-only model."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError("training needs a non-empty train and validation subset")
    train_batches = ImageBatches(
        train.images,
        train.labels,
        num_classes,
        config.batch_size,
        augment=config.augment,
        shuffle=True,
        seed=config.seed,
    )
    val_batches = ImageBatches(val.images, val.labels, num_classes, config.batch_size)
    class_weight = balanced_class_weights(train.labels, num_classes) if config.class_weighting else None
    best = BestWeights()
    history: dict[str, list[Any]] = {}
    started = time.monotonic()
    plan = phases_of(config)
    for phase, epochs, learning_rate in plan:
        set_phase_trainable(model, phase, config)
        model.compile(
            optimizer=make_optimizer(config, learning_rate),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        counts = count_parameters(model)
        print(
            f"[{phase}] up to {epochs} epochs, {config.optimizer} at learning rate {learning_rate:g}, "
            f"{counts['trainable']:,} of {counts['total']:,} parameters trainable, "
            f"{len(train_batches)} steps of {config.batch_size} per epoch",
            flush=True,
        )
        progress = PhaseProgress(phase, epochs, out=lambda line: print(line, flush=True))
        stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, verbose=1)
        fitted = model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=[best, stopping, progress],
            verbose=verbose,
        )
        ran = len(progress.times)
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([phase] * ran)
        history.setdefault("epoch_time_s", []).extend(progress.times)
        history.setdefault("learning_rate", []).extend([learning_rate] * ran)
        print(f"[{phase}] done: best val_loss so far {best.best:.4f} (epoch {best.best_epoch})", flush=True)
        if phase == TRANSFER and after_transfer is not None and len(plan) > 1:
            after_transfer()
    history["epoch"] = list(range(1, len(history.get("phase", [])) + 1))
    return FitResult(history, best.best, best.best_epoch, time.monotonic() - started, class_weight)


def describe_backend() -> dict[str, Any]:
    """The Keras backend, the devices it computes on and the library versions, for the log and run.json."""
    backend = keras.backend.backend()
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module is not None and module in sys.modules:
        versions[module] = str(getattr(sys.modules[module], "__version__", "?"))
    try:
        devices = [str(d) for d in keras.distribution.list_devices()]
    except Exception:  # only informative: the torch backend has no device listing in Keras
        devices = [_torch_device()] if backend == "torch" else []
    return {"backend": backend, "devices": devices, "versions": versions}


def _torch_device() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:0 ({torch.cuda.get_device_name(0)})"
    return "cpu"
