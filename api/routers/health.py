"""GET /health (public): storage, task store and executor really checked; 503 when one is down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from maie.api.dependencies import BackendDep, SettingsDep
from maie.api.schemas import HealthResponse
from maie.contract import utcnow

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A check failed (see checks)."}},
    summary="Liveness and readiness",
)
async def health(settings: SettingsDep, backend: BackendDep) -> JSONResponse:
    """Writes a probe to storage, queries the task store and reads the executor's heartbeat."""
    result = await backend.health()
    body = HealthResponse(
        status="ok" if result.ok else "unavailable",
        version=settings.pipeline_version,
        mode=settings.mode,
        time=utcnow(),
        checks=result.checks,
        queue_depth=result.queue_depth,
        running=result.running,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if result.ok else 503)
