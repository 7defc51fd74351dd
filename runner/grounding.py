"""Is a summary's text backed by the transcript? Word-level checks used for every field.

A summary is faithful when what it says can be traced to the recording. For list items chosen from
the transcript this holds by construction, and is still checked. Generated text (a title, a
summary) is checked the same way: its content words (stemmed with Snowball, so "discussed" matches
"discussion") must occur in the transcript, apart from a few words any report uses ("meeting",
"discussed", "speaker"); it must not ask questions, restate the prompt or carry placeholders.
Owners of tasks are names from the transcript (speaker labels or capitalised names), or null.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer

from maie.runner.candidates import Unit, speakers, words
from maie.runner.ranking import STOP_WORDS

# Words a report about a recording may use although no one said them.
REPORT_WORDS = frozenset(
    [
        "meeting", "meetings", "discussion", "discussed", "discuss", "discusses", "talk", "talked",
        "talks", "speaker", "speakers", "participant", "participants", "team", "group", "members",
        "agreed", "decided", "proposed", "presented", "explained", "described", "mentioned",
        "suggested", "asked", "noted", "reviewed", "covered", "topic", "topics", "introduction",
        "interview", "interviewer", "lecture", "speech", "plan", "plans", "next", "steps", "main",
        "points", "including", "also",
        "then", "finally", "first", "later", "about",
    ]
)  # fmt: skip
# Text that stands in for content: template placeholders, JSON leaking into prose, filler answers.
_PLACEHOLDER = re.compile(r'<[^<>]{1,60}>|\{\s*"|"\s*:|\[\s*"|\.\.\.|…')
# Words that stand in for content, unless the recording itself says them ("an example of …").
_PLACEHOLDER_WORDS = re.compile(
    r"\b(?:lorem ipsum|n/?a|tbd|todo|insert|placeholder|unassigned|unknown|string|example|xxx+|etc)\b",
    re.IGNORECASE,
)
# Text about the prompt or the answer itself, not about the recording.
_META = re.compile(
    r"^\W*(?:here is|here's|this is (?:a|the) (?:summary|title|note)|the following|as an ai|"
    r"(?:in )?(?:this|the) (?:summary|transcript|text|lines?|numbered)|numbered lines?|sure\b)",
    re.IGNORECASE,
)
_QUESTION_ABOUT_RECORDING = re.compile(
    r"\b(?:what|who|which|how|why|when|where)\b[^.!]*\b(?:meeting|interview|lecture|talk|purpose|decisions?)\b",
    re.IGNORECASE,
)
_TASK_VERB = r"(?:,)?(?: will|'ll| should| can| is going to| has to| needs to)\b"
_NOT_NAMES = frozenset(
    ["I", "OK", "Okay", "Yeah", "Yes", "No", "So", "And", "But", "Oh", "Um", "Uh", "Mm", "Hmm", "Well"]
)


@lru_cache(maxsize=1)
def _stemmer() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("english")


def stems(text: str) -> set[str]:
    """Stemmed, lower-cased content words (and numbers) of a text."""
    tokens = [w.lower().replace("’", "'") for w in words(text)]
    tokens = [t.split("'")[0] for t in tokens]  # "country's" -> "country"
    # "forty-five" and "forty - five" (how QMSum spells it) are the same words.
    tokens = [part for t in tokens for part in t.split("-")]
    kept = [t for t in tokens if t and (t.isdigit() or (t not in STOP_WORDS and len(t) > 1))]
    return set(_stemmer().stemWords(kept))


def vocabulary(texts: Iterable[str]) -> set[str]:
    """Every stem that occurs in the texts (a transcript's, or a prompt's)."""
    found: set[str] = set()
    for text in texts:
        found |= stems(text)
    return found


_REPORT_STEMS = vocabulary(REPORT_WORDS)


def ungrounded(text: str, source: set[str]) -> list[str]:
    """Content words of `text` that the source (a stem vocabulary) does not contain."""
    return sorted(stems(text) - source - _REPORT_STEMS)


def is_traceable(text: str, source: set[str]) -> bool:
    """Every content word of the text occurs in the source (what the evaluation counts)."""
    return not (stems(text) - source)


def free_text_problems(text: str, source: set[str], prompt: set[str]) -> list[str]:
    """Why a generated text (title, summary) is not a statement about this transcript."""
    problems: list[str] = []
    if not re.search(r"[^\W\d_]{2,}", text):
        return ["has no words"]
    if "?" in text:
        problems.append("asks a question instead of stating")
    if _is_placeholder(text, source):
        problems.append("contains placeholder or JSON text")
    if _META.search(text):
        problems.append("talks about the prompt, not the recording")
    missing = ungrounded(text, source)
    if missing:
        problems.append("uses words that are not in the transcript: " + ", ".join(missing[:6]))
    own = stems(text) - _REPORT_STEMS
    if own and not (own - prompt):
        problems.append("restates the prompt")
    if not (own & source):
        problems.append("says nothing from the transcript")
    return problems


def _is_placeholder(text: str, source: set[str] | None) -> bool:
    if _PLACEHOLDER.search(text):
        return True
    said = source or set()
    return any(not (stems(m.group(0)) & said) for m in _PLACEHOLDER_WORDS.finditer(text))


def item_problems(text: str, source: set[str] | None = None) -> list[str]:
    """Why a list item is not a statement from the recording (checked on chosen items too);
    `source`: the transcript's stems, whose own words are never placeholders."""
    problems: list[str] = []
    if text.rstrip().endswith("?") or (_QUESTION_ABOUT_RECORDING.search(text) and "?" in text):
        problems.append("is a question")
    if _is_placeholder(text, source):
        problems.append("is placeholder text")
    return problems


def names(transcript: str) -> list[str]:
    """People a task can belong to: speaker labels, and capitalised words never written in lower
    case that stand inside a sentence ("my fellow Americans") or as the subject of a task at its
    start ("Carla will check…"); "And" or "Perfect" at a sentence start are not names."""
    found = list(speakers(transcript))
    lower = {w.lower() for w in words(transcript) if not w[:1].isupper()}
    starts = {m.group(1) for m in re.finditer(r"(?:^|[.!?:]\s+|\n)([A-Z][\w'-]*)", transcript)}
    subjects = {m.group(1) for m in re.finditer(rf"\b([A-Z][a-z]+){_TASK_VERB}", transcript)}
    for match in re.finditer(r"\b([A-Z][a-z]+)\b", transcript):
        word = match.group(1)
        if word in _NOT_NAMES or word.lower() in lower or word.lower() in STOP_WORDS:
            continue
        if word not in starts or word in subjects:
            found.append(word)
    return list(dict.fromkeys(found))


_COMMITS = re.compile(
    r"\b(?:I(?:'ll| will| am going to|'m going to| can| shall)|let me)\b|^I'm\b", re.IGNORECASE
)


def owner(unit: Unit, people: list[str]) -> str | None:
    """Who does a task: its speaker when they commit to it ("I'll send…"), a name in the
    transcript that is the task's subject ("Anna will…"), otherwise null — never a guess."""
    for person in people:
        if re.search(
            rf"\b{re.escape(person)}(?:,)? (?:will|should|can|is going to|has to|needs to|'ll)\b", unit.text
        ):
            return person
    if unit.speaker and _COMMITS.search(unit.text):
        return unit.speaker
    return None
