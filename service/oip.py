"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) on the service's models: the inference
request's decoding, its one batched ONNX Runtime run and the response's encoding (routes: service/api/v2.py).

Inputs: a request sends exactly one input, with a batch of N images (1 to :data:`MAX_BATCH_SIZE`).

- ``image_bytes``, BYTES [N]: each element is an encoded file (JPEG, PNG, BMP, TIFF or DICOM), decoded by its
  content with the service's own ``decode_upload`` and preprocessed with the model's recipe, as ``/predict``
  does. In a JSON body an element is the file's **base64** (standard alphabet, with padding): the protocol
  carries BYTES in JSON as strings, and tritonclient's JSON mode refuses bytes that are not UTF-8, which no
  image is. With the binary tensor data extension (tritonclient's default, ``set_data_from_numpy(array)``)
  the elements are the raw files, each after its 4-byte little-endian length, following the JSON header whose
  length the ``Inference-Header-Content-Length`` header gives.
- the ONNX graph's own input (``image``), FP32 [N, height, width, 3]: RGB pixels in [0, 255] that the client
  already preprocessed (``service.preprocessing.apply_recipe``), fed to the graph as they are; in JSON or as
  binary little-endian float32.

Outputs: ``probabilities`` FP32 [N, C] (calibrated, in the order of the model metadata's ``classes``) and,
when the model has an input-validity check, ``ood_score`` FP32 [N] and ``accepted`` BOOL [N] (the score is
at most the threshold, which the model metadata and the response give as the parameter ``ood_threshold``).
They come as JSON, or as binary when the request asks (``binary_data_output`` or an output's
``binary_data``; tritonclient asks for binary whenever it names no output).

Input validity: the contract of ``/predict`` holds. While the service enforces the check
(``MRI_INPUT_VALIDITY``, on by default) a request any of whose elements fails it is refused whole with 422
``not_brain_mri``, naming the elements: the protocol has no refusal of one element, and no tumour
probabilities are given for an image that is not a brain MRI slice. With the check off (research use)
every element is answered and ``accepted`` says which passed; the client then applies the threshold itself.

Errors: the service's one error handler answers ``{"error": "<sentence>", "error_type": "<kind>"}`` with the
service's status codes (400 not JSON or not an image, 401, 404 unknown model or version, 413, 415, 422,
429, 503). The protocol's error object is ``{"error": "<string>"}``; the extra key is allowed, and
tritonclient reads only ``error`` (and the status).

A request holds one slot of the service's PredictionLimiter whatever its N (429 on overload, as
``/predict``) and runs as one ``ServedModel.run`` call; with dynamic batching on (service/oip_batching.py,
off by default) the model inputs of concurrent requests are gathered into one call. The body is bounded by
``MRI_MAX_UPLOAD_BYTES`` (413), gzip- or deflate-encoded bodies included (decompressed up to the same
limit), and each decode by ``MRI_MAX_PIXELS`` and ``MRI_MAX_DECODE_MIB``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from service.errors import (
    ErrorType,
    InvalidRequestError,
    NotBrainMriError,
    ServiceError,
    UnknownModelError,
    UnsupportedMediaTypeError,
    UploadTooLargeError,
    client_text,
    from_image_error,
)
from service.inference import InputValidity, decode_upload
from service.model_repository import ServedModel
from service.oip_schemas import (
    InferenceRequest,
    MetadataTensor,
    ModelMetadataResponse,
    ParameterValue,
    RequestInput,
    RequestOutput,
    ServerMetadataResponse,
)
from service.preprocessing import ImageError, apply_recipe

SERVER_NAME: Final = "brain-tumour-mri-inference"
PLATFORM: Final = "onnxruntime_onnx"
EXTENSIONS: Final = ("binary_tensor_data", "parameters")
BYTES_INPUT: Final = "image_bytes"
PROBABILITIES: Final = "probabilities"
OOD_SCORE: Final = "ood_score"
ACCEPTED: Final = "accepted"
HEADER_LENGTH: Final = "Inference-Header-Content-Length"
"""The request or response header giving the length of the JSON header when binary tensors follow it."""
BINARY_CONTENT_TYPE: Final = "application/octet-stream"
MAX_BATCH_SIZE: Final = 64
"""Most images in one request: their decoded and preprocessed arrays are all held at once."""
_LENGTH_PREFIX: Final = struct.Struct("<I")


