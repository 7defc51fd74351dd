"""Errors a user can act on. Each carries a stable code and a one-line message for people."""

from __future__ import annotations


class MaieError(Exception):
    """Base: a clear, user-facing failure (no traceback needed to understand it)."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AudioError(MaieError):
    """The input is not usable audio (undecodable, too short, no audio stream)."""

    code = "invalid_audio"


class TemplateNotFoundError(MaieError):
    code = "template_not_found"


class ModelNotFoundError(MaieError):
    """A model's files are not where the settings say; the message names the path and the fix."""

    code = "model_not_found"


class ModelLoadError(MaieError):
    """A model's files are there but cannot be loaded (truncated download, wrong format)."""

    code = "model_load_failed"


class BackendUnavailableError(MaieError):
    """A backend's optional package or hardware is missing."""

    code = "backend_unavailable"


class SummaryError(MaieError):
    """The LLM did not produce a schema-valid summary within the allowed retries."""

    code = "summary_invalid"


class LlmError(MaieError):
    """An LLM backend failed (server unreachable, generation error)."""

    code = "llm_error"
