"""A study pulled from a PACS with QIDO-RS / WADO-RS, classified, and its results stored back with STOW-RS.

The PACS is reached with ``dicomweb-client`` over one ``requests`` session: an optional ``Authorization``
header (``Bearer ...`` or ``Basic ...``), TLS verified against the system's or a given CA bundle, and a
timeout on every call. Only the study's MR series are retrieved (QIDO-RS ``Modality=MR``), within the series
bounds (instance count before retrieval, bytes as they arrive).

Writing back, per analysed series: the Secondary Capture first, the SR (which references it) only once the
capture is stored. A failure answers 502 (unreachable, an HTTP error) or 504 (timeout) with a sentence that
says what was already stored, so nothing is half-written without the caller knowing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Final, TypeVar

import anyio
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from service.errors import ErrorType, InvalidRequestError, ServiceError, UploadTooLargeError
from service.hospital.analysis import Analysis, analyze_parts
from service.hospital.results import series_results
from service.hospital.settings import HospitalSettings
from service.inference import InferenceService
from service.model_repository import ServedModel

logger = logging.getLogger("service.dicomweb")

# dicomweb-client logs URLs (which hold Study / Series / SOP Instance UIDs) and request headers (the PACS's
# Authorization) at debug level, retrying logs the failed call's traceback, urllib3 the URLs it requests:
# no record of theirs is made, every failure reaches the log as this module's sentence instead.
for _name in ("dicomweb_client", "retrying", "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)
    logging.getLogger(_name).propagate = False

UID_PATTERN: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
T = TypeVar("T")


class PacsError(ServiceError):
    """HTTP 502 ``pacs_error``: the PACS could not be reached or answered an error."""

    error_type = ErrorType.PACS_ERROR


class PacsTimeoutError(ServiceError):
    """HTTP 504 ``pacs_timeout``: the PACS did not answer within the timeout."""

    error_type = ErrorType.PACS_TIMEOUT


class StudyNotFoundError(ServiceError):
    """HTTP 404 ``study_not_found``: the PACS holds no MR series of that study."""

    error_type = ErrorType.STUDY_NOT_FOUND


class PacsNotConfiguredError(ServiceError):
    """HTTP 503 ``pacs_not_configured``: no DICOMweb URL is configured (MRI_DICOMWEB_URL)."""

    error_type = ErrorType.PACS_NOT_CONFIGURED


@dataclass
class StudyOutcome:
    """The analysis of a study and the objects stored back, as (kind, series index, SOP Instance UID)."""

    analysis: Analysis
    stored: list[tuple[str, int, str]] = field(default_factory=list)


def check_uid(uid: str) -> str:
    """``uid`` when it is a DICOM UID (digits and dots, at most 64 characters); 422 otherwise."""
    if len(uid) > 64 or not UID_PATTERN.fullmatch(uid):
        raise InvalidRequestError(
            "The study UID must be a DICOM UID: digits and dots, at most 64 characters."
        )
    return uid


def open_client(limits: HospitalSettings, url: str | None = None) -> DICOMwebClient:
    """A DICOMweb client for ``url`` (default: the configured MRI_DICOMWEB_URL) with auth, TLS and timeout."""
    base = url or limits.dicomweb_url
    if not base:
        raise PacsNotConfiguredError(
            "No PACS is configured: set MRI_DICOMWEB_URL to the DICOMweb root of the PACS."
        )
    session = requests.Session()
    session.verify = limits.dicomweb_ca_bundle or True
    headers = {"Authorization": limits.dicomweb_auth_header} if limits.dicomweb_auth_header else None
    client = DICOMwebClient(base, session=session, headers=headers, timeout=limits.dicomweb_timeout_s)
    client.set_http_retry_params(retry=False)  # one bounded try per call: the caller decides to retry
    return client


def _call(what: str, stored: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(...)``, its failures as 502/504 sentences naming ``what`` failed and what was ``stored``."""
    try:
        return call(*args, **kwargs)
    except requests.Timeout:
        error: ServiceError = PacsTimeoutError(f"The PACS did not answer in time while {what}. {stored}")
    except requests.HTTPError as http_error:
        status = getattr(http_error.response, "status_code", None)
        error = PacsError(f"The PACS answered HTTP {status} while {what}. {stored}")
    except (requests.ConnectionError, requests.RequestException):
        error = PacsError(f"The PACS could not be reached while {what}. {stored}")
    except Exception:  # an answer dicomweb-client or pydicom cannot parse: never quote its text
        error = PacsError(f"The PACS answered something that is not valid DICOMweb while {what}. {stored}")
    logger.warning("DICOMweb call failed: %s", error.message, extra={"error_type": error.error_type})
    raise error


