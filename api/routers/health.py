"""Health (public), three questions with three answers:

- `GET /health/live` — liveness: this process serves requests. No dependency is checked: an S3 or
  Kubernetes API outage must not make the kubelet restart every replica (that cures nothing).
- `GET /health/ready` — readiness: this replica can take work: storage is writable (in Kubernetes
  mode: the bucket exists) and the task store (SQLite, or Transcriptions through the Kubernetes API)
  answers. 503 otherwise, so the Service stops sending it requests.
- `GET /health` — everything, for people and monitors: readiness plus whether work is being
  processed (the embedded executor's heartbeat, or an operator giving new Transcriptions a status).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from maie.api.backends import BackendHealth
from maie.api.dependencies import BackendDep, SettingsDep
from maie.api.schemas import HealthResponse
from maie.contract import utcnow
from maie.settings import Settings

router = APIRouter(tags=["health"])


class LivenessResponse(BaseModel):
    status: Literal["ok"]
    version: str
    time: datetime


# The checks that decide readiness: can this replica store uploads and read and create tasks.
# "executor" / "operator" (is work being processed) are left to /health: a stopped operator must
# not take the API out of its Service (submissions then wait in Queued, as they should).
READINESS_CHECKS = frozenset({"storage", "task_store", "kubernetes"})

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": HealthResponse, "description": "A check failed (see checks)."}
}


def _answer(settings: Settings, result: BackendHealth, names: frozenset[str] | None) -> JSONResponse:
    checks = {k: v for k, v in result.checks.items() if names is None or k in names}
    ok = all(c.ok for c in checks.values())
    body = HealthResponse(
        status="ok" if ok else "unavailable",
        version=settings.pipeline_version,
        mode=settings.mode,
        time=utcnow(),
        checks=checks,
        queue_depth=result.queue_depth,
        running=result.running,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/health", response_model=HealthResponse, responses=_UNAVAILABLE, summary="Every check")
async def health(settings: SettingsDep, backend: BackendDep) -> JSONResponse:
    """Writes a probe to storage, queries the task store and checks that work is being processed."""
    return _answer(settings, await backend.health(), None)


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    responses=_UNAVAILABLE,
    summary="Readiness: storage and the task store answer",
)
async def ready(settings: SettingsDep, backend: BackendDep) -> JSONResponse:
    """200 when storage is writable and the task store (or the Kubernetes API) answers."""
    return _answer(settings, await backend.health(), READINESS_CHECKS)


@router.get("/health/live", response_model=LivenessResponse, summary="Liveness: the process answers")
async def live(settings: SettingsDep) -> LivenessResponse:
    """Always 200 while the server's event loop runs; checks no dependency."""
    return LivenessResponse(status="ok", version=settings.pipeline_version, time=utcnow())