def server_metadata() -> ServerMetadataResponse:
    """``GET /v2``: the server's name, version and protocol extensions."""
    try:
        server_version = version("brain-tumour-mri-inference")
    except PackageNotFoundError:
        server_version = "0.0.0"
    return ServerMetadataResponse(name=SERVER_NAME, version=server_version, extensions=list(EXTENSIONS))


def check_version(model: ServedModel, requested: str | None) -> None:
    """404 unless ``requested`` (from a ``/versions/{version}`` path) is the one version served."""
    if requested is not None and requested != model.version:
        raise UnknownModelError(
            f"Model {model.name} has no version {client_text(requested)}; the version served is "
            f"{model.version}."
        )


def pixel_input_name(model: ServedModel) -> str:
    """The FP32 input's name: that of the ONNX graph's input."""
    return str(model.manifest["onnx"]["input"])


def output_names(model: ServedModel) -> tuple[str, ...]:
    """The model's outputs: the probabilities, and the input-validity score and verdict with a check."""
    if model.ood_threshold is None:
        return (PROBABILITIES,)
    return PROBABILITIES, OOD_SCORE, ACCEPTED


def model_metadata(model: ServedModel, enforce_input_validity: bool) -> ModelMetadataResponse:
    """``GET /v2/models/{name}``: the model's tensors and, as parameters, what a client needs to read them."""
    height, width, channels = model.input_shape
    outputs = [MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(model.classes)])]
    if model.ood_threshold is not None:
        outputs.append(MetadataTensor(name=OOD_SCORE, datatype="FP32", shape=[-1]))
        outputs.append(MetadataTensor(name=ACCEPTED, datatype="BOOL", shape=[-1]))
    return ModelMetadataResponse(
        name=model.name,
        versions=[model.version],
        platform=PLATFORM,
        inputs=[
            MetadataTensor(name=BYTES_INPUT, datatype="BYTES", shape=[-1]),
            MetadataTensor(
                name=pixel_input_name(model), datatype="FP32", shape=[-1, height, width, channels]
            ),
        ],
        outputs=outputs,
        parameters={
            "classes": ",".join(model.classes),
            "task": model.task,
            "max_batch_size": MAX_BATCH_SIZE,
            "preprocessing": model.recipe.name,
            **validity_parameters(model, enforce_input_validity),
        },
    )


def validity_parameters(model: ServedModel, enforce_input_validity: bool) -> dict[str, ParameterValue]:
    """Whether the model checks input validity, whether the service enforces it, and the threshold."""
    threshold = model.ood_threshold
    if threshold is None:
        return {"input_validity_checked": False, "input_validity_enforced": False}
    return {
        "input_validity_checked": True,
        "input_validity_enforced": enforce_input_validity,
        "ood_threshold": threshold,
    }


@dataclass(frozen=True)
class BatchInput:
    """The one input of a request: N encoded files, or N preprocessed images (N, height, width, 3)."""

    files: tuple[bytes, ...] | None = None
    pixels: npt.NDArray[np.float32] | None = None

    @property
    def size(self) -> int:
        if self.files is not None:
            return len(self.files)
        assert self.pixels is not None
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class WantedOutput:
    """An output to answer, and whether as binary data after the JSON header."""

    name: str
    binary: bool


