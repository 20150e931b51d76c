"""The exporter's defaults, importable without TensorFlow (the command line's ``--help`` shows them)."""

from typing import Final

OPSET: Final = 17
DEFAULT_PARITY_IMAGES: Final = 32
DEFAULT_TOLERANCE: Final = 1e-4
MAX_ACCURACY_DROP_POINTS: Final = 0.5
"""A variant (fp16, int8) losing more test accuracy than this, in percentage points, is not published."""

DEFAULT_HEATMAPS: Final[dict[str, tuple[str, str]]] = {
    "efficientnet_lite0": ("layercam", "block6d_expand_activation"),
}
"""Per backbone, the heat map an export records (method, Keras layer): the best pointing game measured by
``python -m training localisation`` (docs/trust.md, "Heat maps"). Other backbones: Grad-CAM at the run's
layer."""


def parse_heatmap(text: str) -> tuple[str, str]:
    """``METHOD@LAYER`` -> (method, layer); ValueError with a sentence otherwise."""
    from exporter.manifest import GRADCAM_METHODS

    method, at, layer = text.partition("@")
    if not at or not layer or method not in GRADCAM_METHODS:
        raise ValueError(
            f"{text!r} is not METHOD@LAYER with METHOD one of {', '.join(GRADCAM_METHODS)} "
            "(e.g. layercam@block6d_expand_activation)"
        )
    return method, layer


def default_heatmap(backbone: str, gradcam_layer: str) -> tuple[str, str]:
    """The (method, layer) of a model of ``backbone`` whose run named ``gradcam_layer``."""
    return DEFAULT_HEATMAPS.get(backbone, ("gradcam", gradcam_layer))
