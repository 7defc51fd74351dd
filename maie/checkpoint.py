"""A task's records in its object store: written by the runner, read by whoever owns the queue.

- `progress.json` — the step running now, its percent, and the history of every attempt. It is the
  runner's only channel to the outside: the runner needs no Kubernetes credentials, and the queue
  owner (the embedded executor, the operator) is the one writer of the task's status.
- `checkpoint.json` — the output of every finished stage, written before the next stage starts. A new
  attempt after a crash resumes after the last finished stage (the ASR never runs twice), and a task
  that runs out of attempts still returns everything its finished stages produced.

Both live under the task's results/ prefix (`TaskKeys`), so deleting a task removes them too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from maie.contract import (
    AsrVersion,
    AudioInfo,
    Feature,
    LlmVersion,
    Metrics,
    ResultDocument,
    Results,
    RunnerTask,
    Segment,
    StageEvent,
    Step,
    TaskRequest,
    TaskStatus,
    Versions,
    utcnow,
)
from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys

log = logging.getLogger("maie.checkpoint")
M = TypeVar("M", bound=BaseModel)


class TranscriptRecord(BaseModel):
    """What the preprocessing and ASR stages produce."""

    audio: AudioInfo
    segments: list[Segment]
    language: str | None
    version: AsrVersion
    punctuates: bool
    vad_coverage: float | None = None
    confidence: float | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


class EnhancementRecord(BaseModel):
    """What the enhancement stage produces (punctuation and casing restored, words unchanged)."""

    text: str
    edit_rate: float
    metrics: dict[str, Any]
    version: LlmVersion


class Checkpoint(BaseModel):
    """The outputs of the finished stages of one task."""

    task_id: str
    transcript: TranscriptRecord | None = None
    text_input: str | None = Field(None, description="`maie summarize`: the transcript it was given.")
    enhancement: EnhancementRecord | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def source_text(self) -> str | None:
        """The raw text the LLM stages start from."""
        if self.transcript is not None:
            return self.transcript.text
        return self.text_input

    @property
    def finished(self) -> list[Step]:
        steps: list[Step] = []
        if self.transcript is not None:
            steps += [Step.PREPROCESSING, Step.ASR]
        if self.enhancement is not None:
            steps.append(Step.ENHANCEMENT)
        return steps


class Progress(BaseModel):
    """Where a task is now, and what every attempt did."""

    task_id: str
    attempt: int = 0
    stage: TaskStatus = TaskStatus.PENDING
    step: Step | None = None
    percent: float = Field(0.0, ge=0, le=100)
    updated_at: datetime = Field(default_factory=utcnow)
    history: list[StageEvent] = Field(default_factory=list)

    def record(self, event: str, step: Step | None = None, detail: str | None = None) -> None:
        self.history.append(
            StageEvent.model_validate(
                {"attempt": self.attempt, "event": event, "step": step, "detail": detail}
            )
        )

    def ran(self, step: Step) -> int:
        """How many times a step was started (across attempts)."""
        return sum(1 for e in self.history if e.event == "started" and e.step is step)


def read(store: ObjectStore, key: str, model: type[M]) -> M | None:
    """The record at key, or None when there is none (or it is unreadable: a new one replaces it)."""
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        log.warning("ignoring unreadable %s: %s", key, exc.errors()[0]["msg"])
        return None


def write(store: ObjectStore, key: str, record: BaseModel) -> None:
    store.put_bytes(key, record.model_dump_json().encode("utf-8"), "application/json")


def load(store: ObjectStore, keys: TaskKeys) -> tuple[Checkpoint | None, Progress | None]:
    return read(store, keys.checkpoint, Checkpoint), read(store, keys.progress, Progress)


def document(
    task_id: str,
    request: TaskRequest,
    checkpoint: Checkpoint,
    *,
    status: TaskStatus,
    summary: dict[str, Any] | None = None,
    summary_version: LlmVersion | None = None,
    pipeline_version: str,
    processing_seconds: float,
    submitted_at: datetime | None = None,
    started_at: datetime | None = None,
    progress: Progress | None = None,
    error: str | None = None,
    error_code: str | None = None,
) -> ResultDocument:
    """The result document from what the stages produced: complete, or failed with whatever finished.

    One function for both, used by the runner and by the queue owners, so a FAILED document written by
    the executor or the operator after a crash has the same shape as one the runner wrote itself."""
    t, enh = checkpoint.transcript, checkpoint.enhancement
    raw = checkpoint.source_text
    clean = enh.text if enh is not None else raw
    f = request.features
    complete = status is TaskStatus.COMPLETE
    duration = t.audio.duration if t is not None else None
    results = Results(
        raw_transcript=raw if Feature.RAW_TRANSCRIPT in f or not complete else None,
        clean_transcript=clean if Feature.CLEAN_TRANSCRIPT in f and (complete or enh is not None) else None,
        summary=summary if Feature.SUMMARY in f else None,
        enhancement_metrics=(enh.metrics if enh is not None else {"edit_rate": 0.0, "skipped": True})
        if Feature.ENHANCEMENT_METRICS in f and (complete or enh is not None)
        else None,
        segments=t.segments if t is not None else None,
        language=t.language if t is not None else None,
    )
    has_results = raw is not None or summary is not None
    return ResultDocument(
        task_id=task_id,
        status=status,
        progress=100.0 if complete else None,
        submitted_at=submitted_at,
        started_at=started_at,
        completed_at=utcnow(),
        request=request,
        audio=t.audio if t is not None else None,
        versions=Versions(
            pipeline_version=pipeline_version,
            asr_backend=t.version if t is not None else None,
            enhancement_llm=enh.version if enh is not None else None,
            summarization_llm=summary_version,
        ),
        metrics=Metrics(
            input_duration_seconds=duration,
            processing_time_seconds=round(processing_seconds, 3),
            rtf=round(processing_seconds / duration, 4) if duration else None,
            vad_coverage=t.vad_coverage if t is not None else None,
            asr_confidence_avg=t.confidence if t is not None else None,
            edit_rate_cleaning=(enh.edit_rate if enh is not None else 0.0) if complete or enh else None,
            stage_seconds=dict(checkpoint.stage_seconds),
        ),
        results=results if has_results else None,
        error=error,
        error_code=error_code,
        attempts=progress.attempt if progress is not None and progress.attempt else None,
        history=list(progress.history) if progress is not None else [],
    )


def dying_step(progress: Progress | None) -> Step | None:
    """The step the last attempt was in when it stopped: started and never finished."""
    if progress is None:
        return None
    open_steps: list[Step] = []
    for event in progress.history:
        if event.attempt != progress.attempt or event.step is None:
            continue
        if event.event == "started":
            open_steps.append(event.step)
        elif event.event in ("finished", "resumed") and event.step in open_steps:
            open_steps.remove(event.step)
    return open_steps[-1] if open_steps else None


def fail_after_death(
    task: RunnerTask, store: ObjectStore, *, error: str, code: str, pipeline_version: str
) -> ResultDocument:
    """The FAILED document a queue owner writes when the runner died and no attempt is left.

    It carries everything the finished stages stored (the transcript when the ASR had finished) and
    the history, and goes to result.json like any result, so the API and users read it as usual."""
    keys = task.keys
    checkpoint, progress = load(store, keys)
    checkpoint = checkpoint or Checkpoint(task_id=task.task_id)
    if progress is not None:
        progress.stage = TaskStatus.FAILED
        progress.record("failed", dying_step(progress), code)
        write(store, keys.progress, progress)
    doc = document(
        task.task_id,
        task.request,
        checkpoint,
        status=TaskStatus.FAILED,
        pipeline_version=pipeline_version,
        processing_seconds=sum(checkpoint.stage_seconds.values()),
        submitted_at=task.submitted_at,
        started_at=progress.history[0].at if progress and progress.history else None,
        progress=progress,
        error=error,
        error_code=code,
    )
    store.put_bytes(keys.result(), doc.to_json().encode("utf-8"), "application/json")
    return doc
