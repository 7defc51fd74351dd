"""What every LLM backend provides: chat completion, optionally constrained to a JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from maie.contract import LlmVersion


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Resolved generation settings (runtime > env > generation_config.json > library default).

    None means the backend's own library default; the resolved values are what versions record.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    repetition_penalty: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class LlmBackend(Protocol):
    """One LLM for one stage. load() → complete()… → unload() in finally."""

    name: str
    context_tokens: int  # prompt + completion budget

    def load(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        """The completion text. With json_schema, decoding is constrained to it where possible."""
        ...

    def version(
        self, task: str, params: GenerationParams, structured: dict[str, Any] | None
    ) -> LlmVersion: ...

    def unload(self) -> None: ...
