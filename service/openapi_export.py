"""Write or check the committed OpenAPI contract: ``python -m service.openapi_export [--check]``.

``openapi.json`` at the repository root must equal ``create_app().openapi()``; ``--check`` exits 1 when it
does not (CI), without ``--check`` the file is rewritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from service.app import create_app
from service.settings import Settings

OPENAPI_PATH: Final = Path(__file__).resolve().parents[1] / "openapi.json"
REGENERATE_COMMAND: Final = "python -m service.openapi_export"


def current_schema() -> dict[str, Any]:
    """The app's OpenAPI schema; it does not depend on the settings, so defaults are used (no environment)."""
    return create_app(Settings.model_construct()).openapi()


def render_schema(schema: dict[str, Any]) -> str:
    """The committed text form: indented JSON with a final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.openapi_export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs; do not write")
    parser.add_argument("--output", type=Path, default=OPENAPI_PATH, help="default: openapi.json at the root")
    args = parser.parse_args(argv)
    text = render_schema(current_schema())
    if args.check:
        committed = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if committed != text:
            print(f"{args.output} is stale: regenerate it with `{REGENERATE_COMMAND}`.", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date.")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
