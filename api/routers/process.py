"""POST /v1/process: stream the upload to disk, check it, queue the task."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from maie.api.auth import require_api_key
from maie.api.backends import Submission
from maie.api.dependencies import BackendDep, CatalogDep, SettingsDep
from maie.api.errors import ApiError
from maie.api.probe import AudioTooShortError, check_audio, sniff_audio
from maie.api.schemas import FORM_FIELDS, PROCESS_OPENAPI, SAFE_NAME, ErrorResponse, ProcessResponse
from maie.api.uploads import receive_form
from maie.catalog import unavailable_backends
from maie.contract import AudioInfo, Feature, TaskRequest, utcnow
from maie.errors import AudioError
from maie.logs import request_id_var
from maie.webhooks import WebhookUrlError, check_url

log = logging.getLogger("maie.api.process")
router = APIRouter(prefix="/v1", tags=["processing"], dependencies=[Depends(require_api_key)])

_ASR_FIELDS = {
    "asr_backend": "backend",
    "asr_model": "model",
    "language": "language",
    "beam_size": "beam_size",
    "vad_filter": "vad_filter",
    "word_timestamps": "word_timestamps",
    "batch_size": "batch_size",
}
_LLM_FIELDS = {
    "llm_backend": "backend",
    "llm_model": "model",
    "enhancement": "enhancement",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "repetition_penalty": "repetition_penalty",
}
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
_SAFE_NAME_RE = re.compile(SAFE_NAME)


def _bad(detail: str, code: str = "invalid_parameter") -> ApiError:
    return ApiError(422, code, detail)


def _scalar(name: str, values: list[str]) -> Any:
    """Convert one form value by the field's documented type (422 with the field name otherwise)."""
    if len(values) != 1:
        raise _bad(f"{name}: send this field once")
    raw = values[0].strip()
    kind = FORM_FIELDS[name]["type"]
    if kind == "boolean":
        if raw.lower() not in _BOOLS:
            raise _bad(f"{name}: expected true or false, got '{raw[:40]}'")
        return _BOOLS[raw.lower()]
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise _bad(f"{name}: expected an integer, got '{raw[:40]}'") from None
    if kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise _bad(f"{name}: expected a number, got '{raw[:40]}'") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(f"{name}: expected a finite number")
        return value
    if name in ("asr_model", "llm_model") and not _SAFE_NAME_RE.match(raw):
        raise _bad(f"{name}: give a model name (letters, digits, . _ - : +), not a path")
    return raw


def build_request(fields: dict[str, list[str]]) -> TaskRequest:
    """The TaskRequest from form fields; every problem is a 422 that names the field."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        allowed = ", ".join(["file", *FORM_FIELDS])
        raise _bad(f"unknown form field(s): {', '.join(unknown)} (allowed: {allowed})", "unknown_field")
    data: dict[str, Any] = {"asr": {}, "llm": {}}
    if "features" in fields:
        names = [v.strip() for value in fields["features"] for v in value.split(",") if v.strip()]
        known = {f.value for f in Feature}
        wrong = [n for n in names if n not in known]
        if wrong or not names:
            first = (wrong or [""])[0][:40]
            raise _bad(f"features: unknown feature '{first}' (choose from {', '.join(sorted(known))})")
        data["features"] = names
    for top in ("template_id", "callback_url"):
        if top in fields:
            data[top] = _scalar(top, fields[top])
    for form_name, option in _ASR_FIELDS.items():
        if form_name in fields:
            data["asr"][option] = _scalar(form_name, fields[form_name])
    for form_name, option in _LLM_FIELDS.items():
        if form_name in fields:
            data["llm"][option] = _scalar(form_name, fields[form_name])
    try:
        return TaskRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
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
    if await backend.count_unfinished() >= settings.max_queue_depth:
        raise ApiError(
            429,
            "queue_full",
            f"{settings.max_queue_depth} tasks are already waiting or running (MAX_QUEUE_DEPTH); retry later",
            headers={"Retry-After": "30"},
        )
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
        try:
            info: AudioInfo | None = None
            if settings.mode == "embedded":
                decoded = await asyncio.to_thread(check_audio, upload.path)
                info, described = decoded, f"{decoded.duration:.1f} s {decoded.codec}"
            else:  # the runner decodes it, in a pod without credentials (api/probe.py)
                described = await asyncio.to_thread(sniff_audio, upload.path)
        except AudioTooShortError as exc:
            raise ApiError(422, "audio_too_short", exc.message) from None
        except AudioError as exc:
            raise ApiError(
                415, "undecodable_audio", exc.message.replace(upload.path.name, "the upload")
            ) from None
        if await backend.count_unfinished() >= settings.max_queue_depth:
            raise ApiError(
                429, "queue_full", "the queue filled up while the file was uploading; retry later",
                headers={"Retry-After": "30"},
            )  # fmt: skip
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
    finally:
        if upload is not None and not submitted:
            upload.path.unlink(missing_ok=True)
    log.info(
        "task %s queued: %s, %d bytes, %s, features=%s",
        task_id, upload.filename, upload.size, described,
        ",".join(f.value for f in task_request.features),
    )  # fmt: skip
    return ProcessResponse(task_id=task_id, status_url=f"/v1/status/{task_id}")
