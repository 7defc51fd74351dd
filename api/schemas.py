"""Request and response models of the REST API (the status response is maie.contract's ResultDocument)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maie.catalog import ModelInfo
from maie.contract import ResultDocument, TaskStatus
from maie.options import form_fields


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


class OpenAIModel(BaseModel):
    """One entry of OpenAI's model list: an id POST /v1/audio/transcriptions takes as `model`."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time this API process started.")
    owned_by: str = "maie"


class OpenAIModelList(BaseModel):
    """GET /v1/models in OpenAI's shape (for Bearer clients, or ?format=openai)."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


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
# The handler parses the body itself (streaming), so FastAPI cannot derive this from parameters;
# the fields are generated from TaskRequest (maie.options), the one declaration of the options.
FORM_FIELDS: dict[str, dict[str, Any]] = form_fields()

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
