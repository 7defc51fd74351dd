"""What every ASR backend provides: load, transcribe (a generator of segments), unload."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from maie.contract import AsrVersion, Segment


@dataclass
class AsrInput:
    """16 kHz mono float32 samples, plus a wav file of them for backends that read files."""

    samples: np.ndarray
    sample_rate: int
    duration: float
    wav_path: Path | None = None


@dataclass
class AsrOutput:
    segments: list[Segment]
    language: str | None
    language_probability: float | None
    duration: float
    speech_duration: float | None = None  # after VAD, when the backend knows it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


class AsrBackend(Protocol):
    """One loaded ASR model. Create with the registry, use, then unload() in finally."""

    name: str
    punctuates: bool  # capability flag: output already has punctuation and casing

    def load(self) -> None: ...

    def transcribe(self, audio: AsrInput) -> Iterator[Segment]:
        """Yield segments as they are decoded (long work is a generator); mostly in time order —
        a backend may add segments for earlier audio at the end, and the stage sorts them."""
        ...

    def progress(self) -> float | None:
        """How far transcribe() is (0–1) when the backend knows better than the last segment's end
        (a second pass over earlier audio); None = judge by the segments."""
        ...

    def result_info(self) -> AsrOutput:
        """Language, duration and VAD figures of the last transcribe(), after it was consumed."""
        ...

    def version(self) -> AsrVersion: ...

    def unload(self) -> None: ...
