"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) beside ``/predict``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["open inference protocol"])
