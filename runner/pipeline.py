"""Runs the steps in order — after the last finished one when resuming — and assembles the result.

preprocessing → ASR → enhancement (when needed) → summary (when asked) → COMPLETE | FAILED.
One model is loaded at a time: each step loads its model and unloads it in `finally`. Each finished
step's output goes into the `Checkpoint`; when the caller persists checkpoints (`save`, as
`run_task` does into the task's object store) it is stored before the next step starts, so an
attempt that dies in the summary resumes there and the ASR does not run again.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from maie import checkpoint as records
from maie import exports
from maie.checkpoint import Checkpoint, EnhancementRecord
from maie.contract import Feature, LlmVersion, ResultDocument, Step, TaskRequest, TaskStatus, utcnow
from maie.errors import MaieError
from maie.runner.asr import create_asr_backend
from maie.runner.enhance import enhance, prompt_environment
from maie.runner.llm import create_llm_backend
from maie.runner.llm.base import GenerationParams, LlmBackend
from maie.runner.llm.generation import env_options, model_options, resolve
from maie.runner.preprocess import preprocess
from maie.runner.progress import Observer, StagePlan, Update
from maie.runner.summarize import Summarizer
from maie.runner.transcribe import loading_in_background, transcribe
from maie.settings import Settings
from maie.templates import TemplateCatalog

Save = Callable[[Checkpoint], None]

__all__ = ["Observer", "Save", "Update", "run_pipeline"]


@dataclass
class _Run:
    """One attempt: the checkpoint it fills, the plan of its steps, who hears about them."""

    checkpoint: Checkpoint
    plan: StagePlan
    observer: Observer | None
    save: Save | None
    t0: float = field(default_factory=time.perf_counter)

    def notify(self, step: Step, fraction: float, event: Any = None) -> None:
        if self.observer is not None:
            self.observer(Update(step, fraction, self.plan.percent(step, fraction), event))

    @contextmanager
    def step(self, step: Step) -> Iterator[Callable[[float], None]]:
        start = time.perf_counter()
        self.notify(step, 0.0, "started")
        try:
            yield lambda fraction: self.notify(step, fraction)
        finally:
            self.checkpoint.stage_seconds[step.value] = round(time.perf_counter() - start, 3)
        self.notify(step, 1.0, "finished")

    def commit(self) -> None:
        """Store the checkpoint before the next step starts (a crash there loses nothing)."""
        if self.save is not None:
            self.save(self.checkpoint)


def _llm_backend(request: TaskRequest, settings: Settings, task: str) -> LlmBackend:
    model = request.llm.model or (
        settings.llm_enhancement_model if task == "enhancement" else settings.llm_summary_model
    )
    return create_llm_backend(
        request.llm.backend or settings.llm_backend,
        settings,
        model=model,
        base_url=request.llm.base_url or settings.openai_base_url,
    )


def _generation(
    backend: LlmBackend, request: TaskRequest, settings: Settings, task: str
) -> tuple[GenerationParams, dict[str, str]]:
    config_path = getattr(backend, "generation_config_path", None)
    return resolve(
        runtime=request.llm,
        env=env_options(settings, task),  # type: ignore[arg-type]
        model=model_options(config_path),
        library=dict(getattr(backend, "library_defaults", {})),
    )


def _enhancement(
    text: str, request: TaskRequest, settings: Settings, report: Callable[[float], None]
) -> EnhancementRecord:
    env = prompt_environment(str(settings.templates_dir / "prompts"))
    backend = _llm_backend(request, settings, "enhancement")
    try:
        backend.load()
        params, sources = _generation(backend, request, settings, "enhancement")
        result = enhance(text, backend, params, env, progress=report)
        version = backend.version("text_enhancement", params, None)
        version.decoding_params["sources"] = sources
    finally:
        backend.unload()
    return EnhancementRecord(
        text=result.text, edit_rate=result.edit_rate, metrics=result.metrics(), version=version
    )


def _summary(
    text: str,
    request: TaskRequest,
    settings: Settings,
    schema: dict[str, Any],
    report: Callable[[float], None],
) -> tuple[dict[str, Any], LlmVersion]:
    assert request.template_id is not None
    env = prompt_environment(str(settings.templates_dir / "prompts"))
    backend = _llm_backend(request, settings, "summary")
    try:
        backend.load()
        params, sources = _generation(backend, request, settings, "summary")
        summarizer = Summarizer(
            backend, params, env, settings.llm_summary_max_retries, settings.llm_chunk_tokens
        )
        outcome = summarizer.run(text, request.template_id, schema, progress=report)
        version = backend.version(
            "summarization",
            params,
            {
                "template_id": request.template_id,
                "schema_title": schema.get("title"),
                "constrained_decoding": "per field: enum of candidate ids (grounded), "
                "pattern-bounded strings under a token budget (free)",
                "validation": "jsonschema Draft 2020-12 + grounding checks",
                "max_retries": settings.llm_summary_max_retries,
                "chunks": outcome.chunks,
                "answer_max_tokens": outcome.answer_tokens,
                "llm_calls": outcome.calls,
                "attempts": outcome.attempts,
                "grounding": outcome.grounding,
                "seconds": outcome.seconds,
            },
        )
        version.decoding_params["sources"] = sources
    finally:
        backend.unload()
    return outcome.summary, version


def error_of(exc: BaseException, settings: Settings) -> tuple[str, str]:
    """(message for people, error code) of a failed step."""
    if isinstance(exc, MaieError):
        return exc.message, exc.code
    message = f"internal error: {type(exc).__name__}: {exc}"
    if settings.debug:
        message += "\n" + traceback.format_exc()
    return message, "internal_error"


def run_pipeline(
    audio_path: Path | None,
    request: TaskRequest,
    *,
    settings: Settings,
    task_id: str,
    checkpoint: Checkpoint | None = None,
    save: Save | None = None,
    observer: Observer | None = None,
    work_dir: Path | None = None,
    submitted_at: datetime | None = None,
    started_at: datetime | None = None,
) -> tuple[ResultDocument, dict[str, str]]:
    """Process one task. Returns (result document, exports {filename: text}).

    `checkpoint` holds what earlier attempts finished (or, for `maie summarize`, the given text:
    `Checkpoint(text_input=…)`, then `audio_path` is None). Never raises for a task's own failure: a
    bad input or model error gives a FAILED document with `error`, `error_code` and everything the
    finished steps produced.
    """
    cp = checkpoint or Checkpoint(task_id=task_id)
    carried = sum(cp.stage_seconds.values())  # work of earlier attempts this one reuses
    started_at = started_at or utcnow()
    run = _Run(cp, StagePlan([]), observer, save)
    summary: dict[str, Any] | None = None
    summary_version: LlmVersion | None = None

    def finish(status: TaskStatus, error: tuple[str, str] | None = None) -> ResultDocument:
        return records.document(
            task_id,
            request,
            cp,
            status=status,
            summary=summary,
            summary_version=summary_version,
            pipeline_version=settings.pipeline_version,
            processing_seconds=carried + time.perf_counter() - run.t0,
            submitted_at=submitted_at,
            started_at=started_at,
            error=error[0] if error else None,
            error_code=error[1] if error else None,
        )

    try:
        asr = None
        if cp.source_text is None:
            if audio_path is None:
                raise MaieError("no audio and no transcript to work on")
            # Resolve the ASR model first: a missing model fails before any decoding work.
            asr = create_asr_backend(request.asr.backend or settings.asr_backend, settings, request.asr)
            punctuates = asr.punctuates
        else:
            # A text file carries no capability flag: enhancement runs only when asked ("always").
            punctuates = cp.transcript.punctuates if cp.transcript is not None else True
        wants_enhancement = request.needs_enhancement(settings.enhancement_mode, punctuates)
        wants_summary = Feature.SUMMARY in request.features
        schema: dict[str, Any] = {}
        if wants_summary:
            assert request.template_id is not None
            # An unknown template fails before any model loads.
            schema = TemplateCatalog(settings.templates_dir).schema(request.template_id)
        steps = [Step.PREPROCESSING, Step.ASR] if cp.text_input is None else []
        steps += [Step.ENHANCEMENT] if wants_enhancement else []
        steps += [Step.SUMMARY] if wants_summary else []
        run.plan = StagePlan(steps)

        if asr is not None:
            assert audio_path is not None
            with loading_in_background(asr) as loading:  # the model loads while the file decodes
                with run.step(Step.PREPROCESSING) as report:
                    audio = preprocess(Path(audio_path), progress=report)
                with run.step(Step.ASR) as report:
                    cp.transcript = transcribe(audio, asr, loading, progress=report, work_dir=work_dir)
            run.commit()
        else:
            for step in cp.finished:
                run.notify(step, 1.0, "resumed")
        text = cp.source_text or ""

        if wants_enhancement:
            if cp.enhancement is None:
                with run.step(Step.ENHANCEMENT) as report:
                    cp.enhancement = _enhancement(text, request, settings, report)
                if wants_summary:
                    run.commit()
            else:
                run.notify(Step.ENHANCEMENT, 1.0, "resumed")
        if wants_summary:
            source = cp.enhancement.text if cp.enhancement is not None else text
            with run.step(Step.SUMMARY) as report:
                summary, summary_version = _summary(source, request, settings, schema, report)
        doc = finish(TaskStatus.COMPLETE)
        return doc, exports.render(doc)
    except Exception as exc:
        return finish(TaskStatus.FAILED, error_of(exc, settings)), {}