def fetch_study(client: DICOMwebClient, study_uid: str, limits: HospitalSettings) -> list[bytes]:
    """The MR instances of the study as Part 10 bytes (blocking); 404 without MR series, 413 past bounds."""
    nothing = "Nothing was stored."
    series = _call(
        "searching the study's MR series (QIDO-RS)",
        nothing,
        client.search_for_series,
        study_uid,
        search_filters={"Modality": "MR"},
        get_remaining=True,
    )
    if not series:
        raise StudyNotFoundError("The PACS holds no MR series of that study.")
    series_uids = [str(item["0020000E"]["Value"][0]) for item in series if "0020000E" in item]
    count = 0
    for series_uid in series_uids:
        instances = _call(
            "counting the study's instances (QIDO-RS)",
            nothing,
            client.search_for_instances,
            study_uid,
            series_uid,
            get_remaining=True,
        )
        count += len(instances)
        if count > limits.max_instances:
            raise UploadTooLargeError(
                f"The study holds more than {limits.max_instances:,} MR instances, the limit of one analysis."
            )
    parts: list[bytes] = []
    total = 0
    for series_uid in series_uids:
        for instance in _call(
            "retrieving the study (WADO-RS)", nothing, client.retrieve_series, study_uid, series_uid
        ):
            buffer = BytesIO()
            instance.save_as(buffer, enforce_file_format=True)
            total += buffer.tell()
            if total > limits.max_bytes:
                raise UploadTooLargeError(
                    f"The study's MR instances are larger than {limits.max_bytes:,} bytes, the limit of one "
                    "analysis."
                )
            parts.append(buffer.getvalue())
    return parts


def _said(stored: Sequence[tuple[str, int, str]]) -> str:
    if not stored:
        return "Nothing was stored."
    names = {"secondary_capture": "the Secondary Capture", "structured_report": "the SR"}
    return (
        "Already stored: " + ", ".join(f"{names[kind]} of series {index}" for kind, index, _ in stored) + "."
    )


async def analyze_study(
    client: DICOMwebClient,
    study_uid: str,
    model: ServedModel,
    inference: InferenceService,
    limits: HospitalSettings,
) -> StudyOutcome:
    """Retrieve the study's MR series, classify them (Grad-CAM of each key slice), store SC then SR back."""
    parts = await anyio.to_thread.run_sync(fetch_study, client, check_uid(study_uid), limits)
    analysis = await analyze_parts(parts, model, inference, limits, gradcam=True)
    outcome = StudyOutcome(analysis)
    for series in analysis.series:
        capture, report = await anyio.to_thread.run_sync(series_results, model, series)
        index = series.group.index
        for kind, dataset in (("secondary_capture", capture), ("structured_report", report)):
            if dataset is None:
                continue
            await anyio.to_thread.run_sync(_store, client, dataset, kind, index, outcome.stored)
            outcome.stored.append((kind, index, str(dataset.SOPInstanceUID)))
    logger.info("stored %d result objects", len(outcome.stored), extra={"model": model.name})
    return outcome


def _store(
    client: DICOMwebClient, dataset: Dataset, kind: str, index: int, stored: Sequence[tuple[str, int, str]]
) -> None:
    if getattr(dataset, "preamble", None) is None:
        dataset.preamble = b"\0" * 128  # dicomweb-client writes the data set as it is: make it Part 10
    what = f"storing the {'Secondary Capture' if kind == 'secondary_capture' else 'SR'} of series {index}"
    answer = _call(f"{what} (STOW-RS)", _said(stored), client.store_instances, [dataset])
    failed = answer.get("FailedSOPSequence") if isinstance(answer, Dataset) else None
    if failed:
        raise PacsError(f"The PACS refused {what[8:]} (STOW-RS). {_said(stored)}")
