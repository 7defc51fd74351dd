"""The openai backend against a real OpenAI-compatible server (llama-cpp-python's own, serving the
bundled SmolLM2 GGUF on 127.0.0.1), plus a tiny real HTTP server that fails on purpose."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import pytest
from backend_support import chat_answer, free_port

from maie.errors import LlmError
from maie.runner.llm import create_llm_backend
from maie.runner.llm.base import ChatMessage, GenerationParams
from maie.runner.llm.json_output import loads
from maie.runner.llm.openai_compat import OpenAICompatBackend
from maie.settings import Settings

TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
# Bounded everywhere (maxLength, maxItems): an unbounded string let the model write until max_tokens
# cut it mid-string on some builds, so schema validity held for one build's tokens only. Bounded,
# the grammar closes every string in time on any build.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 60},
        "key_points": {
            "type": "array",
            "items": {"type": "string", "minLength": 3, "maxLength": 80},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["title", "key_points"],
    "additionalProperties": False,
}
PARAMS = GenerationParams(temperature=0.0, max_tokens=300, repetition_penalty=1.3)


def _messages() -> list[ChatMessage]:
    return [
        ChatMessage("system", "You summarise transcripts as JSON with a title and key points."),
        ChatMessage("user", f"Transcript:\n{TRANSCRIPT}\n\nReturn the JSON summary."),
    ]


def test_needs_a_server_url(settings: Settings) -> None:
    with pytest.raises(LlmError, match="OPENAI_BASE_URL"):
        create_llm_backend("openai", settings, model=None)


def test_schema_valid_summary_through_real_llama_cpp_server(settings: Settings, llama_server: str) -> None:
    backend = create_llm_backend("openai", settings, model=None, base_url=llama_server)
    assert isinstance(backend, OpenAICompatBackend)
    backend.load()
    try:
        assert backend.model_name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # picked from /v1/models
        text = backend.complete(_messages(), PARAMS, json_schema=SCHEMA)
        # The grammar admits raw control characters inside strings (a server on an AMX machine
        # wrote one): parse what JSON allows leniently, and assert only what any valid answer has.
        summary = loads(text)
        jsonschema.validate(summary, SCHEMA)
        # llama-cpp-python's server rejects `json_schema` (422) and takes `json_object` + schema:
        # the backend fell back and remembers it, and versions say so.
        assert backend.response_format == "json_object"
        version = backend.version("summarization", PARAMS, {"schema_id": "test"})
        assert version.structured_output == {"schema_id": "test", "response_format": "json_object"}
        assert version.backend == "openai"
        assert version.task == "summarization"
        assert version.decoding_params["temperature"] == 0.0
        assert version.model_extra is not None and version.model_extra["server_url"] == llama_server

        # Plain chat (no schema) also works, and the server's tokenizer counts tokens.
        plain = backend.complete([ChatMessage("user", "Say hello.")], GenerationParams(max_tokens=8))
        assert isinstance(plain, str) and plain
        short, long = backend.count_tokens("hello"), backend.count_tokens(TRANSCRIPT)
        assert backend._tokenize_route == "llama_cpp"
        assert 1 <= short < long < len(TRANSCRIPT)
    finally:
        backend.unload()


def test_control_characters_inside_strings_are_parsed(settings: Settings, scripted_server: Any) -> None:
    """The answer a llama.cpp server gave on another CPU: a raw newline and tab inside a string
    (JSONDecodeError "Invalid control character" for strict parsing)."""
    raw = '{"title": "Budget\tplan", "key_points": ["prices rise\nin May"]}'
    server = scripted_server([(200, chat_answer(raw))])
    backend = OpenAICompatBackend(settings, model="scripted", base_url=server.base_url)
    backend.load()
    text = backend.complete(_messages(), PARAMS, json_schema=SCHEMA)
    with pytest.raises(json.JSONDecodeError, match="control character"):
        json.loads(text)
    summary = loads(text)
    jsonschema.validate(summary, SCHEMA)
    assert summary["key_points"] == ["prices rise\nin May"]


def test_grounded_summary_through_real_llama_cpp_server(settings: Settings, llama_server: str) -> None:
    """The summary stage through the openai backend: the same grammar-constrained choices work
    over HTTP (llama-cpp-python's server takes json_object + schema with enums and patterns)."""
    from maie.runner.enhance import prompt_environment
    from maie.runner.summarize import Summarizer
    from maie.templates import TemplateCatalog

    templates = TemplateCatalog(settings.templates_dir)
    schema = templates.schema("meeting_notes_v1")
    backend = create_llm_backend("openai", settings, model=None, base_url=llama_server)
    backend.load()
    try:
        env = prompt_environment(str(settings.templates_dir / "prompts"))
        outcome = Summarizer(backend, PARAMS, env, 1).run(TRANSCRIPT, "meeting_notes_v1", schema)
    finally:
        backend.unload()
    jsonschema.validate(outcome.summary, schema)
    assert outcome.summary["key_points"] == [TRANSCRIPT]  # the one sentence there is
    assert outcome.calls >= 1 and "?" not in outcome.summary["title"]


def test_token_count_matches_the_model_tokenizer(settings: Settings, llama_server: str) -> None:
    from llama_cpp import Llama

    from maie.model_paths import resolve_gguf

    backend = OpenAICompatBackend(settings, model=None, base_url=llama_server)
    backend.load()
    vocab = Llama(model_path=str(resolve_gguf(None, settings)), vocab_only=True, verbose=False)
    try:
        expected = len(vocab.tokenize(TRANSCRIPT.encode(), special=True))
        assert backend.count_tokens(TRANSCRIPT) == expected
    finally:
        backend.unload()
        vocab.close()


def test_unknown_model_names_what_the_server_serves(settings: Settings, llama_server: str) -> None:
    backend = OpenAICompatBackend(settings, model="no-such-model", base_url=llama_server)
    with pytest.raises(LlmError, match=r"does not serve 'no-such-model' \(it serves: .*SmolLM2"):
        backend.load()


def test_retries_transient_errors(settings: Settings, scripted_server: Any) -> None:
    server = scripted_server(
        [
            (503, {"error": {"message": "loading model"}}),
            (502, {"error": {"message": "bad gateway"}}),
            (200, chat_answer('{"title": "ok", "key_points": ["a b c"]}')),
        ]
    )
    cfg = settings.model_copy(update={"openai_max_retries": 3, "openai_response_format": "none"})
    backend = OpenAICompatBackend(cfg, model=None, base_url=server.base_url)
    backend.load()
    assert backend.model_name == "scripted"
    text = backend.complete(
        _messages(), GenerationParams(top_k=20, repetition_penalty=1.1), json_schema=SCHEMA
    )
    assert json.loads(text)["title"] == "ok"
    assert len(server.chat_requests) == 3
    # Non-OpenAI sampling fields travel in the body for vLLM / llama.cpp.
    assert server.chat_requests[-1]["top_k"] == 20
    assert server.chat_requests[-1]["repetition_penalty"] == 1.1


def test_gives_up_after_max_retries(settings: Settings, scripted_server: Any) -> None:
    server = scripted_server([(503, {"error": {"message": "overloaded"}})] * 5)
    cfg = settings.model_copy(update={"openai_max_retries": 2})
    backend = OpenAICompatBackend(cfg, model="scripted", base_url=server.base_url)
    backend.load()
    with pytest.raises(LlmError, match=r"after 3 attempts: HTTP 503"):
        backend.complete(_messages(), PARAMS)
    assert len(server.chat_requests) == 3


def test_client_errors_are_not_retried(settings: Settings, scripted_server: Any) -> None:
    server = scripted_server([(401, {"error": {"message": "bad key"}})] * 3)
    backend = OpenAICompatBackend(settings, model="scripted", base_url=server.base_url)
    backend.load()
    with pytest.raises(LlmError, match=r"refused to complete a chat: HTTP 401"):
        backend.complete(_messages(), PARAMS)
    assert len(server.chat_requests) == 1


def test_falls_back_when_json_schema_is_rejected(settings: Settings, scripted_server: Any) -> None:
    server = scripted_server(
        [
            (400, {"error": {"message": "response_format.type json_schema is not supported"}}),
            (200, chat_answer('{"title": "ok", "key_points": ["x y z"]}')),
        ]
    )
    backend = OpenAICompatBackend(settings, model="scripted", base_url=server.base_url)
    backend.load()
    backend.complete(_messages(), PARAMS, json_schema=SCHEMA)
    formats = [r["response_format"]["type"] for r in server.chat_requests]
    assert formats == ["json_schema", "json_object"]
    assert server.chat_requests[1]["response_format"]["schema"] == SCHEMA
    assert backend.response_format == "json_object"


def test_unreachable_server_is_a_clear_error(settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cfg = settings.model_copy(update={"openai_max_retries": 1, "openai_timeout": 5.0})
    backend = OpenAICompatBackend(cfg, model=None, base_url=url)
    started = time.monotonic()
    with pytest.raises(LlmError) as err:
        backend.load()
    assert url in err.value.message
    assert "after 2 attempts" in err.value.message
    assert "Connection" in err.value.message
    assert time.monotonic() - started < 10
