"""The hospital-integration part of the service's Settings (``MRI_SERIES_*``, ``MRI_DICOMWEB_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings

_FIELDS = Settings.model_fields  # the defaults live in one place: the service's settings


@dataclass(frozen=True)
class HospitalSettings:
    """Series bounds and rule, and the PACS the DICOMweb endpoint talks to (defaults: the settings')."""

    max_instances: int = _FIELDS["series_max_instances"].default
    max_bytes: int = _FIELDS["series_max_bytes"].default
    batch_size: int = _FIELDS["series_batch_size"].default
    min_tumour_slices: int = _FIELDS["series_min_tumour_slices"].default
    dicomweb_url: str | None = None
    dicomweb_auth_header: str | None = None
    dicomweb_ca_bundle: str | None = None
    dicomweb_timeout_s: float = _FIELDS["dicomweb_timeout_s"].default


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
