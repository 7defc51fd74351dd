"""Stage 2 — speech to text with the chosen ASR backend, loaded for this stage only."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from maie.checkpoint import TranscriptRecord
from maie.contract import Segment
from maie.runner.asr.base import AsrBackend, AsrInput
from maie.runner.preprocess import TARGET_SAMPLE_RATE, PreparedAudio, write_wav


@contextmanager
def loading_in_background(backend: AsrBackend) -> Iterator[Future[None]]:
    """Load the ASR model in a thread while the caller decodes the audio; unload it on the way out.

    Loading (0.3 s for tiny.en, seconds for large models) and decoding the file both wait on
    native code, so on two cores they overlap. Whatever happens inside, the load is waited for
    and the model released before the next stage."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maie-asr-load")
    try:
        yield pool.submit(backend.load)
    finally:
        pool.shutdown(wait=True)
        backend.unload()


def transcribe(
    audio: PreparedAudio,
    backend: AsrBackend,
    loading: Future[None],
    progress: Callable[[float], None] | None = None,
    work_dir: Path | None = None,
) -> TranscriptRecord:
    """Run the ASR stage with a backend whose model `loading_in_background` is loading (and will
    unload)."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".maie-asr-") as tmp:
        wav_path = None
        if getattr(backend, "needs_wav", False):
            wav_path = write_wav(audio.samples, Path(tmp) / "audio16k.wav")
        source = AsrInput(audio.samples, TARGET_SAMPLE_RATE, audio.duration, wav_path)
        loading.result()  # re-raises a failed load here, in the ASR stage
        segments: list[Segment] = []
        reached = 0.0
        for segment in backend.transcribe(source):
            segments.append(segment)
            reached = max(reached, segment.end)
            if progress and audio.duration > 0:
                known = backend.progress()
                progress(min(reached / audio.duration, 1.0) if known is None else known)
        segments.sort(key=lambda s: (s.start, s.end))  # a second pass may fill earlier gaps
        info = backend.result_info()
        version = backend.version()
    return TranscriptRecord(
        audio=audio.info,
        segments=segments,
        language=info.language,
        version=version,
        punctuates=backend.punctuates,
        vad_coverage=vad_coverage(info.speech_duration, audio.duration),
        confidence=confidence(segments),
    )


def vad_coverage(speech_seconds: float | None, duration: float) -> float | None:
    """Share of the recording that voice-activity detection kept as speech."""
    if speech_seconds is None or duration <= 0:
        return None
    return round(min(max(speech_seconds / duration, 0.0), 1.0), 4)


def confidence(segments: list[Segment]) -> float | None:
    """Mean per-segment probability exp(avg_logprob), weighted by segment length."""
    pairs = [
        (math.exp(s.avg_logprob), max(s.end - s.start, 0.01)) for s in segments if s.avg_logprob is not None
    ]
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    return round(sum(p * w for p, w in pairs) / total, 4)
