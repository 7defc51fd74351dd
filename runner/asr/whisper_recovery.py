"""Speech that batched Whisper decoding skipped, found and decoded again.

faster-whisper's `BatchedInferencePipeline` packs the VAD's speech into 30 s chunks and decodes
each without timestamps. When a chunk holds several utterances, the model often ends its text
after the first: measured on the 46-minute benchmark input, JFK's "ask not what your country can
do for you" and a whole TIMIT sentence vanished in every repetition (611 deleted words against
101 for sequential decoding); on en_hp0 the last 15 s (a URL read slowly) vanished.

The first pass is therefore run with word timestamps; speech the VAD kept but no word covers, for
at least `min_gap` seconds, is decoded again as clips of its own (`clip_timestamps`) and merged
by time. Recovered text that Whisper itself would call silence or a loop is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# Whisper's own rules (faster-whisper defaults): a "no speech" window, a repetition loop.
NO_SPEECH_PROB = 0.6
LOG_PROB_FLOOR = -1.0
COMPRESSION_RATIO_CEILING = 2.4


def unworded_speech(
    speech: Sequence[dict[str, int]],
    words: Iterable[tuple[float, float]],
    *,
    min_gap: float,
    sample_rate: int,
) -> list[dict[str, float]]:
    """Stretches (seconds) inside the VAD's speech regions (`{"start", "end"}` in samples, as
    faster-whisper's get_speech_timestamps returns them) that no word (start, end) overlaps and
    that last at least `min_gap` seconds."""
    spans = sorted(words)
    clips: list[dict[str, float]] = []
    first = 0  # words before this index end before the current region starts
    for region in speech:
        start, end = region["start"] / sample_rate, region["end"] / sample_rate
        while first < len(spans) and spans[first][1] <= start:
            first += 1
        cursor = start
        for word_start, word_end in spans[first:]:
            if word_start >= end:
                break
            if word_start - cursor >= min_gap:
                clips.append({"start": round(cursor, 3), "end": round(word_start, 3)})
            cursor = max(cursor, word_end)
        if end - cursor >= min_gap:
            clips.append({"start": round(cursor, 3), "end": round(end, 3)})
    return clips


def is_real_speech(segment: Any) -> bool:
    """False for what Whisper would discard: a silent window or a repetition loop."""
    silent = segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOG_PROB_FLOOR
    looping = segment.compression_ratio > COMPRESSION_RATIO_CEILING
    return bool(segment.text.strip()) and not silent and not looping
