"""LLM backends behind one registry: a name → the class that implements LlmBackend.

Each class is constructed as `Backend(settings, model=..., base_url=...)` and imported only when
created, so vLLM or openai are needed only when chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from maie.errors import BackendUnavailableError

if TYPE_CHECKING:
    from maie.runner.llm.base import LlmBackend
    from maie.settings import Settings

# Implementations under the names maie.settings declares (LLM_BACKEND_NAMES; a test checks both agree).
LLM_BACKENDS: dict[str, str] = {
    "llama_cpp": "maie.runner.llm.llama_cpp:LlamaCppBackend",
    "openai": "maie.runner.llm.openai_compat:OpenAICompatBackend",
    "vllm": "maie.runner.llm.vllm_backend:VllmBackend",
}


def create_llm_backend(
    name: str, settings: Settings, *, model: str | None, base_url: str | None = None
) -> LlmBackend:
    if name not in LLM_BACKENDS:
        raise BackendUnavailableError(f"unknown LLM backend '{name}' (known: {', '.join(LLM_BACKENDS)})")
    module_name, _, class_name = LLM_BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"LLM backend '{name}' is not installed here: {exc}") from exc
    backend: LlmBackend = getattr(module, class_name)(settings, model=model, base_url=base_url)
    return backend
