"""The one error hierarchy of image decoding: a sentence and a kind (the class), no HTTP.

The service maps each class to its error type and status (:data:`service.errors.IMAGE_ERROR_TYPES`).
"""

from __future__ import annotations

SUPPORTED_FORMATS_SENTENCE = "Send a JPEG, PNG, BMP or TIFF image."


class ImageError(Exception):
    """Base class of every refusal of an uploaded image.

    ``message`` is a sentence a person understands (it never contains the image bytes); the subclass says
    what kind of refusal it is.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageDecodeError(ImageError):
    """Empty, truncated, corrupt (bad CRC, damaged scan...), forged (a size its data cannot hold), not an
    image, or too small (the service: 400 ``invalid_image``)."""


class ImageTooLargeError(ImageError):
    """The width * height declared in the header is over the pixel limit, or the memory its decode would take
    (estimated from the header) is over the decode budget (the service: 413 ``image_too_large``)."""


class UnsupportedImageFormatError(ImageError):
    """A recognised but unsupported image container (GIF, WebP...), or a supported container in a variant the
    decoder cannot read (12-bit JPEG, half-float TIFF...) (the service: 415 ``unsupported_media_type``)."""


class NotBrainMriImageError(ImageError):
    """A DICOM file whose Modality or body part says it is not a brain MRI (the service: 422
    ``not_brain_mri``)."""
