"""``python -m training compare RUN_DIR [RUN_DIR ...] --out DIR``: several runs of one split in one table.

Reads each run's ``report.json`` (and ``run.json`` when present, for configuration the report lacks) and
writes ``DIR/comparison.md`` and ``DIR/comparison.json`` with one row per run, as the seed papers' comparison
tables: backbone, head, weights, parameters, training time, transfer-only and fine-tuned accuracy, macro F1,
inference time.

Figures from different splits are not comparable, so runs whose split differs (the manifest's sha256 when
recorded, else its path) are refused unless ``--allow-mixed-splits`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.report import (
    FINETUNE,
    REPORT_FORMAT,
    REPORT_JSON,
    TRANSFER,
    accuracy_of,
    final_stage,
    format_duration,
    format_ms,
    format_percent,
    macro_of,
    markdown_table,
    split_reference,
    to_jsonable,
)

COMPARISON_FORMAT = "brain-mri-comparison/1"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
RUN_JSON = "run.json"
HEADER = [
    "Backbone",
    "Head",
    "Weights",
    "Params",
    "Train time",
    "Transfer-only val/test acc",
    "Fine-tuned val/test acc",
    "Macro F1",
    "Inference ms",
]


class CompareError(TrainingError):
    """Runs that cannot be compared: a missing or unreadable report, or runs from different splits."""


def load_run_report(run_dir: Path) -> dict[str, Any]:
    """A run's report, ``run`` completed from ``run.json``; :class:`CompareError` if there is no report."""
    path = run_dir / REPORT_JSON
    if not path.is_file():
        hint = "" if run_dir.is_dir() else " (the run directory does not exist)"
        raise CompareError(
            f"{path} not found{hint}; run `python -m training evaluate --model {run_dir}` first"
        )
    report = _read_json(path)
    if not str(report.get("format", REPORT_FORMAT)).startswith(REPORT_FORMAT.split("/")[0] + "/"):
        raise CompareError(f"{path} is not a run report (format {report.get('format')!r})")
    config: dict[str, Any] = {}
    run_json = run_dir / RUN_JSON
    if run_json.is_file():
        extra = _read_json(run_json)
        config.update(extra["run"] if isinstance(extra.get("run"), dict) else extra)
    config.update(report.get("run") or {})
    return {**report, "run": config}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompareError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CompareError(f"{path} does not hold a JSON object")
    return data


def split_key(run: Mapping[str, Any], all_have_sha256: bool) -> str | None:
    """What runs must share to be on one split: the manifest sha256 if every run has one, else its path."""
    if all_have_sha256:
        return f"sha256 {run['split_sha256']}"
    reference = split_reference({k: v for k, v in run.items() if k != "split_sha256"})
    return None if reference is None else f"path {os.path.normpath(reference[1])}"


def check_same_split(run_dirs: Sequence[Path], reports: Sequence[Mapping[str, Any]]) -> str | None:
    """The split all runs share (its description); :class:`CompareError` naming the runs when they differ."""
    runs = [r.get("run") or {} for r in reports]
    all_have_sha256 = all(run.get("split_sha256") for run in runs)
    keys = [split_key(run, all_have_sha256) for run in runs]
    unknown = [str(d) for d, key in zip(run_dirs, keys, strict=True) if key is None]
    if unknown:
        raise CompareError(
            f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not record a split "
            "(no split_sha256 or split path in the report); pass --allow-mixed-splits to compare anyway"
        )
    if len(set(keys)) > 1:
        listing = "; ".join(f"{d}: {_short(k)}" for d, k in zip(run_dirs, keys, strict=True))
        raise CompareError(
            f"the runs come from different splits ({listing}); their figures are not comparable. "
            "Compare runs of one split, or pass --allow-mixed-splits"
        )
    return keys[0]


def _short(key: str | None) -> str:
    if key is None:
        return "unknown split"
    kind, _, value = key.partition(" ")
    return f"sha256 {value[:12]}…" if kind == "sha256" else value


