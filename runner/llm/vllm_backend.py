"""In-process vLLM backend: a Hugging Face model directory on the GPU, JSON-Schema-guided decoding.

The production default in the cluster when no shared LLM server is deployed. vLLM claims
`gpu_memory_utilization` of the card at load, so unload() must really give it back before the next
stage (or the next task's ASR) loads: it tears down the engine and the distributed state, empties
the CUDA cache and measures what was returned (`last_unload`), so a leak shows up in logs and tests.

vLLM is an optional extra (`pip install '.[vllm]'`, CUDA only): imported in load(), never at import.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, ClassVar

from maie.contract import LlmVersion
from maie.errors import BackendUnavailableError, LlmError
from maie.model_paths import checkpoint_hash, resolve_model_dir
from maie.runner.llm.base import ChatMessage, GenerationParams
from maie.settings import Settings

logger = logging.getLogger(__name__)

# vLLM's SamplingParams defaults (recorded when no level above sets a value). max_tokens is left out
# on purpose: vLLM's own default (16) would cut every summary, so the stages always set it.
LIBRARY_DEFAULTS: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
DEFAULT_MAX_TOKENS = 2048


def gpu_memory() -> tuple[int, int] | None:
    """(free, total) bytes on the current CUDA device, or None without torch/CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return int(free), int(total)
    except Exception:
        return None


def quantization_of(model_dir: Path) -> str | None:
    """The quantization method named in config.json (awq, gptq, fp8 …), if any."""
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    quant = data.get("quantization_config") or {}
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method) if method else None


class VllmBackend:
    """One vLLM engine for one stage: load() → complete()… → unload() in finally."""

    name = "vllm"
    library_defaults: ClassVar[dict[str, Any]] = LIBRARY_DEFAULTS

    def __init__(self, settings: Settings, *, model: str | None, base_url: str | None = None) -> None:
        if not model:
            raise LlmError(
                "the vllm backend needs a model directory: set LLM_SUMMARY_MODEL / LLM_ENHANCEMENT_MODEL "
                "or --llm-model (a Hugging Face model under MODELS_DIR/llm/)"
            )
        self.settings = settings
        self.model_name = model
        self.model_path = resolve_model_dir(model, settings, "llm")
        self.context_tokens = settings.llm_max_model_len
        self.thinking = settings.vllm_enable_thinking
        self._llm: Any = None
        self._tokenizer: Any = None
        self.gpu_free_before_load: int | None = None
        self.last_unload: dict[str, Any] | None = None

    @property
    def generation_config_path(self) -> Path | None:
        """The model author's recommendations, read by the generation hierarchy."""
        path = self.model_path / "generation_config.json"
        return path if path.is_file() else None

    # --- lifecycle ------------------------------------------------------------------------
    def load(self) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendUnavailableError(
                f"vLLM is not installed ({exc}); pip install '.[vllm]' on a machine with a CUDA GPU"
            ) from exc
        memory = gpu_memory()
        if memory is None:
            raise BackendUnavailableError("the vllm backend needs a CUDA GPU and none is visible")
        self.gpu_free_before_load = memory[0]
        try:
            self._llm = LLM(
                model=str(self.model_path),
                tokenizer=str(self.model_path),
                gpu_memory_utilization=self.settings.llm_gpu_memory_utilization,
                max_model_len=self.settings.llm_max_model_len,
                quantization=self.settings.vllm_quantization,
                dtype=self.settings.vllm_dtype,
                enforce_eager=self.settings.vllm_enforce_eager,
                seed=0,
                trust_remote_code=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LlmError(f"vLLM could not load {self.model_path}: {exc}") from exc
        self._tokenizer = self._llm.get_tokenizer()

    def unload(self) -> None:
        """Tear the engine down and measure how much GPU memory came back."""
        if self._llm is None:
            return
        llm, self._llm, self._tokenizer = self._llm, None, None
        with contextlib.suppress(Exception):
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        del llm
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()
            torch.cuda.synchronize()
        after = gpu_memory()
        if after is not None and self.gpu_free_before_load is not None:
            missing = self.gpu_free_before_load - after[0]
            self.last_unload = {
                "free_before_load_bytes": self.gpu_free_before_load,
                "free_after_unload_bytes": after[0],
                "not_returned_bytes": max(0, missing),
            }
            level = logging.WARNING if missing > 512 * 1024 * 1024 else logging.INFO
            logger.log(level, "vLLM unload: %.2f GiB not returned to the GPU", missing / 2**30)

    # --- generation -----------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            raise LlmError("the vllm backend was not loaded (call load() first)")
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def sampling_params(self, params: GenerationParams, json_schema: dict[str, Any] | None) -> Any:
        """vLLM SamplingParams with structured outputs (v0.12+) or guided decoding (older)."""
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            k: v
            for k, v in {
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k,
                "repetition_penalty": params.repetition_penalty,
            }.items()
            if v is not None
        }
        if kwargs.get("top_k") == 0:
            kwargs["top_k"] = -1 if _vllm_major_minor() < (0, 10) else 0  # "off" changed spelling
        kwargs["max_tokens"] = params.max_tokens or DEFAULT_MAX_TOKENS
        kwargs["seed"] = 0
        if json_schema is not None:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(json=json_schema)
            except ImportError:  # vLLM < 0.12
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(json=json_schema)
        return SamplingParams(**kwargs)

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        if self._llm is None:
            raise LlmError("the vllm backend was not loaded (call load() first)")
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        try:
            outputs = self._llm.chat(
                conversation,
                self.sampling_params(params, json_schema),
                use_tqdm=False,
                chat_template_kwargs={"enable_thinking": self.thinking},
            )
        except (ValueError, RuntimeError) as exc:
            raise LlmError(f"vLLM generation failed: {exc}") from exc
        text = str(outputs[0].outputs[0].text)
        if self.thinking and "</think>" in text:
            text = text.split("</think>", 1)[1]  # the answer follows the reasoning
        return text.strip()

    # --- versions -------------------------------------------------------------------------
    def chat_template_id(self) -> str | None:
        """sha256 of the tokenizer's chat template, so a changed template is visible in versions."""
        template = getattr(self._tokenizer, "chat_template", None)
        if not template:
            return None
        return f"tokenizer.chat_template sha256:{hashlib.sha256(str(template).encode()).hexdigest()[:16]}"

    def version(self, task: str, params: GenerationParams, structured: dict[str, Any] | None) -> LlmVersion:
        try:
            library = f"vllm {package_version('vllm')}"
        except PackageNotFoundError:
            library = None
        decoding = {**params.as_dict(), "max_model_len": self.context_tokens, "seed": 0}
        decoding.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        return LlmVersion(
            name=self.model_name,
            backend=self.name,
            model_path=str(self.model_path),
            checkpoint_hash=checkpoint_hash(self.model_path, self.settings),
            quantization=self.settings.vllm_quantization or quantization_of(self.model_path),
            task=task,  # type: ignore[arg-type]
            chat_template=self.chat_template_id(),
            thinking=self.thinking,
            reasoning_parser=self.settings.vllm_reasoning_parser,
            decoding_params=decoding,
            structured_output=structured,
            library_version=library,
            gpu_memory_utilization=self.settings.llm_gpu_memory_utilization,
        )


def _vllm_major_minor() -> tuple[int, int]:
    try:
        parts = package_version("vllm").split(".")
        return int(parts[0]), int(parts[1])
    except (PackageNotFoundError, ValueError, IndexError):
        return (0, 0)
