"""The Kubernetes manifests under deploy/k8s: rendered, validated against the Kubernetes API schemas and the
CRDs' schemas, and in agreement with the service (ports, probes, settings, image, metrics, shutdown).

Rendering: the kustomizations use only ``resources`` (files and other kustomization folders), which
:func:`render` expands here without a kustomize binary (none is on PyPI); where ``kubectl`` is on PATH (it
embeds kustomize), ``kubectl kustomize`` must render the same objects, which keeps that subset honest.

Schemas: the built-in kinds are validated with kubernetes-validate (the Kubernetes OpenAPI schemas of each
release, shipped in the package, in strict mode: an unknown field is an error) for the oldest and newest
releases the manifests support. No package on PyPI ships the ServiceMonitor or InferenceService CRD schema, so
the JSON Schemas below are a subset written from the upstream sources (prometheus-operator's
``monitoring.coreos.com_servicemonitors.yaml`` v0.84; KServe's ``ComponentExtensionSpec`` and custom predictor
in ``pkg/apis/serving/v1beta1``): strict on the fields these manifests use, and the predictor's pod spec,
which KServe inlines, is validated against Kubernetes' own PodSpec schema.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from prometheus_client import generate_latest
from referencing import Registry, Resource

from service.app import create_app
from service.metrics import ServiceMetrics
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
K8S = REPO_ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "monitoring", "kserve"]
EXAMPLES = K8S / "examples"
KUBERNETES_VERSIONS = ["1.29", "1.37"]  # the oldest release still common in clusters, and the newest known
DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"
Object = dict[str, Any]

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
SERVICE_MONITOR_SCHEMA = {  # monitoring.coreos.com/v1, from the operator's CRD (the fields used here)
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer"},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
# KServe v1beta1: ComponentExtensionSpec (component.go) beside the inlined PodSpec of a custom predictor
COMPONENT_EXTENSION = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleTarget": {"type": "integer", "minimum": 1},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "timeout": {"type": "integer", "minimum": 1},
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "labels": STRING_MAP,
    "annotations": STRING_MAP,
}
BUILT_IN_PREDICTORS = {  # PredictorSpec's implementations: a custom predictor uses none of them
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
    "paddle", "model", "workerSpec",
}  # fmt: skip
INFERENCE_SERVICE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {
            **METADATA,
            "properties": {
                **METADATA["properties"],
                "annotations": {
                    **STRING_MAP,
                    "properties": {
                        "serving.kserve.io/deploymentMode": {
                            "enum": ["Standard", "RawDeployment", "Knative", "Serverless", "ModelMesh"]
                        }
                    },
                },
            },
        },
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {"predictor": {"type": "object"}},
        },
    },
}


def load_all(path: Path) -> list[Object]:
    """The YAML documents of ``path`` (empty ones dropped)."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def render(folder: Path) -> list[Object]:
    """What ``kustomize build folder`` gives for a kustomization that has only ``resources``."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, (
        f"{folder}/kustomization.yaml uses more than `resources`: teach render() the new fields"
    )
    assert kustomization["kind"] == "Kustomization"
    objects: list[Object] = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_all(path))
    return objects


def key(item: Object) -> tuple[str, str, str]:
    return item["apiVersion"], item["kind"], item["metadata"]["name"]


def by_kind(objects: list[Object]) -> dict[str, Object]:
    kinds = [item["kind"] for item in objects]
    assert len(set(kinds)) == len(kinds), f"several objects of one kind: {kinds}"
    return {item["kind"]: item for item in objects}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Object]]:
    return {name: render(K8S / name) for name in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def examples() -> list[Object]:
    return [item for path in sorted(EXAMPLES.glob("*.yaml")) for item in load_all(path)]


def pod_spec_validator() -> jsonschema.protocols.Validator:
    """A validator of Kubernetes' own PodSpec (strict), from kubernetes-validate's newest definitions."""
    version = KUBERNETES_VERSIONS[-1]
    definitions = schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
    )
    registry: Registry = Resource.from_contents(definitions) @ Registry()
    schema = {"$ref": f"{DEFINITIONS_URI}#/$defs/io.k8s.api.core.v1.PodSpec"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(item: Object) -> None:
    """Validate one object: built-in kinds with kubernetes-validate, the two CRDs with the subsets above."""
    if item["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.validate(item, SERVICE_MONITOR_SCHEMA)
    elif item["apiVersion"].startswith("serving.kserve.io/"):
        jsonschema.validate(item, INFERENCE_SERVICE_SCHEMA)
        predictor = dict(item["spec"]["predictor"])
        assert not BUILT_IN_PREDICTORS & set(predictor), "a custom predictor names no built-in runtime"
        extension = {name: predictor.pop(name) for name in list(predictor) if name in COMPONENT_EXTENSION}
        jsonschema.validate(
            extension, {"type": "object", "properties": COMPONENT_EXTENSION, "additionalProperties": False}
        )
        pod_spec_validator().validate(predictor)  # the rest is the inlined PodSpec
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)


def env_of(container: Object) -> dict[str, str]:
    return {variable["name"]: variable.get("value", "") for variable in container.get("env", [])}


def settings_of(container: Object, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's Settings as the container's MRI_* variables make them (each one a real setting)."""
    for name, value in env_of(container).items():
        if name.startswith("MRI_"):
            field = name.removeprefix("MRI_").lower()
            assert field in Settings.model_fields, f"{name} is no setting of the service"
            if value:  # MRI_API_KEYS comes from a secret
                monkeypatch.setenv(name, value)
    return Settings()


