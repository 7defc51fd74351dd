"""GET /v1/models and GET /v1/templates: what this deployment can do."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from maie.api.auth import require_api_key
from maie.api.dependencies import CatalogDep, SettingsDep
from maie.api.schemas import ErrorResponse, ModelsResponse, TemplatesResponse, TemplateSummary
from maie.catalog import list_models

router = APIRouter(
    prefix="/v1",
    tags=["discovery"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."}},
)


@router.get("/models", response_model=ModelsResponse, summary="ASR and LLM backends")
async def models(settings: SettingsDep) -> ModelsResponse:
    """Each backend with its default model, capabilities and whether it can run here (and why not)."""
    items = await asyncio.to_thread(list_models, settings)
    return ModelsResponse(
        asr=[m for m in items if m.kind == "asr"], llm=[m for m in items if m.kind == "llm"]
    )


@router.get(
    "/templates", response_model=TemplatesResponse, response_model_by_alias=True, summary="Summary templates"
)
async def templates(catalog: CatalogDep) -> TemplatesResponse:
    """Template ids for `template_id`, with name, description and the JSON Schema a summary follows."""
    items = await asyncio.to_thread(catalog.list)
    return TemplatesResponse(
        templates=[
            TemplateSummary(
                template_id=t.template_id, name=t.name, description=t.description, schema_=t.schema_
            )
            for t in items
        ]
    )
