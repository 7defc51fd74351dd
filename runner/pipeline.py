"""Runs the stages in order and assembles the result document.

PREPROCESSING → PROCESSING_ASR → PROCESSING_LLM (enhancement, then summary) → COMPLETE | FAILED.
One model is loaded at a time: each stage loads its model and unloads it in `finally`.
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

from maie.contract import (
    Feature,
    LlmVersion,
    Metrics,
    ResultDocument,
    Results,
    TaskRequest,
    TaskStatus,
    Versions,
    utcnow,
)
from maie.errors import MaieError
from maie.runner import exports
from maie.runner.asr import create_asr_backend
from maie.runner.enhance import enhance, prompt_environment
from maie.runner.llm import create_llm_backend
from maie.runner.llm.base import LlmBackend
from maie.runner.llm.generation import env_options, model_options, resolve
from maie.runner.preprocess import preprocess
from maie.runner.progress import ProgressCallback, Reporter, StagePlan
from maie.runner.summarize import Summarizer
from maie.runner.transcribe import loading_in_background, transcribe
from maie.settings import Settings
from maie.templates import TemplateCatalog

# Called with (stage, fraction 0-1 of that stage): for per-stage progress bars.
StageProgress = Callable[[TaskStatus, float], None]

__all__ = ["ProgressCallback", "run_pipeline", "run_text_pipeline"]


@dataclass
class _Run:
    """What the stages produce, gathered into the result document at the end."""

    task_id: str
    request: TaskRequest
    settings: Settings
    reporter: Reporter
    stage_progress: StageProgress | None
    submitted_at: datetime | None
    started_at: datetime = field(default_factory=utcnow)
    t0: float = field(default_factory=time.perf_counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    doc: ResultDocument | None = None

    @contextmanager
    def stage(self, status: TaskStatus, name: str) -> Iterator[Callable[[float], None]]:
        start = time.perf_counter()
        self.report(status, 0.0)
        try:
            yield lambda fraction: self.report(status, fraction)
        finally:
            self.stage_seconds[name] = round(time.perf_counter() - start, 3)
        self.report(status, 1.0)

    def report(self, status: TaskStatus, fraction: float) -> None:
        self.reporter(status, fraction)
        if self.stage_progress is not None:
            self.stage_progress(status, fraction)


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


def _generation(backend: LlmBackend, request: TaskRequest, settings: Settings, task: str):  # type: ignore[no-untyped-def]
    config_path = getattr(backend, "generation_config_path", None)
    return resolve(
        runtime=request.llm,
        env=env_options(settings, task),  # type: ignore[arg-type]
        model=model_options(config_path),
        library=dict(getattr(backend, "library_defaults", {})),
    )


def _llm_stages(
    run: _Run,
    text: str,
    asr_punctuates: bool,
    report: Callable[[float], None],
) -> tuple[
    str, dict[str, Any] | None, float | None, dict[str, Any] | None, LlmVersion | None, LlmVersion | None
]:
    """Enhancement (if needed) then summary (if asked). Returns clean text, summary, edit rate,
    enhancement metrics and the two LLM versions."""
    request, settings = run.request, run.settings
    env = prompt_environment(str(settings.templates_dir / "prompts"))
    do_enhance = request.needs_enhancement(settings.enhancement_mode, asr_punctuates)
    do_summary = Feature.SUMMARY in request.features
    clean, summary, rate, enh_metrics = text, None, None, None
    enh_version = sum_version = None
    split = 0.5 if do_enhance and do_summary else (1.0 if do_enhance else 0.0)

    if do_enhance:
        start = time.perf_counter()
        backend = _llm_backend(request, settings, "enhancement")
        try:
            backend.load()
            params, sources = _generation(backend, request, settings, "enhancement")
            result = enhance(text, backend, params, env, progress=lambda f: report(split * f))
            enh_version = backend.version("text_enhancement", params, None)
            enh_version.decoding_params["sources"] = sources
        finally:
            backend.unload()
        clean, rate, enh_metrics = result.text, result.edit_rate, result.metrics()
        run.stage_seconds["enhancement"] = round(time.perf_counter() - start, 3)

    if do_summary:
        assert request.template_id is not None
        catalog = TemplateCatalog(settings.templates_dir)
        schema = catalog.schema(request.template_id)  # unknown template fails before loading a model
        start = time.perf_counter()
        backend = _llm_backend(request, settings, "summary")
        try:
            backend.load()
            params, sources = _generation(backend, request, settings, "summary")
            summarizer = Summarizer(
                backend, params, env, settings.llm_summary_max_retries, settings.llm_chunk_tokens
            )
            outcome = summarizer.run(
                clean, request.template_id, schema, progress=lambda f: report(split + (1 - split) * f)
            )
            sum_version = backend.version(
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
            sum_version.decoding_params["sources"] = sources
        finally:
            backend.unload()
        summary = outcome.summary
        run.stage_seconds["summary"] = round(time.perf_counter() - start, 3)
    return clean, summary, rate, enh_metrics, enh_version, sum_version


def _results(
    request: TaskRequest,
    raw: str,
    clean: str,
    summary: dict[str, Any] | None,
    enh_metrics: dict[str, Any] | None,
    **extra: Any,
) -> Results:
    f = request.features
    return Results(
        raw_transcript=raw if Feature.RAW_TRANSCRIPT in f else None,
        clean_transcript=clean if Feature.CLEAN_TRANSCRIPT in f else None,
        summary=summary if Feature.SUMMARY in f else None,
        enhancement_metrics=(enh_metrics or {"edit_rate": 0.0, "skipped": True})
        if Feature.ENHANCEMENT_METRICS in f
        else None,
        **extra,
    )


def _failed(run: _Run, exc: BaseException, settings: Settings) -> ResultDocument:
    if isinstance(exc, MaieError):
        message, code = exc.message, exc.code
    else:
        message, code = f"internal error: {type(exc).__name__}: {exc}", "internal_error"
        if settings.debug:
            message += "\n" + traceback.format_exc()
    base = run.doc or ResultDocument(task_id=run.task_id, status=TaskStatus.FAILED)
    elapsed = round(time.perf_counter() - run.t0, 3)
    return base.model_copy(
        update={
            "status": TaskStatus.FAILED,
            "progress": None,
            "submitted_at": run.submitted_at,
            "started_at": run.started_at,
            "completed_at": utcnow(),
            "request": run.request,
            "error": message,
            "error_code": code,
            "metrics": Metrics(processing_time_seconds=elapsed, stage_seconds=run.stage_seconds),
        }
    )


def run_pipeline(
    audio_path: Path,
    request: TaskRequest,
    *,
    settings: Settings,
    task_id: str,
    submitted_at: datetime | None = None,
    progress: ProgressCallback | None = None,
    stage_progress: StageProgress | None = None,
    work_dir: Path | None = None,
) -> tuple[ResultDocument, dict[str, str]]:
    """Process one recording. Returns (result document, exports {filename: text}).

    Never raises for a task's own failure: a bad input or model error gives a document with
    status FAILED, `error` (one line for people) and `error_code`.
    """
    run = _Run(task_id, request, settings, Reporter(StagePlan(), progress), stage_progress, submitted_at)
    try:
        # Resolve the ASR model first: a missing model fails before any decoding work.
        asr = create_asr_backend(request.asr.backend or settings.asr_backend, settings, request.asr)
        wants_llm = Feature.SUMMARY in request.features or request.needs_enhancement(
            settings.enhancement_mode, asr.punctuates
        )
        if Feature.SUMMARY in request.features and request.template_id:
            TemplateCatalog(settings.templates_dir).schema(request.template_id)
        run.reporter.plan = StagePlan(has_audio=True, has_llm=wants_llm)

        with loading_in_background(asr) as loading:  # the model loads while the file decodes
            with run.stage(TaskStatus.PREPROCESSING, "preprocessing") as report:
                audio = preprocess(Path(audio_path), progress=report)
            with run.stage(TaskStatus.PROCESSING_ASR, "asr") as report:
                transcript = transcribe(audio, asr, loading, progress=report, work_dir=work_dir)
        raw = transcript.text
        # Kept if a later stage fails: a summary error must not lose the transcript.
        run.doc = ResultDocument(
            task_id=task_id,
            status=TaskStatus.PROCESSING_LLM,
            audio=audio.info,
            versions=Versions(pipeline_version=settings.pipeline_version, asr_backend=transcript.version),
            results=Results(raw_transcript=raw, segments=transcript.segments, language=transcript.language),
        )
        clean, summary, rate, enh_metrics, enh_v, sum_v = raw, None, None, None, None, None
        if wants_llm:
            with run.stage(TaskStatus.PROCESSING_LLM, "llm") as report:
                clean, summary, rate, enh_metrics, enh_v, sum_v = _llm_stages(
                    run, raw, transcript.punctuates, report
                )
        elapsed = round(time.perf_counter() - run.t0, 3)
        doc = ResultDocument(
            task_id=task_id,
            status=TaskStatus.COMPLETE,
            submitted_at=submitted_at,
            started_at=run.started_at,
            completed_at=utcnow(),
            request=request,
            audio=audio.info,
            versions=Versions(
                pipeline_version=settings.pipeline_version,
                asr_backend=transcript.version,
                enhancement_llm=enh_v,
                summarization_llm=sum_v,
            ),
            metrics=Metrics(
                input_duration_seconds=audio.duration,
                processing_time_seconds=elapsed,
                rtf=round(elapsed / audio.duration, 4) if audio.duration else None,
                vad_coverage=transcript.vad_coverage,
                asr_confidence_avg=transcript.confidence,
                edit_rate_cleaning=rate if rate is not None else 0.0,
                stage_seconds=run.stage_seconds,
            ),
            results=_results(
                request,
                raw,
                clean,
                summary,
                enh_metrics,
                segments=transcript.segments,
                language=transcript.language,
            ),
        )
        run.report(TaskStatus.COMPLETE, 1.0)
        return doc, exports.render(doc)
    except Exception as exc:
        doc = _failed(run, exc, settings)
        run.report(TaskStatus.FAILED, 1.0)
        return doc, {}


def run_text_pipeline(
    transcript: str,
    request: TaskRequest,
    *,
    settings: Settings,
    task_id: str,
    progress: ProgressCallback | None = None,
    stage_progress: StageProgress | None = None,
) -> tuple[ResultDocument, dict[str, str]]:
    """The LLM stages on an existing transcript (`maie summarize`)."""
    plan = StagePlan(has_audio=False, has_llm=True)
    run = _Run(task_id, request, settings, Reporter(plan, progress), stage_progress, None)
    try:
        if Feature.SUMMARY in request.features and request.template_id:
            TemplateCatalog(settings.templates_dir).schema(request.template_id)
        text = " ".join(transcript.split())
        # A text file carries no capability flag; enhancement runs only when asked ("always").
        with run.stage(TaskStatus.PROCESSING_LLM, "llm") as report:
            clean, summary, rate, enh_metrics, enh_v, sum_v = _llm_stages(run, text, True, report)
        elapsed = round(time.perf_counter() - run.t0, 3)
        doc = ResultDocument(
            task_id=task_id,
            status=TaskStatus.COMPLETE,
            started_at=run.started_at,
            completed_at=utcnow(),
            request=request,
            versions=Versions(
                pipeline_version=settings.pipeline_version, enhancement_llm=enh_v, summarization_llm=sum_v
            ),
            metrics=Metrics(
                processing_time_seconds=elapsed,
                edit_rate_cleaning=rate if rate is not None else 0.0,
                stage_seconds=run.stage_seconds,
            ),
            results=_results(request, text, clean, summary, enh_metrics),
        )
        run.report(TaskStatus.COMPLETE, 1.0)
        return doc, exports.render(doc)
    except Exception as exc:
        doc = _failed(run, exc, settings)
        run.report(TaskStatus.FAILED, 1.0)
        return doc, {}
