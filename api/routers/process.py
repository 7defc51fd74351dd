"""POST /v1/process: stream the upload to disk, check it, queue the task."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from maie import metrics
from maie.api.auth import require_api_key
from maie.api.backends import Submission, TaskBackend
from maie.api.dependencies import BackendDep, CatalogDep, SettingsDep
from maie.api.errors import ApiError
from maie.api.probe import AudioTooShortError, check_audio, sniff_audio
from maie.api.schemas import PROCESS_OPENAPI, ErrorResponse, ProcessResponse
from maie.api.uploads import StagedUpload, receive_form
from maie.catalog import unavailable_backends
from maie.contract import AudioInfo, TaskRequest, utcnow
from maie.errors import AudioError
from maie.logs import request_id_var
from maie.options import Option, nest, public_name, request_options
from maie.settings import Settings
from maie.webhooks import WebhookUrlError, check_url

log = logging.getLogger("maie.api.process")
router = APIRouter(prefix="/v1", tags=["processing"], dependencies=[Depends(require_api_key)])

_BOOLS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def _bad(detail: str, code: str = "invalid_parameter") -> ApiError:
    return ApiError(422, code, detail)


# id(backend) → (monotonic time, unfinished tasks) of the last count: lets the check before an upload
# skip the store when there was clearly room a moment ago.
_QUEUE_SEEN: dict[int, tuple[float, int]] = {}
QUEUE_SEEN_MAX_AGE = 0.25


async def ensure_queue_room(backend: TaskBackend, settings: Settings, *, after_upload: bool = False) -> None:
    """429 when MAX_QUEUE_DEPTH tasks are unfinished.

    Checked before the body is read (so a full queue refuses at once) and again after the upload,
    always from the store: that second count decides. The first may pass on a count taken within
    the last 0.25 s that left room (it only spares reading a body that would be refused); a count
    that says the queue is full is always taken afresh, so nobody is refused on an old figure.
    """
    now = time.monotonic()
    seen = _QUEUE_SEEN.get(id(backend))
    if (
        not after_upload
        and seen
        and now - seen[0] < QUEUE_SEEN_MAX_AGE
        and seen[1] < settings.max_queue_depth
    ):
        return
    count = await backend.count_unfinished()
    _QUEUE_SEEN[id(backend)] = (now, count)
    if count < settings.max_queue_depth:
        return
    detail = (
        "the queue filled up while the file was uploading; retry later"
        if after_upload
        else f"{settings.max_queue_depth} tasks are already waiting or running (MAX_QUEUE_DEPTH); retry later"
    )
    raise ApiError(429, "queue_full", detail, headers={"Retry-After": "30"})


def note_queued(backend: TaskBackend) -> None:
    """One more unfinished task than the last count said."""
    seen = _QUEUE_SEEN.get(id(backend))
    if seen:
        _QUEUE_SEEN[id(backend)] = (seen[0], seen[1] + 1)


async def checked_audio(upload: StagedUpload, settings: Settings) -> AudioInfo | None:
    """Embedded mode: the upload's AudioInfo once it is proven decodable audio of at least a second
    (415/422 otherwise). Kubernetes mode: None once its first bytes are an audio container's (415
    otherwise): the runner decodes it, in a pod without credentials (api/probe.py)."""
    try:
        if settings.mode == "embedded":
            return await asyncio.to_thread(check_audio, upload.path)
        await asyncio.to_thread(sniff_audio, upload.path)
        return None
    except AudioTooShortError as exc:
        raise ApiError(422, "audio_too_short", exc.message) from None
    except AudioError as exc:
        detail = exc.message.replace(upload.path.name, "the upload")
        raise ApiError(415, "undecodable_audio", detail) from None


def count_accepted(route: str, upload: StagedUpload) -> None:
    metrics.TASKS_SUBMITTED.labels(route=route).inc()
    metrics.UPLOAD_BYTES.inc(upload.size)
    metrics.UPLOAD_SIZE.observe(upload.size)


def _scalar(option: Option, values: list[str]) -> Any:
    """Convert one form value by the option's type (422 with the field name otherwise)."""
    name = option.name
    if len(values) != 1:
        raise _bad(f"{name}: send this field once")
    raw = values[0].strip()
    if option.kind == "boolean":
        if raw.lower() not in _BOOLS:
            raise _bad(f"{name}: expected true or false, got '{raw[:40]}'")
        return _BOOLS[raw.lower()]
    if option.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise _bad(f"{name}: expected an integer, got '{raw[:40]}'") from None
    if option.kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise _bad(f"{name}: expected a number, got '{raw[:40]}'") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(f"{name}: expected a finite number")
        return value
    if option.form_pattern and not re.match(option.form_pattern, raw):
        raise _bad(f"{name}: give a model name (letters, digits, . _ - : +), not a path")
    return raw


