"""The runner images' start-up check (RUNNER_STARTUP_CHECK): `maie doctor`'s checks before the task.

The doctor itself lands separately (issue 9); here a doctor module with the same interface
(run_checks(settings) → checks with .ok and .line()) stands in, so what is tested is the runner's
side: a machine with problems fails the task at once — a FAILED result naming every problem, exit 2
(not retried), the audio never fetched — and a healthy one goes on to the task.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from maie.contract import RunnerTask, TaskRequest
from maie.runner import task as runner_task
from maie.runner_protocol import EXIT_TASK_FAILED
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.storage.local import LocalObjectStore


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'PROBLEM'}  {self.name}: {self.detail}"


def doctor(monkeypatch: pytest.MonkeyPatch, checks: list[Check]) -> list[Settings]:
    seen: list[Settings] = []
    module = types.ModuleType("fake_doctor")

    def run_checks(settings: Settings) -> list[Check]:
        seen.append(settings)
        return checks

    module.run_checks = run_checks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_doctor", module)
    monkeypatch.setattr(runner_task, "DOCTOR_MODULE", "fake_doctor")
    return seen


def run(tmp_path: Path, **settings: object) -> tuple[int, dict[str, object]]:
    store = LocalObjectStore(tmp_path / "objects")
    task = RunnerTask(
        task_id="t1", audio="audio/t1/raw.flac", request=TaskRequest(features=["raw_transcript"])
    )
    code = runner_task.execute(task, store, Settings(data_dir=tmp_path / "data", **settings))
    result = json.loads(store.get_bytes(TaskKeys("t1").result()))
    return code, result


def test_problems_fail_the_task_at_once_naming_each(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = doctor(
        monkeypatch,
        [
            Check("python", True, "Python 3.11"),
            Check("llama.cpp build vs CPU", False, "the library uses AVX2, which this CPU lacks"),
            Check("DATA_DIR", False, "/work/data is not writable"),
        ],
    )
    code, result = run(tmp_path, runner_startup_check=True)
    assert code == EXIT_TASK_FAILED and len(seen) == 1
    assert result["status"] == "FAILED" and result["error_code"] == "startup_check_failed"
    error = str(result["error"])
    assert "2 problem(s)" in error and "AVX2" in error and "/work/data is not writable" in error
    assert "python" not in error  # only the problems


def test_a_healthy_machine_goes_on_to_the_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = doctor(monkeypatch, [Check("python", True, "Python 3.11")])
    code, result = run(tmp_path, runner_startup_check=True)
    assert len(seen) == 1
    # Past the check, the runner fetched the (missing) audio: the task's own failure, not the machine's.
    assert code == EXIT_TASK_FAILED and result["error_code"] == "audio_not_found"


def test_off_by_default_and_skipped_without_a_doctor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = doctor(monkeypatch, [Check("x", False, "broken")])
    assert run(tmp_path)[1]["error_code"] == "audio_not_found" and seen == []  # RUNNER_STARTUP_CHECK unset
    monkeypatch.setattr(runner_task, "DOCTOR_MODULE", None)  # a build without `maie doctor`
    assert run(tmp_path / "again", runner_startup_check=True)[1]["error_code"] == "audio_not_found"