def routes() -> set[str]:
    """The service's GET routes, from its OpenAPI schema (what a probe or a scrape may call)."""
    paths = create_app(Settings()).openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def image_version() -> str:
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_the_kustomizations_render_and_validate(rendered: dict[str, list[Object]]) -> None:
    assert {item["kind"] for item in rendered["base"]} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert {key(item) for item in rendered["base"]} < {key(item) for item in rendered["monitoring"]}
    assert [item["kind"] for item in rendered["kserve"]] == ["InferenceService"]
    for objects in rendered.values():
        for item in objects:
            validate(item)


def test_the_examples_validate(examples: list[Object]) -> None:
    assert {item["kind"] for item in examples} == {"HorizontalPodAutoscaler", "ConfigMap"}
    for item in examples:
        validate(item)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}), "Deployment"),
        (lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="30"), "Deployment"),
        (lambda s: s["spec"]["endpoints"][0].update(interval="15 seconds"), "ServiceMonitor"),
        (lambda i: i["spec"]["predictor"].update(scaleMetric="gpu"), "InferenceService"),
        (lambda i: i["spec"]["predictor"]["containers"][0].update(imagePullPolicy=1), "InferenceService"),
        (lambda i: i["spec"]["predictor"].update(containerz=[]), "InferenceService"),
    ],
)
def test_the_validation_catches_mistakes(rendered: dict[str, list[Object]], mutate: Any, where: str) -> None:
    """A typo or a wrong type in a manifest fails: the validators are not vacuous."""
    item = next(item for objects in rendered.values() for item in objects if item["kind"] == where)
    broken = yaml.safe_load(yaml.safe_dump(item))  # a deep copy
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(broken)


