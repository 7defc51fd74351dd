"""POST /v1/audio/transcriptions: OpenAI's transcription endpoint, answered by MAIE's own runner.

The request becomes an ordinary task (features = raw_transcript) submitted through the task backend,
so it runs on the same runner in both modes, counts against MAX_QUEUE_DEPTH and shows up in
GET /v1/status. The route waits for it (TRANSCRIPTIONS_TIMEOUT) and answers in OpenAI's shapes, so
OpenAI clients (`client.audio.transcriptions.create(...)`) work unchanged. Limits are tighter than
/v1/process (TRANSCRIPTIONS_MAX_FILE_SIZE_MB, TRANSCRIPTIONS_MAX_DURATION_SECONDS): a synchronous
answer is for short audio; long recordings belong on /v1/process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
import zlib
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from maie.api.auth import require_api_key
from maie.api.backends import Submission, TaskBackend
from maie.api.dependencies import BackendDep, SettingsDep
from maie.api.errors import ApiError
from maie.api.routers.process import checked_audio, count_accepted, ensure_queue_room, note_queued
from maie.api.schemas import ErrorResponse
from maie.api.uploads import receive_form
from maie.catalog import list_models
from maie.contract import SAFE_NAME, AsrOptions, Feature, ResultDocument, Segment, TaskRequest, utcnow
from maie.exports import to_srt, to_vtt
from maie.logs import request_id_var
from maie.settings import Settings

log = logging.getLogger("maie.api.openai")
router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require_api_key)])

# OpenAI's own model name: the deployment's default ASR model.
DEFAULT_MODEL = "whisper-1"
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
_FIELDS = {"model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
           "timestamp_granularities"}  # fmt: skip
# verbose_json names the language as OpenAI does (its English name); other codes are passed as they are.
LANGUAGE_NAMES = {
    "en": "english", "vi": "vietnamese", "zh": "chinese", "de": "german", "es": "spanish",
    "ru": "russian", "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese",
    "tr": "turkish", "pl": "polish", "it": "italian", "nl": "dutch", "th": "thai", "id": "indonesian",
}  # fmt: skip
_SAFE_NAME_RE = re.compile(SAFE_NAME)
# Failures of the service rather than of the request's audio or options.
_SERVER_FAILURES = {
    "timeout",
    "worker_crashed",
    "worker_start_failed",
    "max_attempts_exceeded",
    "internal_error",
}

TRANSCRIPTIONS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {
                            "type": "string",
                            "description": "whisper-1 (the deployment's default ASR model) or a model "
                            "id from GET /v1/models.",
                        },
                        "language": {"type": "string", "description": "ISO-639-1 code; unset = detect."},
                        "prompt": {
                            "type": "string",
                            "description": "Primes the decoder (Whisper's initial_prompt).",
                        },
                        "response_format": {"type": "string", "enum": list(_FORMATS), "default": "json"},
                        "temperature": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "Decoding temperature (unset = Whisper's fallback schedule).",
                        },
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["segment", "word"]},
                            "description": "verbose_json only; word = word timestamps.",
                        },
                    },
                },
                "encoding": {"timestamp_granularities[]": {"style": "form", "explode": True}},
            }
        },
    }
}


def _bad(detail: str, code: str = "invalid_parameter") -> ApiError:
    return ApiError(422, code, detail)


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) != 1:
        raise _bad(f"{name}: send this field once")
    return values[0].strip()


def known_models(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """OpenAI model id → (ASR backend, model name or None for its default), for backends that can run."""
    out: dict[str, tuple[str, str | None]] = {DEFAULT_MODEL: (settings.asr_backend, None)}
    for info in list_models(settings):
        if info.kind != "asr" or not info.available:
            continue
        out.setdefault(info.backend_id, (info.backend_id, None))
        for name in info.models:
            out.setdefault(name, (info.backend_id, name))
    return out


def _asr_options(settings: Settings, model: str, language: str | None, words: bool) -> AsrOptions:
    if not _SAFE_NAME_RE.match(model):
        raise _bad("model: give a model id (GET /v1/models), not a path", "model_not_found")
    choice = (settings.asr_backend, None) if model == DEFAULT_MODEL else known_models(settings).get(model)
    if choice is None:
        known = ", ".join(sorted(known_models(settings)))
        raise _bad(f"model: '{model}' is not an ASR model here (available: {known})", "model_not_found")
    backend, name = choice
    try:
        return AsrOptions.model_validate(
            {"backend": backend, "model": name, "language": language, "word_timestamps": words or None}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _bad(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def _parse(
    fields: dict[str, list[str]],
) -> tuple[str, str | None, ResponseFormat, bool, str | None, float | None]:
    """(model, language, response_format, word timestamps) from the form; 422 naming the field."""
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise _bad(
            f"unknown form field(s): {', '.join(unknown)} (allowed: file, {', '.join(sorted(_FIELDS))})",
            "unknown_field",
        )
    model = _one(fields, "model") or DEFAULT_MODEL
    language = _one(fields, "language") or None
    if language is not None and len(language) > 16:
        raise _bad("language: give an ISO-639-1 code such as en or vi")
    fmt = _one(fields, "response_format") or "json"
    if fmt not in _FORMATS:
        raise _bad(f"response_format: '{fmt[:40]}' is not one of {', '.join(_FORMATS)}")
    temperature = _one(fields, "temperature")
    value: float | None = None
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            raise _bad(f"temperature: expected a number, got '{temperature[:40]}'") from None
        if not 0.0 <= value <= 1.0:
            raise _bad("temperature: must be between 0 and 1")
    granularities = [
        g.strip()
        for name in ("timestamp_granularities[]", "timestamp_granularities")
        for value in fields.get(name, [])
        for g in value.split(",")
        if g.strip()
    ]
    wrong = [g for g in granularities if g not in ("segment", "word")]
    if wrong:
        raise _bad(f"timestamp_granularities: '{wrong[0][:40]}' is not segment or word")
    if granularities and fmt != "verbose_json":
        raise _bad("timestamp_granularities: only with response_format=verbose_json")
    prompt = _one(fields, "prompt")
    if prompt is not None and len(prompt) > 4096:
        raise _bad("prompt: at most 4096 characters")
    return model, language, fmt, "word" in granularities, prompt or None, value  # type: ignore[return-value]


async def _wait(
    request: Request, backend: TaskBackend, task_id: str, settings: Settings
) -> ResultDocument | None:
    """The finished document; None when the client went away. Cancels the task on timeout/hang-up."""
    deadline = time.monotonic() + settings.transcriptions_timeout
    finished = False
    try:
        while True:
            doc = await backend.get(task_id)
            if doc is None:
                raise ApiError(500, "task_lost", "the transcription task disappeared before it finished")
            if doc.status.finished:
                finished = True
                return doc
            if await request.is_disconnected():
                log.info("task %s: the client went away; cancelling it", task_id)
                return None
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    "transcription_timeout",
                    f"the transcription did not finish within {settings.transcriptions_timeout:.0f} s "
                    "(TRANSCRIPTIONS_TIMEOUT); it was cancelled — send long recordings to POST /v1/process",
                )
            await asyncio.sleep(settings.live_poll_interval)
    finally:
        if not finished:
            with contextlib.suppress(Exception):
                await backend.cancel(task_id)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def openai_segment(index: int, seg: Segment) -> dict[str, Any]:
    """One segment in OpenAI's verbose_json shape (Whisper's own figures where the backend kept them)."""
    return {
        "id": index,
        "seek": seg.seek if seg.seek is not None else round(seg.start * 100),
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "tokens": [],  # token ids are not kept in MAIE's results
        "temperature": seg.temperature if seg.temperature is not None else 0.0,
        "avg_logprob": seg.avg_logprob if seg.avg_logprob is not None else 0.0,
        "compression_ratio": seg.compression_ratio
        if seg.compression_ratio is not None
        else _compression_ratio(seg.text),
        "no_speech_prob": seg.no_speech_prob if seg.no_speech_prob is not None else 0.0,
    }


def render(doc: ResultDocument, fmt: str, words: bool) -> Response:
    """The finished task in the response_format OpenAI would answer with."""
    results = doc.results
    text = (results.raw_transcript if results else None) or ""
    segments = (results.segments if results else None) or []
    headers = {"X-MAIE-Task-ID": doc.task_id}
    if fmt == "text":
        return PlainTextResponse(text + "\n", headers=headers)
    if fmt == "srt":
        return PlainTextResponse(to_srt(segments), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(segments), media_type="text/vtt", headers=headers)
    if fmt == "json":
        return JSONResponse({"text": text}, headers=headers)
    language = (results.language if results else None) or ""
    duration = (doc.metrics.input_duration_seconds if doc.metrics else None) or (
        doc.audio.duration if doc.audio else 0.0
    )
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(language, language),
        "duration": duration,
        "text": text,
        "segments": [openai_segment(i, s) for i, s in enumerate(segments)],
    }
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end} for s in segments for w in s.words or []
        ]
    return JSONResponse(body, headers=headers)


@router.post(
    "/audio/transcriptions",
    summary="Transcribe (OpenAI-compatible, synchronous)",
    openapi_extra=TRANSCRIPTIONS_OPENAPI,
    responses={
        200: {
            "description": "json: {text}; verbose_json: {task, language, duration, text, segments, words}; "
            "text, srt, vtt: text/plain.",
            "content": {"text/plain": {}},
        },
        401: {"model": ErrorResponse, "description": "Missing or wrong key (X-API-Key or Bearer)."},
        413: {"model": ErrorResponse, "description": "Larger than TRANSCRIPTIONS_MAX_FILE_SIZE_MB."},
        415: {"model": ErrorResponse, "description": "Not an audio type/extension, or not decodable audio."},
        422: {
            "model": ErrorResponse,
            "description": "Bad field, unknown model, audio too short or too long, "
            "or the task failed on its input.",
        },
        429: {"model": ErrorResponse, "description": "MAX_QUEUE_DEPTH unfinished tasks; see Retry-After."},
        504: {"model": ErrorResponse, "description": "Not finished within TRANSCRIPTIONS_TIMEOUT."},
    },
)
async def create_transcription(request: Request, settings: SettingsDep, backend: BackendDep) -> Response:
    """Multipart `file` plus OpenAI's fields; answers when the transcript is ready."""
    await ensure_queue_room(backend, settings)
    limit = settings.transcriptions_max_file_size_mb
    form = await receive_form(request, backend.staging_dir, limit * 1024 * 1024, settings.upload_chunk_bytes)
    upload = form.upload
    submitted = False
    try:
        model, language, fmt, words, prompt, temperature = _parse(form.fields)
        if upload is None:
            raise _bad("file: the form has no 'file' part with the audio", "missing_file")
        options = await asyncio.to_thread(_asr_options, settings, model, language, words)
        options = options.model_copy(update={"initial_prompt": prompt, "temperature": temperature})
        task_request = TaskRequest(features=[Feature.RAW_TRANSCRIPT], asr=options)
        info = await checked_audio(upload, settings)
        # Kubernetes mode does not decode (info None): the runner does; the limit is not checked.
        if info is not None and info.duration > settings.transcriptions_max_duration_seconds:
            raise _bad(
                f"the audio is {info.duration:.0f} s long; this endpoint takes at most "
                f"{settings.transcriptions_max_duration_seconds:.0f} s "
                "(TRANSCRIPTIONS_MAX_DURATION_SECONDS): send longer recordings to POST /v1/process",
                "audio_too_long",
            )
        await ensure_queue_room(backend, settings, after_upload=True)
        task_id = str(uuid.uuid4())
        submission = Submission(
            task_id=task_id, request=task_request, upload=upload, audio=info, submitted_at=utcnow(),
            request_id=request_id_var.get(),
        )  # fmt: skip
        await backend.submit(submission)
        submitted = True
        note_queued(backend)
        count_accepted("/v1/audio/transcriptions", upload)
    finally:
        if upload is not None and not submitted:
            upload.path.unlink(missing_ok=True)
    seconds = f"{info.duration:.1f} s" if info else "decoded by the runner"
    log.info("task %s queued for a synchronous transcription (%s, %s)", task_id, model, seconds)
    doc = await _wait(request, backend, task_id, settings)
    if doc is None:
        return Response(status_code=499)  # nobody is listening any more
    if doc.status.value == "FAILED":
        code = doc.error_code or "transcription_failed"
        status = 500 if code in _SERVER_FAILURES else 422
        raise ApiError(status, code, doc.error or "the transcription failed")
    return render(doc, fmt, words)
