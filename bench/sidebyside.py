"""The side-by-side benchmark: one command, one machine, the same real images through every path.

Paths, each timed per image at batch 1 after a warm-up:

1. ``preprocess``: decoding and the model's recipe (the service's own functions);
2. ``bare_ort``: ONNX Runtime ``session.run`` on a session with default options, and ``bare_pipeline``:
   decoding + recipe + ``session.run`` in one loop — what a program without the service would do;
3. ``keras_call`` and ``keras_predict``: the model's Keras twin, ``model(x)`` and ``model.predict(x)``;
4. ``service_in_process``: the FastAPI app in this process (``httpx.ASGITransport``), at concurrency 1 and 8,
   and with Grad-CAM at concurrency 1;
5. ``service_http``: ``python -m service`` in its own process on loopback, driven by a light client (urllib3,
   one thread per concurrent client), at concurrency 1 and 8, and with Grad-CAM at concurrency 1, with the CPU
   time per request of the service process and of the load client (they share the machine);

then peak resident memory of the service process (without and with Grad-CAM) and of this process, and the
three ratios the project tracks (goals in :data:`GOALS`). Writes ``benchmark.json`` and ``benchmark.md``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import psutil

from bench.driver import LoadResult, PlannedRequest, client_limits, drive, drive_http, http_floor
from bench.errors import BenchError
from bench.images import ImageFile, load_images
from bench.load import machine
from bench.process import mib, own_peak_rss_bytes, peak_rss_bytes, running_service
from bench.stats import LatencySummary, throughput
from exporter.errors import ManifestError
from exporter.manifest import load_entry
from service.inference import decode_upload
from service.model_repository import ServedModel
from service.preprocessing import DEFAULT_MAX_PIXELS, apply_recipe_with_region

HIGH_CONCURRENCY: Final = 8
GOALS: Final = {
    "service_p50_over_bare_pipeline_p50": ("<=", 1.3),
    "keras_predict_p50_over_service_p50": (">=", 10.0),
    "service_c8_throughput_over_bare_ort_throughput": (">=", 0.9),
    "ood_added_p50_over_service_p50": ("<=", 0.05),
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure: one model of a repository, a folder of real images, how many calls per path."""

    repository: Path
    model: str
    images: Path
    out: Path
    image_limit: int = 64
    rounds: int = 3  # passes over the images for preprocessing and bare ONNX Runtime
    keras_calls: int = 32
    predict_calls: int = 16
    service_requests: int = 300
    gradcam_requests: int = 20
    max_seconds_per_level: float = 300.0


