"""GET /metrics: Prometheus text format (public like /health unless METRICS_REQUIRE_KEY=true).

Public by default because Prometheus scrapes without credentials unless told otherwise and the
figures are counts and timings only (routes are path templates, never task ids or file names).
Queue depth, running tasks and the health checks are read from the task backend at scrape time.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials

from maie import metrics
from maie.api.auth import api_key_header, bearer_scheme, require_api_key
from maie.api.dependencies import BackendDep

router = APIRouter(tags=["metrics"])


async def metrics_auth(
    request: Request,
    api_key: str | None = Security(api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> None:
    """The API key, only when METRICS_REQUIRE_KEY is set."""
    if request.app.state.settings.metrics_require_key:
        await require_api_key(request, api_key, bearer)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(metrics_auth)],
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE_LATEST: {}}, "description": "Text exposition."}},
)
async def get_metrics(backend: BackendDep) -> Response:
    """HTTP requests and latency by route, uploads, submissions, queue depth, tasks by final status,
    stage seconds."""
    health = await backend.health()
    metrics.QUEUE_DEPTH.set(health.queue_depth)
    metrics.TASKS_RUNNING.set(health.running)
    for name, check in health.checks.items():
        metrics.HEALTH_CHECK.labels(check=name).set(1 if check.ok else 0)
    body = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
