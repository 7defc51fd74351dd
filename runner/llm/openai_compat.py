"""OpenAI-compatible LLM backend: a vLLM server, llama.cpp's server, Ollama or a hosted API.

Why a server: in the cluster a shared vLLM server keeps the model warm, so a runner Job does not pay
the LLM's start-up (tens of seconds) per task. Transient failures (connection refused/reset,
timeouts, 408/409/429/5xx) are retried with exponential backoff (tenacity); anything else fails at once
with an LlmError that names the server.

Structured output: `response_format` `json_schema` (vLLM, OpenAI, recent llama.cpp), falling back to
`json_object` + `schema` (llama-cpp-python's server, vLLM's JSON mode) and then to plain text when the
server rejects the request shape; the summary stage validates with jsonschema and retries in every
case. The mode actually used is recorded in versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from importlib.metadata import version as package_version
from typing import Any, ClassVar

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from maie.contract import LlmVersion
from maie.errors import LlmError
from maie.runner.llm.base import ChatMessage, GenerationParams
from maie.settings import Settings

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# The order in which structured-output request shapes are tried.
RESPONSE_FORMATS = ("json_schema", "json_object", "none")
# Used when neither the settings nor the server say how long the context is.
DEFAULT_CONTEXT_TOKENS = 8192
# Characters per token when the server cannot tokenize for us (conservative for English/Vietnamese).
CHARS_PER_TOKEN = 3.0


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the server was unreachable, slow, overloaded or restarting."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS
    return isinstance(exc, httpx.TransportError)


def _rejects_format(exc: BaseException) -> bool:
    """The server does not know this response_format: a 400/422, or the 500 that llama-cpp-python's
    server answers for a request-validation error, naming response_format."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422, 500):
        return False
    text = str(exc).lower()
    return "response_format" in text or "json_schema" in text


