"""Every setting of MAIE, read from the environment and `.env` (upper-case names, no prefix).

One flat `Settings` class, as in the reference plan, so every setting has exactly one env var:
`MAX_QUEUE_DEPTH=10` sets `max_queue_depth`. `None` on a generation setting means "take the lower
level" (the model's generation_config.json, then the library default), never "zero".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The backend names, declared once: the request's options, the settings, the CRD, the API's form,
# the runner's registries (runner/asr, runner/llm) and the catalog (maie/catalog.py) all take
# them from here (tests/test_options.py checks the registries and catalog agree).
AsrBackendName = Literal["whisper", "chunkformer"]
LlmBackendName = Literal["llama_cpp", "openai", "vllm"]
EnhancementMode = Literal["auto", "always", "never"]
ASR_BACKEND_NAMES: tuple[str, ...] = get_args(AsrBackendName)
LLM_BACKEND_NAMES: tuple[str, ...] = get_args(LlmBackendName)
# What a Transcription may override per resource when the operator allows it (its spec.job fields,
# camelCase as on the wire, and queueName = the resource's kueue.x-k8s.io/queue-name label).
JobOverrideName = Literal[
    "gpuCount",
    "activeDeadlineSeconds",
    "backoffLimit",
    "ttlSecondsAfterFinished",
    "nodeSelector",
    "tolerations",
    "runtimeClassName",
    "priorityClassName",
    "resources",
    "queueName",
]

# The project root (for the shipped templates/ folder when running from a checkout).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_templates_dir() -> Path:
    """The checkout's templates/ when running from a source checkout (editable installs included),
    else the copy a wheel installs inside the package (maie/template_files)."""
    checkout = PROJECT_ROOT / "templates"
    if (PROJECT_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "template_files"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    # --- system -------------------------------------------------------------------------
    pipeline_version: str = Field("1.0.0", description="Version recorded in every result (reproducibility).")
    environment: Literal["development", "production"] = Field(
        "development", description="production = JSON logs, no debug details in errors."
    )
    debug: bool = Field(False, description="Debug logging and error details (tracebacks) in API errors.")
    mode: Literal["embedded", "kubernetes"] = Field(
        "embedded", description="embedded = one machine (SQLite + local files); kubernetes = CRs + S3."
    )
    secret_api_key: SecretStr | None = Field(
        None,
        description="X-API-Key clients must send. Unset in embedded mode: generated on first start "
        "and stored in DATA_DIR/api-key (mode 0600).",
    )

    # --- API server ---------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Bind address of `maie serve`.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of `maie serve`.")
    max_file_size_mb: int = Field(500, ge=1, description="Largest accepted upload, checked while streaming.")
    max_queue_depth: int = Field(
        50, ge=1, description="Unfinished tasks above which POST /v1/process gives 429."
    )
    upload_chunk_bytes: int = Field(1024 * 1024, ge=4096, description="Chunk size when streaming uploads.")

    # --- API: OpenAI-compatible transcription, live progress, metrics (issue 13) ------------
    transcriptions_max_file_size_mb: int = Field(
        25, ge=1, description="Largest upload POST /v1/audio/transcriptions takes (it answers synchronously)."
    )
    transcriptions_max_duration_seconds: float = Field(
        600.0, gt=0, description="Longest audio POST /v1/audio/transcriptions takes; longer = 422."
    )
    transcriptions_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds POST /v1/audio/transcriptions waits for its task; then the task is "
        "cancelled and the answer is 504.",
    )
    live_poll_interval: float = Field(
        0.5, gt=0, le=10, description="Seconds between task reads of SSE streams and synchronous waits."
    )
    sse_keepalive_seconds: float = Field(
        15.0, gt=0, description="An SSE comment is sent after this many seconds without an event."
    )
    metrics_require_key: bool = Field(
        False, description="true = /metrics needs the API key like /v1 routes; false = public like /health."
    )

    # --- webhooks (POST the status document when a task ends) ---------------------------
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the MAIE-Signature header. Unset in embedded mode: generated on "
        "first start in DATA_DIR/webhook-secret (mode 0600); in a cluster the chart's Secret sets it.",
    )
    allowed_internal_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs a callback_url or an audio http(s) URL may reach although loopback or "
        'link-local (JSON list, e.g. ["127.0.0.0/8"] for a receiver on this machine); refused otherwise.',
    )
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds per webhook request.")
    webhook_retry_seconds: int = Field(
        600, ge=0, description="How long a failing webhook is retried (exponential backoff, 1 s to 60 s)."
    )

    # --- paths --------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Embedded store, object files, caches and the API key.")
    models_dir: Path = Field(
        Path("data/models"), description="Production model weights (download_models.sh)."
    )
    templates_dir: Path = Field(
        default_factory=default_templates_dir,
        description="JSON Schema templates and templates/prompts/*.jinja (default: the checkout's "
        "templates/, or the copy inside the installed package).",
    )
    cache_dir: Path | None = Field(
        None, description="Joined model files and checksum cache. Default: DATA_DIR/cache."
    )

    # --- executor / jobs ----------------------------------------------------------------
    max_concurrent_tasks: int = Field(
        1, ge=1, le=16, description="Tasks run at once by the embedded executor."
    )
    job_timeout: int = Field(3600, ge=10, description="Seconds one task may run before it is failed.")
    max_attempts: int = Field(3, ge=1, le=10, description="Runs of one task (after crashes) before FAILED.")
    result_ttl: int = Field(86400, ge=60, description="Seconds finished results and their files are kept.")
    heartbeat_interval: float = Field(2.0, gt=0, description="Seconds between executor heartbeats.")
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness of embedded worker processes, so the API stays responsive while models run.",
    )

    # --- ASR: common --------------------------------------------------------------------
    asr_backend: AsrBackendName = Field(
        "whisper", description=f"ASR backend: {' | '.join(ASR_BACKEND_NAMES)}."
    )
    asr_language: str | None = Field(None, description="Language code, or unset/auto to detect.")
    asr_word_timestamps: bool = Field(False, description="Word-level timestamps where supported.")
    asr_punctuates: bool | None = Field(
        None, description="Override the model's punctuation capability (decides the enhancement stage)."
    )

    # --- ASR: whisper (faster-whisper) --------------------------------------------------
    whisper_model_variant: str = Field(
        "tiny.en",
        description="tiny.en / base (bundled), a name under MODELS_DIR, or a CTranslate2 directory.",
    )
    whisper_device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="cpu | cuda | auto.")
    whisper_compute_type: str = Field(
        "auto",
        description="auto = int8 on CPU, float16 on GPU; or int8, int8_float16, float16, float32.",
    )
    whisper_beam_size: int = Field(5, ge=1, le=20, description="Beam size.")
    whisper_vad_filter: bool = Field(True, description="Silero VAD before decoding.")
    whisper_vad_min_silence_ms: int = Field(500, ge=0, description="VAD min_silence_duration_ms.")
    whisper_vad_speech_pad_ms: int = Field(400, ge=0, description="VAD speech_pad_ms.")
    whisper_condition_on_previous_text: bool = Field(True, description="Condition on previous text.")
    whisper_batch_size: int = Field(
        4, ge=0, le=64, description="faster-whisper batched inference batch size; 0 = plain sequential."
    )
    whisper_recover_gap_seconds: float = Field(
        2.0,
        ge=0,
        description="Batched mode: speech left without words for this long is decoded again; 0 = off.",
    )
    whisper_cpu_threads: int = Field(0, ge=0, description="CTranslate2 CPU threads; 0 = all cores.")

    # --- ASR: chunkformer ---------------------------------------------------------------
    chunkformer_model_name: str = Field(
        "khanhld/chunkformer-large-vie", description="Directory under MODELS_DIR or a local path."
    )
    chunkformer_device: Literal["cpu", "cuda", "auto"] = Field("auto", description="cpu | cuda | auto.")
    chunkformer_chunk_size: int = Field(64, ge=4, description="Chunk size in frames.")
    chunkformer_left_context: int = Field(128, ge=0, description="Left context frames.")
    chunkformer_right_context: int = Field(128, ge=0, description="Right context frames.")
    chunkformer_total_batch_duration: int = Field(14400, ge=1, description="Seconds of audio per batch.")
    chunkformer_return_timestamps: bool = Field(True, description="Segment timestamps.")

    # --- LLM: shared --------------------------------------------------------------------
    llm_backend: LlmBackendName = Field("llama_cpp", description=f"{' | '.join(LLM_BACKEND_NAMES)}.")
    enhancement_mode: EnhancementMode = Field(
        "auto", description="auto = only for ASR models that do not punctuate."
    )
    llm_n_ctx: int = Field(8192, ge=512, description="llama.cpp context window (tokens).")
    llm_n_gpu_layers: int = Field(0, ge=-1, description="llama.cpp layers on GPU (-1 = all).")
    llm_threads: int | None = Field(
        None, ge=1, description="llama.cpp threads; unset = half the CPU cores (llama.cpp default)."
    )
    llm_gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM GPU memory fraction.")
    llm_max_model_len: int = Field(32768, ge=512, description="vLLM context window.")
    llm_summary_max_retries: int = Field(2, ge=0, le=5, description="Retries on invalid summary output.")
    llm_chunk_tokens: int | None = Field(
        None, ge=256, description="Transcript tokens per map chunk; unset = derived from the context."
    )
    openai_base_url: str | None = Field(
        None, description="OpenAI-compatible server, e.g. http://host:8000/v1."
    )
    openai_api_key: SecretStr | None = Field(None, description="Key for the OpenAI-compatible server.")
    openai_timeout: float = Field(120.0, gt=0, description="Seconds per request to the server.")
    openai_max_retries: int = Field(3, ge=0, le=10, description="Retries on transient server errors.")

    # --- LLM: enhancement task (None = model default) ----------------------------------
    llm_enhancement_model: str | None = Field(None, description="Model; unset = bundled SmolLM2 GGUF.")
    llm_enhancement_temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Sampling temperature for enhancement; unset = model default."
    )
    llm_enhancement_top_p: float | None = Field(
        None, gt=0.0, le=1.0, description="Nucleus sampling top_p for enhancement; unset = model default."
    )
    llm_enhancement_top_k: int | None = Field(
        None, ge=0, description="Top-k sampling for enhancement; unset = model default."
    )
    llm_enhancement_max_tokens: int | None = Field(
        None, ge=1, description="Most tokens generated per call for enhancement; unset = model default."
    )
    llm_enhancement_repetition_penalty: float | None = Field(
        None, gt=0.0, description="Repetition penalty for enhancement; unset = model default."
    )

    # --- LLM: summary task (None = model default) --------------------------------------
    llm_summary_model: str | None = Field(None, description="Model; unset = bundled SmolLM2 GGUF.")
    llm_summary_temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Sampling temperature for summary; unset = model default."
    )
    llm_summary_top_p: float | None = Field(
        None, gt=0.0, le=1.0, description="Nucleus sampling top_p for summary; unset = model default."
    )
    llm_summary_top_k: int | None = Field(
        None, ge=0, description="Top-k sampling for summary; unset = model default."
    )
    llm_summary_max_tokens: int | None = Field(
        None, ge=1, description="Most tokens generated per call for summary; unset = model default."
    )
    llm_summary_repetition_penalty: float | None = Field(
        None, gt=0.0, description="Repetition penalty for summary; unset = model default."
    )

    # --- object storage (kubernetes mode) ---------------------------------------------
    s3_endpoint: str = Field("minio:9000", description="host:port of the S3 API.")
    s3_bucket: str = Field("maie", min_length=3, description="Bucket for audio/ and results/.")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_secure: bool = Field(False, description="Use TLS to reach S3.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_allowed_audio_buckets: list[str] = Field(
        default_factory=list,
        description="Other buckets an s3:// audio URI may name (JSON list). In S3_BUCKET itself audio is "
        "read only from the task's own audio/{namespace}/ prefix.",
    )

    # --- kubernetes mode ----------------------------------------------------------------
    namespace: str = Field("default", description="Namespace where the API creates Transcriptions.")

    # --- production backends: chunkformer, openai, vllm (issue 5) ----------------------
    chunkformer_max_silence_duration: float = Field(
        0.5, gt=0, description="Silence (s) that ends a ChunkFormer timestamped segment."
    )
    openai_response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="Structured output asked of the server first: json_schema (vLLM, OpenAI), json_object "
        "with a schema (llama-cpp-python's server), none; a rejected shape falls back to the next.",
    )
    openai_context_tokens: int | None = Field(
        None, ge=512, description="Context window of the served model; unset = the server's (vLLM) or 8192."
    )
    vllm_enable_thinking: bool = Field(False, description="Chat template enable_thinking (Qwen3-style).")
    vllm_reasoning_parser: str | None = Field(None, description="Reasoning parser name recorded in versions.")
    vllm_quantization: str | None = Field(
        None, description="vLLM quantization (awq, gptq, fp8); unset = auto."
    )
    vllm_dtype: str = Field("auto", description="vLLM dtype: auto | float16 | bfloat16.")
    vllm_enforce_eager: bool = Field(False, description="Skip CUDA graph capture (faster start, slower run).")

    # --- kubernetes operator and runner Jobs (issue 4); dicts/lists are JSON in the env --------
    operator_runner_image: str = Field(
        "ghcr.io/maie/maie-runner-gpu:1.0.0",
        description="Runner Job image (maie-runner-gpu for GPU Jobs, maie-runner for OPERATOR_GPU_COUNT=0).",
    )
    operator_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Runner image pull policy."
    )
    operator_image_pull_secrets: list[str] = Field(default_factory=list, description="Pull secret names.")
    operator_service_account: str = Field(
        "maie-runner",
        description="Runner Jobs' service account (no token is mounted: for cloud IAM bindings only).",
    )
    operator_gpu_count: int = Field(1, ge=0, le=8, description="GPUs per runner Job; 0 = CPU cluster.")
    operator_gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    operator_node_selector: dict[str, str] = Field(default_factory=dict, description="Runner nodeSelector.")
    operator_tolerations: list[dict[str, object]] = Field(
        default_factory=list, description="Runner tolerations (Kubernetes shape)."
    )
    operator_runtime_class: str | None = Field(None, description="Runner runtimeClassName, e.g. nvidia.")
    operator_priority_class: str | None = Field(None, description="Runner priorityClassName.")
    operator_resources: dict[str, dict[str, str | int]] = Field(
        default_factory=dict, description="Runner container requests/limits; the GPU limit is added."
    )
    operator_ttl_seconds_after_finished: int = Field(
        3600, ge=0, description="Finished Jobs are removed after this (status is copied first)."
    )
    operator_pending_timeout: int = Field(
        21600,
        ge=0,
        description="Seconds a runner Job may spend waiting to be scheduled (a GPU node) on top of its "
        "runs; each run is limited by JOB_TIMEOUT from its pod's start.",
    )
    operator_image_pull_grace: int = Field(
        300, ge=0, description="Seconds an image pull may keep failing before the task fails."
    )
    operator_runner_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces provisioned for runner Jobs (their S3 Secret and ConfigMap); empty = the "
        "watched namespaces. A Transcription elsewhere is refused at once.",
    )
    operator_namespace: str = Field(
        "default", description="Namespace of the operator itself (its leader-election Lease)."
    )
    operator_health_port: int = Field(
        8080, ge=1, le=65535, description="Port of the operator's liveness endpoint (/healthz)."
    )
    operator_lease_seconds: int = Field(
        15, ge=2, description="Leader election: a leader that stops renewing is replaced after this."
    )
    operator_max_concurrent_jobs: int = Field(
        4, ge=1, le=1000, description="Runner Jobs at once; more resources wait in phase Queued."
    )
    operator_queue_retry_seconds: float = Field(
        10.0, gt=0, description="How often the queue is checked for free slots (besides Job events)."
    )
    operator_deletion_policy: Literal["Delete", "DeleteAudio", "Retain"] = Field(
        "Delete", description="What deleting a Transcription removes from S3 (its audio/ and results/)."
    )
    operator_s3_secret: str | None = Field(
        "maie-s3", description="Secret with S3_ACCESS_KEY / S3_SECRET_KEY for runner Jobs."
    )
    operator_runner_config_map: str | None = Field(
        "maie-runner", description="ConfigMap of runner settings (env), optional in the Job."
    )
    operator_models_pvc: str | None = Field(None, description="PVC with the models, mounted at MODELS_DIR.")
    operator_models_host_path: str | None = Field(None, description="hostPath with the models (no PVC).")
    operator_runner_models_dir: str = Field("/models", description="MODELS_DIR inside runner Jobs.")
    runner_status_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between the runner's progress writes (step changes are written at once).",
    )
    runner_startup_check: bool = Field(
        False,
        description="Run `maie doctor`'s checks before each task in a runner Job (the runner images set "
        "it): a machine that cannot do the work fails the task at once, naming each problem.",
    )
    operator_metrics_port: int = Field(
        9090, ge=0, le=65535, description="Port of the operator's Prometheus /metrics; 0 = off."
    )
    operator_gc_interval: float = Field(
        300.0, gt=0, description="How often finished API tasks are checked against RESULT_TTL (then deleted)."
    )
    operator_allowed_job_overrides: list[JobOverrideName] = Field(
        default_factory=list,
        description="spec.job fields (camelCase) a Transcription may set freely, plus queueName (its "
        "kueue.x-k8s.io/queue-name label). Others are refused, except gpuCount, activeDeadlineSeconds, "
        "backoffLimit and ttlSecondsAfterFinished at or below the operator's own values. Empty = no "
        "per-resource scheduling overrides.",
    )
    operator_kueue_queue_name: str | None = Field(
        None,
        description="Kueue LocalQueue of runner Jobs: set as label kueue.x-k8s.io/queue-name and the Job "
        "is created suspended (Kueue admits it). Unset = no Kueue.",
    )

    @field_validator("asr_language", mode="before")
    @classmethod
    def _auto_language(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "auto", "none"}:
            return None
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.cache_dir is None:
            self.cache_dir = self.data_dir / "cache"
        return self

    # --- helpers ------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: read the environment once)."""
    return Settings()
