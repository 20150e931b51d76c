"""The DICOM results: the Secondary Capture of the key slice's Grad-CAM and the TID 1500 SR, validated with
dicom3tools' ``dciodvfy`` (no error) and read back with pydicom."""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import cv2
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from service.explanations import GradcamEngines
from service.hospital.analysis import Analysis, analyze_parts
from service.hospital.results import (
    CODING_SCHEME,
    RESEARCH_ONLY,
    series_results,
)
from service.hospital.settings import HospitalSettings
from service.hospital.wrap import wrap_as_mr_series
from service.inference import InferenceService, PredictionLimiter
from service.metrics import ServiceMetrics
from service.model_repository import ModelRepository, SessionConfig, open_model_repository


def dciodvfy_errors(dataset: Dataset, folder: Path) -> list[str]:
    """The ``Error`` lines dciodvfy reports for ``dataset``; skipped without dciodvfy unless CI is set."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        message = "dciodvfy (Debian's dicom3tools) is not installed: the DICOM results cannot be validated"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    run = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def opened(model_repository: Path) -> ModelRepository:
    repository = open_model_repository(model_repository, None, SessionConfig())
    repository.warm_up(None)
    return repository


def analyze(repository: ModelRepository, parts: list[bytes]) -> Analysis:
    inference = InferenceService(
        metrics=ServiceMetrics(),
        limiter=PredictionLimiter(2, 30.0),
        gradcam_engines=GradcamEngines(),
        max_pixels=50_000_000,
    )
    run = functools.partial(
        analyze_parts, parts, repository.get(None), inference, HospitalSettings(), gradcam=True
    )
    return anyio.run(run)


def values(sequence: Any) -> Iterator[str]:
    """Every string value in an SR content tree (codes, meanings, texts, UIDs)."""
    for item in sequence:
        for element in item:
            if element.VR == "SQ":
                yield from values(element.value)
            elif isinstance(element.value, str):
                yield element.value


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_sr_and_the_capture_of_a_series_are_valid_and_read_back(
    opened: ModelRepository, data_root: Path, tmp_path: Path
) -> None:
    folder = data_root / "sartaj-brain-tumor-mri" / "Testing" / "glioma_tumor"
    images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted(folder.glob("*.jpg"))[:4]]
    sources = wrap_as_mr_series(images)
    analysis = analyze(opened, [to_bytes(dataset) for dataset in sources])
    (series,) = analysis.series
    model = analysis.model
    capture, report = series_results(model, series)
    assert capture is not None and report is not None
    assert dciodvfy_errors(capture, tmp_path) == []
    assert dciodvfy_errors(report, tmp_path) == []

    capture = pydicom.dcmread(io.BytesIO(to_bytes(capture)))
    key = sources[[r.slice.instance for r in series.slices][series.key or 0]]
    assert capture.StudyInstanceUID == key.StudyInstanceUID
    assert capture.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in sources}
    assert list(capture.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert RESEARCH_ONLY in capture.SeriesDescription
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == key.SOPInstanceUID
    assert capture.pixel_array.shape == (key.Rows, key.Columns, 3)

    report = pydicom.dcmread(io.BytesIO(to_bytes(report)))
    assert report.StudyInstanceUID == key.StudyInstanceUID and RESEARCH_ONLY in report.SeriesDescription
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series_item in study.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in sources} | {capture.SOPInstanceUID}
    text = " ".join(values(report.ContentSequence))
    assert series.label is not None and series.label in text
    assert model.onnx_sha256 in text and model.name in text and CODING_SCHEME in text
    for name in model.classes:
        assert f"Probability of {name.replace('_', ' ').capitalize()}" in text


def test_an_sr_of_pydicoms_mr_file_is_valid(opened: ModelRepository, tmp_path: Path) -> None:
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    analysis = analyze(opened, [to_bytes(source)])
    capture, report = series_results(analysis.model, analysis.series[0])
    assert capture is not None and report is not None
    assert dciodvfy_errors(capture, tmp_path) == [] and dciodvfy_errors(report, tmp_path) == []
    assert report.PatientID == source.PatientID  # identifiers go into the DICOM objects, and only there
