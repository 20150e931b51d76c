"""The hostile corpus of ``python -m bench hostile``, through the HTTP API of the bundled models.

Each case must get its status and a JSON error with a sentence, and the service must stay ready after it; the
memory each case costs is measured by the benchmark (README, "Bounded memory"), not timed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.hostile import CASES, HostileCase
from service.app import create_app
from service.settings import Settings

MODELS = Path(__file__).resolve().parents[2] / "models"

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(Settings.model_validate({"model_repository": MODELS}))
    with TestClient(app, raise_server_exceptions=False) as client:
        from tests.service.conftest import wait_until_ready

        wait_until_ready(client)
        yield client


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_hostile_case_gets_its_status_and_the_service_stays_ready(
    client: TestClient, data_root: Path, case: HostileCase
) -> None:
    body, content_type = case.make(data_root)
    params = {"model": case.model} if case.model else {}
    answer = client.post("/predict", params=params, files={"file": ("upload", body, content_type)})
    assert answer.status_code in case.expected, answer.text[:300]
    if answer.status_code >= 400:
        error = answer.json()
        assert error["error_type"] and error["error"].endswith(".") and len(error["error"]) < 400
        assert "\\x" not in error["error"] and "b'" not in error["error"]  # no bytes echoed
    assert client.get("/health/ready").status_code == 200
