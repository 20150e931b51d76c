"""``POST /predict/series``: many DICOM instances, ZIPs and multi-frame objects, grouped, ordered, classified
in batches, answered per slice and per series; bounded; broken or non-MR slices refused one by one."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from service.hospital.analysis import SliceResult, aggregate
from service.hospital.instances import SeriesGroup, Slice
from service.hospital.wrap import wrap_as_mr_series


def dicom_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def real_slices(data_root: Path, folder: str, count: int) -> list[np.ndarray]:
    paths = sorted((data_root / "sartaj-brain-tumor-mri" / "Testing" / folder).glob("*.jpg"))[:count]
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]


@pytest.fixture
def series_client(make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """Ready clients on the tiny repository (the service tests' ``make_client``)."""
    return make_client


def files(*parts: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"part{index}.dcm", part, "application/dicom")) for index, part in enumerate(parts)]


def test_a_mixed_request_is_grouped_ordered_and_classified_slice_by_slice(
    series_client: Callable[..., TestClient], data_root: Path
) -> None:
    wrapped = wrap_as_mr_series(real_slices(data_root, "glioma_tumor", 5))
    shuffled = list(range(5))
    random.Random(3).shuffle(shuffled)
    ct = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ct.Modality = "CT"
    ct.SeriesInstanceUID = generate_uid()
    mr_small = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    parts = [dicom_bytes(wrapped[i]) for i in shuffled]
    parts += [dicom_bytes(mr_small), dicom_bytes(ct), b"\0" * 128 + b"DICM" + b"broken" * 10, b"not dicom"]
    client = series_client(series_batch_size=4)
    response = client.post("/predict/series", files=files(*parts))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["slices"] == 9 and body["batches"] == 2  # the 7 readable slices, 4 a batch
    wrapped_series, small_series, ct_series = body["series"]
    # ordered along the normal: instance i of the request holds wrapped slice shuffled[i]
    assert wrapped_series["ordered_by"] == "position"
    assert [shuffled[s["instance"]] for s in wrapped_series["slices"]] == [0, 1, 2, 3, 4]
    assert all(s["status"] == "ok" and s["label"] for s in wrapped_series["slices"])
    assert wrapped_series["status"] == "ok" and wrapped_series["label"] in wrapped_series["probabilities"]
    assert wrapped_series["key_slice"] in wrapped_series["evidence"]
    assert wrapped_series["gradcam"] is None
    assert small_series["status"] == "ok" and len(small_series["slices"]) == 1
    # the CT instance is refused on its own, in its own series
    assert ct_series["status"] == "no_valid_slices" and ct_series["label"] is None
    assert ct_series["slices"][0]["error"]["error_type"] == "not_brain_mri"
    # the unreadable objects belong to no series, each with its error
    assert [item["instance"] for item in body["unread"]] == [7, 8]
    assert {item["error"]["error_type"] for item in body["unread"]} == {"invalid_image"}
    # no DICOM value in the answer: neither patient fields nor UIDs
    text = response.text
    for dataset in (wrapped[0], mr_small):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"):
            assert str(dataset.get(keyword)) not in text
    assert str(mr_small.PatientName) not in text


def test_a_zip_of_instances_answers_like_the_parts(
    series_client: Callable[..., TestClient], data_root: Path
) -> None:
    wrapped = [dicom_bytes(ds) for ds in wrap_as_mr_series(real_slices(data_root, "no_tumor", 3))]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for number, data in enumerate(wrapped):
            zipped.writestr(f"series/IM{number}", data)
        zipped.writestr("DICOMDIR", b"ignored")
    client = series_client()
    by_zip = client.post("/predict/series", files=files(archive.getvalue())).json()
    by_parts = client.post("/predict/series", files=files(*wrapped)).json()
    assert by_zip["slices"] == by_parts["slices"] == 3
    assert by_zip["series"][0]["probabilities"] == pytest.approx(by_parts["series"][0]["probabilities"])


def enhanced_mr(frames: list[np.ndarray]) -> Dataset:
    """A multi-frame Enhanced MR object, frames stored in reverse slice order."""
    (first,) = wrap_as_mr_series(frames[:1])
    dataset = first
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    del dataset.ImagePositionPatient, dataset.ImageOrientationPatient, dataset.SliceLocation
    dataset.NumberOfFrames = len(frames)
    order = list(reversed(range(len(frames))))
    dataset.PixelData = b"".join(frames[i].tobytes() for i in order)
    per_frame = []
    for i in order:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    dataset.SharedFunctionalGroupsSequence = Sequence([shared])
    dataset.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return dataset


def test_a_multi_frame_object_is_split_into_ordered_frames(
    series_client: Callable[..., TestClient], data_root: Path
) -> None:
    frames = [cv2.resize(image, (128, 128)) for image in real_slices(data_root, "pituitary_tumor", 4)]
    response = series_client().post("/predict/series", files=files(dicom_bytes(enhanced_mr(frames))))
    assert response.status_code == 200, response.text
    (series,) = response.json()["series"]
    assert series["ordered_by"] == "position" and series["status"] == "ok"
    # stored as frames 1..4 = slices 3, 2, 1, 0: in slice order they come back 4, 3, 2, 1
    assert [(s["instance"], s["frame"]) for s in series["slices"]] == [(0, 4), (0, 3), (0, 2), (0, 1)]