def _timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Run every path, print the table and the ratios, write benchmark.json and benchmark.md; the report."""
    entry = config.repository / config.model
    try:
        model = ServedModel.from_manifest(load_entry(entry), entry)
    except ManifestError as error:
        raise BenchError(f"The model entry {entry} cannot be used: {error}") from None
    images = load_images(config.images, config.image_limit)
    started = datetime.now(UTC)
    paths: dict[str, dict[str, Any]] = {}

    inputs = _preprocess_all(model, images)
    paths["preprocess"] = _summarise(
        [_timed(partial(_preprocess, model, image)) for _ in range(config.rounds) for image in images]
    )
    session, input_name, output_name = _bare_session(model)

    def pipeline(image: ImageFile) -> Any:
        return session.run([output_name], {input_name: _preprocess(model, image)})

    paths["bare_ort"] = _bare_ort(session, input_name, output_name, inputs, config.rounds)
    validity = model.manifest.get("input_validity")
    if validity:
        # the same session asked for the probabilities alone and with the input-validity score, interleaved
        names = [output_name, str(validity["output"])]
        paths["ood_pair"] = _ood_pair(session, input_name, names, inputs, config)
    paths["bare_pipeline"] = _summarise(
        [_timed(partial(pipeline, image)) for _ in range(config.rounds) for image in images]
    )
    print(f"preprocessing and bare ONNX Runtime done ({len(images)} images x {config.rounds})", flush=True)

    service: dict[str, Any] = {}
    with running_service(config.repository, {"MRI_DEFAULT_MODEL": config.model}) as process:
        service["http"] = _service_over_http(config, images, base_url=process.url, pid=process.pid)
        service["peak_rss_mib_without_gradcam"] = mib(peak_rss_bytes(process.pid))
        service["http"]["gradcam_c1"] = _http_level(
            process.url,
            process.pid,
            images,
            concurrency=1,
            requests=config.gradcam_requests,
            gradcam=True,
            max_seconds=config.max_seconds_per_level,
        )
        service["peak_rss_mib_with_gradcam"] = mib(peak_rss_bytes(process.pid))
        service["series"] = _series_against_single(process.url, images, config.rounds)
    print("service over HTTP done", flush=True)
    service["in_process"] = asyncio.run(_in_process(config, images))
    print("service in process done", flush=True)

    keras_model = _load_keras(model)
    paths["keras_call"] = _summarise(
        [_timed(partial(keras_model, x, training=False)) for x in _cycle(inputs, config.keras_calls)]
    )
    paths["keras_predict"] = _summarise(
        [_timed(partial(keras_model.predict, x, verbose=0)) for x in _cycle(inputs, config.predict_calls)]
    )
    print("Keras done", flush=True)

    report = {
        "kind": "side-by-side benchmark",
        "started_utc": started.isoformat(timespec="seconds"),
        "model": {"name": model.name, "version": model.version, "backbone": model.manifest.get("backbone")},
        "images": {"folder": str(config.images), "count": len(images)},
        "settings": {
            "rounds": config.rounds,
            "keras_calls": config.keras_calls,
            "predict_calls": config.predict_calls,
            "service_requests": config.service_requests,
            "gradcam_requests": config.gradcam_requests,
        },
        "machine": machine(),
        "paths": paths,
        "service": service,
        "benchmark_process_peak_rss_mib": mib(own_peak_rss_bytes()),
    }
    report["ratios"] = ratios(report)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (config.out / "benchmark.md").write_text(markdown)
    print(markdown, flush=True)
    return report


def _preprocess(model: ServedModel, image: ImageFile) -> npt.NDArray[np.float32]:
    pixels = decode_upload(image.data, image.content_type, max_pixels=DEFAULT_MAX_PIXELS)
    single, _ = apply_recipe_with_region(pixels, model.recipe)
    return single[np.newaxis]


def _preprocess_all(model: ServedModel, images: Sequence[ImageFile]) -> list[npt.NDArray[np.float32]]:
    return [_preprocess(model, image) for image in images]


def _bare_session(model: ServedModel) -> tuple[Any, str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    return session, str(model.manifest["onnx"]["input"]), str(model.manifest["onnx"]["output"])


def _bare_ort(
    session: Any, input_name: str, output_name: str, inputs: Sequence[npt.NDArray[np.float32]], rounds: int
) -> dict[str, Any]:
    for x in inputs[:5]:
        session.run([output_name], {input_name: x})
    latencies = []
    started = time.perf_counter()
    for _ in range(rounds):
        for x in inputs:
            latencies.append(_timed(partial(session.run, [output_name], {input_name: x})))
    wall = time.perf_counter() - started
    return {**_summarise(latencies), "throughput_per_s": throughput(len(latencies), wall)}


def _ood_pair(
    session: Any,
    input_name: str,
    outputs: list[str],
    inputs: Sequence[npt.NDArray[np.float32]],
    config: BenchmarkConfig,
) -> dict[str, Any]:
    """``session.run`` of the probabilities alone and with ``ood_score``, alternating call by call (ONNX
    Runtime computes only what the outputs asked for need, so the difference is the check's cost)."""
    without, with_score = [], []
    for _ in range(config.rounds):
        for x in inputs:
            without.append(_timed(partial(session.run, outputs[:1], {input_name: x})))
            with_score.append(_timed(partial(session.run, outputs, {input_name: x})))
    return {"probabilities_only": _summarise(without), "with_ood_score": _summarise(with_score)}


def _series_against_single(url: str, images: Sequence[ImageFile], rounds: int) -> dict[str, Any]:
    """Per-slice cost of ``/predict/series`` (all the images as one DICOM MR series, batched server-side)
    against ``/predict`` called once per slice with the same DICOM files, over HTTP, alternating by round."""
    import io

    from service.hospital.wrap import wrap_as_mr_series

    greys: list[npt.NDArray[np.uint8]] = []
    for image in images:
        grey = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if grey is not None:
            greys.append(np.asarray(grey, dtype=np.uint8))
    files = []
    for dataset in wrap_as_mr_series(greys):
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    series_s, single_s = [], []
    with httpx.Client(base_url=url, timeout=300) as client:
        parts = [("files", (f"{i}.dcm", data, "application/dicom")) for i, data in enumerate(files)]
        client.post("/predict/series", files=parts)  # warm
        for _ in range(rounds):
            started = time.perf_counter()
            answer = client.post("/predict/series", files=parts)
            series_s.append((time.perf_counter() - started) / len(files))
            if answer.status_code != 200:
                raise BenchError(f"/predict/series answered {answer.status_code}: {answer.text[:200]}")
            for data in files:
                started = time.perf_counter()
                client.post("/predict", files={"file": ("slice.dcm", data, "application/dicom")})
                single_s.append(time.perf_counter() - started)
    return {
        "slices": len(files),
        "rounds": rounds,
        "series_ms_per_slice": round(1000.0 * float(np.median(series_s)), 3),
        "single_ms_per_slice": round(1000.0 * float(np.median(single_s)), 3),
    }


def _summarise(seconds: Sequence[float]) -> dict[str, Any]:
    return LatencySummary.of(seconds).as_dict()


def _cycle(inputs: Sequence[npt.NDArray[np.float32]], count: int) -> list[npt.NDArray[np.float32]]:
    return [inputs[i % len(inputs)] for i in range(count)]


def _load_keras(model: ServedModel) -> Any:
    import keras

    keras_model = keras.saving.load_model(model.keras_path, compile=False)
    warm = np.zeros((1, *model.input_shape), np.float32)
    keras_model(warm, training=False)
    keras_model.predict(warm, verbose=0)
    return keras_model


def _plan(images: Sequence[ImageFile], gradcam: bool) -> Callable[[int], PlannedRequest]:
    params = {"gradcam": "true" if gradcam else "false"}

    def plan(number: int) -> PlannedRequest:
        return PlannedRequest(image=images[number % len(images)], params=params)

    return plan


async def _level(
    client: httpx.AsyncClient,
    images: Sequence[ImageFile],
    *,
    concurrency: int,
    requests: int,
    gradcam: bool,
    max_seconds: float,
) -> dict[str, Any]:
    plan = _plan(images, gradcam)
    await drive(client, plan, concurrency=concurrency, max_requests=max(concurrency * 2, 5), max_seconds=60)
    result = await drive(
        client,
        plan,
        concurrency=concurrency,
        max_requests=requests,
        max_seconds=max_seconds,
        keep_server_timings=True,
    )
    return _level_summary(result)


def _level_summary(result: LoadResult) -> dict[str, Any]:
    summary = result.summary()
    server_stages: dict[str, list[float]] = {}
    for sample in result.ok:
        for stage, ms in (sample.server_timings_ms or {}).items():
            if ms is not None:
                server_stages.setdefault(stage, []).append(ms)
    summary["server_stage_p50_ms"] = {
        stage: round(float(np.percentile(values, 50)), 3) for stage, values in server_stages.items()
    }
    return summary


def _http_level(
    base_url: str,
    pid: int,
    images: Sequence[ImageFile],
    *,
    concurrency: int,
    requests: int,
    gradcam: bool,
    max_seconds: float,
) -> dict[str, Any]:
    plan = _plan(images, gradcam)
    drive_http(base_url, plan, concurrency=concurrency, max_requests=max(concurrency * 2, 5), max_seconds=60)
    server = psutil.Process(pid)
    server_cpu, client_cpu = sum(server.cpu_times()[:2]), time.process_time()
    result = drive_http(
        base_url,
        plan,
        concurrency=concurrency,
        max_requests=requests,
        max_seconds=max_seconds,
        timeout_s=300,
        keep_server_timings=True,
    )
    server_cpu, client_cpu = sum(server.cpu_times()[:2]) - server_cpu, time.process_time() - client_cpu
    summary = _level_summary(result)
    count = max(len(result.samples), 1)
    summary["cpu_ms_per_request"] = {
        "service_process": round(server_cpu / count * 1000, 2),
        "load_client": round(client_cpu / count * 1000, 2),
    }
    return summary


def _service_over_http(
    config: BenchmarkConfig, images: Sequence[ImageFile], base_url: str, pid: int
) -> dict[str, Any]:
    levels: dict[str, Any] = {"floor_get_health_live": http_floor(base_url).as_dict()}
    for concurrency in (1, HIGH_CONCURRENCY):
        levels[f"c{concurrency}"] = _http_level(
            base_url,
            pid,
            images,
            concurrency=concurrency,
            requests=config.service_requests,
            gradcam=False,
            max_seconds=config.max_seconds_per_level,
        )
    return levels


async def _in_process(config: BenchmarkConfig, images: Sequence[ImageFile]) -> dict[str, Any]:
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(model_repository=config.repository, default_model=config.model))
    levels: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        deadline = time.monotonic() + 300
        while not (app.state.repository is not None and app.state.repository.ready):
            if time.monotonic() > deadline:
                raise BenchError("The in-process service was not ready after 300 s.")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as client:
            floor = []
            for _ in range(200):
                sent = time.perf_counter()
                await client.get("/health/live")
                floor.append(time.perf_counter() - sent)
            levels["floor_get_health_live"] = _summarise(floor)
        for concurrency in (1, HIGH_CONCURRENCY):
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://in-process",
                timeout=120,
                limits=client_limits(concurrency),
            ) as client:
                levels[f"c{concurrency}"] = await _level(
                    client,
                    images,
                    concurrency=concurrency,
                    requests=config.service_requests,
                    gradcam=False,
                    max_seconds=config.max_seconds_per_level,
                )
        async with httpx.AsyncClient(
            transport=transport, base_url="http://in-process", timeout=300
        ) as client:
            levels["gradcam_c1"] = await _level(
                client,
                images,
                concurrency=1,
                requests=config.gradcam_requests,
                gradcam=True,
                max_seconds=config.max_seconds_per_level,
            )
    return levels