def _listed(option: Option, values: list[str]) -> list[str]:
    """An array field: repeated, or comma-separated, each item one of its choices."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    known = option.choices or []
    wrong = [n for n in names if known and n not in known]
    if wrong or not names:
        first = (wrong or [""])[0][:40]
        choose = ", ".join(sorted(known))
        raise _bad(f"{option.name}: unknown {option.name.rstrip('s')} '{first}' (choose from {choose})")
    return names


def build_request(fields: dict[str, list[str]], model: type[TaskRequest] = TaskRequest) -> TaskRequest:
    """The TaskRequest from form fields; every problem is a 422 that names the field."""
    options = {o.name: o for o in request_options(model) if o.form}
    unknown = sorted(set(fields) - set(options))
    if unknown:
        allowed = ", ".join(["file", *options])
        raise _bad(f"unknown form field(s): {', '.join(unknown)} (allowed: {allowed})", "unknown_field")
    values = {
        name: (_listed if option.kind == "array" else _scalar)(option, fields[name])
        for name, option in options.items()
        if name in fields
    }
    try:
        return model.model_validate(nest(values, model))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = public_name(err["loc"], model) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        code = "template_required" if "template_id is required" in message else "invalid_parameter"
        raise _bad(f"{loc + ': ' if loc else ''}{message}", code) from None


@router.post(
    "/process",
    status_code=202,
    response_model=ProcessResponse,
    summary="Upload a recording and queue it",
    openapi_extra=PROCESS_OPENAPI,
    responses={
        400: {"model": ErrorResponse, "description": "Bad filename (path tricks) or malformed multipart."},
        401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."},
        413: {
            "model": ErrorResponse,
            "description": "Larger than MAX_FILE_SIZE_MB (checked while streaming).",
        },
        415: {"model": ErrorResponse, "description": "Not an audio type/extension, or not decodable audio."},
        422: {"model": ErrorResponse, "description": "Bad parameters, unknown template, audio under 1 s."},
        429: {"model": ErrorResponse, "description": "MAX_QUEUE_DEPTH unfinished tasks; see Retry-After."},
    },
)
async def process(
    request: Request, settings: SettingsDep, backend: BackendDep, catalog: CatalogDep
) -> ProcessResponse:
    """Multipart upload: `file` plus options. Returns at once; poll GET /v1/status/{task_id}."""
    await ensure_queue_room(backend, settings)
    form = await receive_form(
        request, backend.staging_dir, settings.max_file_size_mb * 1024 * 1024, settings.upload_chunk_bytes
    )
    upload = form.upload
    submitted = False
    try:
        task_request = build_request(form.fields)
        if upload is None:
            raise _bad("file: the form has no 'file' part with the audio", "missing_file")
        if task_request.template_id is not None and not catalog.exists(task_request.template_id):
            known = ", ".join(catalog.ids()) or "none"
            raise _bad(
                f"template_id: template '{task_request.template_id}' does not exist (available: {known})",
                "template_not_found",
            )
        if task_request.callback_url:
            try:
                await asyncio.to_thread(check_url, task_request.callback_url, settings)
            except WebhookUrlError as exc:
                raise _bad(f"callback_url: {exc.message}", exc.code) from None
        if settings.mode == "embedded":  # in a cluster the runner image, not the API's, decides
            problem = await asyncio.to_thread(
                unavailable_backends, task_request.asr.backend, task_request.llm.backend, settings
            )
            if problem:
                raise _bad(problem, "backend_unavailable")
        info = await checked_audio(upload, settings)
        await ensure_queue_room(backend, settings, after_upload=True)
        task_id = str(uuid.uuid4())
        await backend.submit(
            Submission(
                task_id=task_id,
                request=task_request,
                upload=upload,
                audio=info,
                submitted_at=utcnow(),
                request_id=request_id_var.get(),
            )
        )
        submitted = True
        note_queued(backend)
        count_accepted("/v1/process", upload)
    finally:
        if upload is not None and not submitted:
            upload.path.unlink(missing_ok=True)
    log.info(
        "task %s queued: %s, %d bytes, %s, features=%s",
        task_id, upload.filename, upload.size,
        f"{info.duration:.1f} s {info.codec}" if info else "decoded by the runner",
        ",".join(f.value for f in task_request.features),
    )  # fmt: skip
    return ProcessResponse(task_id=task_id, status_url=f"/v1/status/{task_id}")
