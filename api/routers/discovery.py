"""GET /v1/models and GET /v1/templates: what this deployment can do."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from maie.api.auth import require_api_key
from maie.api.dependencies import CatalogDep, SettingsDep
from maie.api.routers.openai import known_models
from maie.api.schemas import (
    ErrorResponse,
    ModelsResponse,
    OpenAIModel,
    OpenAIModelList,
    TemplatesResponse,
    TemplateSummary,
)
from maie.catalog import list_models

router = APIRouter(
    prefix="/v1",
    tags=["discovery"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."}},
)


@router.get(
    "/models",
    response_model=ModelsResponse | OpenAIModelList,
    summary="ASR and LLM backends (or OpenAI's model list)",
)
async def models(
    request: Request,
    settings: SettingsDep,
    format: Literal["maie", "openai"] | None = Query(
        None,
        description="maie = MAIE's listing; openai = OpenAI's `{object: list, data: [...]}` of the ASR "
        "model ids POST /v1/audio/transcriptions takes. Unset: openai for clients that authenticate with "
        "`Authorization: Bearer` (as OpenAI clients do), maie for X-API-Key.",
    ),
) -> ModelsResponse | OpenAIModelList:
    """Each backend with its default model, capabilities and whether it can run here (and why not)."""
    items = await asyncio.to_thread(list_models, settings)
    chosen = format or ("openai" if getattr(request.state, "auth_scheme", None) == "bearer" else "maie")
    if chosen == "openai":
        ids = await asyncio.to_thread(known_models, settings)
        created = int(request.app.state.started_at)
        return OpenAIModelList(data=[OpenAIModel(id=i, created=created) for i in sorted(ids)])
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
