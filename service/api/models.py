"""``GET /models``, ``GET /models/{name}`` and its documents: what the service serves, with each model's
manifest, report and figures (the model card of the web page is drawn from them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse

from service.api.deps import RepositoryDep, require_api_key
from service.api.responses import error_responses
from service.errors import RouteNotFoundError, client_text
from service.model_repository import ModelRepository, ServedModel
from service.schemas import InputSpec, ModelDetail, ModelList, ModelSummary

router = APIRouter(prefix="/models", tags=["models"], dependencies=[Depends(require_api_key)])


ModelName = Annotated[
    str,
    Path(
        description="Name of the model, as listed by GET /models.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        examples=["mobilenetv2-4class"],
    ),
]


@router.get(
    "",
    summary="List the models",
    operation_id="listModels",
    response_model=ModelList,
    responses=error_responses(401, 503),
)
async def list_models(repository: RepositoryDep) -> ModelList:
    """Every model of the repository, with its classes, input size and readiness."""
    return ModelList(
        default_model=repository.default_name,
        models=[_summary(model, repository) for model in repository.models.values()],
    )


@router.get(
    "/{name}",
    summary="Describe one model",
    operation_id="getModel",
    response_model=ModelDetail,
    responses=error_responses(401, 404, 422, 503),
)
async def get_model(name: ModelName, repository: RepositoryDep) -> ModelDetail:
    """One model with its whole manifest: evaluation figures and their split, parity check, versions."""
    model = repository.get(name)
    return ModelDetail(**_summary(model, repository).model_dump(), manifest=model.manifest)


DOCUMENT_TYPES = {".png": "image/png", ".md": "text/markdown; charset=utf-8"}
DocumentName = Annotated[
    str,
    Path(
        description="A file the manifest lists under 'documents' (report.md, confusion_matrix.png, ...).",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        examples=["confusion_matrix.png"],
    ),
]


@router.get(
    "/{name}/documents/{document}",
    summary="One document of a model: its report or a figure",
    operation_id="getModelDocument",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}, "text/markdown": {}}, "description": "The file."},
        **error_responses(401, 404, 422, 503),
    },
)
async def get_model_document(
    name: ModelName, document: DocumentName, repository: RepositoryDep
) -> FileResponse:
    """A figure (PNG) or report (Markdown) that the model's manifest lists under ``documents``."""
    model = repository.get(name)
    listed = [str(item) for item in model.manifest.get("documents", [])]
    suffix = document[document.rfind(".") :].lower() if "." in document else ""
    path = model.entry_dir / document
    if document not in listed or suffix not in DOCUMENT_TYPES or not path.is_file():
        raise RouteNotFoundError(
            f"Model {model.name} has no document {client_text(document)}; it has: {', '.join(listed)}."
        )
    return FileResponse(path, media_type=DOCUMENT_TYPES[suffix])


def _summary(model: ServedModel, repository: ModelRepository) -> ModelSummary:
    height, width, channels = model.input_shape
    return ModelSummary(
        name=model.name,
        version=model.version,
        task=model.task,
        classes=list(model.classes),
        input=InputSpec(height=height, width=width, channels=channels),
        preprocessing=model.recipe.name,
        backbone=str(model.manifest.get("backbone", "")),
        sha256=model.onnx_sha256,
        provider=model.provider,
        ready=model.ready,
        default=model.name == repository.default_name,
    )