class OpenAICompatBackend:
    """Chat completions against one server and model; load() checks the server and picks the model."""

    name = "openai"
    # The server's own defaults apply when nothing is sent; it reads generation_config.json itself.
    library_defaults: ClassVar[dict[str, Any]] = {}
    generation_config_path = None

    def __init__(self, settings: Settings, *, model: str | None, base_url: str | None = None) -> None:
        self.settings = settings
        self.base_url = (base_url or settings.openai_base_url or "").rstrip("/")
        if not self.base_url:
            raise LlmError("the openai LLM backend needs a server: set OPENAI_BASE_URL or --llm-base-url")
        self.requested_model = model
        self.model_name: str = model or ""
        self.context_tokens = settings.openai_context_tokens or DEFAULT_CONTEXT_TOKENS
        self.response_format: str = settings.openai_response_format
        self._client: Any = None
        self._tokenize_route: str | None = None  # "vllm" | "llama_cpp" | "estimate"
        self._server_info: dict[str, Any] = {}

    # --- lifecycle ------------------------------------------------------------------------
    def _api_key(self) -> str:
        key = self.settings.openai_api_key
        # Local servers accept any key; the client refuses to start without one.
        return key.get_secret_value() if key is not None else "EMPTY"

    def load(self) -> None:
        import openai

        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key(),
            timeout=self.settings.openai_timeout,
            max_retries=0,  # retries are ours (tenacity), so they are counted and logged in one place
        )
        models = self._call("list models", lambda: self._client.models.list())
        entries = list(getattr(models, "data", []) or [])
        ids = [str(m.id) for m in entries]
        if not self.model_name:
            if not ids:
                raise LlmError(f"the server at {self.base_url} serves no models")
            self.model_name = ids[0]
        elif ids and self.model_name not in ids:
            raise LlmError(
                f"the server at {self.base_url} does not serve '{self.model_name}' "
                f"(it serves: {', '.join(ids)})"
            )
        for entry in entries:
            if str(entry.id) == self.model_name:
                self._server_info = entry.model_dump() if hasattr(entry, "model_dump") else {}
        # vLLM reports its context window; others do not.
        max_len = self._server_info.get("max_model_len")
        if self.settings.openai_context_tokens is None and isinstance(max_len, int) and max_len > 0:
            self.context_tokens = max_len
        logger.info(
            "openai backend: %s at %s (context %d)", self.model_name, self.base_url, self.context_tokens
        )

    def unload(self) -> None:
        """Nothing lives in this process but the HTTP connection pool."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    # --- calls ----------------------------------------------------------------------------
    def _call(self, what: str, fn: Any) -> Any:
        """Run one request with retries on transient errors; LlmError names the server otherwise."""
        import openai

        attempts = self.settings.openai_max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, min=0.25, max=8),
            retry=retry_if_exception(is_transient),
            reraise=False,
            before_sleep=lambda state: logger.warning(
                "openai backend: %s failed (%s), retry %d of %d",
                what,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
                attempts - 1,
            ),
        )
        try:
            return retrying(fn)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise LlmError(
                f"the LLM server at {self.base_url} failed to {what} after {attempts} attempts: "
                f"{_describe(last)}"
            ) from last
        except openai.APIConnectionError as exc:  # only when retries are off
            raise LlmError(f"the LLM server at {self.base_url} is unreachable: {_describe(exc)}") from exc
        except openai.APIStatusError as exc:
            raise LlmError(f"the LLM server at {self.base_url} refused to {what}: {_describe(exc)}") from exc

    def count_tokens(self, text: str) -> int:
        """The server's tokenizer where it has a route for it (vLLM, llama.cpp), else an estimate."""
        if self._tokenize_route is None:
            self._tokenize_route = self._probe_tokenize()
        if self._tokenize_route == "estimate":
            return int(len(text) / CHARS_PER_TOKEN) + 1
        count = self._tokenize(self._tokenize_route, text)
        return count if count is not None else int(len(text) / CHARS_PER_TOKEN) + 1

    def _server_root(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _tokenize(self, route: str, text: str) -> int | None:
        root = self._server_root()
        headers = {"Authorization": f"Bearer {self._api_key()}"}
        try:
            if route == "vllm":
                r = httpx.post(
                    f"{root}/tokenize",
                    json={"model": self.model_name, "prompt": text, "add_special_tokens": False},
                    headers=headers,
                    timeout=self.settings.openai_timeout,
                )
                r.raise_for_status()
                return int(r.json()["count"])
            r = httpx.post(
                f"{root}/extras/tokenize/count",
                json={"input": text, "model": self.model_name},
                headers=headers,
                timeout=self.settings.openai_timeout,
            )
            r.raise_for_status()
            return int(r.json()["count"])
        except (httpx.HTTPError, KeyError, ValueError, TypeError):
            return None

    def _probe_tokenize(self) -> str:
        for route in ("vllm", "llama_cpp"):
            if self._tokenize(route, "probe") is not None:
                return route
        logger.info("openai backend: %s has no tokenize route; estimating tokens", self.base_url)
        return "estimate"

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        if self._client is None:
            raise LlmError("the openai backend was not loaded (call load() first)")
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        extra: dict[str, Any] = {}
        if params.top_k is not None:
            extra["top_k"] = params.top_k
        if params.repetition_penalty is not None:
            # vLLM's name, and llama.cpp's for the same thing.
            extra["repetition_penalty"] = params.repetition_penalty
            extra["repeat_penalty"] = params.repetition_penalty
        if extra:
            kwargs["extra_body"] = extra

        if json_schema is None:
            return self._chat(kwargs)
        start = RESPONSE_FORMATS.index(self.response_format)
        for mode in RESPONSE_FORMATS[start:]:
            attempt = dict(kwargs)
            if mode == "json_schema":
                attempt["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "maie_output", "schema": json_schema, "strict": True},
                }
            elif mode == "json_object":
                attempt["response_format"] = {"type": "json_object", "schema": json_schema}
            try:
                text = self._chat(attempt, fallback_ok=mode != "none")
            except _FormatRejected:
                logger.info(
                    "openai backend: %s rejects response_format %s; trying the next", self.base_url, mode
                )
                continue
            self.response_format = mode  # remember for the next calls and for versions
            return text
        raise LlmError(f"the LLM server at {self.base_url} rejected every request shape")  # pragma: no cover

    def _chat(self, kwargs: dict[str, Any], fallback_ok: bool = False) -> str:
        import openai

        def call() -> Any:
            try:
                return self._client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                if fallback_ok and _rejects_format(exc):
                    raise _FormatRejected(str(exc)) from exc
                raise

        response = self._call("complete a chat", call)
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LlmError(f"the LLM server at {self.base_url} returned no choices")
        message = choices[0].message
        content = message.content or ""
        if not content and getattr(message, "reasoning_content", None):
            raise LlmError("the model spent its whole token budget reasoning (no answer): raise max_tokens")
        return str(content)

    # --- versions -------------------------------------------------------------------------
    def version(self, task: str, params: GenerationParams, structured: dict[str, Any] | None) -> LlmVersion:
        served = self._server_info.get("root") or self._server_info.get("id") or self.model_name
        structured_output = None
        if structured is not None:
            structured_output = {**structured, "response_format": self.response_format}
        return LlmVersion(
            name=self.model_name,
            backend=self.name,
            model_path=str(served),
            # The weights live on the server; this identifies the serving endpoint and model id.
            checkpoint_hash=None,
            quantization=None,
            task=task,  # type: ignore[arg-type]
            chat_template="server",
            thinking=False,
            reasoning_parser=None,
            decoding_params={**params.as_dict(), "context_tokens": self.context_tokens},
            structured_output=structured_output,
            library_version=f"openai {package_version('openai')}",
            server_url=self.base_url,
            server_model_id=hashlib.sha256(f"{self.base_url}|{self.model_name}".encode()).hexdigest()[:16],
        )


class _FormatRejected(Exception):
    """The server answered 400/422 to this response_format (not retried; the next shape is tried)."""


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"
