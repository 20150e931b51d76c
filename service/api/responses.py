"""The error answers of each route for OpenAPI ``responses=``, with an example body for every error type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from service.schemas import ErrorResponse, NotBrainMriResponse

# status -> {error_type: example sentence}
ERROR_EXAMPLES: Final[Mapping[int, Mapping[str, str]]] = {
    400: {
        "invalid_image": "The PNG image is corrupt: the CRC of its IHDR chunk does not match.",
        "bad_request": "There was an error parsing the body.",
    },
    401: {"unauthorized": "The X-API-Key header is missing; this service requires an API key."},
    404: {
        "unknown_model": "There is no model 'resnet'; the models served here are: mobilenetv2-4class.",
        "not_found": "There is no route /predcit; see /docs for the routes of this service.",
    },
    408: {
        "request_timeout": "The request body did not arrive within 30 s; send it faster or send a smaller "
        "image.",
    },
    413: {
        "upload_too_large": "The upload (52,428,800 bytes) is larger than the limit of 20,971,520 bytes; "
        "send a smaller image.",
        "image_too_large": "The image is 100000 x 100000 pixels (10,000,000,000 in all), more than the limit "
        "of 50,000,000 pixels.",
    },
    415: {
        "unsupported_media_type": "GIF images are not supported. Send a JPEG, PNG, BMP or TIFF image.",
    },
    422: {
        "validation_error": "The query parameter 'gradcam' is invalid: Input should be a valid boolean, "
        "unable to interpret input (got 'maybe').",
        "not_brain_mri": "The image does not look like a brain MRI slice (its input-validity score 3.217 is "
        "above the threshold 1 of model sartaj-4class), so no tumour label is given. Send an axial, coronal "
        "or sagittal brain MRI slice.",
    },
    429: {
        "overloaded": "The service is busy: all 4 prediction slots stayed taken for 2 s. Retry in a moment.",
    },
    500: {
        "internal_error": "The service failed unexpectedly while handling this request; the failure was "
        "logged with request id 6f1c2b0e4a8d4f7e9b3c5d2a1e0f9c8b.",
    },
    503: {
        "not_ready": "Model mobilenetv2-4class is still warming up; retry when /health/ready answers 200.",
    },
}

_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "The upload is not a decodable image (empty, truncated, corrupt, not an image, or too small).",
    401: "API keys are configured and X-API-Key is missing or wrong.",
    404: "Unknown model (or unknown route).",
    408: "The body did not arrive within MRI_BODY_TIMEOUT_S; the connection is closed.",
    413: "Too many bytes (upload limit), too many pixels, or a decode over the memory budget (as declared "
    "in the image header or codestream).",
    415: "Not multipart/form-data, or an image format the service does not read (GIF, WebP...).",
    422: "A field or query parameter is missing or invalid (validation_error), or the upload is not a brain "
    "MRI slice (not_brain_mri: refused by the input-validity check, with in_distribution, or by its DICOM "
    "Modality / body part): no tumour label is given.",
    429: "Overloaded: no prediction slot freed up within the queue timeout. Retry after the Retry-After "
    "header's seconds.",
    500: "Unexpected failure (logged with the request id).",
    503: "The models are still loading or warming up.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for ``statuses``: the ErrorResponse schema and one named example per error type."""
    return {
        status: {
            "model": NotBrainMriResponse if status == 422 else ErrorResponse,
            "description": _DESCRIPTIONS[status],
            "content": {
                "application/json": {
                    "examples": {
                        error_type: {
                            "summary": error_type,
                            "value": _example_body(error_type, sentence),
                        }
                        for error_type, sentence in ERROR_EXAMPLES[status].items()
                    }
                }
            },
        }
        for status in statuses
    }


def _example_body(error_type: str, sentence: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": sentence, "error_type": error_type}
    if error_type == "not_brain_mri":
        body["in_distribution"] = {
            "checked": True, "enforced": True, "score": 3.217, "threshold": 1.0, "accepted": False,
        }  # fmt: skip
    return body
