"""Export one training run into the model repository: convert, check parity, write the entry atomically.

``models/<name>/`` receives ``model.onnx``, ``model.keras`` (the Grad-CAM twin), ``manifest.json``, the run's
``report.md`` with its figures and, on request, measured ``model.fp16.onnx`` / ``model.int8.onnx`` variants.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from exporter.convert import check_onnx_model, convert_keras_to_onnx
from exporter.defaults import DEFAULT_PARITY_IMAGES, DEFAULT_TOLERANCE, OPSET, default_heatmap
from exporter.entry import publish, staged_entry
from exporter.errors import ConversionError, ExportError
from exporter.manifest import (
    INPUT_NAME,
    KERAS_FILE,
    MANIFEST_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    build_manifest,
    file_record,
    file_sha256,
    validate_manifest,
    write_manifest,
)
from exporter.parity import (
    ParityResult,
    check_parity,
    interleave_by_label,
    latency_note,
    load_parity_sample,
    median_latency_ms,
    onnx_probabilities,
    onnx_session,
    preprocess_items,
)
from exporter.quantize import (
    CALIBRATION_IMAGES,
    Float32Baseline,
    VariantUnavailableError,
    labels_of,
    measure_variant,
)
from exporter.trust import default_layers, fit_trust, load_trust_data, write_trust_documents
from service.preprocessing import Recipe
from training.report import CONFUSION_PNG, CURVES_PNG, REPORT_JSON, REPORT_MD, ROC_PNG
from training.runs import MODEL_FILE, read_run
from training.splits import SplitManifest, load_split

DOCUMENTS = (REPORT_MD, CONFUSION_PNG, CURVES_PNG, ROC_PNG)
"""Copied from the run into the entry when present: they document the model (report.md links the PNGs)."""


@dataclass(frozen=True)
class ExportOptions:
    """Everything an export needs; defaults are the command line's."""

    run_dir: Path
    repository: Path
    name: str
    version: str = "1"
    parity_images: int = DEFAULT_PARITY_IMAGES
    tolerance: float = DEFAULT_TOLERANCE
    split: Path | None = None
    """The run's split when it is not where run.json says (else found from run.json)."""
    data_roots: list[Path] | None = None
    variants: Sequence[str] = ()
    bank_splits: Sequence[Path] = ()
    """Other brain MRI splits whose train subsets join the input-validity bank (the run's own always does)."""
    ood_layers: Sequence[str] | None = None
    """Layers of the input-validity check (None: :func:`exporter.trust.default_layers`)."""
    heatmap: tuple[str, str] | None = None
    """(method, Keras layer) of the heat map (None: :func:`exporter.defaults.default_heatmap`)."""
    force: bool = False
    command: str | None = None


@dataclass(frozen=True)
class ExportResult:
    """A published entry: its folder, manifest and parity figures, and the variants refused with why."""

    entry: Path
    manifest: dict[str, Any]
    parity: ParityResult
    refused: dict[str, str] = field(default_factory=dict)


def export_run(options: ExportOptions, say: Callable[[str], None] = print) -> ExportResult:
    """Convert the run's model, check parity on split images, write ``repository/name`` in one rename."""
    if not 0 <= options.tolerance < 1:
        raise ExportError(
            f"--tolerance must be a probability difference in [0, 1), not {options.tolerance:g}"
        )
    with staged_entry(options.repository, options.name, options.force) as (staging, target):
        try:
            manifest, parity, refused = fill_entry(options, staging, say)
        except ConversionError as error:
            raise ConversionError(f"{error}; nothing was written to {options.repository}") from None
        publish(staging, target, options.force)
    say(f"wrote {target}: {', '.join(sorted(p.name for p in target.iterdir()))}")
    return ExportResult(target, manifest, parity, refused)