def _p50(level: dict[str, Any]) -> float | None:
    latency = level.get("latency")
    return None if latency is None else float(latency["p50_ms"])


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    """The three tracked ratios (over HTTP, as a user sees the service) and whether each meets its goal."""
    paths, http = report["paths"], report["service"]["http"]
    service_p50 = _p50(http["c1"])
    values = {
        "service_p50_over_bare_pipeline_p50": _ratio(service_p50, paths["bare_pipeline"]["p50_ms"]),
        "keras_predict_p50_over_service_p50": _ratio(paths["keras_predict"]["p50_ms"], service_p50),
        "service_c8_throughput_over_bare_ort_throughput": _ratio(
            http[f"c{HIGH_CONCURRENCY}"]["throughput_rps"], paths["bare_ort"]["throughput_per_s"]
        ),
    }
    pair = paths.get("ood_pair")
    if pair is not None:
        added = pair["with_ood_score"]["p50_ms"] - pair["probabilities_only"]["p50_ms"]
        values["ood_added_p50_over_service_p50"] = _ratio(added, service_p50)
    answer: dict[str, Any] = {}
    for name, value in values.items():
        sense, goal = GOALS[name]
        met = None if value is None else (value <= goal if sense == "<=" else value >= goal)
        answer[name] = {"value": value, "goal": f"{sense} {goal:g}", "met": met}
    gradcam_added: float | None = None
    on, off = _p50(http["gradcam_c1"]), _p50(http["c1"])
    if on is not None and off is not None:
        gradcam_added = round(on - off, 3)
    answer["gradcam_added_p50_ms_http"] = gradcam_added
    in_process = report["service"]["in_process"]
    on, off = _p50(in_process["gradcam_c1"]), _p50(in_process["c1"])
    answer["gradcam_added_p50_ms_in_process"] = None if on is None or off is None else round(on - off, 3)
    return answer


