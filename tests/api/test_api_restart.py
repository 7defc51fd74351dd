"""Nothing lost: SIGKILL the service with one task running and two queued, restart, all three finish once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from api_support import (
    JFK,
    JFK_TEXT,
    LIBRI,
    LIBRI_TEXT,
    RUNNING_STAGES,
    TIMIT,
    TIMIT_TEXT,
    ApiServer,
    submit,
    wait_for,
    wer,
)

from maie.api.task_store import QUEUED, RUNNING, TaskStore

pytestmark = pytest.mark.e2e


def test_sigkill_with_running_and_queued_tasks_then_restart(data_dir: Path) -> None:
    # production = JSON logs: checked below for the request id on every line.
    settings = {"secret_api_key": "restart-key", "max_concurrent_tasks": 1, "environment": "production"}
    first = ApiServer(data_dir, **settings).start()
    try:
        with first.client() as c:
            running = submit(c, JFK)
            queued = [submit(c, TIMIT), submit(c, LIBRI)]
            wait_for(c, running, RUNNING_STAGES)
        store = TaskStore(data_dir / "tasks.sqlite3")
        worker_pid = store.get(running).worker_pid  # type: ignore[union-attr]
        assert worker_pid and psutil.pid_exists(worker_pid)
        first.kill()
    finally:
        first.stop()

    # The worker dies with the service (it must not finish on its own and then run again).
    deadline = time.monotonic() + 10
    while psutil.pid_exists(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(worker_pid), "the worker outlived the killed service"
    states = {t: store.get(t).state for t in [running, *queued]}  # type: ignore[union-attr]
    assert states == {running: RUNNING, queued[0]: QUEUED, queued[1]: QUEUED}

    second = ApiServer(data_dir, **settings)
    second.port = first.port  # same address, same data: what a supervisor's restart does
    second.base_url = first.base_url
    second.start()
    try:
        with second.client() as c:
            docs = {t: wait_for(c, t, {"COMPLETE"}) for t in [running, *queued]}
    finally:
        second.stop()

    def queue_events(task_id: str) -> list[str]:
        return [kind for _, kind, _ in store.events(task_id) if not kind.startswith("step_")]

    for task_id, text in zip([running, *queued], [JFK_TEXT, TIMIT_TEXT, LIBRI_TEXT], strict=True):
        assert wer(text, docs[task_id]["results"]["raw_transcript"]) <= 0.25
        kinds = queue_events(task_id)
        assert kinds.count("finished") == 1, (task_id, kinds)  # none ran twice to completion
    # The interrupted task was requeued and ran again; the queued ones ran once, in submission order.
    assert queue_events(running) == ["claimed", "requeued", "claimed", "finished"]
    assert store.get(running).attempts == 2  # type: ignore[union-attr]
    assert [store.get(t).attempts for t in queued] == [1, 1]  # type: ignore[union-attr]
    finished = [docs[t]["completed_at"] for t in [running, *queued]]
    assert finished == sorted(finished)

    # Structured logs: every JSON line of the API carries a request id, the task's line its submitter's.
    lines = [json.loads(line) for line in first.log_text().splitlines() if line.startswith("{")]
    assert lines and all("request_id" in line for line in lines)
    queued_lines = [line for line in lines if "queued:" in line["message"] and running in line["message"]]
    assert len(queued_lines) == 1 and queued_lines[0]["request_id"] != "-"
    worker_lines = [line for line in lines if line["logger"] == "maie.runner" and running in line["message"]]
    assert worker_lines and {line["request_id"] for line in worker_lines} == {queued_lines[0]["request_id"]}
    assert "restart-key" not in first.log_text()
