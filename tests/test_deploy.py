"""The deployment files agree with each other and with the service: docker-compose.yml, the Prometheus config,
Grafana's provisioning and dashboard, and the two Dockerfiles.

No Docker engine runs here: ``docker-compose config -q`` and hadolint validate the syntax; these tests check
what they cannot (the dashboard asks for metrics the service exports, mounts point at files that exist, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from service.metrics import ServiceMetrics

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "brain-mri.json"
METRIC = re.compile(r"\bmri_[a-z0-9_]+")


def load_yaml(path: Path) -> Any:
    """A YAML file as plain data."""
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """{container path: host path} of a service's bind mounts (short syntax, ``:ro`` dropped)."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        mounts[container] = host
    return mounts


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


def _service_series() -> set[str]:
    """Every series name a fresh service's registry can expose (histograms as _bucket, _count and _sum)."""
    text = generate_latest(ServiceMetrics().registry).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
            names.update(name + suffix for suffix in suffixes)
    return names


def test_compose_binds_loopback_and_pins_its_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"mri", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        image = service.get("image", "")
        if "build" not in service:
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and re.search(r"\d", tag), (
                f"{name}: unpinned image {image}"
            )
        else:
            dockerfile = (
                REPO_ROOT / service["build"].get("context", ".") / service["build"].get("dockerfile", "")
            )
            assert (dockerfile if dockerfile.is_file() else dockerfile / "Dockerfile").is_file(), name
        for host in _volumes(service).values():
            assert (REPO_ROOT / host).exists(), f"{name} mounts {host}, which does not exist"


def test_compose_memory_limit_covers_the_worst_case_of_its_settings(compose: dict[str, Any]) -> None:
    # resident with Grad-CAM loaded (README: ~915 MiB) + concurrency x (decode budget + upload limit + slack)
    mri = compose["services"]["mri"]
    environment = mri["environment"]
    concurrency, budget = int(environment["MRI_MAX_CONCURRENCY"]), int(environment["MRI_MAX_DECODE_MIB"])
    limit_mib = int(str(mri["mem_limit"]).removesuffix("m"))
    assert limit_mib >= 915 + concurrency * (budget + 20 + 16)


def test_compose_mounts_the_prometheus_config_that_scrapes_the_service(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    container_path = config_flag.split("=", 1)[1]
    mounted = REPO_ROOT / _volumes(prometheus)[container_path]
    assert mounted.resolve() == PROMETHEUS_CONFIG.resolve() and PROMETHEUS_CONFIG.is_file()

    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["brain-mri"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["mri:8000"]
    service_ports = [p.rsplit(":", 1)[1] for p in compose["services"]["mri"]["ports"]]
    assert "8000" in service_ports  # the container port the target names


def test_grafana_provisioning_matches_compose_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _volumes(grafana)
    assert mounts["/etc/grafana/provisioning/datasources"] == "./deploy/grafana/provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./deploy/grafana/provisioning/dashboards"

    datasources = [
        source
        for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
        for source in load_yaml(path)["datasources"]
    ]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose["services"]["prometheus"]["ports"]

    providers = [
        provider
        for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
        for provider in load_yaml(path)["providers"]
    ]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = providers[0]["options"]["path"]
    assert (REPO_ROOT / mounts[folder]).resolve() == DASHBOARD.parent.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/{DASHBOARD.name}"

    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert uids == {source["uid"]}


def test_every_dashboard_metric_is_exported_by_the_service() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for query in _dashboard_queries(dashboard) for name in METRIC.findall(query)}
    exported = _service_series()
    missing = used - exported
    assert not missing, f"the dashboard asks for {sorted(missing)}; the service exports {sorted(exported)}"
    # the panels the operations issue asks for
    assert {
        "mri_inference_duration_seconds_bucket",
        "mri_request_duration_seconds_count",
        "mri_request_errors_total",
        "mri_inflight_requests",
        "mri_stage_duration_seconds_bucket",
    } <= used
    latency = [q for q in _dashboard_queries(dashboard) if "mri_inference_duration_seconds_bucket" in q]
    assert {q.split(",")[0] for q in latency} >= {
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    }
    assert all("sum by (le, model)" in q for q in latency)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_two_dockerfiles_install_the_documented_extras() -> None:
    cpu = (REPO_ROOT / "Dockerfile").read_text()
    gpu = (REPO_ROOT / "Dockerfile.gpu").read_text()
    assert 'pip install ".[serve,gradcam]"' in cpu and "[gpu" not in cpu
    assert 'pip install ".[gpu,gradcam]"' in gpu
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}$", gpu, re.MULTILINE)
    assert re.search(
        r"^ARG CUDA_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu24\.04$", gpu, re.MULTILINE
    )
    for text in (cpu, gpu):
        assert (
            "USER 10001:10001" in text
            and "/health/ready" in text
            and "MRI_MODEL_REPOSITORY=/srv/models" in text
        )
