"""A run's evaluation report: ``report.json``, ``report.md`` and its PNG figures, written into the run folder.

The report dict (filled by the train and evaluate commands) holds ``run`` (the run configuration),
``metrics_val`` and ``metrics_test`` (``compute_metrics`` outputs), ``history`` (lists per epoch, with
``phase``), ``training_time_s``, ``parameters`` {total, trainable}, ``inference_ms_per_image`` and
optionally ``transfer_only`` {metrics_val, metrics_test} (the figures after the transfer phase, before
fine-tuning). Every part is optional: what is missing is left out of the Markdown and its figure is not drawn.

``report.md`` reads like the seed papers' result tables: a summary (accuracy and macro precision, recall, F1),
a per-class table with specificity and ROC AUC, the confusion matrix, cost figures, and the split they came
from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPORT_FORMAT = "brain-mri-report/1"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"
ROC_PNG = "roc.png"

TRANSFER, FINETUNE = "transfer", "finetune"
MISSING = "—"


# --- writing ------------------------------------------------------------------------------------------------


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json, report.md and the figures the report has data for; stale figures are removed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    document.update({k: v for k, v in to_jsonable(report).items() if k not in document})
    (run_dir / REPORT_JSON).write_text(
        json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )

    drawers = _figure_drawers(document)
    for name in (CONFUSION_PNG, CURVES_PNG, ROC_PNG):
        path = run_dir / name
        if name in drawers:
            drawers[name](path)
        else:
            path.unlink(missing_ok=True)
    (run_dir / REPORT_MD).write_text(render_report_markdown(document), encoding="utf-8")


def _figure_drawers(report: Mapping[str, Any]) -> dict[str, Callable[[Path], None]]:
    """The figures this report has data for, by file name; the Markdown links exactly these."""
    drawers: dict[str, Callable[[Path], None]] = {}
    subset, metrics = headline_metrics(report)
    # matplotlib is imported only when a figure is drawn: `compare` and the Markdown need none.
    if metrics is not None and metrics.get("confusion_matrix"):
        title = f"Confusion matrix, {subset} subset (n = {metrics.get('n', '?')})"
        drawers[CONFUSION_PNG] = lambda path: _plots().plot_confusion_matrix(metrics, path, title=title)
    history = report.get("history") or {}
    if any(history.get(key) for key in ("accuracy", "val_accuracy", "loss", "val_loss")):
        drawers[CURVES_PNG] = lambda path: _plots().plot_training_curves(history, path)
    if metrics is not None and metrics.get("roc_curve"):
        roc_title = f"ROC one vs rest, {subset} subset"
        drawers[ROC_PNG] = lambda path: _plots().plot_roc_curves(metrics, path, title=roc_title)
    return drawers


def _plots() -> ModuleType:
    from training import plots

    return plots


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NumPy values unwrapped, paths as strings, NaN and infinity as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


# --- reading the report dict --------------------------------------------------------------------------------


def headline_metrics(report: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The subset the headline figures come from: test when evaluated on it, else validation."""
    if report.get("metrics_test"):
        return "test", report["metrics_test"]
    if report.get("metrics_val"):
        return "validation", report["metrics_val"]
    return "test", None


def final_stage(report: Mapping[str, Any]) -> str | None:
    """Whether the final model is fine-tuned (``finetune``) or transfer-only (``transfer``), if known."""
    phases = [str(p) for p in (report.get("history") or {}).get("phase", [])]
    if FINETUNE in phases or report.get("transfer_only"):
        return FINETUNE
    if phases:
        return TRANSFER
    return None


def split_reference(run: Mapping[str, Any]) -> tuple[str, str] | None:
    """How a run names its split: ("sha256", digest), else ("path", manifest path), or None."""
    digest = run.get("split_sha256")
    if digest:
        return "sha256", str(digest)
    path = run.get("split") or run.get("split_path")
    if path:
        return "path", str(path)
    return None


def model_name(run: Mapping[str, Any]) -> str:
    """``backbone + head``, as the seeds name their models."""
    backbone = str(run.get("backbone") or "model")
    head = run.get("head")
    return f"{backbone} + {head}" if head else backbone


def accuracy_of(metrics: Mapping[str, Any] | None) -> float | None:
    return None if not metrics else metrics.get("accuracy")