def comparison_row(run_dir: Path, report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one run that the comparison table shows, as plain numbers (accuracies as fractions)."""
    run: Mapping[str, Any] = report.get("run") or {}
    stage = final_stage(report)
    transfer: Mapping[str, Any] = report.get("transfer_only") or {}
    if stage == TRANSFER:
        transfer = report  # the final model is the transfer-only one; there is no fine-tuned model
    finetuned: Mapping[str, Any] = report if stage == FINETUNE else {}
    headline_subset = "test" if report.get("metrics_test") else "val"
    headline = report.get("metrics_test") or report.get("metrics_val")
    reference = split_reference(run)
    return {
        "run_dir": str(run_dir),
        "backbone": run.get("backbone"),
        "head": run.get("head"),
        "weights": run.get("weights"),
        "recipe": run.get("recipe"),
        "split": None if reference is None else reference[1],
        "final_stage": stage,
        "parameters_total": (report.get("parameters") or {}).get("total"),
        "training_time_s": report.get("training_time_s"),
        "transfer_only_val_accuracy": accuracy_of(transfer.get("metrics_val")),
        "transfer_only_test_accuracy": accuracy_of(transfer.get("metrics_test")),
        "finetuned_val_accuracy": accuracy_of(finetuned.get("metrics_val")),
        "finetuned_test_accuracy": accuracy_of(finetuned.get("metrics_test")),
        "macro_f1": macro_of(headline, "f1"),
        "macro_f1_subset": headline_subset if headline else None,
        "inference_ms_per_image": report.get("inference_ms_per_image"),
    }


def build_comparison(run_dirs: Sequence[Path], *, allow_mixed_splits: bool = False) -> dict[str, Any]:
    """The comparison document of these runs; :class:`CompareError` on a missing report or mixed splits."""
    if not run_dirs:
        raise CompareError("give at least one run directory")
    reports = [load_run_report(Path(d)) for d in run_dirs]
    split: str | None = None
    mixed = False
    try:
        split = check_same_split(run_dirs, reports)
    except CompareError:
        if not allow_mixed_splits:
            raise
        mixed = True
    first_run = reports[0].get("run") or {}
    return {
        "format": COMPARISON_FORMAT,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mixed_splits": mixed,
        "split": None
        if mixed
        else {"key": split, "task": first_run.get("task"), "classes": first_run.get("classes")},
        "runs": [comparison_row(Path(d), r) for d, r in zip(run_dirs, reports, strict=True)],
    }


def render_comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """The comparison as Markdown: what split, one table, and how to read it."""
    rows = comparison["runs"]
    lines = ["# Backbone comparison", "", f"Generated {comparison.get('generated', '?')}.", ""]
    split = comparison.get("split")
    if comparison.get("mixed_splits") or split is None:
        lines += [
            "**The runs come from different (or unrecorded) splits: their figures are not comparable.**",
            "",
        ]
    else:
        task = f", task `{split['task']}`" if split.get("task") else ""
        lines += [f"All {len(rows)} runs use one split ({_short(split['key'])}{task}).", ""]
    header = list(HEADER) + (["Split"] if comparison.get("mixed_splits") else [])
    table = []
    for row in rows:
        cells = [
            str(row.get("backbone") or "?"),
            str(row.get("head") or "—"),
            str(row.get("weights") or "—"),
            _millions(row.get("parameters_total")),
            format_duration(row.get("training_time_s")),
            _pair(row["transfer_only_val_accuracy"], row["transfer_only_test_accuracy"]),
            _pair(row["finetuned_val_accuracy"], row["finetuned_test_accuracy"]),
            format_percent(row.get("macro_f1")) + ("" if row.get("macro_f1_subset") != "val" else " (val)"),
            format_ms(row.get("inference_ms_per_image")).removesuffix(" ms"),
        ]
        if comparison.get("mixed_splits"):
            cells.append(str(row.get("split") or "unknown"))
        table.append(cells)
    lines += markdown_table(header, table, align=["l", "l", "l"] + ["r"] * (len(header) - 3))
    lines += [
        "",
        "Accuracies in percent, as validation / test. Transfer-only: the backbone frozen, only the head "
        "trained; fine-tuned: after unfreezing the backbone. Macro F1 is the unweighted mean over classes of "
        "the final model on the test subset (on validation where marked). Params: all parameters of the "
        "final model, in millions. Train time covers all phases. Inference: milliseconds per image as "
        "measured by each run (see its report).",
        "",
        "Runs:",
        "",
        *(f"- `{row['run_dir']}`" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _pair(val: float | None, test: float | None) -> str:
    if val is None and test is None:
        return "—"
    return f"{format_percent(val)} / {format_percent(test)}"


def _millions(count: int | None) -> str:
    return "—" if count is None else f"{count / 1e6:.2f} M"


def write_comparison(out_dir: Path, comparison: Mapping[str, Any]) -> None:
    """Write ``comparison.json`` and ``comparison.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(comparison), indent=2, allow_nan=False) + "\n"
    (out_dir / COMPARISON_JSON).write_text(text, encoding="utf-8")
    (out_dir / COMPARISON_MD).write_text(render_comparison_markdown(comparison), encoding="utf-8")


NAME = "compare"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``compare`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="compare several runs of one split in one table (comparison.md, comparison.json)",
        description=(
            "Read each run's report.json and write one comparison table of backbones, as the seed papers' "
            "comparison tables. Runs from different splits are refused unless --allow-mixed-splits is given."
        ),
    )
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories to compare"
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder for comparison.md and comparison.json"
    )
    parser.add_argument(
        "--allow-mixed-splits",
        action="store_true",
        help="compare runs even when they come from different splits (the table then says so)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build, write and print the comparison; :class:`CompareError` on a missing report or mixed splits."""
    comparison = build_comparison(args.run_dirs, allow_mixed_splits=args.allow_mixed_splits)
    write_comparison(args.out, comparison)
    print(render_comparison_markdown(comparison), end="")
    print(f"wrote {args.out / COMPARISON_MD} and {args.out / COMPARISON_JSON}", file=sys.stderr)
    return 0
