"""The load script's PNG: latency percentiles and throughput against concurrency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_load(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
    """Two panels: p50/p95/p99 latency (log scale) and throughput, one line per (model, Grad-CAM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    series: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault((row["model"], row["gradcam"]), []).append(row)
    figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(12, 4.8))
    for (model, gradcam), points in series.items():
        points = sorted(points, key=lambda row: row["concurrency"])
        measured = [row for row in points if row["latency"]]
        label = f"{model}, Grad-CAM {'on' if gradcam else 'off'}"
        x = [row["concurrency"] for row in measured]
        (line,) = latency_axes.plot(
            x, [row["latency"]["p50_ms"] for row in measured], "o-", label=f"{label} p50"
        )
        colour = line.get_color()
        latency_axes.plot(x, [row["latency"]["p95_ms"] for row in measured], "s--", color=colour, alpha=0.7)
        latency_axes.plot(x, [row["latency"]["p99_ms"] for row in measured], "^:", color=colour, alpha=0.7)
        throughput_axes.plot(
            [row["concurrency"] for row in points],
            [row["throughput_rps"] for row in points],
            "o-",
            label=label,
        )
    latency_axes.set(
        xlabel="concurrent clients",
        ylabel="latency (ms); p50 solid, p95 dashed, p99 dotted",
        yscale="log",
        title="Latency",
    )
    throughput_axes.set(xlabel="concurrent clients", ylabel="successful requests / s", title="Throughput")
    concurrencies = sorted({row["concurrency"] for row in rows})
    for axes in (latency_axes, throughput_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axes.xaxis.set_minor_locator(NullLocator())
        axes.grid(True, which="both", alpha=0.3)
    latency_axes.yaxis.set_major_formatter(ScalarFormatter())
    latency_axes.yaxis.set_minor_formatter(ScalarFormatter())
    throughput_axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
