"""The shared contract: what a task asks for and the result document it produces.

The result document is the one shape everyone sees: `maie transcribe` writes it as result.json,
the runner stores it as results/{id}/result.json, and GET /v1/status/{id} returns it (plus the
live stage and progress while the task runs). api, operator and runner all import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maie.settings import AsrBackendName, EnhancementMode, LlmBackendName
from maie.storage.base import TaskKeys


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    PREPROCESSING = "PREPROCESSING"
    PROCESSING_ASR = "PROCESSING_ASR"
    PROCESSING_LLM = "PROCESSING_LLM"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.FAILED)


class Feature(StrEnum):
    RAW_TRANSCRIPT = "raw_transcript"
    CLEAN_TRANSCRIPT = "clean_transcript"
    SUMMARY = "summary"
    ENHANCEMENT_METRICS = "enhancement_metrics"


DEFAULT_FEATURES: tuple[Feature, ...] = (Feature.CLEAN_TRANSCRIPT, Feature.SUMMARY)


class Step(StrEnum):
    """The pipeline's steps, finer than the stage (PROCESSING_LLM is enhancement, then summary)."""

    PREPROCESSING = "preprocessing"
    ASR = "asr"
    ENHANCEMENT = "enhancement"
    SUMMARY = "summary"

    @property
    def stage(self) -> TaskStatus:
        return {
            Step.PREPROCESSING: TaskStatus.PREPROCESSING,
            Step.ASR: TaskStatus.PROCESSING_ASR,
        }.get(self, TaskStatus.PROCESSING_LLM)

    @property
    def runtime(self) -> str:
        """Whose native code runs in this step (what a crash report names)."""
        return {
            Step.PREPROCESSING: "the audio decoder (FFmpeg)",
            Step.ASR: "the ASR runtime",
        }.get(self, "the LLM runtime")


# --------------------------------------------------------------------------------------
# What a task asks for
# --------------------------------------------------------------------------------------
# A model named by an API client: a name, never a path (paths on the server are not its business).
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$"
TEMPLATE_ID = r"^[A-Za-z0-9_.-]{1,64}$"


@dataclass(frozen=True)
class Expose:
    """How a request option appears outside Python (maie.options generates every surface from it).

    Without it a field is exposed under its own name: form field `name`, CLI flag `--name` (dashes),
    Transcription spec property in camelCase (`beamSize`) inside its group.
    """

    name: str | None = None  # the flat public name (form field; CLI flag with dashes), if not the field's
    cli: str | None = None  # the CLI flag, if not --name
    on_cli: bool = True  # an option of `maie transcribe`/`summarize` (False: API and spec only)
    form: bool = True  # a field of POST /v1/process (False: only the CLI and the spec set it)
    form_pattern: str | None = None  # a stricter pattern for the API form (e.g. a name, never a path)


