"""Every log line is JSON: Python warnings (without DICOM values) and what native code prints to fd 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, warnings
import numpy as np
from service.logging import configure_logging, native_stderr_to_log
configure_logging("info")
np.array([1.0]) / 0  # a numpy RuntimeWarning
warnings.warn_explicit("Invalid value for VR PN: 'DOE^JOHN'", UserWarning,
                       filename=os.path.join(os.sep, "x", "pydicom", "valuerep.py"), lineno=7)
with native_stderr_to_log("demo"):
    os.write(2, b"I0000 a C++ notice printed straight to the descriptor\n")
print("done", flush=True)
"""


def test_warnings_and_native_lines_become_json_without_dicom_values() -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout == "done\n"
    entries = [json.loads(line) for line in run.stderr.splitlines()]  # every line parses
    messages = {entry["logger"]: entry["message"] for entry in entries}
    assert messages["native.demo"] == "I0000 a C++ notice printed straight to the descriptor"
    numpy_warning, dicom_warning = [e["message"] for e in entries if e["logger"] == "py.warnings"]
    assert numpy_warning.startswith("RuntimeWarning at <string>:") and "divide by zero" in numpy_warning
    assert dicom_warning == "UserWarning at valuerep.py:7"  # the text, which quotes a value, is dropped
    assert "DOE" not in run.stderr
