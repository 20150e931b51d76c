"""The one error hierarchy of image decoding; the service maps each class to its HTTP status."""

from __future__ import annotations

SUPPORTED_FORMATS_SENTENCE = "Send a JPEG, PNG, BMP or TIFF image."


class ImageError(Exception):
    """Base class of every refusal of an uploaded image.

    ``message`` is a sentence a person understands (it never contains the image bytes), ``status_code`` the
    HTTP status the service answers with and ``error_type`` the machine-readable kind in the error body.
    """

    status_code: int = 400
    error_type: str = "invalid_image"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_body(self) -> dict[str, str]:
        """The JSON error body of the service: ``{"error": <sentence>, "error_type": <kind>}``."""
        return {"error": self.message, "error_type": self.error_type}


class ImageDecodeError(ImageError):
    """HTTP 400 ``invalid_image``: empty, truncated, corrupt (bad CRC, damaged scan...), forged (a size its
    data cannot hold), not an image, or too small."""

    status_code = 400
    error_type = "invalid_image"


class ImageTooLargeError(ImageError):
    """HTTP 413 ``image_too_large``: the width * height declared in the header is over the pixel limit, or the
    memory its decode would take (estimated from the header) is over the decode budget."""

    status_code = 413
    error_type = "image_too_large"


class UnsupportedImageFormatError(ImageError):
    """HTTP 415 ``unsupported_media_type``: a recognised but unsupported image container (GIF, WebP...), or a
    supported container in a variant the decoder cannot read (12-bit JPEG, half-float TIFF...)."""

    status_code = 415
    error_type = "unsupported_media_type"


class NotBrainMriImageError(ImageError):
    """HTTP 422 ``not_brain_mri``: a DICOM file whose Modality or body part says it is not a brain MRI."""

    status_code = 422
    error_type = "not_brain_mri"
