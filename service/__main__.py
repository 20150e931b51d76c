"""`python -m service`: serve the model repository with uvicorn (settings from ``MRI_*`` variables)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    """Start the service, or say in one sentence why it cannot start."""
    repository = Path(os.environ.get("MRI_MODEL_REPOSITORY", "models"))
    if not repository.is_dir() or not any(repository.glob("*/manifest.json")):
        print(
            f"No model repository at {repository.resolve()}: export a trained model there with "
            "`python -m exporter RUN_DIR --repository models --name NAME` (the bundled default models "
            "and the HTTP service itself are not part of this release yet).",
            file=sys.stderr,
        )
        return 2
    print(
        "The HTTP service is not part of this release yet; only the model repository exists.", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