def fill_entry(
    options: ExportOptions, staging: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], ParityResult, dict[str, str]]:
    """Write the complete entry into ``staging``: ONNX after its checks, Keras twin, documents, variants,
    and the manifest last; return the manifest, the parity figures and the refused variants."""
    run_dir = options.run_dir
    run = read_run(run_dir)
    report = read_report(run_dir)
    split_path = resolve_split(run_dir, run, options.split)
    split = load_split(split_path, data_root_override=options.data_roots)
    if list(split.classes) != list(run["classes"]):
        raise ExportError(
            f"the split {split_path} has classes {list(split.classes)}, the model {run['classes']}"
        )
    recipe = recipe_of(run)
    sample = load_parity_sample(split, recipe, options.parity_images)  # before the slow part: data moved?
    model = load_keras_model(run_dir / MODEL_FILE, run)

    say(f"converting {run_dir / MODEL_FILE} to ONNX (opset {OPSET})")
    proto = convert_keras_to_onnx(model, OPSET)
    check_onnx_model(proto, model, OPSET)
    onnx.save(proto, staging / ONNX_FILE)
    session = onnx_session(staging / ONNX_FILE)

    parity = check_parity(model, session, sample, options.tolerance)
    say(
        f"parity on {parity.images} images ({', '.join(f'{n} {s}' for s, n in parity.subsets.items())}):"
        f" max |Δ probability| {parity.max_abs_diff:.3g} <= {parity.tolerance:g}, same class everywhere"
    )
    method, heatmap_layer = options.heatmap or default_heatmap(run["backbone"], run["gradcam_layer"])
    check_heatmap_layer(model, heatmap_layer)
    # calibration and input validity, folded into the served graph (its logits output keeps the parity)
    layers = options.ood_layers or default_layers(run["backbone"], run["gradcam_layer"])
    trust_data = load_trust_data(split_path, options.bank_splits, recipe, data_roots=options.data_roots)
    trust = fit_trust(proto, model, trust_data, list(layers), say=say)
    onnx.save(trust.proto, staging / ONNX_FILE)
    session = onnx_session(staging / ONNX_FILE)
    latency = {**latency_note(), "onnx_ms": median_latency_ms(session, sample.images[0])}

    # The twin is the checked model saved again without its optimizer state (Adam keeps two moments per
    # weight): a third of the run's file, and what Grad-CAM needs is the graph and the weights only.
    model.save(staging / KERAS_FILE)
    documents = [name for name in DOCUMENTS if (run_dir / name).is_file()]
    for name in documents:
        shutil.copy2(run_dir / name, staging / name)

    variants, refused = make_variants(options.variants, proto, split, recipe, session, staging, say)
    manifest = build_manifest(
        name=options.name,
        version=options.version,
        run=run,
        report=report,
        onnx={
            **file_record(staging / ONNX_FILE),
            "opset": OPSET,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        },
        keras={**file_record(staging / KERAS_FILE), "gradcam_layer": heatmap_layer, "gradcam_method": method},
        parity={
            **parity.to_manifest(),
            "split": str(split_path),
            "split_sha256": file_sha256(split_path),
        },
        versions=export_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        latency=latency,
        variants=variants,
        refused_variants=refused,
        calibration=trust.calibration,
        input_validity=trust.input_validity,
    )
    documents += write_trust_documents(staging, trust, options.name)
    manifest["documents"] = documents
    manifest["export"] = {"run_dir": str(run_dir), "command": options.command}
    problems = validate_manifest(manifest, staging)
    if problems:  # a bug of the exporter rather than of the run, but never publish an invalid entry
        raise ExportError("the manifest written would be invalid: " + " ".join(problems))
    write_manifest(staging / MANIFEST_FILE, manifest)
    return manifest, parity, refused


def read_report(run_dir: Path) -> dict[str, Any]:
    """The run's report.json; it must hold test-subset figures, which the manifest carries."""
    path = run_dir / REPORT_JSON
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ExportError(
            f"{path} is missing; run `python -m training evaluate --model {run_dir} --subset test` first"
        ) from None
    except ValueError as error:
        raise ExportError(f"{path} is not valid JSON: {error}") from None
    if not report.get("metrics_test"):
        raise ExportError(
            f"{path} has no test-subset figures; run `python -m training evaluate --model {run_dir} "
            "--subset test` first"
        )
    return report


def resolve_split(run_dir: Path, run: dict[str, Any], override: Path | None) -> Path:
    """The run's split file: ``override``, else run.json's path (relative: to the working folder or to a
    folder above the run), checked against the sha256 recorded at training time."""
    if override is not None:
        if not override.is_file():
            raise ExportError(f"the split {override} does not exist")
        return override
    recorded = Path(run["split"])
    candidates = (
        [recorded]
        if recorded.is_absolute()
        else [recorded, *(p / recorded for p in run_dir.resolve().parents)]
    )
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise ExportError(f"the run's split {recorded} cannot be found; pass it with --split")
    if run.get("split_sha256") and file_sha256(found) != run["split_sha256"]:
        raise ExportError(
            f"the split {found} has changed since training (its sha256 is not run.json's); pass the original "
            "with --split"
        )
    return found


