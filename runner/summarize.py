"""Stage 3b — a structured summary that validates against the template's JSON Schema.

Decoding is constrained to the schema where the backend can; every answer is still parsed,
tidied (repeated sentences and list items dropped), validated with jsonschema and checked for
content (no wordless, placeholder or JSON-fragment text; words that come from the transcript),
then retried (settings.llm_summary_max_retries) with a clear error at the end. Transcripts longer
than the model's context are summarised in chunks (map) whose notes are merged (reduce), never
truncated.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment
from jsonschema import Draft202012Validator

from maie.errors import SummaryError
from maie.runner.llm.base import ChatMessage, GenerationParams, LlmBackend

# Tokens kept free for the chat template's own wrapping around messages.
_CHAT_OVERHEAD_TOKENS = 64
# A 135M-class model writes better notes from a few thousand tokens than from its full context.
_MAX_CHUNK_TOKENS = 3072
_RETRY_TEMPERATURE_STEP = 0.3

_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_STOPWORDS = frozenset(
    [
        "that",
        "this",
        "with",
        "from",
        "have",
        "were",
        "they",
        "their",
        "there",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "would",
        "about",
        "after",
        "also",
        "been",
        "being",
        "could",
        "into",
        "more",
        "most",
        "some",
        "such",
        "than",
        "then",
        "them",
        "these",
        "those",
        "very",
        "your",
        "just",
        "like",
        "well",
        "really",
        "think",
        "know",
        "going",
        "yeah",
        "okay",
        "said",
        "says",
    ]
)
# JSON leaking into prose ({"key": …) or template placeholders (<Title of the article>).
# Braces alone are fine: transcripts carry annotations such as {vocalsound}.
_JSONISH = re.compile(r'\{\s*"|"\s*:|<[^<>]{1,60}>')


@dataclass
class SummaryRun:
    summary: dict[str, Any]
    answer_tokens: int
    chunks: int = 1
    calls: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)


def top_words(text: str, n: int = 12) -> list[str]:
    """The transcript's most frequent content words."""
    counts = Counter(w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOPWORDS)
    return [w for w, _ in counts.most_common(n)]


def _with_hint(messages: list[ChatMessage], problems: list[str], source: str) -> list[ChatMessage]:
    """Offer the text's key words (extractive help: small models drift to generic prose without
    it) and, on a retry, say what was wrong with the previous answer."""
    hint = ""
    if problems:
        hint = "Your previous answer was not usable: " + "; ".join(problems[:2]) + ". "
    words = top_words(source)
    if words:
        hint += "Write about the text above and use its words, such as: " + ", ".join(words) + "."
    if not hint:
        return messages
    last = messages[-1]
    return [*messages[:-1], ChatMessage(last.role, f"{last.content}\n\n{hint}")]


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOPWORDS}


def _strings(value: Any, path: str = "$") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []


