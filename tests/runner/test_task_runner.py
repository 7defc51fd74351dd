"""The one task runner, through its two real entry points and its two stores, with the same tests.

- local: `python -m maie.runner.task --stdin` with a LocalJob and the local directory store — what the
  embedded executor starts;
- s3: `maie run-task` with the task in MAIE_TASK and moto's S3 server — what a runner Job runs (with
  no Kubernetes credentials at all).
The runner's whole contract is in the store: checkpoint.json, progress.json, result.json and exports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maie.contract import ResultDocument, RunnerTask, TaskRequest, TaskStatus
from maie.runner_protocol import EXIT_OK, EXIT_TASK_FAILED, LocalJob, settings_payload
from maie.settings import Settings
from maie.storage.base import ObjectStore, TaskKeys
from maie.storage.local import LocalObjectStore
from maie.storage.s3 import S3ObjectStore
from tests.conftest import recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NS = "team-a"


@dataclass
class Adapter:
    """One of the runner's two setups: a store, and how a queue owner starts the runner on it."""

    name: str
    store: ObjectStore
    namespace: str | None
    start: Any  # (task, tmp_path) -> subprocess.Popen

    def upload(self, task_id: str, audio: Path) -> str:
        keys = TaskKeys(task_id, self.namespace)
        key = keys.audio(audio.suffix)
        self.store.put_file(key, audio)
        if isinstance(self.store, S3ObjectStore):
            return f"s3://{self.store.bucket}/{key}"
        return key

    def json(self, task_id: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.store.get_bytes(TaskKeys(task_id, self.namespace).result(name))))


def _env(**extra: str) -> dict[str, str]:
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and k != "KUBECONFIG"}
    env.update(extra)
    return env


