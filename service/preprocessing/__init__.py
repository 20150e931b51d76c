"""The one preprocessing of the project (NumPy + OpenCV, no TensorFlow): training and the service both use it.

bytes --decode_image--> uint8 RGB (H, W, 3) --apply_recipe--> float32 (h, w, 3) in [0, 255]
"""

from service.preprocessing.crop import BoundingBox, brain_bounding_box, crop_to_brain
from service.preprocessing.decode import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    decode_image,
)
from service.preprocessing.errors import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    NotBrainMriImageError,
    UnsupportedImageFormatError,
)
from service.preprocessing.filters import bilateral_filter, resize_to, stretch_contrast
from service.preprocessing.formats import sniff_format, sniff_unsupported_format
from service.preprocessing.headers import read_dimensions
from service.preprocessing.recipes import (
    RECIPE_NAMES,
    Recipe,
    apply_recipe,
    apply_recipe_with_region,
    make_recipe,
    preprocess_bytes,
)
from service.preprocessing.steps import STEP_NAMES, Step

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "RECIPE_NAMES",
    "STEP_NAMES",
    "BoundingBox",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "NotBrainMriImageError",
    "Recipe",
    "Step",
    "UnsupportedImageFormatError",
    "apply_recipe",
    "apply_recipe_with_region",
    "bilateral_filter",
    "brain_bounding_box",
    "crop_to_brain",
    "decode_image",
    "make_recipe",
    "preprocess_bytes",
    "read_dimensions",
    "resize_to",
    "sniff_format",
    "sniff_unsupported_format",
    "stretch_contrast",
]