@dataclass(frozen=True)
class ParsedRequest:
    """An inference request, checked against the model."""

    id: str | None
    input: BatchInput
    outputs: tuple[WantedOutput, ...]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body decoded from its ``Content-Encoding`` (identity, gzip or deflate), never past ``limit``
    bytes: a small compressed body must not inflate into more than the upload limit allows."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in ("gzip", "deflate"):
        raise UnsupportedMediaTypeError(
            f"The Content-Encoding {client_text(name, 32)} is not supported; send the body plain, gzip or "
            "deflate."
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if name == "gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ServiceError(f"The {name} request body is corrupt.", error_type=ErrorType.BAD_REQUEST) from None
    if len(inflated) > limit:
        raise UploadTooLargeError(
            f"The request body inflates to more than the limit of {limit:,} bytes; send fewer or smaller "
            "images."
        )
    if not inflater.eof:
        raise ServiceError(f"The {name} request body is truncated.", error_type=ErrorType.BAD_REQUEST)
    return inflated


def parse_infer_request(body: bytes, header_length: str | None, model: ServedModel) -> ParsedRequest:
    """The request's JSON header (and its binary tensors, if any), checked against ``model``.

    400 bad_request when the body cannot be split or parsed; 422 validation_error when it parses but does
    not describe an input the model takes.
    """
    header, binary = _split_body(body, header_length)
    try:
        document = json.loads(header)
    except (ValueError, UnicodeDecodeError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else "it is not UTF-8"
        raise ServiceError(
            f"The inference request is not valid JSON ({detail}); send the protocol's inference request "
            "object.",
            error_type=ErrorType.BAD_REQUEST,
        ) from None
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as error:
        raise InvalidRequestError(_describe_validation_error(error)) from None
    if len(request.inputs) != 1:
        raise InvalidRequestError(
            f"Send exactly one input, not {len(request.inputs)}: '{BYTES_INPUT}' (BYTES [N], encoded image "
            f"or DICOM files) or '{pixel_input_name(model)}' (FP32 [N, height, width, 3], preprocessed "
            "pixels)."
        )
    tensor = request.inputs[0]
    data, used = _binary_data(tensor, binary, 0)
    if used != len(binary):
        raise ServiceError(
            f"The request carries {len(binary) - used:,} bytes of binary data that no input claims "
            "(binary_data_size).",
            error_type=ErrorType.BAD_REQUEST,
        )
    batch = _read_input(tensor, data, model)
    binary_default = _flag((request.parameters or {}).get("binary_data_output", False), "binary_data_output")
    return ParsedRequest(request.id, batch, _wanted_outputs(request.outputs, model, binary_default))


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise ServiceError(
            f"The header {HEADER_LENGTH} ({client_text(header_length, 24)}) must be the length of the JSON "
            f"header at the start of the body ({len(body):,} bytes).",
            error_type=ErrorType.BAD_REQUEST,
        )
    return body[:length], body[length:]


def _describe_validation_error(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False)[:3]:
        where = ".".join(str(part) for part in problem.get("loc", ())) or "request"  # may name a client key
        message = str(problem.get("msg", "is invalid")).rstrip(".")
        problems.append(f"{client_text(where)}: {message}")
    return f"The inference request is invalid: {'; '.join(problems)}."


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"The parameter '{name}' must be true or false.")
    return value


def _binary_data(tensor: RequestInput, binary: bytes, offset: int) -> tuple[bytes | None, int]:
    """The tensor's binary data (None when it is in JSON) and the offset after it."""
    parameters = tensor.parameters or {}
    for unsupported in ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"):
        if unsupported in parameters:
            raise InvalidRequestError("Shared-memory tensors are not supported; send the data in the body.")
    size = parameters.get("binary_data_size")
    if size is None:
        return None, offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequestError(
            f"The binary_data_size of input {client_text(tensor.name)} must be a count."
        )
    if offset + size > len(binary):
        raise ServiceError(
            f"The input {client_text(tensor.name)} declares {size:,} bytes of binary data, but only "
            f"{len(binary) - offset:,} follow the JSON header.",
            error_type=ErrorType.BAD_REQUEST,
        )
    if tensor.data is not None:
        raise InvalidRequestError(f"The input {client_text(tensor.name)} has both data and binary_data_size.")
    return binary[offset : offset + size], offset + size


def _read_input(tensor: RequestInput, data: bytes | None, model: ServedModel) -> BatchInput:
    pixels_name = pixel_input_name(model)
    expected = {BYTES_INPUT: "BYTES", pixels_name: "FP32"}.get(tensor.name)
    if expected is None:
        raise InvalidRequestError(
            f"Model {model.name} has no input {client_text(tensor.name)}; its inputs are '{BYTES_INPUT}' "
            f"(BYTES) and '{pixels_name}' (FP32)."
        )
    if tensor.datatype != expected:
        raise InvalidRequestError(
            f"The input '{tensor.name}' is {expected}, not {client_text(tensor.datatype, 16)}."
        )
    if data is None and tensor.data is None:
        raise InvalidRequestError(f"The input '{tensor.name}' has no data (nor binary_data_size).")
    count = tensor.shape[0] if tensor.shape else 0
    if not 1 <= count <= MAX_BATCH_SIZE:
        raise InvalidRequestError(
            f"The batch size (first dimension of input '{tensor.name}') must be 1 to {MAX_BATCH_SIZE}, "
            f"not {count}."
        )
    if expected == "BYTES":
        return BatchInput(files=_read_files(tensor, data, count))
    return BatchInput(pixels=_read_pixels(tensor, data, model))


def _read_files(tensor: RequestInput, data: bytes | None, count: int) -> tuple[bytes, ...]:
    if tensor.shape not in ([count], [count, 1]):
        raise InvalidRequestError(
            f"The input '{BYTES_INPUT}' must have the shape [N] (one encoded file per image), "
            f"not {tensor.shape}."
        )
    files = _unpack_bytes(data) if data is not None else _base64_elements(tensor.data or [])
    if len(files) != count:
        raise InvalidRequestError(
            f"The input '{BYTES_INPUT}' has the shape {tensor.shape} but {len(files)} elements."
        )
    return files


def _unpack_bytes(data: bytes) -> tuple[bytes, ...]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then that many bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _LENGTH_PREFIX.size > len(data):
            raise ServiceError(
                "The binary BYTES tensor is truncated in an element's length.",
                error_type=ErrorType.BAD_REQUEST,
            )
        (length,) = _LENGTH_PREFIX.unpack_from(data, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(data):
            raise ServiceError(
                f"Element {len(elements)} of the binary BYTES tensor declares {length:,} bytes, but only "
                f"{len(data) - offset:,} follow.",
                error_type=ErrorType.BAD_REQUEST,
            )
        elements.append(data[offset : offset + length])
        offset += length
    return tuple(elements)


def _base64_elements(data: Sequence[Any]) -> tuple[bytes, ...]:
    elements = []
    for index, element in enumerate(_flatten(data)):
        try:
            if not isinstance(element, str):
                raise ValueError
            elements.append(base64.b64decode(element, validate=True))
        except (ValueError, binascii.Error):
            raise InvalidRequestError(
                f"Element {index} of input '{BYTES_INPUT}' is not a base64 string: in JSON, each element is "
                "the base64 (standard alphabet) of an encoded file; or send raw bytes with the binary "
                "tensor data extension."
            ) from None
    return tuple(elements)


def _flatten(data: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for element in data:
        if isinstance(element, list):
            flat.extend(_flatten(element))
        else:
            flat.append(element)
    return flat


def _read_pixels(tensor: RequestInput, data: bytes | None, model: ServedModel) -> npt.NDArray[np.float32]:
    height, width, channels = model.input_shape
    count = tensor.shape[0]
    if tensor.shape != [count, height, width, channels]:
        raise InvalidRequestError(
            f"The input '{tensor.name}' of model {model.name} must have the shape [N, {height}, {width}, "
            f"{channels}] (preprocessed RGB pixels), not {tensor.shape}."
        )
    expected = count * height * width * channels
    if data is not None:
        if len(data) != expected * 4:
            raise InvalidRequestError(
                f"The binary data of input '{tensor.name}' is {len(data):,} bytes, not the {expected * 4:,} "
                f"of {expected:,} little-endian float32 values."
            )
        flat = np.frombuffer(data, dtype="<f4").astype(np.float32)
    else:
        try:
            values = np.asarray(tensor.data)
        except ValueError:  # a ragged nesting
            values = np.asarray([None])
        if values.dtype.kind not in "fiu":
            raise InvalidRequestError(f"The data of input '{tensor.name}' must be numbers only (FP32).")
        if values.size != expected:
            raise InvalidRequestError(
                f"The input '{tensor.name}' has the shape {tensor.shape} ({expected:,} values) but "
                f"{values.size:,} values."
            )
        flat = values.astype(np.float32).reshape(-1)
    if not np.isfinite(flat).all() or flat.min() < 0.0 or flat.max() > 255.0:
        raise InvalidRequestError(
            f"The input '{tensor.name}' must hold preprocessed RGB pixels in [0, 255] (finite FP32)."
        )
    return flat.reshape(count, height, width, channels)


def _wanted_outputs(
    requested: list[RequestOutput] | None, model: ServedModel, binary_default: bool
) -> tuple[WantedOutput, ...]:
    names = output_names(model)
    if requested is None:
        return tuple(WantedOutput(name, binary_default) for name in names)
    wanted = []
    for output in requested:
        if output.name not in names:
            raise InvalidRequestError(
                f"Model {model.name} has no output {client_text(output.name)}; its outputs are "
                f"{', '.join(names)}."
            )
        parameters = output.parameters or {}
        if parameters.get("classification"):
            raise InvalidRequestError(
                "The classification extension is not supported; read the probabilities."
            )
        binary = _flag(parameters.get("binary_data", binary_default), "binary_data")
        wanted.append(WantedOutput(output.name, binary))
    return tuple(wanted)


@dataclass(frozen=True)
class BatchResult:
    """One ONNX Runtime run on a batch, each element's input-validity check, and the seconds per stage."""

    probabilities: npt.NDArray[np.float32]  # (N, C)
    scores: npt.NDArray[np.float32] | None  # (N,) or None without a check
    validity: tuple[InputValidity, ...]
    decode_s: float
    preprocess_s: float
    inference_s: float

    def labels(self, model: ServedModel) -> list[str]:
        return [model.classes[int(index)] for index in np.argmax(self.probabilities, axis=1)]


@dataclass(frozen=True)
class Prepared:
    """A batch's model input (N, height, width, 3) float32, and the seconds its decode and preprocessing
    took."""

    pixels: npt.NDArray[np.float32]
    decode_s: float
    preprocess_s: float


def prepare_batch(
    model: ServedModel, batch: BatchInput, *, max_pixels: int, max_decode_bytes: int
) -> Prepared:
    """Decode each file and apply the model's recipe (blocking: call it from a worker thread); FP32 pixels
    are taken as they are."""
    if batch.files is None:
        assert batch.pixels is not None
        return Prepared(batch.pixels, 0.0, 0.0)
    started = time.perf_counter()
    images = []
    for index, data in enumerate(batch.files):
        try:
            images.append(decode_upload(data, None, max_pixels=max_pixels, max_bytes=max_decode_bytes))
        except ImageError as error:
            raise _element_error(error, index, len(batch.files)) from None
    decoded = time.perf_counter()
    pixels = np.stack([apply_recipe(image, model.recipe) for image in images])
    return Prepared(pixels, decoded - started, time.perf_counter() - decoded)


def batch_result(
    model: ServedModel,
    prepared: Prepared,
    probabilities: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32] | None,
    *,
    inference_s: float,
    enforce_input_validity: bool,
) -> BatchResult:
    """The result of a batch from its ONNX Runtime outputs, with each element's input-validity check."""
    threshold = model.ood_threshold
    checked = threshold is not None and scores is not None
    enforced = enforce_input_validity and checked
    # rounded as /predict's InputValidity.of rounds, so that both accept exactly the same images
    rounded = [None] * len(probabilities) if scores is None else [round(float(s), 6) for s in scores]
    return BatchResult(
        probabilities=probabilities,
        scores=scores,
        validity=tuple(InputValidity(checked, enforced, score, threshold) for score in rounded),
        decode_s=prepared.decode_s,
        preprocess_s=prepared.preprocess_s,
        inference_s=inference_s,
    )


def run_batch(
    model: ServedModel,
    batch: BatchInput,
    *,
    max_pixels: int,
    max_decode_bytes: int,
    enforce_input_validity: bool,
) -> BatchResult:
    """Decode and preprocess each file (or take the pixels), then one ``model.run`` on the whole batch
    (blocking: call it from a worker thread)."""
    prepared = prepare_batch(model, batch, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    started = time.perf_counter()
    probabilities, scores = model.run(prepared.pixels)
    inference_s = time.perf_counter() - started
    return batch_result(
        model,
        prepared,
        probabilities,
        scores,
        inference_s=inference_s,
        enforce_input_validity=enforce_input_validity,
    )


def _element_error(error: ImageError, index: int, count: int) -> ServiceError:
    """The decoder's refusal of one element, naming the element when the batch has several."""
    message = error.message if count == 1 else f"Element {index} of input '{BYTES_INPUT}': {error.message}"
    return from_image_error(error, message)


def refuse_invalid_inputs(model: ServedModel, result: BatchResult) -> None:
    """422 not_brain_mri when the check is enforced and any element fails it: the whole request is refused,
    as the protocol cannot refuse one element of a batch."""
    refused = [
        index for index, check in enumerate(result.validity) if check.enforced and check.accepted is False
    ]
    if not refused:
        return
    first = result.validity[refused[0]]
    threshold = f"{first.threshold:.4g}"
    if len(result.validity) == 1:
        message = (
            f"The image does not look like a brain MRI slice (its input-validity score "
            f"{_score_text(first.score)} is above the threshold {threshold} of model {model.name}), so no "
            "tumour label is given. Send an axial, coronal or sagittal brain MRI slice."
        )
    else:
        scores = ", ".join(f"{index} ({_score_text(result.validity[index].score)})" for index in refused[:8])
        more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
        message = (
            f"{len(refused)} of the {len(result.validity)} images do not look like brain MRI slices: "
            f"elements {scores}{more} have an input-validity score above the threshold {threshold} of model "
            f"{model.name}, so no tumour probabilities are given for the batch. Send axial, coronal or "
            "sagittal brain MRI slices only."
        )
    raise NotBrainMriError(message, in_distribution=first)


def _score_text(score: float | None) -> str:
    return "not a number" if score is None or not math.isfinite(score) else f"{score:.4g}"


def encode_response(
    model: ServedModel,
    request_id: str | None,
    result: BatchResult,
    outputs: Sequence[WantedOutput],
    enforce_input_validity: bool,
    parameters: Mapping[str, ParameterValue] | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when binary outputs follow it (else None);
    ``parameters`` are added to the response's."""
    tensors: dict[str, tuple[str, npt.NDArray[Any]]] = {PROBABILITIES: ("FP32", result.probabilities)}
    if result.scores is not None and model.ood_threshold is not None:
        tensors[OOD_SCORE] = ("FP32", result.scores.astype(np.float32))
        tensors[ACCEPTED] = ("BOOL", np.array([check.accepted is True for check in result.validity]))
    described = []
    buffers = []
    for output in outputs:
        datatype, array = tensors[output.name]
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": list(array.shape)}
        if output.binary:
            raw = array.astype("<f4" if datatype == "FP32" else np.bool_).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor["data"] = _json_values(array)
        described.append(tensor)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        document["id"] = request_id
    document["parameters"] = {**validity_parameters(model, enforce_input_validity), **(parameters or {})}
    document["outputs"] = described
    header = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if not buffers:
        return header, None
    return header + b"".join(buffers), len(header)


def _json_values(array: npt.NDArray[Any]) -> list[Any]:
    values: list[Any] = array.reshape(-1).tolist()
    if array.dtype.kind == "f":  # JSON has no NaN: a score that is not a number is null
        return [value if math.isfinite(value) else None for value in values]
    return values