def test_kubectl_kustomize_renders_the_same(rendered: dict[str, list[Object]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (which embeds kustomize) is not on PATH; render() alone was checked")
    for name, objects in rendered.items():
        build = subprocess.run(
            [kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=60, check=False
        )
        assert build.returncode == 0, build.stderr
        theirs = {key(item): item for item in yaml.safe_load_all(build.stdout) if item}
        assert theirs == {key(item): item for item in objects}, name


def test_the_deployment_agrees_with_the_service(
    rendered: dict[str, list[Object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = by_kind(rendered["monitoring"])
    deployment, service, monitor = objects["Deployment"], objects["Service"], objects["ServiceMonitor"]
    hpa, pdb = objects["HorizontalPodAutoscaler"], objects["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = settings_of(container, monkeypatch)
    known = routes()

    # the port the service listens on is the one declared, probed, and exposed
    (port,) = container["ports"]
    assert settings.host == "0.0.0.0" and settings.port == port["containerPort"]
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["startupProbe"]["httpGet"]["path"] == "/health/ready"  # a warm-up that never ends restarts
    for probe in probes.values():
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
        assert probe["httpGet"]["path"] in known
    (exposed,) = service["spec"]["ports"]
    assert exposed["targetPort"] == port["name"]

    # selectors: the Deployment's, the Service's and the PDB's select the pods; the HPA scales the Deployment
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "brain-mri",
    }
    assert hpa["spec"]["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2  # the PDB lets one go
    assert pdb["spec"]["maxUnavailable"] == 1

    # Prometheus scrapes the Service's port at the route the service exports
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == exposed["name"] and endpoint["path"] == "/metrics" and "/metrics" in known


def check_pod(pod_spec: Object, container: Object, settings: Settings) -> None:
    """What the Deployment and the KServe predictor share: shutdown, security, /tmp, resources, image."""
    # the pod is killed only after the drain and the grace (and 2 s for the lifespan's end)
    drain, grace = settings_field(settings, "shutdown_drain_s"), settings_field(settings, "shutdown_grace_s")
    assert drain >= 3, "MRI_SHUTDOWN_DRAIN_S: endpoints and kube-proxy need a few seconds to drop the pod"
    assert pod_spec["terminationGracePeriodSeconds"] >= drain + grace + 2
    assert "lifecycle" not in container  # no preStop: the service drains on SIGTERM itself

    # non-root (the image's user), read-only root filesystem, /tmp writable
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user, "the Dockerfile's USER is no longer uid:gid"
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert str(pod_spec["securityContext"]["runAsUser"]) == user[1]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env_of(container)["TMPDIR"] == "/tmp" and env_of(container)["KERAS_HOME"].startswith("/tmp/")

    # memory from the measured RSS: ~920 MiB once Grad-CAM loaded TensorFlow (README, soak), plus the
    # decodes that may run at once within the limit
    assert settings.gradcam_preload
    resources = container["resources"]
    request, limit = mebibytes(resources["requests"]["memory"]), mebibytes(resources["limits"]["memory"])
    assert request >= 920
    assert limit >= 920 + settings.max_concurrency * settings.max_decode_mib
    assert int(settings.ort_intra_op_threads) <= float(resources["limits"]["cpu"])

    # the image of this version
    assert container["image"].rpartition(":")[2] == image_version()


def settings_field(settings: Settings, name: str) -> float:
    assert hasattr(settings, name), f"Settings has no {name}: the manifests set MRI_{name.upper()}"
    return float(getattr(settings, name))


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def test_the_pods_shut_down_gracefully_and_run_locked_down(
    rendered: dict[str, list[Object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = by_kind(rendered["base"])["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    check_pod(deployment["spec"]["template"]["spec"], container, settings_of(container, monkeypatch))


def test_the_inference_service_is_a_v2_custom_predictor(
    rendered: dict[str, list[Object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    (service,) = rendered["kserve"]
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert env_of(container)["PROTOCOL"] == "v2"  # KServe's protocol declaration for a custom predictor
    settings = settings_of(container, monkeypatch)
    (port,) = container["ports"]
    assert settings.port == port["containerPort"] == 8080  # KServe's default port
    known = routes()
    for kind, path in (("startupProbe", "/health/ready"), ("readinessProbe", "/health/ready")):
        assert container[kind]["httpGet"] == {"path": path, "port": port["containerPort"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"/health/ready", "/health/live"} <= known
    assert predictor["scaleMetric"] == "cpu" and predictor["minReplicas"] >= 2
    check_pod(predictor, container, settings)


def test_the_in_flight_example_scales_on_a_metric_the_service_exports(examples: list[Object]) -> None:
    hpa = next(item for item in examples if item["kind"] == "HorizontalPodAutoscaler")
    adapter = next(item for item in examples if item["kind"] == "ConfigMap")
    (pods,) = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    name = pods["metric"]["name"]
    exported = {
        line.split()[2]
        for line in generate_latest(ServiceMetrics().registry).decode().splitlines()
        if "# TYPE" in line
    }
    assert name == "mri_inflight_requests" and name in exported
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == name and name in rule["seriesQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # per-pod values for a Pods metric