def recipe_of(run: dict[str, Any]) -> Recipe:
    """The run's preprocessing recipe."""
    try:
        return Recipe.from_dict(run["recipe"])
    except ValueError as error:
        raise ExportError(f"run.json holds an unusable preprocessing recipe: {error}") from None


def load_keras_model(path: Path, run: dict[str, Any]) -> keras.Model:
    """The run's Keras model, checked against run.json (input size, classes, Grad-CAM layer)."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors... on a bad file
        raise ExportError(f"cannot load the Keras model {path}: {error}") from None
    expected_input = (None, *run["input_size"], 3)
    if tuple(model.input_shape) != expected_input:
        raise ExportError(f"the model takes {model.input_shape}, run.json says {expected_input}")
    if model.output_shape[-1] != len(run["classes"]):
        raise ExportError(f"the model has {model.output_shape[-1]} outputs for {len(run['classes'])} classes")
    layer = run.get("gradcam_layer")
    if not isinstance(layer, str) or layer not in {item.name for item in model.layers}:
        raise ExportError(f"run.json's Grad-CAM layer {layer!r} is not a layer of the model")
    return model


def check_heatmap_layer(model: Any, layer: str) -> None:
    """ExportError unless ``layer`` is a layer of ``model`` with a spatial map (N, h, w, k)."""
    try:
        shape = model.get_layer(layer).output.shape
    except (ValueError, AttributeError):
        raise ExportError(f"the heat-map layer {layer!r} is not a layer of the model") from None
    if len(shape) != 4:
        raise ExportError(
            f"the heat-map layer {layer!r} gives {tuple(shape)}, not a spatial map (N, h, w, k)"
        )


def make_variants(
    names: Sequence[str],
    proto: onnx.ModelProto,
    split: SplitManifest,
    recipe: Recipe,
    session: ort.InferenceSession,
    staging: Path,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Write each requested variant that keeps the test accuracy; the others are refused with a reason."""
    variants: dict[str, Any] = {}
    refused: dict[str, str] = {}
    if not names:
        return variants, refused
    test_items = list(split.subsets.get("test", ()))
    if not test_items:
        return variants, {name: "the split has no test subset to measure it on" for name in names}
    images = preprocess_items(test_items, recipe)  # (N, h, w, 3)
    test = Float32Baseline(
        images,
        labels_of([item.label for item in test_items], split.classes),
        onnx_probabilities(session, images),
        median_latency_ms(session, images[0]),
    )
    train = interleave_by_label(split.subsets.get("train", ()), split.classes)[:CALIBRATION_IMAGES]
    calibration = preprocess_items(train, recipe) if train else images[:CALIBRATION_IMAGES]
    for name in names:
        say(f"making the {name} variant and measuring it on {len(test_items)} test images")
        try:
            outcome = measure_variant(name, proto, calibration, test)
        except VariantUnavailableError as error:
            refused[name] = f"the {name} variant was skipped: {error}"
            say(refused[name])
            continue
        except Exception as error:  # an optional variant that ONNX Runtime cannot make or run must not fail
            refused[name] = f"the {name} variant was skipped: {type(error).__name__}: {error}"
            say(refused[name])
            continue
        if outcome.refused is not None:
            refused[name] = outcome.refused
            say(outcome.refused)
            continue
        path = staging / outcome.file
        path.write_bytes(outcome.data)
        variants[name] = {**file_record(path), **outcome.record}
        record = outcome.record
        say(
            f"{name}: test accuracy {record['test_accuracy']:.4f} ({record['accuracy_change_points']:+.2f} "
            f"points), {record['latency_ms']:.2f} ms vs {record['baseline_latency_ms']:.2f} ms (batch 1), "
            f"{path.stat().st_size / 1e6:.1f} MB"
        )
    return variants, refused


def export_versions() -> dict[str, str]:
    """The versions of the tools that made and checked the ONNX graph."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
    }
