"""The model-repository manifest (``brain-mri-model/1``): build it, load it, validate it.

``models/<name>/manifest.json`` tells the service everything it needs to serve a model: classes, input
geometry, the preprocessing recipe, the ONNX file with its sha256 and tensor names, the Keras twin and its
Grad-CAM layer, and the evaluation figures with the split they came from.

This module imports only the standard library, so that the service can validate an entry at start-up
without TensorFlow, ONNX or NumPy::

    from exporter.manifest import load_entry            # load + validate + sha256 of the files
    manifest = load_entry(Path("models/mobilenetv2"))    # ManifestError listing every problem
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from exporter.errors import ManifestError

FORMAT: Final = "brain-mri-model/1"
MANIFEST_FILE: Final = "manifest.json"
ONNX_FILE: Final = "model.onnx"
KERAS_FILE: Final = "model.keras"
INPUT_NAME: Final = "image"
OUTPUT_NAME: Final = "probabilities"

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Model names are URL path segments (``/models/{name}``) and folder names."""
VERSION_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_TUMOURS: Final = ("glioma", "meningioma", "pituitary")
_NUMBER: Final = (int, float)

TRAINING_KEYS: Final = (
    "created", "backend", "devices", "training_time_s", "epochs_run", "best_epoch", "seed",
    "hyperparameters", "mixed_precision", "command", "versions",
)  # fmt: skip
"""What the manifest's ``training`` object copies from run.json."""

# Every key the contract requires, as a dotted path, with the JSON types it may hold.
REQUIRED_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "format": (str,),
    "name": (str,),
    "version": (str,),
    "task": (str,),
    "classes": (list,),
    "input": (dict,),
    "input.height": (int,),
    "input.width": (int,),
    "input.channels": (int,),
    "input.layout": (str,),
    "input.dtype": (str,),
    "input.range": (list,),
    "preprocessing": (dict,),
    "preprocessing.name": (str,),
    "preprocessing.size": (list,),
    "preprocessing.steps": (list,),
    "onnx": (dict,),
    "onnx.file": (str,),
    "onnx.sha256": (str,),
    "onnx.opset": (int,),
    "onnx.input": (str,),
    "onnx.output": (str,),
    "onnx.size_bytes": (int,),
    "keras": (dict,),
    "keras.file": (str,),
    "keras.sha256": (str,),
    "keras.gradcam_layer": (str,),
    "backbone": (str,),
    "head": (str,),
    "weights_init": (str,),
    "evaluation": (dict,),
    "evaluation.split": (dict,),
    "evaluation.split.path": (str,),
    "evaluation.split.sha256": (str,),
    "evaluation.test": (dict,),
    "evaluation.test.accuracy": _NUMBER,
    "parity": (dict,),
    "parity.images": (int,),
    "parity.max_abs_diff": _NUMBER,
    "parity.argmax_agreement": _NUMBER,
    "parity.tolerance": _NUMBER,
    "created": (str,),
    "calibration": (dict,),
    "calibration.temperature": _NUMBER,
    "input_validity": (dict,),
    "input_validity.threshold": _NUMBER,
    "input_validity.output": (str,),
}


# --- building -----------------------------------------------------------------------------------------------