def macro_of(metrics: Mapping[str, Any] | None, key: str) -> float | None:
    return None if not metrics else (metrics.get("macro") or {}).get(key)


# --- formatting ---------------------------------------------------------------------------------------------


def format_percent(value: float | None) -> str:
    return MISSING if value is None else f"{100.0 * value:.2f}%"


def format_fraction(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def format_count(value: int | float | None) -> str:
    return MISSING if value is None else f"{int(value):,}"


def format_duration(seconds: float | None) -> str:
    """``1 h 02 min 03 s``, ``4 min 05 s`` or ``12.3 s``."""
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def format_ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f} ms"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = ()
) -> list[str]:
    """A GitHub table; ``align`` holds ``l`` or ``r`` per column (default: first left, the rest right)."""
    aligns = list(align) or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in aligns]
    lines = [_row(header), _row(rule)]
    lines.extend(_row(row) for row in rows)
    return lines


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


# --- Markdown -----------------------------------------------------------------------------------------------


def render_report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: split, summary, per-class tables, confusion matrices, costs, figures."""
    run: Mapping[str, Any] = report.get("run") or {}
    lines = [f"# Brain MRI classification report: {model_name(run)}", ""]
    if report.get("generated"):
        lines += [f"Generated {report['generated']} ({report.get('format', REPORT_FORMAT)}).", ""]
    lines += [
        "Research use only: these figures describe one split of public MRI data sets and do not establish "
        "clinical performance.",
        "",
        "## Data",
        "",
        *_data_lines(report),
        "",
        "## Summary",
        "",
        *_summary_lines(report),
        "",
    ]
    for subset, key in (("Test", "metrics_test"), ("Validation", "metrics_val")):
        if report.get(key):
            lines += _subset_lines(subset, report[key])
    lines += ["## Training", "", *_training_lines(report), ""]
    if run:
        lines += ["## Run configuration", "", *_config_lines(run), ""]
    figures = _figure_drawers(report)
    if figures:
        captions = {CONFUSION_PNG: "Confusion matrix", CURVES_PNG: "Training curves", ROC_PNG: "ROC curves"}
        lines += ["## Figures", ""]
        for name in figures:
            lines += [f"![{captions[name]}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _data_lines(report: Mapping[str, Any]) -> list[str]:
    run: Mapping[str, Any] = report.get("run") or {}
    facts = []
    if run.get("task"):
        facts.append(f"task `{run['task']}`")
    if run.get("classes"):
        facts.append("classes " + ", ".join(f"`{c}`" for c in run["classes"]))
    path = run.get("split") or run.get("split_path")
    if path:
        facts.append(f"split manifest `{path}`")
    if run.get("split_sha256"):
        facts.append(f"manifest sha256 `{str(run['split_sha256'])[:16]}…`")
    seed = run.get("split_seed", run.get("seed"))
    if seed is not None:
        facts.append(f"seed {seed}")
    sizes = run.get("split_sizes") or run.get("sizes")
    if isinstance(sizes, Mapping) and sizes:
        facts.append("subset sizes " + ", ".join(f"{k} {format_count(v)}" for k, v in sizes.items()))
    lines = [
        ("Split: " + "; ".join(facts) + ".") if facts else "The run does not record which split it used."
    ]
    if path is None and not run.get("split_sha256"):
        lines.append("Without the split manifest these figures cannot be tied to particular images.")
    measured = [
        f"{name} figures on {format_count(report[key].get('n'))} images"
        for name, key in (("validation", "metrics_val"), ("test", "metrics_test"))
        if report.get(key)
    ]
    if measured:
        sentence = "; ".join(measured)
        lines += ["", sentence[0].upper() + sentence[1:] + "."]
    return lines


def _summary_lines(report: Mapping[str, Any]) -> list[str]:
    run: Mapping[str, Any] = report.get("run") or {}
    stage = final_stage(report)
    rows: list[tuple[str, Mapping[str, Any]]] = []
    transfer = report.get("transfer_only") or {}
    if transfer.get("metrics_val") or transfer.get("metrics_test"):
        rows.append((f"{model_name(run)}, transfer only", transfer))
    final_label = {FINETUNE: "fine-tuned", TRANSFER: "transfer only"}.get(stage or "", "")
    rows.append((f"{model_name(run)}, {final_label}" if final_label else model_name(run), report))

    subset = "test" if report.get("metrics_test") else "validation"
    header = ["Model", "Val acc", "Test acc", "Precision", "Recall", "F1"]
    table = []
    for label, part in rows:
        # every row on the subset the note names, so that no figure is silently from another subset
        headline = part.get("metrics_test" if subset == "test" else "metrics_val")
        table.append(
            [
                label,
                format_percent(accuracy_of(part.get("metrics_val"))),
                format_percent(accuracy_of(part.get("metrics_test"))),
                *(format_percent(macro_of(headline, key)) for key in ("precision", "recall", "f1")),
            ]
        )
    n_classes = len((report.get("run") or {}).get("classes") or []) or _class_count(report)
    note = (
        f"Precision, recall and F1 are macro averages over the {n_classes} classes on the {subset} subset; "
        "accuracy is the share of correctly classified images."
    )
    return [*markdown_table(header, table), "", note]


def _class_count(report: Mapping[str, Any]) -> int:
    _, metrics = headline_metrics(report)
    return len((metrics or {}).get("per_class") or {})


def _subset_lines(subset: str, metrics: Mapping[str, Any]) -> list[str]:
    n = metrics.get("n")
    lines = [f"## {subset} subset (n = {format_count(n)})", ""]
    lines += [f"Accuracy {format_percent(metrics.get('accuracy'))}.", ""]
    header = ["Class", "Precision", "Recall (sensitivity)", "Specificity", "F1", "ROC AUC", "Support"]
    rows = [_class_row(name, values, values.get("support")) for name, values in metrics["per_class"].items()]
    for average in ("macro", "weighted"):
        if metrics.get(average):
            rows.append(_class_row(f"*{average} average*", metrics[average], n))
    lines += [*markdown_table(header, rows), ""]
    matrix = metrics.get("confusion_matrix")
    if matrix:
        names = [str(c) for c in matrix["labels"]]
        lines += [
            f"Confusion matrix, {subset.lower()} subset (rows: true class, columns: predicted class):",
            "",
        ]
        rows = [
            [f"**{name}**", *(str(c) for c in counts)]
            for name, counts in zip(names, matrix["counts"], strict=True)
        ]
        lines += [*markdown_table(["true \\ predicted", *names], rows), ""]
    return lines


def _class_row(name: str, values: Mapping[str, Any], support: int | None) -> list[str]:
    return [
        name,
        format_percent(values.get("precision")),
        format_percent(values.get("recall")),
        format_percent(values.get("specificity")),
        format_percent(values.get("f1")),
        format_fraction(values.get("roc_auc")),
        format_count(support),
    ]


def _training_lines(report: Mapping[str, Any]) -> list[str]:
    run: Mapping[str, Any] = report.get("run") or {}
    lines = []
    for label, key in (
        ("Backbone", "backbone"),
        ("Head", "head"),
        ("Weights", "weights"),
        ("Recipe", "recipe"),
    ):
        if run.get(key) is not None:
            lines.append(f"- {label}: `{run[key]}`")
    phases = [str(p) for p in (report.get("history") or {}).get("phase", [])]
    if phases:
        counts = {p: phases.count(p) for p in dict.fromkeys(phases)}
        lines.append(
            "- Epochs run: " + ", ".join(f"{n} {p}" for p, n in counts.items()) + f" ({len(phases)} in all)"
        )
    time_s = report.get("training_time_s")
    if time_s is not None:
        lines.append(f"- Training time: {format_duration(time_s)} ({time_s:,.1f} s, all phases)")
    parameters = report.get("parameters") or {}
    if parameters:
        lines.append(
            f"- Parameters: {format_count(parameters.get('total'))} in all, "
            f"{format_count(parameters.get('trainable'))} trainable in the final model"
        )
    if report.get("inference_ms_per_image") is not None:
        lines.append(f"- Inference: {format_ms(report['inference_ms_per_image'])} per image")
    return lines or ["No training facts were recorded."]


def _config_lines(run: Mapping[str, Any]) -> list[str]:
    rows = [[f"`{key}`", _config_value(value)] for key, value in run.items()]
    return markdown_table(["Setting", "Value"], rows, align=["l", "l"])


def _config_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return MISSING if value is None else str(value)
