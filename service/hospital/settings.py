"""The hospital-integration part of the service's Settings (``MRI_SERIES_*``, ``MRI_DICOMWEB_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings

DEFAULT_SERIES_MAX_INSTANCES = 1000
DEFAULT_SERIES_MAX_BYTES = 512 * 2**20
DEFAULT_SERIES_BATCH_SIZE = 16
DEFAULT_SERIES_MIN_TUMOUR_SLICES = 2
DEFAULT_DICOMWEB_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HospitalSettings:
    """Series bounds and rule, and the PACS the DICOMweb endpoint talks to."""

    max_instances: int = DEFAULT_SERIES_MAX_INSTANCES
    max_bytes: int = DEFAULT_SERIES_MAX_BYTES
    batch_size: int = DEFAULT_SERIES_BATCH_SIZE
    min_tumour_slices: int = DEFAULT_SERIES_MIN_TUMOUR_SLICES
    dicomweb_url: str | None = None
    dicomweb_auth_header: str | None = None
    dicomweb_ca_bundle: str | None = None
    dicomweb_timeout_s: float = DEFAULT_DICOMWEB_TIMEOUT_S


def hospital_settings(settings: Settings) -> HospitalSettings:
    """The hospital part of the service's ``settings``."""
    secret = settings.dicomweb_auth_header
    return HospitalSettings(
        max_instances=settings.series_max_instances,
        max_bytes=settings.series_max_bytes,
        batch_size=settings.series_batch_size,
        min_tumour_slices=settings.series_min_tumour_slices,
        dicomweb_url=settings.dicomweb_url,
        dicomweb_auth_header=None if secret is None else (secret.get_secret_value() or None),
        dicomweb_ca_bundle=None if settings.dicomweb_ca_bundle is None else str(settings.dicomweb_ca_bundle),
        dicomweb_timeout_s=settings.dicomweb_timeout_s,
    )
