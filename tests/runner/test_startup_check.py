"""The runner images' start-up check (RUNNER_STARTUP_CHECK): `maie doctor`'s checks before the task.

With the real doctor: a machine with a problem (here CACHE_DIR is a file, so nothing can be cached)
fails the task at once — a FAILED result naming the problem and its fix, exit 2 (not retried), the
audio never fetched — and a healthy one (the configured tiny.en and SmolLM2 really loaded and run in
child processes) goes on to the task. And the packages check an image relies on: only the pins of
the extras the image was installed for.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from maie.contract import RunnerTask, TaskRequest
from maie.runner import doctor
from maie.runner import task as runner_task
from maie.runner_protocol import EXIT_TASK_FAILED
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.storage.local import LocalObjectStore

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


def run(tmp_path: Path, **settings: object) -> tuple[int, dict[str, object]]:
    store = LocalObjectStore(tmp_path / "objects")
    task = RunnerTask(
        task_id="t1", audio="audio/t1/raw.flac", request=TaskRequest(features=["raw_transcript"])
    )
    code = runner_task.execute(task, store, Settings(data_dir=tmp_path / "data", **settings))
    result = json.loads(store.get_bytes(TaskKeys("t1").result()))
    return code, result


def test_a_problem_fails_the_task_at_once_naming_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache should be")
    code, result = run(tmp_path, runner_startup_check=True, cache_dir=not_a_dir)
    assert code == EXIT_TASK_FAILED
    assert result["status"] == "FAILED" and result["error_code"] == "startup_check_failed"
    error = str(result["error"])
    assert "1 problem(s) found by maie doctor" in error and f"CACHE_DIR={not_a_dir}" in error
    assert "fix:" in error or "writable" in error


def test_a_healthy_machine_goes_on_to_the_task(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="maie.runner")
    code, result = run(tmp_path, runner_startup_check=True, enhancement_mode="always")
    checked = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start-up check:")]
    # Past the check, the runner fetched the (missing) audio: the task's own failure, not the machine's.
    assert code == EXIT_TASK_FAILED and result["error_code"] == "audio_not_found", result
    assert any("tiny.en" in line and "transcribed 1 s of audio" in line for line in checked), checked
    assert any("llama_cpp" in line and "generated one token" in line for line in checked), checked
    assert not any("API key" in line for line in checked)  # a runner has none to check


def test_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[object] = []
    monkeypatch.setattr(doctor, "run_checks", lambda *a, **k: called.append(a) or [])
    assert run(tmp_path)[1]["error_code"] == "audio_not_found" and called == []


def test_an_image_checks_only_its_extras_pins(tmp_path: Path) -> None:
    requires = importlib.metadata.requires("maie") or []
    everything = doctor.wanted_requirements(requires, None)
    runner = doctor.wanted_requirements(requires, ["runner"])
    assert "fastapi==0.163.2" in everything and "fastapi==0.163.2" not in runner
    assert {"faster-whisper==1.2.1", "pydantic==2.14.3"} <= set(runner)  # its own and maie[core]'s
    record = tmp_path / "extras"
    record.write_text("runner\n")
    check = doctor.check_packages(record)
    assert check.ok and "of maie[runner]" in check.detail, check.detail
    assert doctor.check_packages(tmp_path / "absent").ok  # a full install: every pin
