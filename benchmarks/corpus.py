"""The benchmark inputs: real recordings with references, and a long input made by concatenating them.

References come from the MANIFEST.tsv and refs/ of tests/data (redistributable clips) and of
../shared/data (all of them; MAIE_SHARED_DATA elsewhere); WER is computed after normalising case,
punctuation and whitespace (the references are close, not always word-exact).
"""

from __future__ import annotations

import re
import sys
import unicodedata
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/recordings.py finds data the same way for tests and benchmarks
    sys.path.insert(0, str(ROOT))

from tests.recordings import Recording, all_recordings, find, why_missing  # noqa: E402

WORK = ROOT / "benchmarks" / "work"
SAMPLE_RATE = 16000
__all__ = ["Recording", "data_path", "recordings", "why_missing"]


def recordings() -> list[Recording]:
    """Every recording found (tests/data, then MAIE_SHARED_DATA or ../shared/data), manifest order."""
    return list(all_recordings().values())


def data_path(relpath: str) -> Path:
    """A data file (audio/x.flac, refs/y.txt) or SystemExit naming it and why it is missing."""
    path = find(relpath)
    if path is None:
        raise SystemExit(f"benchmark input missing: {why_missing(relpath)}")
    return path


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces (the WER convention of the data README)."""
    text = unicodedata.normalize("NFC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def wer(reference: str, hypothesis: str, normaliser: str = "basic") -> float:
    """WER after `basic` (case, punctuation) or `whisper` normalisation (Whisper's English text
    normaliser: numbers, spellings, contractions — so "2,046,343" and "2 million 46 343" agree)."""
    import jiwer

    norm = normalise if normaliser == "basic" else _whisper_normaliser()
    ref, hyp = norm(reference), norm(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def has_whisper_normaliser() -> bool:
    try:
        import whisper_normalizer.english  # noqa: F401
    except ImportError:
        return False
    return True


def _whisper_normaliser() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    inner = EnglishTextNormalizer()
    return lambda text: " ".join(inner(text).split())


def _decode(path: Path) -> np.ndarray:
    from faster_whisper import decode_audio

    return np.asarray(decode_audio(str(path), sampling_rate=SAMPLE_RATE), dtype=np.float32)


def build_long_input(minutes: float = 45.0, target: Path | None = None) -> Recording:
    """A `minutes`-long English wav made by concatenating real recordings that have references
    (in manifest order, repeated), with 0.5 s of silence between them. Built once, then reused."""
    target = target or WORK / f"long_{int(minutes)}min.wav"
    ref_file = target.with_suffix(".ref.txt")
    parts = [r for r in recordings() if r.language == "en" and r.reference]
    if target.is_file() and ref_file.is_file():
        with wave.open(str(target)) as w:
            duration = w.getnframes() / w.getframerate()
        return Recording(target.name, target, duration, ref_file.read_text(encoding="utf-8"), "en")
    want = int(minutes * 60 * SAMPLE_RATE)
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    decoded = [(_decode(r.path), r.reference or "") for r in parts]
    chunks: list[np.ndarray] = []
    refs: list[str] = []
    total = 0
    while total < want:
        for samples, ref in decoded:
            if total >= want:
                break
            chunks.extend([samples, gap])
            refs.append(ref)
            total += len(samples) + len(gap)
    audio = np.concatenate(chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(target), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    ref_file.write_text("\n".join(refs), encoding="utf-8")
    return Recording(target.name, target, len(audio) / SAMPLE_RATE, "\n".join(refs), "en")
