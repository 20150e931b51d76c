"""``python -m service.hospital analyze --dicomweb URL --study UID``: analyse a study of a PACS.

Retrieves the study's MR series with WADO-RS, classifies every slice with the model repository of the
service's settings (``MRI_MODEL_REPOSITORY``, ``MRI_DEFAULT_MODEL``), stores a Secondary Capture of each key
slice's Grad-CAM and a TID 1500 SR back into the study with STOW-RS, and prints the JSON answer (indexes,
never DICOM values) on stdout. Logs are JSON lines on stderr. Exit status: 0 done, 1 refused (the sentence on
stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import anyio

from service.errors import ServiceError
from service.explanations import GradcamEngines
from service.hospital.answers import series_answer
from service.hospital.dicomweb import analyze_study, open_client
from service.hospital.settings import hospital_settings
from service.inference import InferenceService, PredictionLimiter
from service.logging import configure_logging
from service.metrics import ServiceMetrics
from service.model_repository import ModelRepositoryError, SessionConfig, open_model_repository
from service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.hospital", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="analyse one study of a DICOMweb PACS")
    analyze.add_argument("--dicomweb", required=True, help="DICOMweb root, e.g. http://pacs:8042/dicom-web")
    analyze.add_argument("--study", required=True, help="Study Instance UID")
    analyze.add_argument("--model", default=None, help="model name (default: the service's default model)")
    analyze.add_argument(
        "--auth-header", default=None, help="Authorization header value, e.g. 'Bearer TOKEN' (default: none)"
    )
    analyze.add_argument(
        "--ca-bundle", default=None, help="CA bundle that verifies the PACS's TLS certificate"
    )
    analyze.add_argument("--timeout", type=float, default=None, help="seconds per DICOMweb call")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    limits = hospital_settings(settings)
    limits = replace(
        limits,
        dicomweb_auth_header=args.auth_header or limits.dicomweb_auth_header,
        dicomweb_ca_bundle=args.ca_bundle or limits.dicomweb_ca_bundle,
        dicomweb_timeout_s=args.timeout or limits.dicomweb_timeout_s,
    )
    started = time.perf_counter()
    try:
        repository = open_model_repository(
            settings.model_repository,
            settings.default_model,
            SessionConfig(settings.ort_intra_op_threads, settings.ort_inter_op_threads),
        )
        repository.warm_up(None)
        model = repository.get(args.model)
        inference = InferenceService(
            metrics=ServiceMetrics(),
            limiter=PredictionLimiter(settings.max_concurrency, settings.queue_timeout_s),
            gradcam_engines=GradcamEngines(),
            max_pixels=settings.max_pixels,
            max_decode_bytes=settings.max_decode_mib * 2**20,
            enforce_input_validity=settings.input_validity,
        )
        client = open_client(limits, args.dicomweb)

        async def run() -> dict[str, object]:
            outcome = await analyze_study(client, args.study, model, inference, limits)
            answer = series_answer(outcome.analysis, "cli", time.perf_counter() - started)
            stored = [{"kind": kind, "series": index} for kind, index, _uid in outcome.stored]
            return {"analysis": answer.model_dump(mode="json", by_alias=True), "stored": stored}

        result = anyio.run(run)
    except (ServiceError, ModelRepositoryError) as error:
        print(getattr(error, "message", str(error)), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
