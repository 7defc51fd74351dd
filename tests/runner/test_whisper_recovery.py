"""Finding the speech a batched pass left without words (pure logic; the real-audio case is in
test_transcribe.py)."""

from __future__ import annotations

import pytest

from maie.runner.asr.whisper_recovery import unworded_speech

pytestmark = pytest.mark.unit

SR = 16000


def region(start: float, end: float) -> dict[str, int]:
    return {"start": int(start * SR), "end": int(end * SR)}


def test_speech_fully_covered_by_words_needs_nothing() -> None:
    words = [(0.5, 1.0), (1.1, 1.9), (2.0, 2.8)]
    assert unworded_speech([region(0.4, 3.0)], words, min_gap=2.0, sample_rate=SR) == []


def test_a_region_whose_text_stopped_early_gives_its_tail() -> None:
    words = [(10.2, 10.8), (11.0, 12.0)]
    clips = unworded_speech([region(10.0, 25.0)], words, min_gap=2.0, sample_rate=SR)
    assert clips == [{"start": 12.0, "end": 25.0}]


def test_a_region_without_any_word_is_decoded_whole_and_gaps_inside_count() -> None:
    speech = [region(0.0, 5.0), region(6.0, 14.0), region(20.0, 21.5)]
    words = [(0.1, 4.9), (6.1, 7.0), (10.5, 13.9)]
    clips = unworded_speech(speech, words, min_gap=2.0, sample_rate=SR)
    # 7.0 → 10.5 inside the second region; the third region is shorter than min_gap
    assert clips == [{"start": 7.0, "end": 10.5}]
    speech.append(region(30.0, 40.0))
    assert unworded_speech(speech, words, min_gap=2.0, sample_rate=SR)[-1] == {"start": 30.0, "end": 40.0}


def test_the_gap_threshold_is_respected() -> None:
    words = [(0.0, 1.0), (2.5, 3.0)]
    assert unworded_speech([region(0.0, 3.0)], words, min_gap=1.6, sample_rate=SR) == []
    assert unworded_speech([region(0.0, 3.0)], words, min_gap=1.5, sample_rate=SR) == [
        {"start": 1.0, "end": 2.5}
    ]
