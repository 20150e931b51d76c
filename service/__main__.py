"""``python -m service``: serve the model repository with uvicorn (settings from ``MRI_*`` variables).

A bad setting or a missing, empty or corrupt repository stops start-up with one sentence on stderr and exit
status 2, before uvicorn starts (so no traceback).
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from service.app import create_app
from service.logging import configure_logging
from service.model_repository import ModelRepositoryError, SessionConfig, open_model_repository
from service.server import serve
from service.settings import Settings, describe_settings_error

EXIT_CANNOT_START = 2


def main() -> int:
    """Start the service, or say in one sentence why it cannot start."""
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        repository = open_model_repository(
            settings.model_repository,
            settings.default_model,
            SessionConfig(
                settings.ort_intra_op_threads, settings.ort_inter_op_threads, settings.ort_allow_spinning
            ),
        )
    except ModelRepositoryError as error:
        print(error, file=sys.stderr)
        return EXIT_CANNOT_START
    configure_logging(settings.log_level)  # after the checks: a refusal is its one sentence and nothing else
    app = create_app(settings, repository=repository)
    serve(app, settings)  # uvicorn with the header, body and connection limits of the settings
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
