"""Hospital integration: whole DICOM series in, DICOM results back over DICOMweb, FHIR for the record."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["hospital integration"])
