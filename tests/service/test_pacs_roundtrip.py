"""The PACS round trip against a real Orthanc with its DICOMweb plugin, on loopback.

MR instances are stored with STOW-RS (real slices wrapped as DICOM MR, and pydicom's MR_small.dcm, one study);
the endpoint and the command retrieve the study with WADO-RS, classify it, and store a Secondary Capture and
an SR back; Orthanc is then asked (QIDO-RS, WADO-RS) for both, which must reference the right instances and
pass dciodvfy. A PACS that is down or silent answers 502 / 504 with a sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from bench.process import free_port
from service.hospital.wrap import wrap_as_mr_series

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PLACES = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (Debian's orthanc, orthanc-dicomweb, dicom3tools)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _plugin() -> str:
    for folder in PLUGIN_PLACES:
        candidates = sorted(Path(folder).glob("libOrthancDicomWeb.so*"))
        if candidates:
            return str(candidates[0])
    message = "the Orthanc DICOMweb plugin (Debian's orthanc-dicomweb) is not installed"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of an Orthanc on loopback, DICOMweb at /dicom-web, its storage in a temporary folder."""
    binary = _need("Orthanc")
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "RoundTrip",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomPort": free_port(),
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (folder / "orthanc.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Orthanc did not start in 60 s"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        finally:
            process.kill()
            log.close()


@pytest.fixture(scope="module")
def study(orthanc: str, data_root: Path) -> tuple[str, list[Dataset]]:
    """(Study Instance UID, the MR instances stored): 4 real glioma slices and MR_small.dcm, one study."""
    folder = data_root / "sartaj-brain-tumor-mri" / "Testing" / "glioma_tumor"
    images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted(folder.glob("*.jpg"))[:4]]
    wrapped = wrap_as_mr_series(images)
    small = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    small.StudyInstanceUID = wrapped[0].StudyInstanceUID
    small.PatientID, small.PatientName = wrapped[0].PatientID, wrapped[0].PatientName
    instances = [*wrapped, small]
    DICOMwebClient(f"{orthanc}/dicom-web").store_instances(instances)
    return str(wrapped[0].StudyInstanceUID), instances


@pytest.fixture
def pacs_client(make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """Ready clients on the tiny repository (the service tests' ``make_client``)."""
    return make_client


def results_in(orthanc: str, study_uid: str, modality: str) -> list[Dataset]:
    client = DICOMwebClient(f"{orthanc}/dicom-web")
    found = client.search_for_instances(study_uid, search_filters={"Modality": modality})
    return [
        client.retrieve_instance(study_uid, item["0020000E"]["Value"][0], item["00080018"]["Value"][0])
        for item in found
    ]


def dciodvfy_errors(dataset: Dataset, folder: Path) -> list[str]:
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    run = subprocess.run([_need("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_the_endpoint_stores_a_capture_and_an_sr_back_into_the_study(
    orthanc: str, study: tuple[str, list[Dataset]], pacs_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    study_uid, instances = study
    client = pacs_client(dicomweb_url=f"{orthanc}/dicom-web")
    response = client.post(f"/dicomweb/studies/{study_uid}/analyze")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["analysis"]["series"]) == 2
    assert body["stored"] == [
        {"kind": "secondary_capture", "series": 0},
        {"kind": "structured_report", "series": 0},
        {"kind": "secondary_capture", "series": 1},
        {"kind": "structured_report", "series": 1},
    ]
    assert study_uid not in response.text and str(instances[0].PatientID) not in response.text
    captures = results_in(orthanc, study_uid, "OT") + results_in(orthanc, study_uid, "SC")
    reports = results_in(orthanc, study_uid, "SR")
    assert len(captures) == 2 and len(reports) == 2
    by_uid = {str(ds.SOPInstanceUID): ds for ds in instances}
    capture_uids = {str(ds.SOPInstanceUID) for ds in captures}
    for capture in captures:
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID in by_uid
        assert dciodvfy_errors(capture, tmp_path) == []
    series_of = {uid: str(ds.SeriesInstanceUID) for uid, ds in by_uid.items()}
    for report in reports:
        assert dciodvfy_errors(report, tmp_path) == []
        referenced = {
            str(item.ReferencedSOPInstanceUID)
            for study_item in report.CurrentRequestedProcedureEvidenceSequence
            for series_item in study_item.ReferencedSeriesSequence
            for item in series_item.ReferencedSOPSequence
        }
        sources = referenced - capture_uids
        assert len(referenced & capture_uids) == 1  # its own capture
        assert sources and len({series_of[uid] for uid in sources}) == 1  # the instances of one series
        wanted = {uid for uid, series in series_of.items() if series == series_of[next(iter(sources))]}
        assert sources == wanted


def test_the_command_analyses_a_study(
    orthanc: str, study: tuple[str, list[Dataset]], model_repository: Path
) -> None:
    study_uid, _ = study
    before = len(results_in(orthanc, study_uid, "SR"))
    env = {**os.environ, "MRI_MODEL_REPOSITORY": str(model_repository)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.hospital",
            "analyze",
            "--dicomweb",
            f"{orthanc}/dicom-web",
            "--study",
            study_uid,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout)
    assert [item["kind"] for item in answer["stored"]].count("structured_report") == 2
    assert len(results_in(orthanc, study_uid, "SR")) == before + 2
    for line in run.stderr.splitlines():  # every log line is JSON
        assert isinstance(json.loads(line), dict), line


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/dicom-web"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_pacs_down_or_silent_answers_502_or_504(
    pacs_client: Callable[..., TestClient], silent_server: str
) -> None:
    uid = "1.2.3.4"
    down = pacs_client(dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    answer = down.post(f"/dicomweb/studies/{uid}/analyze")
    assert answer.status_code == 502 and answer.json()["error_type"] == "pacs_error"
    assert "could not be reached" in answer.json()["error"] and "Nothing was stored" in answer.json()["error"]
    silent = pacs_client(dicomweb_url=silent_server, dicomweb_timeout_s=0.5)
    started = time.monotonic()
    answer = silent.post(f"/dicomweb/studies/{uid}/analyze")
    assert answer.status_code == 504 and answer.json()["error_type"] == "pacs_timeout"
    assert time.monotonic() - started < 10
    assert down.post("/dicomweb/studies/not-a-uid/analyze").status_code == 422
