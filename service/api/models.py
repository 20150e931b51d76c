"""``GET /models`` and ``GET /models/{name}``: what the service serves, with each model's manifest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.api.deps import RepositoryDep, require_api_key
from service.api.responses import error_responses
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
