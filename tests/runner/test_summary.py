"""Summaries with the real bundled LLM (SmolLM2-135M through llama.cpp) on real transcripts.

Model output differs between CPUs and builds, so these tests assert what must hold for any valid
output: the template's schema, list items made of the transcript's words, owners that are names in
the transcript (or null), no question or placeholder standing in for a statement — and a valid
summary even when a tiny token budget cuts every answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from maie.runner import grounding
from maie.runner.summarize import SummaryRun, estimate_output_tokens
from maie.templates import TemplateCatalog
from tests.conftest import data_file, recording
from tests.runner.conftest import load_result

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def _validate(template_id: str, summary: dict[str, Any]) -> None:
    schema = json.loads((TEMPLATES / f"{template_id}.json").read_text())
    errors = list(Draft202012Validator(schema).iter_errors(summary))
    assert not errors, [e.message for e in errors]


def _meeting(name: str) -> str:
    data = json.loads(data_file(f"meetings/qmsum/{name}.json").read_text())
    return "\n".join(f"{t['speaker']}: {t['content']}" for t in data["meeting_transcripts"])


def _transcript(name: str) -> str:
    if name == "jfk":
        return JFK
    if name == "en_mm1":
        reference = recording("en_mm1_micro_machines.wav").reference
        assert reference
        return reference
    return _meeting(name)


def assert_faithful(summary: dict[str, Any], transcript: str) -> None:
    """What any valid meeting-notes summary of this transcript must satisfy."""
    _validate("meeting_notes_v1", summary)
    source = grounding.vocabulary([transcript])
    people = set(grounding.names(transcript))
    items = [*summary["key_points"], *summary["decisions"], *(a["task"] for a in summary["action_items"])]
    for item in items:
        assert grounding.is_traceable(item, source), f"not from the transcript: {item!r}"
        assert not grounding.item_problems(item, source), f"a question or placeholder: {item!r}"
    for action in summary["action_items"]:
        assert action["owner"] is None or action["owner"] in people, action
    for key in ("title", "summary"):
        text = summary[key]
        assert "?" not in text, text
        assert not grounding.ungrounded(text, source), f"{key}: {text!r}"
        assert not grounding.free_text_problems(text, source, set()), f"{key}: {text!r}"


@pytest.fixture(scope="module")
def summarize(settings) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """summarize(text, **generation) with one llama.cpp model loaded for the whole module."""
    from maie.contract import GenerationOptions, LlmOptions, TaskRequest
    from maie.runner.enhance import prompt_environment
    from maie.runner.llm import create_llm_backend
    from maie.runner.pipeline import _generation
    from maie.runner.summarize import Summarizer

    backend = create_llm_backend("llama_cpp", settings, model=None)
    backend.load()
    env = prompt_environment(str(settings.templates_dir / "prompts"))
    schema = TemplateCatalog(settings.templates_dir).schema("meeting_notes_v1")
    answers: list[str] = []
    complete = backend.complete

    def spy(*args: Any, **kwargs: Any) -> str:  # the real call; its raw answer is kept
        answers.append(complete(*args, **kwargs))
        return answers[-1]

    backend.complete = spy  # type: ignore[method-assign]

    def run(text: str, **options: Any) -> tuple[SummaryRun, list[str]]:
        request = TaskRequest(
            features=["summary"],
            template_id="meeting_notes_v1",
            llm=LlmOptions(**GenerationOptions(**options).model_dump()),
        )
        params, _ = _generation(backend, request, settings, "summary")
        answers.clear()
        outcome = Summarizer(
            backend, params, env, settings.llm_summary_max_retries, settings.llm_chunk_tokens
        ).run(text, "meeting_notes_v1", schema)
        return outcome, list(answers)

    try:
        yield run
    finally:
        backend.unload()


def test_clip_summary_validates(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole pipeline on the JFK clip: a faithful summary, and versions that say how it was made."""
    out = tmp_path / "out"
    proc = run_cli(
        "transcribe",
        str(recording("en_jfk_inaugural.flac").path),
        "--template",
        "meeting_notes_v1",
        "--output-dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    assert_faithful(doc["results"]["summary"], doc["results"]["raw_transcript"])
    llm = doc["versions"]["summarization_llm"]
    assert llm["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and llm["task"] == "summarization"
    assert len(llm["checkpoint_hash"]) == 64 and llm["quantization"] == "Q4_1"
    structured = llm["structured_output"]
    assert structured["template_id"] == "meeting_notes_v1" and structured["chunks"] == 1
    assert 50 < structured["answer_max_tokens"] < 2000
    fields = structured["grounding"]["fields"]
    assert fields["key_points"]["mode"] == "grounded" and fields["title"]["mode"] in (
        "generated",
        "extractive",
    )
    assert doc["metrics"]["stage_seconds"]["summary"] > 0


# JFK goes through the whole pipeline in test_clip_summary_validates (its real ASR transcript).
# Bed016 runs right before the tiny-budget test on the same transcript: the loaded model keeps
# its prompt prefix (the numbered lines) evaluated, so the second run costs only the fields.
@pytest.mark.parametrize(
    "name",
    [
        "en_mm1",
        pytest.param("ES2004a", marks=pytest.mark.slow),
        pytest.param("Bed016", marks=pytest.mark.slow),
    ],
)
def test_summary_is_faithful_to_a_real_transcript(summarize, name: str) -> None:  # type: ignore[no-untyped-def]
    transcript = _transcript(name)
    outcome, _ = summarize(transcript)
    assert_faithful(outcome.summary, transcript)
    assert outcome.summary["key_points"], "a real transcript has key points"
    record = outcome.grounding
    assert record["sentences"] >= 1 and record["context_lines"] >= 1
    # A long meeting is ranked in sections (every part of it has candidates), never truncated.
    assert (outcome.chunks > 1) is (name != "en_mm1")


def test_tiny_token_budget_on_a_long_transcript_still_gives_a_valid_summary(summarize) -> None:  # type: ignore[no-untyped-def]
    """max_tokens=5 cuts every answer mid-string; the decoder's budget closes each field instead of
    leaving invalid JSON, and the summary is still valid and faithful."""
    transcript = _meeting("Bed016")
    outcome, answers = summarize(transcript, max_tokens=5)
    assert answers, "the LLM was asked"
    cut = [a for a in answers if not _parses(a)]
    assert cut, f"with 5 tokens some answer must have been cut: {answers}"
    assert_faithful(outcome.summary, transcript)


def _parses(text: str) -> bool:
    try:
        json.loads(text, strict=False)
    except json.JSONDecodeError:
        return False
    return True


def test_a_tiny_budget_through_the_pipeline_completes_and_keeps_the_transcript(settings) -> None:  # type: ignore[no-untyped-def]
    from maie.contract import GenerationOptions, LlmOptions, TaskRequest, TaskStatus
    from maie.runner.pipeline import run_pipeline

    request = TaskRequest(
        features=["raw_transcript", "summary"],
        template_id="meeting_notes_v1",
        llm=LlmOptions(**GenerationOptions(max_tokens=5).model_dump()),
    )
    doc, _ = run_pipeline(recording("en_jfk_inaugural.flac").path, request, settings=settings, task_id="tiny")
    assert doc.status is TaskStatus.COMPLETE, doc.error
    assert doc.results and "ask not what your country" in (doc.results.raw_transcript or "")
    assert doc.results.summary is not None
    assert_faithful(doc.results.summary, doc.results.raw_transcript or "")


def test_a_transcript_without_words_fails_clearly(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    transcript = tmp_path / "dots.txt"
    transcript.write_text("... -- ...\n", encoding="utf-8")
    proc = run_cli(
        "summarize", str(transcript), "--template", "meeting_notes_v1", "--output-dir", str(tmp_path)
    )
    assert proc.returncode == 1
    assert "no words to summarise" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_template_bounds_its_own_size() -> None:
    """Unbounded strings or arrays let a small model loop until max_tokens (seen here)."""
    catalog = TemplateCatalog(TEMPLATES)
    assert {"meeting_notes_v1", "interview_v1", "lecture_notes_v1"} <= set(catalog.ids())

    def walk(node: dict[str, Any], path: str) -> None:
        kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if "string" in kinds:
            assert "maxLength" in node, path
        if "array" in kinds:
            assert "maxItems" in node, path
            walk(node["items"], path + "[]")
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if "object" in kinds:
            assert node.get("additionalProperties") is False, path

    for template_id in catalog.ids():
        schema = catalog.schema(template_id)
        walk(schema, template_id)
        assert 50 < estimate_output_tokens(schema) < 2000
        assert catalog.prompt_path(template_id).is_file()