def build_manifest(
    *,
    name: str,
    version: str,
    run: Mapping[str, Any],
    report: Mapping[str, Any],
    onnx: Mapping[str, Any],
    keras: Mapping[str, Any],
    parity: Mapping[str, Any],
    versions: Mapping[str, str],
    created: str,
    latency: Mapping[str, Any] | None = None,
    variants: Mapping[str, Any] | None = None,
    refused_variants: Mapping[str, str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    input_validity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of an entry from the run's ``run.json`` and ``report.json`` and the export's figures.

    ``onnx`` and ``keras`` are :func:`file_record` dicts plus the tensor names / Grad-CAM layer.
    """
    height, width = run["input_size"]
    run_input = run.get("input") or {}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "task": run["task"],
        "classes": list(run["classes"]),
        "input": {
            "height": height,
            "width": width,
            "channels": 3,
            "layout": "NHWC",
            "dtype": "float32",
            "range": [0, 255],
            "color": run_input.get("color", "RGB"),
        },
        "preprocessing": dict(run["recipe"]),
        "onnx": dict(onnx),
        "keras": dict(keras),
        "backbone": run["backbone"],
        "head": run["head"],
        "weights_init": run["weights"],
        "evaluation": evaluation_figures(run, report),
        "parity": dict(parity),
        "training": {key: run.get(key) for key in TRAINING_KEYS},
        "versions": dict(versions),
        "created": created,
    }
    if calibration is not None:
        manifest["calibration"] = dict(calibration)
    if input_validity is not None:
        manifest["input_validity"] = dict(input_validity)
    if latency is not None:
        manifest["latency"] = dict(latency)
    if variants:
        manifest["variants"] = dict(variants)
    if refused_variants:
        manifest["refused_variants"] = dict(refused_variants)
    return manifest


def evaluation_figures(run: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """The split the report's figures came from and the val / test metrics without their ROC curves."""
    evaluated = report.get("run") or run  # `evaluate` on another split records that split in report["run"]
    return {
        "split": {
            "path": evaluated.get("split"),
            "sha256": evaluated.get("split_sha256"),
            "task": evaluated.get("task", run.get("task")),
            "seed": evaluated.get("split_seed"),
            "sizes": evaluated.get("split_sizes"),
        },
        "val": compact_metrics(report.get("metrics_val")),
        "test": compact_metrics(report.get("metrics_test")),
    }


def compact_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A subset's metrics without ``roc_curve`` (plotting points, not figures); None stays None."""
    if metrics is None:
        return None
    return {key: value for key, value in metrics.items() if key != "roc_curve"}


# --- files --------------------------------------------------------------------------------------------------


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """``{"file": name, "sha256", "size_bytes"}`` of a file inside an entry."""
    return {"file": path.name, "sha256": file_sha256(path), "size_bytes": path.stat().st_size}


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write a manifest as indented UTF-8 JSON; NaN or infinity raise ValueError (not JSON)."""
    path.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def load_manifest(path: Path | str) -> dict[str, Any]:
    """The manifest at ``path`` (``manifest.json`` or the entry folder holding it), parsed, not validated.

    Raises :class:`ManifestError` when it cannot be read or is not a JSON object.
    """
    source = Path(path)
    if source.is_dir():
        source = source / MANIFEST_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise ManifestError(f"cannot read the manifest {source}: {error.strerror or error}") from None
    except ValueError as error:
        raise ManifestError(f"the manifest {source} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"the manifest {source} is not a JSON object")
    return data


def load_entry(entry_dir: Path | str, *, check_files: bool = True) -> dict[str, Any]:
    """Load and validate ``entry_dir/manifest.json`` (with the files' sha256 unless ``check_files`` is off).

    Raises :class:`ManifestError` whose message lists every problem found.
    """
    folder = Path(entry_dir)
    manifest = load_manifest(folder / MANIFEST_FILE)
    problems = validate_manifest(manifest, folder, check_files=check_files)
    if problems:
        raise ManifestError(f"the model entry {folder} is invalid: " + " ".join(problems))
    return manifest


# --- validation ---------------------------------------------------------------------------------------------


GRADCAM_METHODS: Final = ("gradcam", "gradcam++", "layercam")
"""The heat-map weightings an entry may name in ``keras.gradcam_method`` (absent: ``gradcam``)."""


def validate_manifest(
    manifest: Mapping[str, Any], entry_dir: Path | str | None = None, check_files: bool = True
) -> list[str]:
    """Every problem of a manifest, one sentence each; [] when it is valid.

    With ``entry_dir`` the entry's folder name must be the model's name and, when ``check_files`` is on,
    each file listed (ONNX, Keras, variants) must be there with the recorded size and sha256.
    """
    if not isinstance(manifest, Mapping):
        return ["The manifest is not a JSON object."]
    problems = _missing_or_mistyped(manifest)
    if manifest.get("format") != FORMAT:
        problems.append(f"'format' must be {FORMAT!r}, not {manifest.get('format')!r}.")
    problems += _check_identity(manifest, entry_dir)
    problems += _check_classes(manifest.get("task"), manifest.get("classes"))
    problems += _check_input(manifest)
    problems += _check_parity(manifest.get("parity"))
    problems += _check_gradcam_method(manifest.get("keras"))
    files = _listed_files(manifest)
    for key, record in files.items():
        problems += _check_record(key, record)
    if entry_dir is not None and check_files:
        for key, record in files.items():
            problems += _check_file(Path(entry_dir), key, record)
    return problems


def _check_gradcam_method(keras: Any) -> list[str]:
    if not isinstance(keras, Mapping) or "gradcam_method" not in keras:
        return []
    if keras["gradcam_method"] not in GRADCAM_METHODS:
        return [
            f"'keras.gradcam_method' must be one of {', '.join(GRADCAM_METHODS)}, "
            f"not {keras['gradcam_method']!r}."
        ]
    return []


def _lookup(manifest: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python but not a count or a size in a manifest
    return isinstance(value, types) and not isinstance(value, bool)


def _missing_or_mistyped(manifest: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, types in REQUIRED_KEYS.items():
        parent = key.rpartition(".")[0]
        if parent and not _is_instance(_lookup(manifest, parent)[1], (dict,)):
            continue  # the parent's own problem is reported once
        found, value = _lookup(manifest, key)
        if not found:
            problems.append(f"The manifest lacks the key '{key}'.")
        elif not _is_instance(value, types):
            expected = " or ".join(_JSON_TYPE[t] for t in types)
            problems.append(f"'{key}' must be {expected}, not {_JSON_TYPE.get(type(value), 'null')}.")
    return problems


_JSON_TYPE: Final[Mapping[type, str]] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def _check_identity(manifest: Mapping[str, Any], entry_dir: Path | str | None) -> list[str]:
    problems = []
    name, version = manifest.get("name"), manifest.get("version")
    if isinstance(name, str) and not NAME_PATTERN.fullmatch(name):
        problems.append(
            f"The name {name!r} is not usable in a URL: use 1-64 letters, digits, '.', '_' or '-'."
        )
    if isinstance(version, str) and not VERSION_PATTERN.fullmatch(version):
        problems.append(f"The version {version!r} must be 1-64 letters, digits, '.', '_', '+' or '-'.")
    if entry_dir is not None and isinstance(name, str) and Path(entry_dir).name != name:
        problems.append(
            f"The entry folder {Path(entry_dir).name!r} does not carry the model's name {name!r}."
        )
    return problems


def expected_classes(task: str) -> tuple[str, ...] | None:
    """The canonical classes of a task in model-output order; None for an unknown task."""
    if task == "4class":
        return ("glioma", "meningioma", "no_tumor", "pituitary")
    if task == "binary":
        return ("no_tumor", "tumor")
    tumour = task.removeprefix("pairwise:")
    if task.startswith("pairwise:") and tumour in _TUMOURS:
        return ("no_tumor", tumour)
    return None


def _check_classes(task: Any, classes: Any) -> list[str]:
    if not isinstance(task, str) or not isinstance(classes, list):
        return []
    expected = expected_classes(task)
    if expected is None:
        return [f"The task {task!r} is unknown; expected 4class, binary or pairwise:<tumour>."]
    if tuple(classes) != expected:
        return [f"The classes of task {task} must be {list(expected)} in that order, not {classes}."]
    return []


def _check_input(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest.get("input")
    if not isinstance(spec, Mapping):
        return []
    problems = []
    height, width = spec.get("height"), spec.get("width")
    for key in ("height", "width"):
        if _is_instance(spec.get(key), (int,)) and spec[key] < 1:
            problems.append(f"'input.{key}' must be a positive number of pixels, not {spec[key]}.")
    for key, wanted in (("channels", 3), ("layout", "NHWC"), ("dtype", "float32")):
        if key in spec and spec[key] != wanted:
            problems.append(f"'input.{key}' must be {wanted!r}, not {spec[key]!r}.")
    value_range = spec.get("range")
    if isinstance(value_range, list) and not (
        len(value_range) == 2
        and all(_is_instance(v, _NUMBER) and math.isfinite(v) for v in value_range)
        and value_range[0] < value_range[1]
    ):
        problems.append(f"'input.range' must be [low, high] with low < high, not {value_range}.")
    preprocessing = manifest.get("preprocessing")
    size = preprocessing.get("size") if isinstance(preprocessing, Mapping) else None
    if isinstance(size, list) and size != [height, width]:
        problems.append(f"'preprocessing.size' {size} is not the input size [{height}, {width}].")
    return problems


def _check_parity(parity: Any) -> list[str]:
    if not isinstance(parity, Mapping):
        return []
    problems = []
    images: Any = parity.get("images")
    diff: Any = parity.get("max_abs_diff")
    agreement: Any = parity.get("argmax_agreement")
    tolerance: Any = parity.get("tolerance")
    if _is_instance(images, (int,)) and images < 1:
        problems.append("The parity check must have run on at least one image.")
    if _is_instance(diff, _NUMBER) and _is_instance(tolerance, _NUMBER) and not diff <= tolerance:
        problems.append(f"The parity check failed: max |Δ probability| {diff:g} exceeds {tolerance:g}.")
    if _is_instance(agreement, _NUMBER) and agreement != 1:
        problems.append(f"The parity check failed: the argmax agreed on a fraction {agreement:g} of images.")
    return problems


def _listed_files(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The file records by manifest key: ``onnx``, ``keras`` and ``variants.<name>``."""
    records = {key: manifest[key] for key in ("onnx", "keras") if isinstance(manifest.get(key), Mapping)}
    variants = manifest.get("variants", {})
    if not isinstance(variants, Mapping):
        return records
    for name, record in variants.items():
        records[f"variants.{name}"] = record if isinstance(record, Mapping) else {}
    return records


def _check_record(key: str, record: Mapping[str, Any]) -> list[str]:
    problems = []
    file, digest = record.get("file"), record.get("sha256")
    if key.startswith("variants.") and not (isinstance(file, str) and isinstance(digest, str)):
        problems.append(f"'{key}' must hold 'file' and 'sha256' strings.")
    if isinstance(file, str) and (Path(file).name != file or file.startswith(".") or "\\" in file):
        problems.append(f"'{key}.file' must be a plain file name inside the entry, not {file!r}.")
    if isinstance(digest, str) and not _SHA256.fullmatch(digest):
        problems.append(f"'{key}.sha256' is not a lowercase hex sha256.")
    return problems


def _check_file(entry_dir: Path, key: str, record: Mapping[str, Any]) -> list[str]:
    file, digest, size = record.get("file"), record.get("sha256"), record.get("size_bytes")
    if not isinstance(file, str) or Path(file).name != file or not isinstance(digest, str):
        return []  # already reported
    path = entry_dir / file
    if not path.is_file():
        return [f"The file {file} listed under '{key}' is missing from {entry_dir}."]
    if _is_instance(size, (int,)) and path.stat().st_size != size:
        return [
            f"The file {file} has {path.stat().st_size} bytes, not the {size} of the manifest: "
            "it was changed after export."
        ]
    if file_sha256(path) != digest:
        return [f"The file {file} does not match its sha256 in the manifest: it was changed after export."]
    return []
