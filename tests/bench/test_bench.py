"""The measuring tools (``python -m bench``) against real services and real images.

The load script drives the live uvicorn fixture; the benchmark and the soak start their own service on the
tiny test repository. Counts are small: these tests prove the tools measure and report what happened (every
request accounted for, bounds respected, files written), not how fast anything is.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.__main__ import main
from bench.driver import PlannedRequest, drive, drive_http
from bench.errors import BenchError
from bench.images import ImageFile, load_images
from bench.load import check_loopback
from bench.process import free_port
from bench.sidebyside import GOALS, BenchmarkConfig, run_benchmark
from bench.soak import SoakConfig, run_soak, soak_plan
from bench.stats import LatencySummary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TESTING = "sartaj-brain-tumor-mri/Testing"


def test_latency_summary_matches_numpy() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = LatencySummary.of(seconds)
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert summary.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert (summary.min_ms, summary.max_ms, summary.mean_ms) == (1.0, 100.0, 50.5)
    with pytest.raises(ValueError):
        LatencySummary.of([])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_loopback_urls_are_accepted(url: str) -> None:
    check_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.7:8000", "https://example.org", "ftp://127.0.0.1", "nonsense"]
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(BenchError):
        check_loopback(url)


def test_load_refuses_a_remote_host_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["load", "--url", "http://10.0.0.7:8000", "--images", str(tmp_path), "--out", str(tmp_path)])
    assert code == 2
    assert "not loopback" in capsys.readouterr().err
    assert not (tmp_path / "load.json").exists()


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(BenchError, match="no image"):
        load_images(tmp_path, 10)


@pytest.mark.realdata
def test_images_are_a_seeded_sample_of_the_folder(data_root: Path) -> None:
    first = load_images(data_root / TESTING, 12, seed=3)
    again = load_images(data_root / TESTING, 12, seed=3)
    assert [image.name for image in first] == [image.name for image in again]
    assert len(first) == 12 and all(image.data for image in first)
    assert {image.name.split("/")[0] for image in load_images(data_root / TESTING, 40)} >= {
        "glioma_tumor",
        "no_tumor",
    }


def test_the_driver_counts_refused_connections_instead_of_failing() -> None:
    image = ImageFile("x.png", b"\x89PNG", "image/png")

    async def run() -> tuple[int, dict[str, int]]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}", timeout=2) as client:
            result = await drive(
                client, lambda _: PlannedRequest(image=image), concurrency=2, max_requests=5, max_seconds=30
            )
        return len(result.samples), result.unexpected

    assert asyncio.run(run()) == (5, {"connection_error": 5})


def test_the_http_driver_counts_refused_connections_too() -> None:
    image = ImageFile("x.png", b"\x89PNG", "image/png")
    result = drive_http(
        f"http://127.0.0.1:{free_port()}",
        lambda _: PlannedRequest(image=image),
        concurrency=3,
        max_requests=7,
        max_seconds=30,
        timeout_s=2,
    )
    assert (len(result.samples), result.unexpected, result.latency()) == (7, {"connection_error": 7}, None)


def test_soak_plan_mixes_gradcam_and_refused_uploads() -> None:
    images = [ImageFile(f"{i}.jpg", bytes(range(30)), "image/jpeg") for i in range(3)]
    plan = soak_plan(images, model=None, gradcam_every=4, bad_every=5, offset=0)
    requests = [plan(n) for n in range(20)]
    bad = [n for n, request in enumerate(requests) if request.expected == 400]
    gradcam = [n for n, request in enumerate(requests) if request.params.get("gradcam") == "true"]
    assert bad == [4, 9, 14, 19]
    assert gradcam == [3, 7, 11, 15]
    assert all(len(requests[n].image.data) == 10 for n in bad)
    shifted = soak_plan(images, model="m", gradcam_every=4, bad_every=5, offset=100)
    assert shifted(4).expected == 400 and shifted(0).params == {"model": "m", "gradcam": "false"}


@pytest.mark.realdata
@pytest.mark.slow
def test_load_script_against_a_live_service(
    server: tuple[str, Path], data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = server
    out = tmp_path / "load"
    args = [
        "load",
        "--url",
        base,
        "--images",
        str(data_root / TESTING),
        "--image-limit",
        "6",
        "--out",
        str(out),
    ]
    code = main([*args, "--concurrency", "1,3", "--gradcam", "off,on", "--requests", "6", "--warmup", "1"])
    assert code == 0
    report = json.loads((out / "load.json").read_text())
    rows = report["rows"]
    assert {(r["model"], r["gradcam"], r["concurrency"]) for r in rows} == {
        (model, gradcam, concurrency)
        for model in ("tiny-4class", "tiny-binary")
        for gradcam in (False, True)
        for concurrency in (1, 3)
    }
    for row in rows:
        assert (row["requests"], row["ok"], row["statuses"], row["unexpected"]) == (6, 6, {"200": 6}, {})
        latency = row["latency"]
        assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
        assert latency["p99_ms"] <= latency["max_ms"] and row["throughput_rps"] > 0
    assert (out / "load.png").read_bytes().startswith(PNG_SIGNATURE)
    table = capsys.readouterr().out
    assert "p50 ms" in table and table.count("tiny-binary") == 4


@pytest.mark.realdata
@pytest.mark.slow
def test_load_script_stops_at_its_time_bound(
    server: tuple[str, Path], data_root: Path, tmp_path: Path
) -> None:
    base, _ = server
    args = [
        "load",
        "--url",
        base,
        "--images",
        str(data_root / TESTING),
        "--image-limit",
        "4",
        "--out",
        str(tmp_path),
    ]
    code = main([*args, "--model", "tiny-4class", "--concurrency", "2", "--gradcam", "off"])
    assert code == 0  # defaults: 200 requests or 60 s
    code = main(
        [*args, "--model", "tiny-4class", "--gradcam", "off", "--requests", "100000", "--duration", "1"]
    )
    assert code == 0
    rows = json.loads((tmp_path / "load.json").read_text())["rows"]
    assert [row["concurrency"] for row in rows] == [1, 2, 4, 8]
    for row in rows:
        assert 0 < row["requests"] < 100_000 and row["wall_s"] < 1 + 5  # a request in flight may finish
        assert row["unexpected"] == {}


@pytest.mark.realdata
@pytest.mark.slow
def test_side_by_side_benchmark_on_the_tiny_repository(
    model_repository: Path, data_root: Path, tmp_path: Path
) -> None:
    config = BenchmarkConfig(
        repository=model_repository,
        model="tiny-4class",
        images=data_root / TESTING,
        out=tmp_path,
        image_limit=8,
        rounds=1,
        keras_calls=3,
        predict_calls=2,
        service_requests=10,
        gradcam_requests=2,
    )
    report = run_benchmark(config)
    assert json.loads((tmp_path / "benchmark.json").read_text()) == report
    paths = report["paths"]
    assert paths["preprocess"]["count"] == paths["bare_ort"]["count"] == paths["bare_pipeline"]["count"] == 8
    assert (paths["keras_call"]["count"], paths["keras_predict"]["count"]) == (3, 2)
    for where in ("http", "in_process"):
        levels = report["service"][where]
        assert levels["c1"]["statuses"] == levels["c8"]["statuses"] == {"200": 10}
        assert levels["gradcam_c1"]["statuses"] == {"200": 2}
        assert levels["gradcam_c1"]["server_stage_p50_ms"]["gradcam"] > 0
    service = report["service"]
    assert 0 < service["peak_rss_mib_without_gradcam"] <= service["peak_rss_mib_with_gradcam"]
    ratios = report["ratios"]
    assert set(GOALS) <= set(ratios)
    http = report["service"]["http"]
    assert ratios["service_p50_over_bare_pipeline_p50"]["value"] == pytest.approx(
        http["c1"]["latency"]["p50_ms"] / paths["bare_pipeline"]["p50_ms"], abs=1e-3
    )
    assert ratios["service_c8_throughput_over_bare_ort_throughput"]["value"] == pytest.approx(
        http["c8"]["throughput_rps"] / paths["bare_ort"]["throughput_per_s"], abs=1e-3
    )
    series = report["service"]["series"]  # the same images as one DICOM series, and one by one
    assert series["slices"] == 8 and series["series_ms_per_slice"] > 0 and series["single_ms_per_slice"] > 0
    pair = paths["ood_pair"]  # the tiny entries carry a trust head too
    assert pair["probabilities_only"]["count"] == pair["with_ood_score"]["count"] == 8
    added = pair["with_ood_score"]["p50_ms"] - pair["probabilities_only"]["p50_ms"]
    assert ratios["ood_added_p50_over_service_p50"]["value"] == pytest.approx(
        added / http["c1"]["latency"]["p50_ms"], abs=1e-3
    )
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "Input-validity score (`ood_score`)" in markdown
    assert "service over HTTP, concurrency 8" in markdown and "keras_predict_p50_over_service_p50" in markdown


@pytest.mark.realdata
@pytest.mark.slow
def test_soak_accounts_for_every_request_and_reads_memory(
    model_repository: Path, data_root: Path, tmp_path: Path
) -> None:
    config = SoakConfig(
        images=data_root / TESTING,
        out=tmp_path,
        repository=model_repository,
        requests=60,
        concurrency=3,
        warmup=5,
        chunk=20,
        gradcam_every=10,
        bad_every=7,
        image_limit=12,
    )
    report = run_soak(config)
    assert report["requests"] == 60
    assert report["unexpected"] == {}
    assert report["statuses"] == {"200": 60 - 8, "400": 8}  # request numbers 6, 13, ..., 55 are truncated
    rss = report["rss_mib"]
    assert [sample["requests"] for sample in rss["samples"]] == [20, 40, 60]
    assert rss["start"] > 0 and rss["end"] > 0
    assert rss["growth_percent"] == pytest.approx((rss["end"] - rss["start"]) / rss["start"] * 100, abs=0.5)
    assert rss["met"] == (rss["growth_percent"] < 5.0)
    assert json.loads((tmp_path / "soak.json").read_text()) == report
