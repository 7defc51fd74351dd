"""Stage 3a — restore punctuation and casing without changing a single word.

The LLM proposes punctuated text for short pieces of the transcript; the result keeps the ASR's
words and order and only takes the LLM's punctuation and casing where its words line up with the
original (word alignment with rapidfuzz). A model that rewrites content therefore cannot change
the transcript: its changed words are dropped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rapidfuzz.distance import Levenshtein

from maie.runner.llm.base import ChatMessage, GenerationParams, LlmBackend

WORDS_PER_PIECE = 80
_TOKEN = re.compile(r"\S+")
_CORE = re.compile(r"[^\w']+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]$")


@dataclass
class EnhancementResult:
    text: str
    edit_rate: float
    pieces: int
    words: int
    llm_words_rejected: int  # words the model added, dropped or changed (not applied)
    details: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {
            "edit_rate": self.edit_rate,
            "pieces": self.pieces,
            "words": self.words,
            "llm_words_rejected": self.llm_words_rejected,
        }


def _core(token: str) -> str:
    return _CORE.sub("", token).lower()


def split_pieces(text: str, words_per_piece: int = WORDS_PER_PIECE) -> list[str]:
    """Short pieces, cut at sentence ends where there are any, never longer than 1.5× the target."""
    tokens = _TOKEN.findall(text)
    pieces: list[str] = []
    current: list[str] = []
    for token in tokens:
        current.append(token)
        at_end = bool(_SENTENCE_END.search(token))
        if (len(current) >= words_per_piece and at_end) or len(current) >= int(words_per_piece * 1.5):
            pieces.append(" ".join(current))
            current = []
    if current:
        pieces.append(" ".join(current))
    return pieces


def merge_punctuation(original: str, proposed: str) -> tuple[str, int]:
    """The original words, with the proposed text's form of each word where the words align.

    Returns (merged text, number of proposed words that were not applied).
    """
    src = _TOKEN.findall(original)
    new = _TOKEN.findall(proposed)
    src_core = [_core(t) for t in src]
    new_core = [_core(t) for t in new]
    out: list[str] = []
    rejected = 0
    for op in Levenshtein.opcodes(src_core, new_core):
        if op.tag == "equal":
            for i, j in zip(range(op.src_start, op.src_end), range(op.dest_start, op.dest_end), strict=True):
                # Same word: keep the model's casing and punctuation around it.
                out.append(new[j] if src_core[i] else src[i])
        else:
            out.extend(src[op.src_start : op.src_end])
            rejected += max(op.dest_end - op.dest_start, op.src_end - op.src_start)
    return " ".join(out), rejected


def _capitalise_sentences(text: str) -> str:
    def upper(match: re.Match[str]) -> str:
        return match.group(1) + match.group(2).upper()

    text = re.sub(r"^(\s*)(\w)", upper, text)
    return re.sub(r"([.!?]\s+)(\w)", upper, text)


def edit_rate(raw: str, clean: str) -> float:
    """Normalised character edit distance between the raw and the clean transcript."""
    return round(Levenshtein.normalized_distance(raw, clean), 4)


def enhance(
    text: str,
    backend: LlmBackend,
    params: GenerationParams,
    env: Environment,
    progress: Callable[[float], None] | None = None,
) -> EnhancementResult:
    system = env.get_template("text_enhancement_v1.jinja").render()
    pieces = split_pieces(text)
    merged: list[str] = []
    rejected = 0
    for index, piece in enumerate(pieces):
        budget = params.max_tokens or (2 * backend.count_tokens(piece) + 32)
        piece_params = GenerationParams(**{**params.__dict__, "max_tokens": budget})
        proposed = backend.complete(
            [ChatMessage("system", system), ChatMessage("user", piece)], piece_params, json_schema=None
        )
        fixed, lost = merge_punctuation(piece, proposed)
        merged.append(fixed)
        rejected += lost
        if progress:
            progress((index + 1) / len(pieces))
    clean = _capitalise_sentences(" ".join(merged))
    return EnhancementResult(
        text=clean,
        edit_rate=edit_rate(text, clean),
        pieces=len(pieces),
        words=len(_TOKEN.findall(text)),
        llm_words_rejected=rejected,
    )


def prompt_environment(prompts_dir: str) -> Environment:
    """Jinja for prompts: plain text (no HTML escaping of transcripts), undefined names are errors."""
    return Environment(
        loader=FileSystemLoader(prompts_dir),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
