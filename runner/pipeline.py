"""Runs the stages in order and assembles the result document."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from maie.contract import ResultDocument, TaskRequest, TaskStatus
from maie.settings import Settings

# Called with (stage, percent 0-100 of the whole task). Must be cheap; called often.
ProgressCallback = Callable[[TaskStatus, float], None]


def run_pipeline(
    audio_path: Path,
    request: TaskRequest,
    *,
    settings: Settings,
    task_id: str,
    submitted_at: datetime | None = None,
    progress: ProgressCallback | None = None,
    work_dir: Path | None = None,
) -> tuple[ResultDocument, dict[str, str]]:
    """Process one recording. Returns (result document, exports {filename: text}).

    Never raises for a task's own failure: a bad input or model error gives a document with
    status FAILED, `error` (one line for people) and `error_code`.
    """
    raise NotImplementedError


def run_text_pipeline(
    transcript: str,
    request: TaskRequest,
    *,
    settings: Settings,
    task_id: str,
    progress: ProgressCallback | None = None,
) -> tuple[ResultDocument, dict[str, str]]:
    """The LLM stages on an existing transcript (`maie summarize`)."""
    raise NotImplementedError
