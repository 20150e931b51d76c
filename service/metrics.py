"""The Prometheus metrics of the service (names are a contract), in a registry of their own per app.

A registry per app, not the process-global one, lets tests build several apps side by side and lets
``/metrics`` expose exactly this service's series.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# Seconds: ONNX Runtime on CPU runs 1-50 ms per image; a request with Grad-CAM can take seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES: Final = ("decode", "preprocess", "inference", "gradcam")

# The *_created series double the exposition and no dashboard of this service reads them.
disable_created_metrics()


class ServiceMetrics:
    """The seven series of the contract, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.inference_duration = Histogram(
            "mri_inference_duration_seconds",
            "ONNX Runtime run time of one prediction (the model's own latency), by model and version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "mri_stage_duration_seconds",
            "Time spent in each stage of a prediction: decode, preprocess, inference, gradcam.",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "mri_request_duration_seconds",
            "Wall time of an HTTP request from its first byte to its answer, by route template and status.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mri_predictions",
            "Predictions answered, by model and predicted label.",
            ["model", "label"],
            registry=self.registry,
        )
        self.request_errors = Counter(
            "mri_request_errors",
            "Requests answered with an error, by the error_type of the body.",
            ["error_type"],
            registry=self.registry,
        )
        self.inflight_requests = Gauge(
            "mri_inflight_requests",
            "HTTP requests being handled right now.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "mri_model_info",
            "1 for every model loaded, labelled with its version, ONNX sha256 and ONNX Runtime provider.",
            ["model", "version", "sha256", "provider"],
            registry=self.registry,
        )

    def observe_stage(self, model: str, stage: str, seconds: float) -> None:
        """Record one stage's duration (one of :data:`STAGES`)."""
        self.stage_duration.labels(model=model, stage=stage).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
