"""The packages' import graph: who may import whom (an AST read of every module, lazy imports included).

``bench`` (the measuring tools) sits on top and nothing imports it; the serving runtime ``service`` never
imports ``training``, so the serving image (which copies service/, exporter/, training/) could drop training.
The remaining edge service -> exporter (the model-entry contract in ``exporter.manifest``) and exporter ->
service (preprocessing) is a cycle that a core package for the contracts would remove (issue #15).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "exporter", "training", "bench")
ALLOWED = {
    "service": {"service", "exporter"},
    "exporter": {"exporter", "service", "training"},
    "training": {"training", "service", "exporter"},
    "bench": {"bench", "service", "exporter", "training"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each of our packages that ``package`` imports, with the modules that import it."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_its_layer_allows(package: str) -> None:
    imports = imported_packages(package)
    forbidden = {other: sorted(paths) for other, paths in imports.items() if other not in ALLOWED[package]}
    assert forbidden == {}, f"{package} imports {forbidden}"


def test_nothing_imports_the_bench_and_the_runtime_never_imports_training() -> None:
    for package in ("service", "exporter", "training"):
        assert "bench" not in imported_packages(package), package
    assert "training" not in imported_packages("service")
