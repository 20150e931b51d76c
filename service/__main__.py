"""``python -m service``: serve the model repository with uvicorn (settings from ``MRI_*`` variables).

A bad setting or a missing, empty or corrupt repository stops start-up with one sentence on stderr and exit
status 2, before uvicorn starts (so no traceback).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import textwrap
from collections.abc import Sequence

from pydantic import ValidationError

from service.app import create_app
from service.logging import configure_logging
from service.model_repository import ModelRepositoryError, SessionConfig, open_model_repository
from service.server import serve
from service.settings import Settings, describe_settings_error

EXIT_CANNOT_START = 2


def build_parser() -> argparse.ArgumentParser:
    """``--help``: what the command does and every ``MRI_*`` setting with its default."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = "(unset)" if field.default is None else field.default
        if field.default_factory is not None:
            default = "(empty)"
        summary = " ".join((field.description or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"  MRI_{name.upper()} = {default}")
        lines += textwrap.wrap(summary, width=100, initial_indent="      ", subsequent_indent="      ")
    return argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the model repository over HTTP: the page at /, the API (/predict, /v2, "
        "/predict/series, /models), /docs, /health/live, /health/ready and /metrics. Configured only by "
        "environment variables:",
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` is already taken (so that uvicorn's traceback can be a sentence instead)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Start the service, or say in one sentence why it cannot start."""
    build_parser().parse_args(argv)  # --help, or a usage error for anything else
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return EXIT_CANNOT_START
    if port_in_use(settings.host, settings.port):
        print(
            f"Port {settings.port} on {settings.host} is already in use; set MRI_PORT to a free port "
            "(or stop the server that holds it).",
            file=sys.stderr,
        )
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
