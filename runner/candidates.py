"""Candidate items for grounded summary fields: the transcript's own sentences and clauses.

A small model invents when asked to write list items; it can still choose well among given ones. So
the transcript is cut into short units (sentences; long ones into clauses at commas), cleaned of what
speech adds (fillers, stutters, {annotations}, spaces before punctuation) by only deleting words — a
unit's words are always the transcript's words in the transcript's order — and each unit is tagged
with its speaker (for "Name: text" transcripts) and the cues a template field asks for (a decision, a
task, a question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "Project Manager: we will ...", "Grad C: um ..." — a speaker label at a line start.
_SPEAKER = re.compile(r"^\s*([A-Z][\w'.-]*(?: [A-Z0-9][\w'.-]*){0,3})\s*:\s+(.*)$")
_ANNOTATION = re.compile(r"\{[a-z_]+\}|\[[a-z _]+\]|<[a-z_]+>", re.IGNORECASE)
_FILLER = re.compile(
    r"(?<![\w'-])(?:u+m+|u+h+|h?m+-?h?m+|mm+|hmm+|e+r+m*|a+h+|o+h+|huh|you know|i mean)(?![\w'-])[,.]?",
    re.IGNORECASE,
)
_SPLIT_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+|\s+(?=-\s)")
_WORDS = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_REPEAT = re.compile(r"\b(\w+(?:\s+\w+)?)(?:\s+\1\b)+", re.IGNORECASE)

DECISION_CUES = re.compile(
    r"\b(?:decided|decide|decision|agreed|agree on|agreement|settled|conclusion|approved|"
    r"(?:let's|we'll|we will|we should) go (?:with|for)|stick with|we chose)\b",
    re.IGNORECASE,
)
ACTION_CUES = re.compile(
    r"\b(?:I(?:'ll| will| am going to|'m going to| have to| need to)|"
    r"you(?:'ll| will| should| need to| have to)|we(?:'ll have to| will have to| need to| have to)|"
    r"(?:needs|has) to|must|make sure|follow up|send|prepare|look into|"
    r"next (?:time|meeting|week)|by (?:monday|tuesday|wednesday|thursday|friday|tomorrow)|"
    r"action item|assigned|responsible for)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Unit:
    """One candidate: cleaned text, its place in the transcript and who said it."""

    index: int  # order in the transcript
    text: str
    speaker: str | None
    section: int  # which stretch of the transcript (coverage across a long meeting)

    @property
    def is_question(self) -> bool:
        return self.text.rstrip().endswith("?")

    @property
    def words(self) -> list[str]:
        return _WORDS.findall(self.text)

    def cues(self) -> set[str]:
        """The kinds of field this unit can fill: statement, decision, action, question."""
        if self.is_question:
            return {"question"}
        kinds = {"statement"}
        if DECISION_CUES.search(self.text):
            kinds.add("decision")
        if ACTION_CUES.search(self.text):
            kinds.add("action")
        return kinds


def words(text: str) -> list[str]:
    """The words of a text (letters and digits, inner apostrophes and hyphens kept)."""
    return _WORDS.findall(text)


def clean(text: str) -> str:
    """Speech made readable by deleting only: annotations, fillers, stutters, odd spacing."""
    text = _ANNOTATION.sub(" ", text)
    text = re.sub(r"\s+(['’](?:s|m|re|ve|ll|d|t)\b|n't\b)", r"\1", text)  # "it 's" -> "it's"
    text = re.sub(r"(\w) - (\w)", r"\1-\2", text)  # "domain - general" -> "domain-general"
    text = _FILLER.sub(" ", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    for _ in range(2):
        text = _REPEAT.sub(r"\1", text)  # "we we can" -> "we can"
    text = _drop_cut_words(text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"([.!?])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]+\s*([.!?])", r"\1", text)  # "plastic,?" -> "plastic?"
    text = re.sub(r"^[\s,;:.-]+", "", " ".join(text.split()))
    text = re.sub(r"[\s,;:-]+$", "", text)
    return text[:1].upper() + text[1:] if text else text


def _drop_cut_words(text: str) -> str:
    """Words broken off and restarted ("Indepen independent", "s they're"): the cut part goes."""
    tokens = text.split()
    kept: list[str] = []
    for i, token in enumerate(tokens):
        bare = token.strip(",.;:").lower()
        following = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
        cut = bool(bare) and bare.isalpha() and following.startswith(bare) and len(following) > len(bare)
        stray = len(bare) == 1 and bare.isalpha() and bare not in ("i", "a") and token == bare
        if not (cut or stray):
            kept.append(token)
    return " ".join(kept)


_INLINE_LABEL = re.compile(r"(?:^|(?<=\s))([A-Z][\w'.-]*(?: [A-Z0-9][\w'.-]*){0,3}):\s")


def speaker_turns(transcript: str) -> list[tuple[str | None, str]]:
    """(speaker, text) per turn; speakers only where the transcript carries "Name: " labels — at
    most line starts, or (a transcript joined into one line) labels that recur inline."""
    lines = [line for line in transcript.splitlines() if line.strip()]
    matches = [_SPEAKER.match(line) for line in lines]
    labelled = sum(1 for m in matches if m)
    if lines and labelled >= 2 and labelled >= 0.6 * len(lines):
        return [
            (m.group(1), m.group(2)) if m else (None, line) for m, line in zip(matches, lines, strict=True)
        ]
    found = list(_INLINE_LABEL.finditer(transcript))
    counts: dict[str, int] = {}
    for m in found:
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    labels = sorted((label for label, n in counts.items() if n >= 3), key=len, reverse=True)
    if not labels:
        return [(None, transcript)]
    # Again with the recurring labels only: "Alrigh Grad A: OK" holds the label "Grad A".
    found = list(re.finditer(rf"(?:^|(?<=\s))({'|'.join(map(re.escape, labels))}):\s", transcript))
    if len(found) < 5 or found[0].start() > 200:
        return [(None, transcript)]
    head = transcript[: found[0].start()]
    turns: list[tuple[str | None, str]] = [(None, head)] if head.strip() else []
    for m, nxt in zip(found, [*found[1:], None], strict=True):
        turns.append((m.group(1), transcript[m.end() : nxt.start() if nxt else len(transcript)]))
    return turns


def speakers(transcript: str) -> list[str]:
    """The speaker labels of a "Name: text" transcript, in order of first appearance."""
    return list(dict.fromkeys(s for s, _ in speaker_turns(transcript) if s))


def _pieces(sentence: str, max_chars: int) -> list[str]:
    """A sentence, or its clauses when it is longer than an item may be."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for clause in _CLAUSE_BREAK.split(sentence):
        joined = f"{current} {clause}".strip()
        if current and len(joined) > max_chars:
            pieces.append(current)
            current = clause
        else:
            current = joined
    if current:
        pieces.append(current)
    return pieces


def split_units(
    transcript: str, max_chars: int = 160, section_chars: int = 12000, min_words: int = 4
) -> list[Unit]:
    """The transcript's candidate units in order; too-short pieces ("Yeah.", "OK, so") are left out."""
    units: list[Unit] = []
    position = 0
    # Consecutive lines of one speaker read as one turn (QMSum splits turns mid-sentence).
    turns: list[tuple[str | None, str]] = []
    for speaker, text in speaker_turns(transcript):
        if turns and turns[-1][0] == speaker and speaker is not None:
            turns[-1] = (speaker, f"{turns[-1][1]} {text}")
        else:
            turns.append((speaker, text))
    for speaker, text in turns:
        for sentence in _SPLIT_SENTENCES.split(clean(text)):
            for piece in _pieces(clean(sentence), max_chars):
                piece = clean(piece)
                if len(words(piece)) >= min_words:
                    units.append(Unit(len(units), piece, speaker, position // max(section_chars, 1)))
        position += len(text) + 1
    return units
