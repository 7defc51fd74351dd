"""How far along a task is: each step owns a slice of 0-100 %, so status shows one percentage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from maie.contract import Step, TaskStatus

# Rough share of the work of each step on a CPU (the ASR dominates; the LLM steps split the rest).
_WEIGHTS = {Step.PREPROCESSING: 5.0, Step.ASR: 55.0, Step.ENHANCEMENT: 20.0, Step.SUMMARY: 20.0}


@dataclass(frozen=True)
class Update:
    """One progress report: the step, how far it is (0-1), and the whole task's percent."""

    step: Step
    fraction: float
    percent: float
    event: Literal["started", "finished", "resumed"] | None = None

    @property
    def stage(self) -> TaskStatus:
        return self.step.stage


Observer = Callable[[Update], None]


class StagePlan:
    """The slice of the whole task each step covers, given which steps run (0-99 %; 100 = done)."""

    def __init__(self, steps: list[Step]) -> None:
        total = sum(_WEIGHTS[s] for s in steps) or 1.0
        self.spans: dict[Step, tuple[float, float]] = {}
        start = 0.0
        for step in steps:
            end = start + 99.0 * _WEIGHTS[step] / total
            self.spans[step] = (start, end)
            start = end

    def percent(self, step: Step, fraction: float) -> float:
        start, end = self.spans.get(step, (0.0, 0.0))
        return round(start + (end - start) * min(max(fraction, 0.0), 1.0), 1)
