"""One measured run and the per-round ratios: shared by run.py (measures) and report.py (writes),
so neither imports the other."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Run:
    engine: str  # maie | bare | wct2
    recording: str
    duration: float
    wall_s: float  # maie/bare: load + decode inside the process; wct2: the whole process
    peak_rss_mb: float
    process_s: float = 0.0  # the whole process, interpreter start and imports included
    text: str = ""
    wer: float | None = None
    wer_whisper_norm: float | None = None  # with Whisper's English normaliser (if installed)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    engine_s: float | None = None  # maie: seconds spent inside faster-whisper (load, VAD, decoding)
    inference: str | None = None
    round: int = 0
    error: str | None = None

    @property
    def rtf(self) -> float:
        return self.wall_s / self.duration if self.duration else 0.0


def ratio_summary(runs: list[Run], a: str, b: str) -> tuple[list[float], float | None]:
    """Per-round wall-time ratios a/b and their median."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        if not run.error:
            by_round.setdefault(run.round, {})[run.engine] = run
    ratios = [rs[a].wall_s / rs[b].wall_s for rs in by_round.values() if a in rs and b in rs and rs[b].wall_s]
    return ratios, (statistics.median(ratios) if ratios else None)
