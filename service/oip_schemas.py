"""Pydantic models of the Open Inference Protocol's JSON bodies (KServe v2 / Triton HTTP/REST).

They document the ``/v2`` routes in openapi.json and validate the inference request's JSON header; the field
names are the protocol's, so that any client of the protocol (tritonclient, KServe's) reads them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ParameterValue = str | int | float | bool
"""A protocol parameter's value: the protocol allows a string, a number or a boolean."""


class ServerMetadataResponse(BaseModel):
    """The server metadata of the Open Inference Protocol (``GET /v2``)."""

    name: str = Field(description="Name of the server.", examples=["brain-tumour-mri-inference"])
    version: str = Field(description="Version of the server (the service's package).", examples=["0.1.0"])
    extensions: list[str] = Field(
        description=(
            "Protocol extensions the server supports: binary_tensor_data (tensors as raw bytes after the "
            "JSON header, with the Inference-Header-Content-Length header) and parameters."
        ),
        examples=[["binary_tensor_data", "parameters"]],
    )


class ServerLiveResponse(BaseModel):
    """The process answers (``GET /v2/health/live``); the status 200 is the answer."""

    live: bool = Field(
        description="Always true (a process that is not live does not answer).", examples=[True]
    )


class ServerReadyResponse(BaseModel):
    """Every model is loaded and warmed (``GET /v2/health/ready``); a server not ready answers 503."""

    ready: bool = Field(description="Always true (a server not ready answers 503).", examples=[True])


class ModelReadyResponse(BaseModel):
    """The model is loaded and warmed (``GET /v2/models/{name}/ready``); a model not ready answers 503."""

    name: str = Field(description="Name of the model.", examples=["sartaj-4class"])
    ready: bool = Field(description="Always true (a model not ready answers 503).", examples=[True])


class MetadataTensor(BaseModel):
    """One input or output tensor of a model: its name, datatype and shape (-1: any size)."""

    name: str = Field(description="Name of the tensor.", examples=["image_bytes"])
    datatype: str = Field(
        description="Protocol datatype: BYTES (encoded files), FP32 or BOOL.", examples=["BYTES"]
    )
    shape: list[int] = Field(
        description="Shape of the tensor; -1 is the batch dimension (1 to max_batch_size).", examples=[[-1]]
    )


class ModelMetadataResponse(BaseModel):
    """The model metadata of the Open Inference Protocol (``GET /v2/models/{name}``)."""

    name: str = Field(description="Name of the model.", examples=["sartaj-4class"])
    versions: list[str] = Field(description="The one version served (from the manifest).", examples=[["1"]])
    platform: str = Field(
        description="The runtime that runs the model: ONNX Runtime.", examples=["onnxruntime_onnx"]
    )
    inputs: list[MetadataTensor] = Field(
        description=(
            "The two ways to send images; a request sends exactly one of them: image_bytes (BYTES [N], "
            "encoded JPEG, PNG, BMP, TIFF or DICOM files, decoded and preprocessed by the service) or the "
            "ONNX graph's input (FP32 [N, height, width, 3], RGB pixels in [0, 255] already preprocessed)."
        )
    )
    outputs: list[MetadataTensor] = Field(
        description=(
            "probabilities (FP32 [N, C], calibrated, in the order of the parameter 'classes'); with an "
            "input-validity check also ood_score (FP32 [N]) and accepted (BOOL [N]: ood_score <= "
            "ood_threshold)."
        )
    )
    parameters: dict[str, ParameterValue] = Field(
        description=(
            "classes (comma-separated, in output order), task, max_batch_size, the input-validity check "
            "(input_validity_checked, input_validity_enforced, ood_threshold when checked) and the "
            "preprocessing recipe."
        ),
        examples=[
            {
                "classes": "glioma,meningioma,no_tumor,pituitary",
                "task": "4class",
                "max_batch_size": 64,
                "input_validity_checked": True,
                "input_validity_enforced": True,
                "ood_threshold": 1.00005,
                "preprocessing": "crop",
            }
        ],
    )


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="image_bytes (BYTES) or the model's FP32 input.", examples=["image_bytes"])
    shape: list[int] = Field(
        description="[N] for image_bytes, [N, height, width, 3] for FP32.", examples=[[1]]
    )
    datatype: str = Field(description="BYTES or FP32.", examples=["BYTES"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data_size: the tensor's bytes follow the JSON header (binary_tensor_data).",
        examples=[{"binary_data_size": 20480}],
    )
    data: list[Any] | None = Field(
        default=None,
        description=(
            "The elements in row-major order (flat or nested): base64 strings of the encoded files for "
            "BYTES, numbers for FP32. Absent when the tensor is sent as binary data."
        ),
        examples=[["/9j/4AAQSkZJRgABAQAAAQABAAD..."]],
    )


class RequestOutput(BaseModel):
    """One output asked for by an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="probabilities, ood_score or accepted.", examples=["probabilities"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data: true to receive this output as raw bytes after the JSON header.",
        examples=[{"binary_data": False}],
    )


class InferenceRequest(BaseModel):
    """The JSON header of an inference request (``POST /v2/models/{name}/infer``)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="Echoed in the response.", examples=["6f1c2b0e4a8d4f7e"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data_output: true for every output as raw bytes, unless the output says not.",
        examples=[{"binary_data_output": False}],
    )
    inputs: list[RequestInput] = Field(description="Exactly one input: image_bytes or the FP32 input.")
    outputs: list[RequestOutput] | None = Field(
        default=None, description="The outputs wanted; absent: every output of the model."
    )


class ResponseOutput(BaseModel):
    """One output tensor of an inference response."""

    name: str = Field(description="probabilities, ood_score or accepted.", examples=["probabilities"])
    shape: list[int] = Field(description="Shape of the tensor: [N, C] or [N].", examples=[[1, 4]])
    datatype: str = Field(description="FP32 or BOOL.", examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data_size when the tensor follows the JSON header as raw little-endian bytes.",
        examples=[{"binary_data_size": 16}],
    )
    data: list[Any] | None = Field(
        default=None,
        description=(
            "The elements, flat in row-major order (null for a score that is not a number); absent when "
            "the tensor is sent as binary data."
        ),
        examples=[[0.93, 0.04, 0.01, 0.02]],
    )


class InferenceResponse(BaseModel):
    """The JSON (header) of an inference response; binary outputs follow it in the body."""

    model_name: str = Field(description="The model that answered.", examples=["sartaj-4class"])
    model_version: str = Field(description="Its version.", examples=["1"])
    id: str | None = Field(default=None, description="The request's id, when it sent one.", examples=["42"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="input_validity_enforced, and ood_threshold when the model has an input-validity check.",
        examples=[{"input_validity_enforced": True, "ood_threshold": 1.00005}],
    )
    outputs: list[ResponseOutput] = Field(description="The outputs asked for (all by default).")