def test_bounds_answer_413(series_client: Callable[..., TestClient], data_root: Path) -> None:
    wrapped = [dicom_bytes(ds) for ds in wrap_as_mr_series(real_slices(data_root, "no_tumor", 3))]
    client = series_client(series_max_instances=2, series_max_bytes=10**6)
    too_many = client.post("/predict/series", files=files(*wrapped))
    assert too_many.status_code == 413 and too_many.json()["error_type"] == "upload_too_large"
    frames = [cv2.resize(image, (64, 64)) for image in real_slices(data_root, "no_tumor", 3)]
    too_many_frames = client.post("/predict/series", files=files(dicom_bytes(enhanced_mr(frames))))
    assert too_many_frames.status_code == 413
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("big", b"\0" * 2 * 10**6)  # 2 MB inflated from a few kB
    inflated = client.post("/predict/series", files=files(bomb.getvalue()))
    assert inflated.status_code == 413 and "ZIP" in inflated.json()["error"]


def results(*labels: int | None, classes: int = 4) -> list[SliceResult]:
    """Slice results whose argmax is each label (None: a refused slice)."""
    out = []
    for number, label in enumerate(labels):
        if label is None:
            out.append(SliceResult(Slice(number), error=ValueError("refused")))
        else:
            probabilities = np.full(classes, 0.1, np.float32)
            probabilities[label] = 0.7 - 0.01 * number
            out.append(SliceResult(Slice(number), probabilities=probabilities))
    return out


class FourClasses:
    name = "m"
    classes = ("glioma", "meningioma", "no_tumor", "pituitary")


def test_the_series_rule() -> None:
    model: Any = FourClasses()
    group = SeriesGroup(0)
    # one tumour slice among five is below k = 2: no tumour, key slice the most confident no-tumour slice
    negative = aggregate(model, group, results(2, 2, 0, 2, 2), 2)
    assert (negative.label, negative.tumour_slices, negative.key) == ("no_tumor", 1, 0)
    # two pituitary slices and one glioma: a tumour, of the type with the highest mean over the evidence
    positive = aggregate(model, group, results(2, 3, 3, 0, None), 2)
    assert positive.label == "pituitary" and positive.evidence == [1, 2, 3] and positive.key == 1
    # a one-slice series decides alone; a series without a valid slice has no label
    assert aggregate(model, group, results(1), 2).label == "meningioma"
    empty = aggregate(model, group, results(None, None), 2)
    assert empty.label is None and empty.status == "no_valid_slices"


def test_the_key_slice_gets_a_gradcam(series_client: Callable[..., TestClient], data_root: Path) -> None:
    wrapped = [dicom_bytes(ds) for ds in wrap_as_mr_series(real_slices(data_root, "meningioma_tumor", 3))]
    response = series_client().post("/predict/series", params={"gradcam": "true"}, files=files(*wrapped))
    assert response.status_code == 200, response.text
    (series,) = response.json()["series"]
    assert series["gradcam"]["class"] == series["label"]
    assert series["gradcam"]["png_base64"]


def test_fhir_diagnostic_report_on_request(series_client: Callable[..., TestClient], data_root: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    wrapped = [dicom_bytes(ds) for ds in wrap_as_mr_series(real_slices(data_root, "glioma_tumor", 3))]
    client = series_client()
    headers = {"Accept": "application/fhir+json"}
    response = client.post(
        "/predict/series", params={"gradcam": "true"}, files=files(*wrapped), headers=headers
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/fhir+json"
    report = DiagnosticReport.model_validate(response.json())
    assert report.status == "preliminary" and report.subject is None
    contained = {item.id: item for item in report.contained or []}
    assert contained["model"].get_resource_type() == "Device"
    observations = [item for item in contained.values() if item.get_resource_type() == "Observation"]
    assert len(observations) == 4 and all(o.device.reference == "#model" for o in observations)
    assert sum(float(o.valueQuantity.value) for o in observations) == pytest.approx(1.0, abs=1e-4)
    assert report.conclusionCode[0].coding[0].code in {"glioma", "meningioma", "no_tumor", "pituitary"}
    assert report.presentedForm[0].contentType == "image/png" and report.presentedForm[0].data
    for dataset in wrap_as_mr_series(real_slices(data_root, "glioma_tumor", 1)):
        assert str(dataset.PatientID) not in response.text
    # two series: a Bundle of two reports
    other = [dicom_bytes(ds) for ds in wrap_as_mr_series(real_slices(data_root, "no_tumor", 2))]
    bundle = client.post("/predict/series", files=files(*wrapped, *other), headers=headers).json()
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection" and len(parsed.entry) == 2
    assert all(entry.resource.get_resource_type() == "DiagnosticReport" for entry in parsed.entry)


def test_fhir_diagnostic_report_of_a_single_prediction(
    series_client: Callable[..., TestClient], data_root: Path
) -> None:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    client = series_client()
    data = (
        data_root / "sartaj-brain-tumor-mri" / "Testing" / "meningioma_tumor" / "image(10).jpg"
    ).read_bytes()
    upload = {"file": ("slice.jpg", data, "image/jpeg")}
    plain = client.post("/predict", files=upload).json()
    response = client.post(
        "/predict", params={"gradcam": "true"}, files=upload, headers={"Accept": "application/fhir+json"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/fhir+json"
    report = DiagnosticReport.model_validate(response.json())
    assert report.status == "preliminary" and report.subject is None
    observations = {
        item.code.coding[0].code: float(item.valueQuantity.value)
        for item in report.contained or []
        if item.get_resource_type() == "Observation"
    }
    assert observations == pytest.approx(plain["probabilities"], abs=1e-6)
    assert report.conclusionCode[0].coding[0].code == plain["label"]
    assert report.presentedForm[0].contentType == "image/png" and report.presentedForm[0].data
    # an uncertain answer has no coded conclusion
    unsure = client.post(
        "/predict",
        params={"min_confidence": 0.999},
        files=upload,
        headers={"Accept": "application/fhir+json"},
    ).json()
    assert "conclusionCode" not in unsure and unsure["conclusion"].startswith("Uncertain")