@pytest.fixture(params=["local", "s3"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    if request.param == "local":
        root = tmp_path / "objects"
        settings = Settings(data_dir=tmp_path / "data", runner_status_interval=0.2)

        def start_local(task: RunnerTask, work: Path) -> subprocess.Popen[bytes]:
            job = LocalJob(
                task=task, objects_root=str(root), parent_pid=os.getpid(), settings=settings_payload(settings)
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "maie.runner.task", "--stdin"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=work,
            )  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write(job.model_dump_json().encode())
            proc.stdin.close()
            return proc

        yield Adapter("local", LocalObjectStore(root), None, start_local)
    else:
        store: S3ObjectStore = request.getfixturevalue("s3_store")
        endpoint: str = request.getfixturevalue("s3_endpoint")

        def start_s3(task: RunnerTask, work: Path) -> subprocess.Popen[bytes]:
            env = _env(
                MAIE_TASK=task.model_dump_json(),
                MODE="kubernetes",
                S3_ENDPOINT=endpoint,
                S3_BUCKET=store.bucket,
                S3_ACCESS_KEY="testing",
                S3_SECRET_KEY="testing",
                DATA_DIR=str(work / "data"),
                RUNNER_STATUS_INTERVAL="0.2",
            )
            maie = Path(sys.executable).parent / "maie"
            return subprocess.Popen(
                [str(maie), "run-task"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=work
            )

        yield Adapter("s3", store, NS, start_s3)


def run(adapter: Adapter, task: RunnerTask, tmp_path: Path) -> tuple[int, str]:
    proc = adapter.start(task, tmp_path)
    assert proc.stdout is not None
    out = proc.stdout.read()
    return proc.wait(timeout=600), out.decode(errors="replace")


def make_task(adapter: Adapter, task_id: str, audio: str, **request: Any) -> RunnerTask:
    return RunnerTask(
        task_id=task_id,
        namespace=adapter.namespace,
        request=TaskRequest.model_validate(request or {"features": ["raw_transcript"]}),
        audio=audio,
    )


def test_a_task_runs_and_leaves_its_records_in_the_store(adapter: Adapter, tmp_path: Path) -> None:
    audio = adapter.upload("t-ok", recording("en_librispeech_1089-134691-0000.flac").path)
    code, output = run(adapter, make_task(adapter, "t-ok", audio), tmp_path)
    assert code == EXIT_OK, output
    doc = ResultDocument.model_validate(adapter.json("t-ok", "result.json"))
    assert doc.status is TaskStatus.COMPLETE and doc.results is not None
    assert "wait no longer" in (doc.results.raw_transcript or "").lower()
    assert doc.attempts == 1 and doc.history[0].event == "attempt"
    progress = adapter.json("t-ok", "progress.json")
    assert progress["stage"] == "COMPLETE" and progress["percent"] == 100
    checkpoint = adapter.json("t-ok", "checkpoint.json")  # stored after the ASR, before anything else
    assert checkpoint["transcript"]["segments"]
    assert set(doc.exports) == {"transcript.srt", "transcript.vtt", "transcript.txt"}
    keys = TaskKeys("t-ok", adapter.namespace)
    assert {k for k in adapter.store.list_keys(keys.results_prefix)} == {
        keys.result(n)
        for n in (
            "result.json",
            "progress.json",
            "checkpoint.json",
            "transcript.srt",
            "transcript.vtt",
            "transcript.txt",
        )
    }


def test_killed_in_the_summary_the_next_run_resumes_after_the_asr(adapter: Adapter, tmp_path: Path) -> None:
    audio = adapter.upload("t-kill", recording("en_jfk_inaugural.flac").path)
    task = make_task(
        adapter, "t-kill", audio, features=["raw_transcript", "summary"], template_id="meeting_notes_v1"
    )
    first = adapter.start(task, tmp_path)
    deadline = time.monotonic() + 300
    step = None
    while time.monotonic() < deadline and first.poll() is None:
        try:
            step = adapter.json("t-kill", "progress.json").get("step")
        except Exception:
            step = None
        if step == "summary":
            break
        time.sleep(0.1)
    assert step == "summary", (first.poll(), step)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL

    code, output = run(adapter, task, tmp_path)  # the next attempt: a requeued worker, or the Job's next pod
    assert code == EXIT_OK, output
    doc = ResultDocument.model_validate(adapter.json("t-kill", "result.json"))
    assert doc.status is TaskStatus.COMPLETE and doc.results is not None and doc.results.summary
    assert "ask not what your country" in (doc.results.raw_transcript or "").lower()
    started = [(e.attempt, e.step.value) for e in doc.history if e.event == "started" and e.step]
    assert started == [(1, "preprocessing"), (1, "asr"), (1, "summary"), (2, "summary")], started
    assert doc.attempts == 2
    assert doc.metrics is not None and doc.metrics.stage_seconds["asr"] > 0  # carried from attempt 1


def test_bad_audio_fails_the_task_with_a_document_and_exit_2(adapter: Adapter, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + os.urandom(4000))
    audio = adapter.upload("t-bad", junk)
    code, output = run(adapter, make_task(adapter, "t-bad", audio), tmp_path)
    assert code == EXIT_TASK_FAILED, output
    doc = adapter.json("t-bad", "result.json")
    assert doc["status"] == "FAILED" and doc["error_code"] == "invalid_audio" and doc["error"]


def test_a_task_cannot_read_outside_its_own_audio(adapter: Adapter, tmp_path: Path) -> None:
    other = TaskKeys("victim", "team-b" if adapter.namespace else None)
    adapter.store.put_bytes(other.result(), b"{}")
    stolen = other.result()
    if isinstance(adapter.store, S3ObjectStore):
        stolen = f"s3://{adapter.store.bucket}/{stolen}"
    code, output = run(adapter, make_task(adapter, "t-thief", stolen), tmp_path)
    assert code == EXIT_TASK_FAILED, output
    doc = adapter.json("t-thief", "result.json")
    assert doc["error_code"] == "audio_not_allowed" and "outside" in doc["error"]
