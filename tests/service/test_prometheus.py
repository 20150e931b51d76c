"""A real Prometheus server scrapes a real ``python -m service`` and answers queries about its predictions.

The ``prometheus`` binary comes from Debian's package, which ``.ci/run`` installs. Where it is missing the
test fails under CI (``CI`` set) and skips on a developer machine, with the same sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.process import free_port, wait_for_ready_url

SLICES = [
    "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/no_tumor/image(1).jpg",
    "br35h/yes/y355.jpg",  # PNG data under a .jpg name
]
JOB = "brain-mri-test"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "brain-mri.json"
WAIT_S = 60.0
MISSING = (
    "The prometheus binary is not on PATH: .ci/run installs it "
    "(apt-get install --no-install-recommends prometheus, Debian's package)."
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """The path of ``prometheus``; a failure under CI, a skip elsewhere, when it is missing."""
    path = shutil.which("prometheus")
    if path is None:
        if _in_ci():
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return path


@pytest.fixture
def prometheus(
    prometheus_binary: str, server: tuple[str, Path], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """(base URL, log file) of a Prometheus on loopback scraping the live service every second."""
    target = server[0].removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f'      - targets: ["{target}"]\n'
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    command = [
        prometheus_binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready_url(process, f"{base}/-/ready", log, timeout_s=WAIT_S, what="Prometheus")
        yield base, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query (Prometheus' HTTP API)."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    return list(body["data"]["result"])


def _wait_for(
    base: str, promql: str, accept: Callable[[list[dict[str, Any]]], bool], log: Path
) -> list[dict[str, Any]]:
    """Poll ``promql`` until ``accept(result)``, at most WAIT_S seconds."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = _query(base, promql)
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{promql} still gives {result} after {WAIT_S} s; prometheus log:\n{log.read_text()}"
            )
        time.sleep(0.5)


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


@pytest.mark.realdata
@pytest.mark.slow
def test_prometheus_scrapes_the_live_service(
    prometheus: tuple[str, Path], server: tuple[str, Path], data_root: Path
) -> None:
    prom, log = prometheus
    base, _ = server
    with httpx.Client(base_url=base, timeout=60) as client:
        for relative in SLICES:
            files = {"file": (Path(relative).name, (data_root / relative).read_bytes(), "image/jpeg")}
            response = client.post("/predict", files=files)
            assert response.status_code == 200, response.text
            assert response.json()["model"]["name"] == "tiny-4class"
    sent = len(SLICES)

    up = _wait_for(prom, f'up{{job="{JOB}"}}', lambda r: len(r) == 1 and _value(r[0]) == 1.0, log)
    assert up[0]["metric"]["instance"] == base.removeprefix("http://")

    # the histogram's _count per model: every prediction ran ONNX Runtime once
    latency = _wait_for(
        prom,
        f'mri_inference_duration_seconds_count{{job="{JOB}",model="tiny-4class"}}',
        lambda r: len(r) == 1 and _value(r[0]) >= sent,
        log,
    )
    labels = latency[0]["metric"]
    assert labels["model"] == "tiny-4class" and labels["version"] == "0.0.1-test" and labels["job"] == JOB
    assert _value(latency[0]) == sent

    predictions = _wait_for(prom, "sum(mri_predictions_total)", lambda r: len(r) == 1, log)
    assert _value(predictions[0]) == sent
    by_model = _query(prom, "sum by (model) (mri_predictions_total)")
    assert {s["metric"]["model"]: _value(s) for s in by_model} == {"tiny-4class": sent}

    # the dashboard's quantile over the scraped buckets (cumulative: a rate over a few samples may be 0)
    p95 = _query(prom, "histogram_quantile(0.95, sum by (le, model) (mri_inference_duration_seconds_bucket))")
    assert [s["metric"]["model"] for s in p95] == ["tiny-4class"]
    assert _value(p95[0]) > 0
    info = _query(prom, "mri_model_info")
    assert {s["metric"]["model"] for s in info} == {"tiny-4class", "tiny-binary"}

    # every query of the Grafana dashboard is valid PromQL for a real Prometheus
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expr in exprs:
        _query(prom, expr.replace("$model", ".*"))
    assert _value(_query(prom, "count(mri_model_info)")[0]) == 2
