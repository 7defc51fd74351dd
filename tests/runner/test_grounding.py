"""The parts of a grounded summary that need no model: candidates, ranking, grounding checks, and
reading JSON answers that a budget cut off or that carry raw control characters."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from maie.errors import SummaryError
from maie.runner import grounding
from maie.runner.candidates import Unit, clean, speaker_turns, split_units, words
from maie.runner.llm.json_output import close_truncated, loads, loads_lenient
from maie.runner.ranking import key_phrases, rank, select, similarity
from maie.runner.summarize import extractive_summary, fit_lengths, plan_fields, tidy
from maie.templates import TemplateCatalog
from tests.conftest import data_file

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def _meeting(name: str) -> str:
    data = json.loads(data_file(f"meetings/qmsum/{name}.json").read_text())
    return "\n".join(f"{t['speaker']}: {t['content']}" for t in data["meeting_transcripts"])


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(any(w == x for x in it) for w in part)


def _words(text: str) -> list[str]:
    """Lower-cased words, "it 's" read as "it's" (QMSum's tokenised spelling)."""
    return [w.lower() for w in words(re.sub(r"\s+(['’])", r"\1", text))]


# --- candidates ------------------------------------------------------------------------------
def test_cleaning_only_deletes_words() -> None:
    raw = "Um , {vocalsound} the {disfmarker} It basically says , well , it 's the the Indepen independent ."
    cleaned = clean(raw)
    assert cleaned == "The It basically says, well, it's the independent."
    assert _is_subsequence(_words(cleaned), _words(raw))


def test_every_unit_of_a_real_meeting_is_made_of_its_words_in_order() -> None:
    text = _meeting("ES2004a")
    units = split_units(text)
    assert len(units) > 100
    source = _words(text)
    for unit in units[:60]:
        assert _is_subsequence(_words(unit.text), source), unit.text
        assert len(unit.text) <= 160 or "," not in unit.text
    assert {u.speaker for u in units} == {
        "Project Manager",
        "Marketing",
        "Industrial Designer",
        "User Interface",
    }


def test_speaker_labels_survive_a_transcript_joined_into_one_line() -> None:
    text = _meeting("Bed016")
    lines, joined = split_units(text), split_units(" ".join(text.split()))
    assert [(u.speaker, u.text) for u in lines] == [(u.speaker, u.text) for u in joined]
    assert speaker_turns(JFK) == [(None, JFK)]  # "ask not: what …" is no speaker


def test_cues_and_questions() -> None:
    def unit(text: str) -> Unit:
        return Unit(0, text, None, 0)

    assert unit("So we decided to go with the silver plastic case.").cues() >= {"decision", "statement"}
    assert "action" in unit("I'll send the cost report by Friday.").cues()
    assert unit("What is the purpose of this meeting?").cues() == {"question"}


# --- ranking ---------------------------------------------------------------------------------
def test_lexrank_prefers_the_central_sentence_and_mmr_avoids_repeats() -> None:
    texts = [
        "The remote control should have large buttons and a silver plastic case.",
        "Large buttons help older users of the remote control.",
        "A silver plastic case is cheap and light for the remote control.",
        "My dog likes the garden.",
        "The remote control should have large buttons and a silver plastic case!",
    ]
    sim = similarity(texts)
    scores = rank(texts, sim)
    assert scores[3] == min(scores)
    chosen = select(scores, sim, 2)
    assert not {0, 4} <= set(chosen)  # near-duplicates are not both chosen
    assert "remote control" in key_phrases(texts, 5)


def test_extractive_summary_of_a_meeting_is_traceable() -> None:
    text = _meeting("ES2004a")
    summary = extractive_summary(text, 400)
    assert 100 < len(summary) <= 400
    assert grounding.is_traceable(summary, grounding.vocabulary([text]))


# --- grounding checks --------------------------------------------------------------------------
def test_free_text_checks_catch_what_the_small_model_wrote() -> None:
    source = grounding.vocabulary([JFK])
    prompt = grounding.vocabulary(
        ["What the meeting was about, in a few words. Numbered lines from a meeting."]
    )
    bad = [
        "What the Meeting Was About",  # restates the prompt
        "What is the purpose of this meeting?",  # a question about the meeting
        "The meeting was about a country, and another one. The other one is not known yet.",
        "Here is a summary of the country",  # talks about itself
        "<Title of the meeting>",
        "The Power of Americanism and its impact on the world",  # words from nowhere
    ]
    for text in bad:
        assert grounding.free_text_problems(text, source, prompt), text
    assert (
        grounding.free_text_problems(
            "Americans were asked what they can do for their country.", source, prompt
        )
        == []
    )


def test_owners_are_names_from_the_transcript_or_null() -> None:
    text = (
        "Anna: I'll send the price list by Friday.\n"
        "Ben: Carla will check the supplier.\n"
        "Anna: We need to move on."
    )
    people = grounding.names(text)
    assert people[:2] == ["Anna", "Ben"] and "Carla" in people
    units = split_units(text, min_words=3)
    owners = [grounding.owner(u, people) for u in units]
    assert owners == ["Anna", "Carla", None]
    assert "Americans" in grounding.names(JFK) and "And" not in grounding.names(JFK)


# --- templates and the field plan --------------------------------------------------------------
def test_every_template_declares_grounded_fields() -> None:
    catalog = TemplateCatalog(TEMPLATES)
    for template_id in catalog.ids():
        plans = plan_fields(catalog.schema(template_id))
        modes = {p.name: p.mode for p in plans}
        assert modes["title"] == modes["summary"] == "free_text", template_id
        assert sum(1 for p in plans if p.mode == "grounded") >= 2, template_id


def test_a_bad_marker_is_a_clear_error() -> None:
    schema: dict[str, Any] = {"properties": {"x": {"type": "string", "x-maie-grounded": True}}}
    with pytest.raises(SummaryError, match="x-maie-grounded"):
        plan_fields(schema)
    objects = {"type": "array", "x-maie-grounded": "action", "items": {"type": "object", "properties": {}}}
    with pytest.raises(SummaryError, match="object items"):
        plan_fields({"properties": {"y": objects}})


def test_lengths_and_repeats_are_tidied() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 30}}}
    long = "The price was set. The team then argued about colours for an hour."
    assert fit_lengths({"s": long}, schema) == {"s": "The price was set."}
    assert fit_lengths({"s": "one two three four five six seven eight nine"}, schema)["s"] == (
        "one two three four five six"
    )
    assert tidy({"a": ["red  car", "red car", "blue", "..."], "b": ["BLUE", "green"]}) == {
        "a": ["red car", "blue"],
        "b": ["green"],
    }


# --- reading answers -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ('{"title": "The American Way of', {"title": "The American Way"}),
        ('{"summary": "Ask not', {"summary": "Ask"}),
        ('{"key_points": [3, 1', {"key_points": [3, 1]}),
        ('{"key_points": [3, 1,', {"key_points": [3, 1]}),
        ('{"title": "A b", "summ', {"title": "A b"}),
        ('{"title": "A b", "summary": ', {"title": "A b"}),
        ('{"items": [{"task": "Send the rep', {"items": [{"task": "Send the"}]}),
        ("{", {}),
    ],
)
def test_an_answer_cut_by_its_budget_is_closed(cut: str, expected: Any) -> None:
    assert json.loads(close_truncated(cut)) == expected
    assert loads_lenient(cut) == expected


def test_control_characters_inside_strings_are_read() -> None:
    """What a llama.cpp server on another CPU wrote: a raw tab and newline inside a string."""
    raw = '{"title": "Budget\tplan", "key_points": ["line one\nline two"]}'
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert loads(raw) == {"title": "Budget\tplan", "key_points": ["line one\nline two"]}
    assert loads_lenient(raw) == loads(raw)
