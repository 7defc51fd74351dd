"""Request and response models of the REST API (the status response is maie.contract's ResultDocument)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maie.catalog import ModelInfo
from maie.contract import Feature, ResultDocument, TaskStatus

# A model named by a client: a name, never a path (paths on the server are not the client's business).
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$"


class ErrorResponse(BaseModel):
    """The one error shape."""

    detail: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable machine-readable code, e.g. file_too_large.")


class ProcessResponse(BaseModel):
    task_id: str = Field(description="UUID of the queued task; poll GET /v1/status/{task_id}.")
    status: TaskStatus = TaskStatus.PENDING
    status_url: str


class StatusResponse(ResultDocument):
    """The result document (as result.json), with the live stage and progress while running."""


class CancelResponse(BaseModel):
    task_id: str
    cancelled: bool = Field(description="True when a queued or running task was stopped.")
    previous_status: TaskStatus
    files_removed: int


class ModelsResponse(BaseModel):
    asr: list[ModelInfo]
    llm: list[ModelInfo]


class TemplateSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    template_id: str
    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")


class TemplatesResponse(BaseModel):
    templates: list[TemplateSummary]


class CheckResult(BaseModel):
    ok: bool
    detail: str


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    mode: str
    time: datetime
    checks: dict[str, CheckResult]
    queue_depth: int = Field(description="Unfinished tasks (queued + running).")
    running: int


# --- the multipart form of POST /v1/process, documented for OpenAPI ----------------------------
# The handler parses the body itself (streaming), so FastAPI cannot derive this from parameters.
FORM_FIELDS: dict[str, dict[str, Any]] = {
    "features": {
        "type": "array",
        "items": {"type": "string", "enum": [f.value for f in Feature]},
        "description": "Repeat the field for several. Default: clean_transcript, summary.",
    },
    "template_id": {
        "type": "string",
        "pattern": r"^[A-Za-z0-9_.-]{1,64}$",
        "description": "Summary template (GET /v1/templates); required with the summary feature.",
    },
    "asr_backend": {"type": "string", "enum": ["whisper", "chunkformer"]},
    "asr_model": {"type": "string", "pattern": SAFE_NAME, "description": "e.g. tiny.en, base."},
    "language": {"type": "string", "maxLength": 16, "description": "Language code, or auto."},
    "beam_size": {"type": "integer", "minimum": 1, "maximum": 20},
    "vad_filter": {"type": "boolean"},
    "word_timestamps": {"type": "boolean"},
    "batch_size": {"type": "integer", "minimum": 0, "maximum": 64},
    "llm_backend": {"type": "string", "enum": ["llama_cpp", "openai", "vllm"]},
    "llm_model": {"type": "string", "pattern": SAFE_NAME},
    "enhancement": {"type": "string", "enum": ["auto", "always", "never"]},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0, "maximum": 1000},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
    "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 3},
    "callback_url": {
        "type": "string",
        "format": "uri",
        "maxLength": 2048,
        "description": "Webhook: POSTed the status document, signed (MAIE-Signature), when the task ends.",
    },
}

PROCESS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "Audio: wav, flac, mp3, ogg, opus, m4a, webm, aac.",
                        },
                        **FORM_FIELDS,
                    },
                },
                "encoding": {"features": {"style": "form", "explode": True}},
            }
        },
    }
}
