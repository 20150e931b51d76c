"""A run directory: train one model into it, or evaluate the model it holds.

``RUN_DIR/`` holds ``model.keras`` (the best model on validation), ``history.json`` (both phases, a ``phase``
per epoch), ``run.json`` (everything needed to reproduce the run and to export and serve the model: backbone,
head, weights, preprocessing recipe, classes, task, split and its sha256, Grad-CAM layer, input size, seeds,
hyper-parameters, backend, versions, training time) and the report (``report.json``, ``report.md``, PNGs,
written by :func:`training.report.write_report`).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import numpy.typing as npt

from service.preprocessing import Recipe, make_recipe
from training.batches import ImageBatches
from training.data import (
    DEFAULT_CACHE_DIR,
    DEFAULT_WORKERS,
    DataError,
    SubsetArrays,
    file_sha256,
    load_subset,
    preprocessing_code_sha256,
)
from training.errors import TrainingError
from training.evaluation import compute_metrics
from training.fit import FitConfig, count_parameters, describe_backend, two_phase_fit
from training.report import REPORT_JSON, to_jsonable, write_report
from training.splits import SUBSETS, SplitManifest, load_split
from training.zoo.build import ModelSpec, build_model, get_backbone, resolve_input_size

RUN_FORMAT = "brain-mri-run/1"
MODEL_FILE, RUN_JSON, HISTORY_JSON = "model.keras", "run.json", "history.json"
TIMING_IMAGES, TIMING_WARMUP = 20, 3
PREDICT_BATCH = 32


class RunError(TrainingError):
    """A run directory that lacks its model or run.json, or a split that does not match the model."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``train`` needs; defaults already resolved by the command line."""

    split: Path
    backbone: str
    out: Path
    fit: FitConfig
    head: str | None = None
    weights: str = "none"
    recipe: str = "crop"
    input_size: int | None = None
    mixed_precision: bool = False
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    data_roots: list[Path] | None = None
    workers: int = DEFAULT_WORKERS
    verbose: int | str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)
    """Recorded in run.json as is (e.g. how the defaults were chosen)."""


@dataclass(frozen=True)
class TrainedRun:
    """The outcome of :func:`train_run`: the trained model (as saved) and its report."""

    model: keras.Model
    spec: ModelSpec
    report: dict[str, Any]


