"""The exporter's defaults, importable without TensorFlow (the command line's ``--help`` shows them)."""

from typing import Final

OPSET: Final = 17
DEFAULT_PARITY_IMAGES: Final = 32
DEFAULT_TOLERANCE: Final = 1e-4
MAX_ACCURACY_DROP_POINTS: Final = 0.5
"""A variant (fp16, int8) losing more test accuracy than this, in percentage points, is not published."""
