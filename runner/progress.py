"""How far along a task is: each stage owns a slice of 0-100 %, so status shows one percentage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from maie.contract import TaskStatus

ProgressCallback = Callable[[TaskStatus, float], None]


@dataclass(frozen=True)
class StagePlan:
    """The slice of the whole task each stage covers, given which stages run."""

    has_audio: bool = True
    has_llm: bool = True

    def span(self, stage: TaskStatus) -> tuple[float, float]:
        asr_end = 60.0 if self.has_llm else 99.0
        if stage is TaskStatus.PREPROCESSING:
            return 0.0, 5.0
        if stage is TaskStatus.PROCESSING_ASR:
            return 5.0, asr_end
        if stage is TaskStatus.PROCESSING_LLM:
            return (asr_end if self.has_audio else 0.0), 99.0
        if stage is TaskStatus.COMPLETE or stage is TaskStatus.FAILED:
            return 100.0, 100.0
        return 0.0, 0.0

    def overall(self, stage: TaskStatus, fraction: float) -> float:
        start, end = self.span(stage)
        return round(start + (end - start) * min(max(fraction, 0.0), 1.0), 1)

    def local(self, stage: TaskStatus, percent: float) -> float:
        """Percent within the stage, from the overall percent (for per-stage progress bars)."""
        start, end = self.span(stage)
        if end <= start:
            return 100.0
        return round(100.0 * min(max((percent - start) / (end - start), 0.0), 1.0), 1)


class Reporter:
    """Turns stage-local fractions into overall percentages for the caller's callback."""

    def __init__(self, plan: StagePlan, callback: ProgressCallback | None) -> None:
        self.plan = plan
        self.callback = callback

    def __call__(self, stage: TaskStatus, fraction: float = 0.0) -> None:
        if self.callback is not None:
            self.callback(stage, self.plan.overall(stage, fraction))

    def within(self, stage: TaskStatus, start: float = 0.0, end: float = 1.0) -> Callable[[float], None]:
        """A fraction callback for part of a stage (e.g. enhancement = first half of the LLM stage)."""
        return lambda fraction: self(stage, start + (end - start) * fraction)