def _row(name: str, latency: dict[str, Any] | None, rate: float | None, note: str = "") -> str:
    if latency is None:
        return f"| {name} | - | - | - | - | {'-' if rate is None else f'{rate:.1f}'} | {note} |"
    return (
        f"| {name} | {latency['p50_ms']:.2f} | {latency['p95_ms']:.2f} | {latency['p99_ms']:.2f} | "
        f"{latency['mean_ms']:.2f} | {'-' if rate is None else f'{rate:.1f}'} | {note} |"
    )


def _level_row(name: str, level: dict[str, Any]) -> str:
    bad = {status: count for status, count in level["statuses"].items() if status != "200"}
    note = f"{level['ok']}/{level['requests']} ok" + (f", {bad}" if bad else "")
    return _row(name, level["latency"], level["throughput_rps"], note)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (latency in ms, throughput per second) with the ratios."""
    paths, service, model = report["paths"], report["service"], report["model"]
    http, in_process = service["http"], service["in_process"]
    lines = [
        f"# Side-by-side benchmark: {model['name']} {model['version']} ({model['backbone']})",
        "",
        f"{report['images']['count']} real images from `{report['images']['folder']}`, batch 1, "
        f"{report['machine']['cpus']} CPUs, {report['machine']['platform']}, "
        f"started {report['started_utc']}.",
        "",
        "| path | p50 ms | p95 ms | p99 ms | mean ms | per s | note |",
        "|---|---:|---:|---:|---:|---:|---|",
        _row(
            "decode + recipe (service code)",
            paths["preprocess"],
            None,
            f"{paths['preprocess']['count']} calls",
        ),
        _row(
            "bare ONNX Runtime `session.run`",
            paths["bare_ort"],
            paths["bare_ort"]["throughput_per_s"],
            f"{paths['bare_ort']['count']} calls, default session options",
        ),
        _row("bare pipeline: decode + recipe + `run`", paths["bare_pipeline"], None, "sequential"),
        _row("Keras `model(x)`", paths["keras_call"], None, f"{paths['keras_call']['count']} calls"),
        _row(
            "Keras `model.predict(x)`",
            paths["keras_predict"],
            None,
            f"{paths['keras_predict']['count']} calls",
        ),
        _level_row("service in process, concurrency 1", in_process["c1"]),
        _level_row(f"service in process, concurrency {HIGH_CONCURRENCY}", in_process[f"c{HIGH_CONCURRENCY}"]),
        _level_row("service in process, Grad-CAM, concurrency 1", in_process["gradcam_c1"]),
        _level_row("service over HTTP, concurrency 1", http["c1"]),
        _level_row(f"service over HTTP, concurrency {HIGH_CONCURRENCY}", http[f"c{HIGH_CONCURRENCY}"]),
        _level_row("service over HTTP, Grad-CAM, concurrency 1", http["gradcam_c1"]),
        "",
        f"Client floor (GET /health/live, p50): {http['floor_get_health_live']['p50_ms']:.2f} ms over HTTP "
        f"(urllib3, threads), {in_process['floor_get_health_live']['p50_ms']:.2f} ms in process "
        "(httpx.AsyncClient + ASGITransport).",
        "",
        "CPU per request over HTTP (ms; service process / load client, which share the machine): "
        + ", ".join(
            f"concurrency {level[1:]} {http[level]['cpu_ms_per_request']['service_process']:.1f} / "
            f"{http[level]['cpu_ms_per_request']['load_client']:.1f}"
            for level in ("c1", f"c{HIGH_CONCURRENCY}")
        )
        + ".",
        "",
        "Server-side stage p50 (ms) over HTTP at concurrency 1: "
        + ", ".join(f"{stage} {ms:.2f}" for stage, ms in http["c1"]["server_stage_p50_ms"].items()),
        "",
        f"Grad-CAM adds {report['ratios']['gradcam_added_p50_ms_http']} ms at p50 over HTTP "
        f"({report['ratios']['gradcam_added_p50_ms_in_process']} ms in process).",
        "",
        f"Peak RSS: service process {service['peak_rss_mib_without_gradcam']} MiB without Grad-CAM, "
        f"{service['peak_rss_mib_with_gradcam']} MiB once Grad-CAM ran; this benchmark process "
        f"{report['benchmark_process_peak_rss_mib']} MiB (it also holds Keras and TensorFlow).",
        "",
        "| ratio | value | goal | met |",
        "|---|---:|---|---|",
    ]
    pair = paths.get("ood_pair")
    if pair is not None:
        at = lines.index("| ratio | value | goal | met |") - 1
        lines[at:at] = [
            f"Input-validity score (`ood_score`), the same session asked with and without it, call by call: "
            f"p50 {pair['probabilities_only']['p50_ms']:.3f} ms -> {pair['with_ood_score']['p50_ms']:.3f} ms "
            f"({pair['with_ood_score']['count']} calls each).",
            "",
        ]
    series = service.get("series")
    if series is not None:
        at = lines.index("| ratio | value | goal | met |") - 1
        lines[at:at] = [
            f"Series mode: {series['slices']} slices wrapped as one DICOM MR series, `/predict/series` "
            f"{series['series_ms_per_slice']:.2f} ms per slice against `/predict` "
            f"{series['single_ms_per_slice']:.2f} ms per slice on the same DICOM files "
            f"(median over {series['rounds']} rounds, over HTTP).",
            "",
        ]
    for name in GOALS:
        if name not in report["ratios"]:
            continue
        ratio = report["ratios"][name]
        met = "-" if ratio["met"] is None else ("yes" if ratio["met"] else "no")
        lines.append(f"| {name} | {ratio['value']} | {ratio['goal']} | {met} |")
    return "\n".join(lines) + "\n"
