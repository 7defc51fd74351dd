"""Summaries with the real bundled LLM: schema-valid every time, long meetings via map-reduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from maie.runner.summarize import (
    content_problems,
    content_words,
    estimate_output_tokens,
    fit_lengths,
    grammar_schema,
    split_by_tokens,
    tidy,
)
from maie.templates import TemplateCatalog
from tests.conftest import data_file, recording
from tests.runner.conftest import load_result

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _validate(template_id: str, summary: dict[str, Any]) -> None:
    schema = json.loads((TEMPLATES / f"{template_id}.json").read_text())
    errors = list(Draft202012Validator(schema).iter_errors(summary))
    assert not errors, [e.message for e in errors]


def _meeting_text(name: str, tmp: Path) -> Path:
    data = json.loads(data_file(f"meetings/qmsum/{name}.json").read_text())
    lines = [f"{t['speaker']}: {t['content']}" for t in data["meeting_transcripts"]]
    path = tmp / f"{name}.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_clip_summary_validates(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
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
    _validate("meeting_notes_v1", doc["results"]["summary"])
    llm = doc["versions"]["summarization_llm"]
    assert llm["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and llm["task"] == "summarization"
    assert len(llm["checkpoint_hash"]) == 64 and llm["quantization"] == "Q4_1"
    assert llm["structured_output"]["template_id"] == "meeting_notes_v1"
    assert llm["structured_output"]["chunks"] == 1
    assert 50 < llm["structured_output"]["answer_max_tokens"] < 2000
    assert doc["metrics"]["stage_seconds"]["summary"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(("meeting", "chunked"), [("ES2004a", False), ("Bed016", True)])
def test_qmsum_meeting_summary_validates(run_cli, tmp_path: Path, meeting: str, chunked: bool) -> None:  # type: ignore[no-untyped-def]
    transcript = _meeting_text(meeting, tmp_path)
    out = tmp_path / "out"
    proc = run_cli("summarize", str(transcript), "--template", "meeting_notes_v1", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = load_result(out)
    summary = doc["results"]["summary"]
    _validate("meeting_notes_v1", summary)
    assert not content_problems(summary, content_words(transcript.read_text()))
    structured = doc["versions"]["summarization_llm"]["structured_output"]
    assert (structured["chunks"] > 1) is chunked
    if chunked:  # map calls + the final reduce
        assert structured["llm_calls"] >= structured["chunks"] + 1


def test_every_template_bounds_its_own_size() -> None:
    """Unbounded strings or arrays let a small model loop until max_tokens (seen here)."""
    catalog = TemplateCatalog(TEMPLATES)
    assert {"meeting_notes_v1", "interview_v1", "lecture_notes_v1"} <= set(catalog.ids())

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "string":
            assert "maxLength" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path
            walk(node["items"], path + "[]")
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path

    for template_id in catalog.ids():
        schema = catalog.schema(template_id)
        walk(schema, template_id)
        assert 50 < estimate_output_tokens(schema) < 2000
        assert catalog.prompt_path(template_id).is_file()


def test_split_by_tokens_keeps_every_word() -> None:
    text = " ".join(f"word{i}" + ("." if i % 17 == 0 else "") for i in range(2000))
    chunks = split_by_tokens(text, 300, lambda s: len(s.split()))
    assert len(chunks) > 5
    assert all(len(c.split()) <= 300 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_content_checks_catch_what_a_tiny_model_does() -> None:
    source = content_words("The team agreed to price the remote control at twenty five euros.")
    good = {"title": "Remote control pricing", "summary": "The team agreed on a price for the remote."}
    assert content_problems(good, source) == []
    assert content_problems({"title": "<Title of the article>", "summary": "remote price"}, source)
    assert content_problems({"title": "1.0", "summary": "remote control price"}, source)
    assert content_problems({"title": "Weather today", "summary": "Sunny skies over Paris."}, source)
    assert content_problems({"title": "Remote {vocalsound}", "summary": "The remote price."}, source) == []
    assert content_problems({"title": "Remote", "summary": '{"title": "remote"}'}, source)
    tidied = tidy({"a": ["red  car", "red car", "blue", "..."], "b": ["BLUE", "green"]})
    assert tidied == {"a": ["red car", "blue"], "b": ["green"]}
    assert tidy("Price is set. Price is set. Done.") == "Price is set. Done."


def test_lengths_are_enforced_after_decoding() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 30}}}
    assert "maxLength" not in grammar_schema(schema)["properties"]["s"]
    long = "The price was set. The team then argued about colours for an hour."
    assert fit_lengths({"s": long}, schema) == {"s": "The price was set."}
    assert fit_lengths({"s": "one two three four five six seven eight nine"}, schema)["s"] == (
        "one two three four five six"
    )


def test_invalid_llm_output_fails_clearly_and_keeps_the_transcript(settings) -> None:  # type: ignore[no-untyped-def]
    """5 tokens cannot hold a meeting-notes object: every attempt is invalid JSON, the task fails
    with a clear error, and the transcript made before the LLM stage is still in the document."""
    from maie.contract import GenerationOptions, LlmOptions, TaskRequest, TaskStatus
    from maie.runner.pipeline import run_pipeline

    strict = settings.model_copy(update={"llm_summary_max_retries": 1})
    request = TaskRequest(
        features=["raw_transcript", "summary"],
        template_id="meeting_notes_v1",
        llm=LlmOptions(**GenerationOptions(max_tokens=5).model_dump()),
    )
    doc, exports = run_pipeline(
        recording("en_jfk_inaugural.flac").path, request, settings=strict, task_id="bad-llm"
    )
    assert doc.status is TaskStatus.FAILED and doc.error_code == "summary_invalid"
    assert doc.error and "after 2 attempts" in doc.error and "not valid JSON" in doc.error
    assert doc.results and "ask not what your country" in (doc.results.raw_transcript or "")
    assert doc.versions and doc.versions.asr_backend is not None
    assert exports == {}