def train_run(options: TrainOptions) -> TrainedRun:
    """Train, save and evaluate one model into ``options.out``."""
    environment = describe_backend()
    print(
        f"Keras {keras.__version__}, backend {environment['backend']} on {', '.join(environment['devices'])}"
    )
    manifest, split_sha256 = _load_split(options.split, options.data_roots)
    for subset in ("train", "val"):
        if not manifest.subsets.get(subset):
            raise DataError(f"the {subset} subset of {options.split} is empty; training needs it")
    entry = get_backbone(options.backbone)
    height, width = resolve_input_size(entry, options.input_size)
    recipe = make_recipe(options.recipe, (height, width))

    keras.utils.set_random_seed(options.fit.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if options.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # the model first: a wrong backbone, size or weights file fails before minutes of preprocessing
        model, spec = build_model(
            options.backbone,
            len(manifest.classes),
            head=options.head,
            input_size=(height, width),
            weights=options.weights,
        )
        print(f"model {model.name}: {model.count_params():,} parameters, Grad-CAM layer {spec.gradcam_layer}")
        arrays = {
            subset: load_subset(
                manifest, split_sha256, subset, recipe, cache_dir=options.cache_dir, workers=options.workers
            )
            for subset in SUBSETS
        }
        transfer_only: dict[str, Any] = {}

        def evaluate_transfer() -> None:
            for subset in ("val", "test"):
                if len(arrays[subset]):
                    transfer_only[f"metrics_{subset}"] = subset_metrics(model, arrays[subset], manifest)
            print(f"transfer only: val accuracy {transfer_only['metrics_val']['accuracy']:.4f}", flush=True)

        result = two_phase_fit(
            model,
            arrays["train"],
            arrays["val"],
            len(manifest.classes),
            options.fit,
            after_transfer=evaluate_transfer,
            verbose=options.verbose,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    _write_json(out / HISTORY_JSON, result.history)
    run = {
        "format": RUN_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": spec.backbone,
        "head": spec.head,
        "weights": spec.weights,
        "weights_sha256": file_sha256(spec.weights) if spec.weights not in ("none", "imagenet") else None,
        "task": manifest.task,
        "classes": list(manifest.classes),
        "split": str(options.split),
        "split_sha256": split_sha256,
        "split_seed": manifest.seed,
        "split_sizes": {subset: len(arrays[subset]) for subset in SUBSETS},
        "recipe": recipe.to_dict(),
        "preprocessing_code_sha256": preprocessing_code_sha256(),
        "input_size": [height, width],
        "input": {"layout": "NHWC", "dtype": "float32", "range": [0, 255], "color": "RGB", "name": "image"},
        "output": {"name": "probabilities", "activation": "softmax"},
        "gradcam_layer": spec.gradcam_layer,
        "seed": options.fit.seed,
        "hyperparameters": options.fit.to_dict(),
        "class_weight": result.class_weight,
        "mixed_precision": options.mixed_precision,
        "epochs_run": _epochs_per_phase(result.history),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "training_time_s": round(result.training_time_s, 1),
        "backend": environment["backend"],
        "devices": environment["devices"],
        "versions": {**environment["versions"], "opencv": cv2.__version__, "platform": platform.platform()},
        **options.extra,
    }
    _write_json(out / RUN_JSON, run)
    report: dict[str, Any] = {
        "run": run,
        "history": result.history,
        "training_time_s": run["training_time_s"],
        **{
            f"metrics_{s}": subset_metrics(model, arrays[s], manifest)
            for s in ("val", "test")
            if len(arrays[s])
        },
        "parameters": count_parameters(model),
        "inference_ms_per_image": time_inference(model, (arrays["test"] or arrays["val"]).images),
        "inference_timing": _timing_note(environment["backend"]),
    }
    if transfer_only:
        report["transfer_only"] = transfer_only
    write_report(out, report)
    _print_summary(out, report)
    return TrainedRun(model, spec, report)


def evaluate_run(
    run_dir: Path,
    *,
    split: Path | None = None,
    subset: str = "test",
    out: Path | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    data_roots: list[Path] | None = None,
    workers: int = DEFAULT_WORKERS,
) -> dict[str, Any]:
    """Evaluate the run's model on a subset of a split (default: its training split); write the report.

    The report in ``out`` (default the run directory) is updated when it describes the same split, so the
    other subset's figures, history and transfer-only figures stay; another split gets a fresh report.
    """
    run = read_run(run_dir)
    model = keras.models.load_model(run_dir / MODEL_FILE, compile=False)
    split_path = split or Path(run["split"])
    manifest, split_sha256 = _load_split(split_path, data_roots)
    if list(manifest.classes) != list(run["classes"]):
        raise RunError(
            f"the split's classes ({', '.join(manifest.classes)}) are not the model's "
            f"({', '.join(run['classes'])}) in the same order"
        )
    try:
        recipe = Recipe.from_dict(run["recipe"])
    except ValueError as error:
        raise RunError(f"{run_dir / RUN_JSON} holds an unusable recipe: {error}") from None
    arrays = load_subset(manifest, split_sha256, subset, recipe, cache_dir=cache_dir, workers=workers)
    if len(arrays) == 0:
        raise DataError(f"the {subset} subset of {split_path} is empty")

    target = out or run_dir
    same_split = split_sha256 == run.get("split_sha256")
    report = _previous_report(target, split_sha256) if same_split else {}
    config = dict(run)
    if not same_split:
        config.update(
            split=str(split_path),
            split_sha256=split_sha256,
            split_seed=manifest.seed,
            split_sizes={s: len(manifest.items(s)) for s in manifest.subsets},
            trained_on_split=run.get("split"),
            trained_on_split_sha256=run.get("split_sha256"),
        )
    history_path = run_dir / HISTORY_JSON
    if "history" not in report and history_path.is_file():
        report["history"] = json.loads(history_path.read_text(encoding="utf-8"))
    environment = describe_backend()
    report.update(
        {
            "run": config,
            "training_time_s": run.get("training_time_s"),
            f"metrics_{subset}": subset_metrics(model, arrays, manifest),
            "parameters": count_parameters(model),
            "inference_ms_per_image": time_inference(model, arrays.images),
            "inference_timing": _timing_note(environment["backend"]),
            "evaluated": {
                "subset": subset,
                "split": str(split_path),
                "split_sha256": split_sha256,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "backend": environment["backend"],
                "devices": environment["devices"],
            },
        }
    )
    if not same_split:
        report.pop("transfer_only", None)
    write_report(target, report)
    _print_summary(target, report)
    return report


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's run.json; :class:`RunError` when the directory is not a finished run."""
    for name in (RUN_JSON, MODEL_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir} is not a training run: {name} is missing")
    try:
        run: dict[str, Any] = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except ValueError as error:
        raise RunError(f"{run_dir / RUN_JSON} is not valid JSON: {error}") from None
    missing = [key for key in ("classes", "recipe", "split") if key not in run]
    if missing:
        raise RunError(f"{run_dir / RUN_JSON} lacks {', '.join(missing)}")
    return run


def predict_subset(
    model: keras.Model, arrays: SubsetArrays, batch_size: int = PREDICT_BATCH
) -> npt.NDArray[Any]:
    """(N, C) probabilities of the subset, in batches."""
    batches = ImageBatches(arrays.images, arrays.labels, int(model.output.shape[-1]), batch_size)
    return np.asarray(model.predict(batches, verbose=0), dtype=np.float64)


def subset_metrics(model: keras.Model, arrays: SubsetArrays, manifest: SplitManifest) -> dict[str, Any]:
    """``compute_metrics`` of the model's predictions on one subset."""
    return compute_metrics(arrays.labels, predict_subset(model, arrays), manifest.classes)


def time_inference(
    model: keras.Model, images: npt.NDArray[np.uint8], count: int = TIMING_IMAGES, warmup: int = TIMING_WARMUP
) -> float | None:
    """Median wall time in ms of ``model(x)`` on one image (batch 1), after ``warmup`` untimed calls."""
    if len(images) == 0:
        return None
    samples = [
        images[i % len(images)][None].astype(np.float32) for i in range(warmup + count)
    ]  # (1, h, w, 3)
    times = []
    for index, x in enumerate(samples):
        started = time.perf_counter()
        keras.ops.convert_to_numpy(model(x, training=False))  # to NumPy: waits for asynchronous backends
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 3)


def _timing_note(backend: str) -> dict[str, Any]:
    return {"batch_size": 1, "images": TIMING_IMAGES, "warmup": TIMING_WARMUP, "statistic": "median",
            "how": f"Keras model(x) on the {backend} backend"}  # fmt: skip


def _load_split(path: Path, data_roots: list[Path] | None) -> tuple[SplitManifest, str]:
    manifest = load_split(path, data_root_override=data_roots)
    return manifest, file_sha256(path)


def _previous_report(run_dir: Path, split_sha256: str) -> dict[str, Any]:
    """The report already in ``run_dir`` when it describes the split ``split_sha256``, else {}."""
    path = run_dir / REPORT_JSON
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (report.get("run") or {}).get("split_sha256") != split_sha256:
        return {}
    for key in ("format", "generated"):
        report.pop(key, None)
    return report


def _epochs_per_phase(history: dict[str, list[Any]]) -> dict[str, int]:
    phases = history.get("phase", [])
    return {phase: phases.count(phase) for phase in dict.fromkeys(phases)}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _print_summary(run_dir: Path, report: dict[str, Any]) -> None:
    parts = [
        f"{subset} accuracy {report[key]['accuracy']:.4f} (n = {report[key]['n']})"
        for subset, key in (("val", "metrics_val"), ("test", "metrics_test"))
        if report.get(key)
    ]
    timing = report.get("inference_ms_per_image")
    if timing is not None:
        parts.append(f"{timing:.1f} ms per image (batch 1)")
    print(f"report written to {run_dir / 'report.md'}: " + "; ".join(parts), flush=True)