def tidy(value: Any, seen: list[Any] | None = None) -> Any:
    """Trim whitespace and drop list items already given (in this list or an earlier one):
    repeating one sentence under every heading is a small model's commonest slip."""
    seen = [] if seen is None else seen
    if isinstance(value, str):
        sentences = re.split(r"(?<=[.!?])\s+", " ".join(value.split()))
        return " ".join(dict.fromkeys(s for s in sentences if s))  # a sentence said twice, once
    if isinstance(value, dict):
        return {k: tidy(v, seen) for k, v in value.items()}
    if isinstance(value, list):
        kept: list[Any] = []
        for item in (tidy(v, seen) for v in value):
            key = item.lower() if isinstance(item, str) else item
            wordless = isinstance(item, str) and not re.search(r"[^\W\d_]{2,}", item)
            if key not in seen and item not in ("", {}, []) and not wordless:
                seen.append(key)
                kept.append(item)
        return kept
    return value


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema for constrained decoding: without maxLength.

    llama.cpp turns maxLength N into N optional character rules, which makes sampling 10-15×
    slower (measured here: 45 s vs 3.2 s for the same answer). Lengths are enforced after decoding
    instead (fit_lengths), and maxItems still bounds the answer's size in the grammar.
    """
    if isinstance(schema, dict):
        return {k: grammar_schema(v) for k, v in schema.items() if k != "maxLength"}
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    return schema


def fit_lengths(value: Any, schema: dict[str, Any]) -> Any:
    """Shorten strings over the schema's maxLength at a sentence end (or word) within the limit."""
    if isinstance(value, str):
        limit = schema.get("maxLength")
        if limit is None or len(value) <= limit:
            return value
        head = value[:limit]
        end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
        cut = head[: end + 1] if end >= limit // 2 else head.rsplit(" ", 1)[0].rstrip(",;:- ")
        return cut or head
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: fit_lengths(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [fit_lengths(v, schema.get("items", {})) for v in value]
    return value


def content_problems(summary: dict[str, Any], source_words: set[str]) -> list[str]:
    """Reasons a schema-valid answer is still not a summary of this transcript."""
    problems: list[str] = []
    strings = _strings(summary)
    for path, text in strings:
        if text and not _WORD.search(text) and not re.search(r"[^\W\d_]{2,}", text):
            problems.append(f"{path} has no words")
        elif _JSONISH.search(text):
            problems.append(f"{path} contains placeholder or JSON fragments")
    written = content_words(" ".join(t for _, t in strings))
    if written and not written & source_words:
        problems.append("the summary shares no words with the transcript")
    return problems


def estimate_output_tokens(schema: dict[str, Any]) -> int:
    """An upper bound on the answer's tokens from the schema's own bounds (maxLength, maxItems)."""
    kind = schema.get("type")
    if kind == "string":
        return int(schema.get("maxLength", 400)) // 3 + 4
    if kind == "array":
        return int(schema.get("maxItems", 8)) * (estimate_output_tokens(schema.get("items", {})) + 2) + 4
    if kind == "object":
        props = schema.get("properties", {})
        return sum(estimate_output_tokens(p) + len(k) // 3 + 4 for k, p in props.items()) + 4
    return 8


def split_by_tokens(text: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """Consecutive chunks of at most `limit` tokens, cut between sentences (or words)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    units: list[str] = []
    for sentence in sentences:
        if count(sentence) <= limit:
            units.append(sentence)
            continue
        words = sentence.split()
        step = max(1, int(len(words) * limit / max(count(sentence), 1) * 0.9))
        units.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for unit in units:
        size = count(unit) + 1
        if current and used + size > limit:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(unit)
        used += size
    if current:
        chunks.append(" ".join(current))
    return chunks


class Summarizer:
    """Runs the summary of one transcript with one loaded backend."""

    def __init__(
        self,
        backend: LlmBackend,
        params: GenerationParams,
        env: Environment,
        max_retries: int,
        chunk_tokens: int | None = None,
    ) -> None:
        self.backend = backend
        self.params = params
        self.env = env
        self.max_retries = max_retries
        self.chunk_tokens = chunk_tokens
        self.system = env.get_template("summary_system_v1.jinja").render().strip()
        self.calls = 0
        self.attempts: list[dict[str, Any]] = []

    def _budget(self, prompt_name: str, schema: dict[str, Any], **context: Any) -> tuple[int, int]:
        """(tokens left for the transcript, tokens reserved for the answer)."""
        empty = self.env.get_template(prompt_name).render(transcript="", schema=schema, **context)
        overhead = self.backend.count_tokens(self.system) + self.backend.count_tokens(empty)
        answer = self.params.max_tokens or estimate_output_tokens(schema)
        room = self.backend.context_tokens - overhead - answer - _CHAT_OVERHEAD_TOKENS
        if room < 256:
            raise SummaryError(
                f"the model's context ({self.backend.context_tokens} tokens) is too small for this "
                f"template's prompt and answer ({overhead + answer} tokens)"
            )
        return room, answer

    def run(
        self,
        transcript: str,
        template_id: str,
        schema: dict[str, Any],
        progress: Callable[[float], None] | None = None,
    ) -> SummaryRun:
        prompt = f"{template_id}.jinja"
        room, answer_tokens = self._budget(prompt, schema, partial=True)
        text, partial, chunks = transcript, False, 1
        if self.backend.count_tokens(transcript) > room:
            text, chunks = self._map(transcript, room, progress)
            partial = True
        messages = [
            ChatMessage("system", self.system),
            ChatMessage(
                "user",
                self.env.get_template(prompt).render(transcript=text, schema=schema, partial=partial),
            ),
        ]
        summary = self._generate_valid(messages, schema, answer_tokens, transcript, step="final")
        if progress:
            progress(1.0)
        return SummaryRun(
            summary=summary,
            answer_tokens=answer_tokens,
            chunks=chunks,
            calls=self.calls,
            attempts=self.attempts,
        )

    def _map(self, transcript: str, room: int, progress: Callable[[float], None] | None) -> tuple[str, int]:
        """Notes for each chunk, merged; repeated while the notes themselves are too long."""
        schema = json.loads(
            self.env.loader.get_source(self.env, "chunk_notes_v1.schema.json")[0]  # type: ignore[union-attr]
        )
        map_room, answer_tokens = self._budget("summary_map_v1.jinja", schema, index=1, total=1)
        limit = min(map_room, self.chunk_tokens or _MAX_CHUNK_TOKENS)
        text = transcript
        total_chunks = 0
        while True:
            chunks = split_by_tokens(text, limit, self.backend.count_tokens)
            total_chunks += len(chunks)
            points: list[str] = []
            for index, chunk in enumerate(chunks, start=1):
                rendered = self.env.get_template("summary_map_v1.jinja").render(
                    transcript=chunk, schema=schema, index=index, total=len(chunks)
                )
                messages = [ChatMessage("system", self.system), ChatMessage("user", rendered)]
                notes = self._generate_valid(
                    messages, schema, answer_tokens, chunk, step=f"map {index}/{len(chunks)}"
                )
                points.extend(notes["points"])
                if progress:
                    progress(0.9 * index / len(chunks))
            text = "\n".join(f"- {p}" for p in points)
            if self.backend.count_tokens(text) <= room or len(chunks) == 1:
                return text, total_chunks

    def _generate_valid(
        self,
        messages: list[ChatMessage],
        schema: dict[str, Any],
        answer_tokens: int,
        source: str,
        step: str,
    ) -> dict[str, Any]:
        validator = Draft202012Validator(schema)
        grammar = grammar_schema(schema)
        source_words = content_words(source)
        problems: list[str] = []
        base_temperature = self.params.temperature or 0.0
        for attempt in range(self.max_retries + 1):
            params = GenerationParams(
                **{
                    **self.params.__dict__,
                    "max_tokens": answer_tokens,
                    "temperature": base_temperature + _RETRY_TEMPERATURE_STEP * attempt,
                }
            )
            self.calls += 1
            prompt = _with_hint(messages, problems, source)
            raw = self.backend.complete(prompt, params, json_schema=grammar)
            problems = []
            value: Any = None
            try:
                # Raw newlines in strings are tidied; lengths are enforced here, not in the grammar.
                value = fit_lengths(tidy(json.loads(raw, strict=False)), schema)
            except json.JSONDecodeError as exc:
                problems.append(f"not valid JSON ({exc.msg} at character {exc.pos})")
            if not problems:
                errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
                problems.extend(f"{e.json_path}: {e.message}"[:200] for e in errors[:3])
            if not problems:
                problems.extend(content_problems(value, source_words))
            self.attempts.append(
                {
                    "step": step,
                    "attempt": attempt + 1,
                    "temperature": params.temperature,
                    "problems": problems,
                    **({"output_head": raw[:300]} if problems else {}),
                }
            )
            if not problems:
                return dict(value)
        raise SummaryError(
            f"the LLM gave no valid summary after {self.max_retries + 1} attempts ({step}): "
            + "; ".join(problems[:3])
        )
