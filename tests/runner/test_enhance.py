"""Enhancement: punctuation and casing from the LLM, never a changed word."""

from __future__ import annotations

import pytest

from maie.runner.enhance import enhance, merge_punctuation, prompt_environment, split_pieces
from maie.runner.llm.base import GenerationParams
from maie.runner.llm.llama_cpp import LlamaCppBackend
from maie.settings import Settings
from tests.conftest import RECORDINGS, normalize

pytestmark = pytest.mark.model


@pytest.mark.unit
def test_merge_takes_punctuation_but_never_words() -> None:
    raw = "so how are you today i am fine thanks we met in paris"
    proposed = "So, how are you doing today? I am very fine, thanks! We met in Paris."
    merged, rejected = merge_punctuation(raw, proposed)
    assert normalize(merged) == normalize(raw)  # "doing" and "very" are not taken
    assert "Paris." in merged and "So," in merged
    assert rejected == 2


@pytest.mark.unit
def test_merge_survives_garbage() -> None:
    raw = "the horizon seems extremely distant"
    merged, rejected = merge_punctuation(raw, "<|im_start|> I cannot help with that.")
    assert merged == raw and rejected > 0


@pytest.mark.unit
def test_pieces_cover_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    pieces = split_pieces(text, 80)
    assert " ".join(pieces) == text and max(len(p.split()) for p in pieces) <= 120


@pytest.fixture(scope="module")
def llm(settings: Settings):  # type: ignore[no-untyped-def]
    backend = LlamaCppBackend(settings, model=None)
    backend.load()
    yield backend
    backend.unload()


def test_real_model_restores_punctuation_without_changing_words(llm, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    references = [
        r.reference for n, r in RECORDINGS.items() if n.startswith("en_librispeech") and r.reference
    ]
    raw = " ".join(normalize(r) for r in references)  # lower case, no punctuation: like ChunkFormer output
    env = prompt_environment(str(settings.templates_dir / "prompts"))
    result = enhance(raw, llm, GenerationParams(temperature=0.0), env)
    assert normalize(result.text) == raw
    assert result.text != raw and result.text[0].isupper()
    assert 0 < result.edit_rate < 0.2
    assert result.metrics()["words"] == len(raw.split())
