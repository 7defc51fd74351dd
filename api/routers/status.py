"""GET /v1/status/{task_id} (the result document, live while running), the task's files, and
DELETE /v1/tasks/{task_id}."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from maie.api.auth import require_api_key
from maie.api.dependencies import BackendDep
from maie.api.errors import ApiError
from maie.api.schemas import CancelResponse, ErrorResponse, StatusResponse
from maie.contract import TaskStatus

router = APIRouter(prefix="/v1", tags=["tasks"], dependencies=[Depends(require_api_key)])

TaskId = PathParam(description="The task_id returned by POST /v1/process.")
FileName = PathParam(
    description="result.json or an export name (see `exports` in the status).", max_length=64
)
CONTENT_TYPES = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."},
    404: {"model": ErrorResponse, "description": "No such task (never existed, deleted or expired)."},
}


def _not_found(task_id: str) -> ApiError:
    return ApiError(404, "task_not_found", f"no task '{task_id[:64]}' (unknown, cancelled or expired)")


def _canonical(task_id: str) -> str | None:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        return None


@router.get("/status/{task_id}", response_model=StatusResponse, responses=_ERRORS, summary="Task status")
async def get_status(backend: BackendDep, task_id: str = TaskId) -> Response:
    """The result document: stage and progress while running; versions, metrics, results when done."""
    canonical = _canonical(task_id)
    doc = await backend.get(canonical) if canonical else None
    if doc is None:
        raise _not_found(task_id)
    # Exports are served by this API (from the local store or streamed from S3): their URLs, not keys.
    files = [*doc.exports, "result.json"] if doc.status.finished else list(doc.exports)
    doc.exports = {name: file_url(doc.task_id, name) for name in files}
    # Already a validated ResultDocument: serialise it once (a returned model would be dumped,
    # validated against StatusResponse and dumped again, which cost more than reading the store).
    return Response(doc.model_dump_json(), media_type="application/json")


def file_url(task_id: str, name: str) -> str:
    return f"/v1/tasks/{task_id}/files/{name}"


@router.get(
    "/tasks/{task_id}/files/{name}",
    responses={**_ERRORS, 200: {"content": {t: {} for t in set(CONTENT_TYPES.values())}}},
    response_class=StreamingResponse,
    summary="Download result.json or an export",
)
async def get_file(backend: BackendDep, task_id: str = TaskId, name: str = FileName) -> StreamingResponse:
    """result.json or one of the document's `exports` (transcript.txt, .srt, .vtt), as a download."""
    canonical = _canonical(task_id)
    doc = await backend.get(canonical) if canonical else None
    if doc is None:
        raise _not_found(task_id)
    allowed = set(doc.exports) | ({"result.json"} if doc.status.finished else set())
    found = await backend.file(doc.task_id, name) if name in allowed else None
    if found is None:
        known = ", ".join(sorted(allowed)) or "none yet"
        raise ApiError(
            404, "file_not_found", f"task {doc.task_id} has no file '{name[:64]}' (files: {known})"
        )
    suffix = name.rsplit(".", 1)[-1]
    return StreamingResponse(
        found.chunks,
        media_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        headers={"Content-Length": str(found.size), "Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.delete("/tasks/{task_id}", response_model=CancelResponse, responses=_ERRORS, summary="Cancel a task")
async def cancel_task(backend: BackendDep, task_id: str = TaskId) -> CancelResponse:
    """Stop a queued or running task and remove its files; on a finished task, delete its results."""
    canonical = _canonical(task_id)
    outcome = await backend.cancel(canonical) if canonical else None
    if outcome is None:
        raise _not_found(task_id)
    return CancelResponse(
        task_id=outcome.task_id,
        cancelled=outcome.was_unfinished,
        previous_status=TaskStatus(outcome.previous_status),
        files_removed=outcome.files_removed,
    )