class AsrOptions(BaseModel):
    """Per-task ASR choices; None = the deployment's setting."""

    model_config = ConfigDict(extra="forbid")

    backend: Annotated[AsrBackendName | None, Expose("asr_backend")] = Field(None, description="ASR backend.")
    model: Annotated[str | None, Expose("asr_model", form_pattern=SAFE_NAME)] = Field(
        None,
        max_length=512,
        description="Model name (tiny.en, base, large-v3), a name under MODELS_DIR, or a directory "
        "(the API form takes names only).",
    )
    language: str | None = Field(None, max_length=16, description="Language code, or auto to detect.")
    beam_size: int | None = Field(None, ge=1, le=20, description="Beam size.")
    vad_filter: bool | None = Field(None, description="Voice activity detection before decoding.")
    vad_min_silence_ms: int | None = Field(
        None, ge=0, le=10000, description="VAD: silence (ms) that splits speech."
    )
    vad_speech_pad_ms: int | None = Field(None, ge=0, le=5000, description="VAD: padding (ms) around speech.")
    word_timestamps: bool | None = Field(None, description="Word-level timestamps.")
    condition_on_previous_text: bool | None = Field(
        None, description="Prompt each window with the text before it."
    )
    batch_size: int | None = Field(None, ge=0, le=64, description="Batched inference size; 0 = sequential.")
    initial_prompt: str | None = Field(
        None, max_length=4096, description="Text that primes the decoder (spellings, names, style)."
    )
    temperature: Annotated[float | None, Expose("asr_temperature")] = Field(
        None, ge=0.0, le=1.0, description="Decoding temperature (unset = Whisper's fallback schedule)."
    )

    @field_validator("language")
    @classmethod
    def _auto(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in {"", "auto"}:
            return None
        return value


class GenerationOptions(BaseModel):
    """Generation overrides for one LLM task; None = take the lower level."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=0, le=1000, description="Top-k sampling (0 = off).")
    max_tokens: int | None = Field(None, ge=1, le=32768, description="Most tokens to generate.")
    repetition_penalty: float | None = Field(None, gt=0.0, le=3.0, description="Repetition penalty.")


class LlmOptions(GenerationOptions):
    """Per-task LLM choices (both enhancement and summary)."""

    backend: Annotated[LlmBackendName | None, Expose("llm_backend")] = Field(None, description="LLM backend.")
    model: Annotated[str | None, Expose("llm_model", form_pattern=SAFE_NAME)] = Field(
        None,
        max_length=512,
        description="LLM model: GGUF file, name under MODELS_DIR or served model (the API form takes "
        "names only).",
    )
    base_url: Annotated[str | None, Expose("llm_base_url", form=False)] = Field(
        None,
        max_length=512,
        description="OpenAI-compatible server URL (openai backend; not settable through the API).",
    )
    enhancement: EnhancementMode | None = Field(
        None, description="Clean the transcript with the LLM: auto (when the ASR does not punctuate)."
    )


class TaskRequest(BaseModel):
    """Everything a task needs besides the audio: the one declaration of the request's options.

    The API form, the CLI options, the Transcription spec and the CRD schema and the options table in
    docs/api.md are generated from these models (maie.options, maie.crd): add an option here, nowhere else.
    """

    model_config = ConfigDict(extra="forbid")

    features: list[Feature] = Field(
        default_factory=lambda: list(DEFAULT_FEATURES),
        min_length=1,
        max_length=len(Feature),
        description="Results to produce (default: clean_transcript and summary).",
    )
    template_id: Annotated[str | None, Expose(cli="--template")] = Field(
        None,
        max_length=64,
        pattern=TEMPLATE_ID,
        description="Summary template (GET /v1/templates, `maie templates`); required with summary.",
    )
    asr: AsrOptions = Field(default_factory=AsrOptions, description="Speech recognition choices.")
    llm: LlmOptions = Field(
        default_factory=LlmOptions,
        description="LLM choices for the enhancement and summary stages (unset = model default).",
    )
    # The CLI runs a task in the foreground and delivers no webhooks: API and spec only.
    callback_url: Annotated[str | None, Expose(on_cli=False)] = Field(
        None,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="Webhook: POSTed the status document (signed) when the task ends.",
    )

    @field_validator("features")
    @classmethod
    def _dedupe(cls, value: list[Feature]) -> list[Feature]:
        return list(dict.fromkeys(value))

    def needs_enhancement(self, default_mode: str, asr_punctuates: bool) -> bool:
        """Whether the enhancement stage runs: asked for (clean transcript or its metrics), not
        turned off, and forced or needed because the ASR model does not punctuate."""
        mode = self.llm.enhancement or default_mode
        wanted = Feature.CLEAN_TRANSCRIPT in self.features or Feature.ENHANCEMENT_METRICS in self.features
        if not wanted or mode == "never":
            return False
        return mode == "always" or not asr_punctuates

    @model_validator(mode="after")
    def _summary_needs_template(self) -> TaskRequest:
        if Feature.SUMMARY in self.features and not self.template_id:
            name = type(self).model_fields["template_id"].alias or "template_id"  # templateId in a spec
            raise ValueError(f"{name} is required when 'summary' is among the features")
        return self


class RunnerTask(BaseModel):
    """One task as the runner is given it, whichever queue it came from (embedded executor, Job)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    namespace: str | None = Field(None, description="Tenant (Kubernetes namespace); None in embedded mode.")
    request: TaskRequest
    audio: str = Field(
        max_length=2048, description="A key in the task's object store, s3://bucket/key, or an http(s) URL."
    )
    submitted_at: datetime | None = None
    request_id: str | None = None

    @property
    def keys(self) -> TaskKeys:
        return TaskKeys(self.task_id, self.namespace)


# --------------------------------------------------------------------------------------
# What a task produces
# --------------------------------------------------------------------------------------
class AudioInfo(BaseModel):
    format: str = Field(description="Container format, e.g. flac, ogg, wav.")
    codec: str
    duration: float = Field(description="Seconds.")
    sample_rate: int
    channels: int


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None


class Segment(BaseModel):
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    words: list[Word] | None = None
    # Whisper's own per-segment figures, where the backend gives them (OpenAI's verbose_json shows them).
    seek: int | None = Field(None, description="Whisper: the decoding window's offset, in 10 ms frames.")
    temperature: float | None = Field(None, description="Whisper: the sampling temperature that was kept.")
    compression_ratio: float | None = Field(None, description="Whisper: gzip compression ratio of the text.")
    no_speech_prob: float | None = Field(None, description="Whisper: probability of no speech.")


class AsrVersion(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Backend: whisper | chunkformer.")
    model_variant: str
    model_path: str = Field(description="Local directory the model was loaded from.")
    checkpoint_hash: str = Field(description="sha256 over the model's files.")
    compute_type: str
    device: str
    decoding_params: dict[str, Any] = Field(description="Exact keyword arguments given to the decoder.")
    inference: str = Field(description="sequential | batched | endless_decode …")
    recovery: dict[str, Any] | None = Field(
        None,
        description="Batched whisper: speech the first pass left without words, decoded again — "
        "min_gap_seconds and the clip_timestamps given to a second transcribe().",
    )
    library_version: str | None = None


class LlmVersion(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Model name (file or served model).")
    backend: str
    model_path: str | None = None
    checkpoint_hash: str | None
    quantization: str | None = None
    task: Literal["text_enhancement", "summarization"]
    chat_template: str | None = None
    thinking: bool = False
    reasoning_parser: str | None = None
    decoding_params: dict[str, Any] = Field(default_factory=dict)
    structured_output: dict[str, Any] | None = None
    library_version: str | None = None
    runtime_build: dict[str, Any] | None = Field(
        None,
        description="How the LLM library running here was built (llama.cpp: package version, CPU "
        "baseline, CMake flags, llama_print_system_info); 'unknown' where no build record exists.",
    )


class Versions(BaseModel):
    pipeline_version: str
    asr_backend: AsrVersion | None = None
    enhancement_llm: LlmVersion | None = None
    summarization_llm: LlmVersion | None = None


class Metrics(BaseModel):
    input_duration_seconds: float | None = None
    processing_time_seconds: float
    rtf: float | None = Field(None, description="processing_time_seconds / input_duration_seconds.")
    vad_coverage: float | None = Field(None, description="Share of the audio that VAD kept as speech.")
    asr_confidence_avg: float | None = Field(None, description="Mean of exp(avg_logprob) over segments.")
    edit_rate_cleaning: float | None = Field(None, description="Character edit rate raw → clean.")
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class Results(BaseModel):
    raw_transcript: str | None = None
    clean_transcript: str | None = None
    summary: dict[str, Any] | None = None
    enhancement_metrics: dict[str, Any] | None = None
    segments: list[Segment] | None = None
    language: str | None = None


class StageEvent(BaseModel):
    """One line of a task's history: an attempt began, a step started, finished or was resumed."""

    attempt: int
    event: Literal["attempt", "started", "finished", "resumed", "failed"]
    step: Step | None = None
    at: datetime = Field(default_factory=utcnow)
    detail: str | None = None


class WebhookAttempt(BaseModel):
    at: datetime = Field(default_factory=utcnow)
    status: int | None = Field(None, description="The receiver's HTTP status.")
    error: str | None = None
    seconds: float = 0.0


class WebhookStatus(BaseModel):
    """A task's webhook: every delivery attempt, and how it ended."""

    url: str
    state: Literal["pending", "delivered", "failed"] = "pending"
    attempts: list[WebhookAttempt] = Field(default_factory=list)


class ResultDocument(BaseModel):
    """result.json, the runner's output and the API's status response."""

    task_id: str
    status: TaskStatus
    progress: float | None = Field(None, ge=0, le=100, description="Percent, while running.")
    step: Step | None = Field(None, description="The step running now (finer than status).")
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    request: TaskRequest | None = None
    audio: AudioInfo | None = None
    versions: Versions | None = None
    metrics: Metrics | None = None
    results: Results | None = None
    exports: dict[str, str] = Field(default_factory=dict, description="Export name → file/key.")
    error: str | None = None
    error_code: str | None = None
    attempts: int | None = Field(None, description="Runs of the task so far (a crash starts another).")
    history: list[StageEvent] = Field(
        default_factory=list,
        description="Every attempt's steps: started, finished, resumed from a checkpoint.",
    )
    webhook: WebhookStatus | None = Field(
        None, description="The callback_url's delivery, when one was given."
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)
