"""GET /v1/status/{task_id}/events: a task's progress as Server-Sent Events, then its result.

The stream reads the task through the backend (`get()`, every LIVE_POLL_INTERVAL seconds) and sends
an event only when something changed: `stage` when the status moves to a new stage, `progress` when
only the percentage moved (both `{task_id, status, step, progress}`), and `result` with the whole
result document once the task is COMPLETE or FAILED, after which the stream ends. A comment line
keeps idle connections open (SSE_KEEPALIVE_SECONDS).

Event ids are derived from the task's state, not from the connection: stage rank × 10000 + the
percentage in tenths (PENDING 0 … PROCESSING_LLM 3, finished 4), so they grow monotonically over a
task's life. A client that reconnects with `Last-Event-ID` gets only events with a larger id: nothing
is repeated, and a task that was requeued after a crash (its progress going back) stays quiet until it
passes the point the client has seen. Reconnecting after the `result` event answers 204, which tells
EventSource to stop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from maie.api.auth import require_api_key
from maie.api.backends import TaskBackend
from maie.api.dependencies import BackendDep, SettingsDep
from maie.api.errors import ApiError
from maie.api.routers.status import file_url
from maie.api.schemas import ErrorResponse
from maie.contract import ResultDocument, TaskStatus

router = APIRouter(prefix="/v1", tags=["tasks"], dependencies=[Depends(require_api_key)])

_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.PREPROCESSING: 1,
    TaskStatus.PROCESSING_ASR: 2,
    TaskStatus.PROCESSING_LLM: 3,
    TaskStatus.COMPLETE: 4,
    TaskStatus.FAILED: 4,
}
RECONNECT_MS = 2000


def event_id(doc: ResultDocument) -> int:
    """Monotonic over the task's life: stage rank, then percent in tenths."""
    percent = 100.0 if doc.status is TaskStatus.COMPLETE else (doc.progress or 0.0)
    return _RANK[doc.status] * 10000 + round(percent * 10)


def _frame(event: str, event_id: int, data: str) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def _progress_data(doc: ResultDocument) -> str:
    step = doc.step.value if doc.step is not None else None
    state = {"task_id": doc.task_id, "status": doc.status.value, "step": step, "progress": doc.progress}
    return json.dumps(state)


async def stream(
    request: Request,
    backend: TaskBackend,
    first: ResultDocument,
    after: int,
    interval: float,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """The event stream, starting from `first` (already read), sending only ids above `after`."""
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    doc: ResultDocument | None = first
    last_id = after
    last_status: TaskStatus | None = None
    last_sent = time.monotonic()
    while True:
        if doc is None:
            body = {"detail": "the task was deleted or expired", "code": "task_not_found"}
            yield f"event: error\ndata: {json.dumps(body)}\n\n".encode()
            return
        current = event_id(doc)
        if doc.status.finished:
            if current > last_id:
                # As GET /v1/status shows it: exports (and result.json) as the API's download URLs.
                files = [*doc.exports, "result.json"]
                doc.exports = {name: file_url(doc.task_id, name) for name in files}
                yield _frame("result", current, doc.model_dump_json())
            return
        if current > last_id:
            kind = "stage" if doc.status != last_status else "progress"
            yield _frame(kind, current, _progress_data(doc))
            last_id, last_status, last_sent = current, doc.status, time.monotonic()
        elif time.monotonic() - last_sent >= keepalive:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(interval)
        if await request.is_disconnected():
            return
        doc = await backend.get(doc.task_id)


@router.get(
    "/status/{task_id}/events",
    summary="Live progress (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: `stage` and `progress` events ({task_id, status, progress}),"
            " then `result` (the result document) and the end of the stream.",
            "content": {"text/event-stream": {}},
        },
        204: {"description": "Last-Event-ID already covers the final event: nothing more will come."},
        401: {"model": ErrorResponse, "description": "Missing or wrong key."},
        404: {"model": ErrorResponse, "description": "No such task."},
    },
)
async def task_events(
    request: Request,
    backend: BackendDep,
    settings: SettingsDep,
    task_id: str = PathParam(description="The task_id returned by POST /v1/process."),
    last_event_id: str | None = Header(
        None, alias="Last-Event-ID", description="Resume after this event id (EventSource sends it)."
    ),
) -> Response:
    """Stage and percent as they change, then the final document."""
    try:
        canonical = str(uuid.UUID(task_id))
    except ValueError:
        canonical = None
    doc = await backend.get(canonical) if canonical else None
    if doc is None:
        raise ApiError(404, "task_not_found", f"no task '{task_id[:64]}' (unknown, cancelled or expired)")
    after = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else -1
    if doc.status.finished and event_id(doc) <= after:
        return Response(status_code=204)
    return StreamingResponse(
        stream(request, backend, doc, after, settings.live_poll_interval, settings.sse_keepalive_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
