"""One task in its own process: `python -m maie.api.worker` (the embedded executor starts it).

Why a process: a model that crashes, leaks or runs out of memory takes down this process only, and
the executor can kill it to cancel or time out a task. The job arrives as JSON on stdin (settings
included, so secrets never appear in argv or the environment listing).

The worker dies with the service: PR_SET_PDEATHSIG (Linux) plus a parent watchdog, so a killed
service never leaves a run going that the restart would then repeat.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from maie.api.logging import request_id_var, setup_logging
from maie.api.task_store import RUNNING, TaskStore
from maie.contract import ResultDocument, TaskRequest, TaskStatus, utcnow
from maie.settings import Settings
from maie.storage.base import result_key
from maie.storage.local import LocalObjectStore

log = logging.getLogger("maie.worker")

PROGRESS_MIN_INTERVAL = 0.5  # seconds between progress writes (stage changes are always written)


class WorkerJob(BaseModel):
    task_id: str
    attempt: int
    db_path: str
    objects_root: str
    parent_pid: int
    settings: dict[str, Any]


def _die_with_parent(parent_pid: int) -> None:
    """Get SIGKILLed when the service process dies; and check it has not died already."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(3)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


class ThrottledProgress:
    """Write stage changes at once and percent updates at most every PROGRESS_MIN_INTERVAL seconds."""

    def __init__(self, store: TaskStore, task_id: str, attempt: int) -> None:
        self.store = store
        self.task_id = task_id
        self.attempt = attempt
        self._stage: TaskStatus | None = None
        self._last = 0.0
        self.superseded = False

    def __call__(self, stage: TaskStatus, percent: float) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < PROGRESS_MIN_INTERVAL:
            return
        if stage.finished:
            return  # the final state is written with the document
        self._stage = stage
        self._last = now
        try:
            ok = self.store.report_progress(self.task_id, self.attempt, stage, max(0.0, min(100.0, percent)))
        except Exception as exc:  # progress is best-effort; the result is what matters
            log.warning("progress write failed: %s", exc)
            return
        if not ok and not self.superseded:
            self.superseded = True
            log.warning("task was cancelled or superseded; stopping this run")
            os._exit(4)


def _failed(
    task_id: str, submitted_at: datetime, request: TaskRequest, message: str, code: str
) -> ResultDocument:
    return ResultDocument(
        task_id=task_id,
        status=TaskStatus.FAILED,
        submitted_at=submitted_at,
        completed_at=utcnow(),
        request=request,
        error=message,
        error_code=code,
    )


def run_job(job: WorkerJob) -> int:
    settings = Settings(**job.settings)
    store = TaskStore(Path(job.db_path))
    objects = LocalObjectStore(Path(job.objects_root))
    row = store.get(job.task_id)
    if row is None or row.state != RUNNING or row.attempts != job.attempt:
        log.info("task %s is no longer ours (cancelled or superseded); nothing to do", job.task_id)
        return 0
    request_id_var.set(row.request_id or job.task_id)
    request = TaskRequest.model_validate_json(row.request)
    audio_path = objects.path_for(row.audio_key)
    work_dir = settings.data_dir / "work" / job.task_id
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    progress = ThrottledProgress(store, job.task_id, job.attempt)
    log.info("task %s attempt %d: running the pipeline", job.task_id, job.attempt)

    from maie.runner.pipeline import run_pipeline

    try:
        doc, exports = run_pipeline(
            audio_path,
            request,
            settings=settings,
            task_id=job.task_id,
            submitted_at=row.submitted_at,
            progress=progress,
            work_dir=work_dir,
        )
    except Exception as exc:  # the pipeline should return FAILED documents; never lose the task anyway
        log.exception("pipeline raised")
        doc = _failed(job.task_id, row.submitted_at, request, f"pipeline error: {exc}", "internal_error")
        exports = {}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    doc.task_id = job.task_id
    doc.submitted_at = doc.submitted_at or row.submitted_at
    doc.request = doc.request or request
    doc.progress = 100.0 if doc.status is TaskStatus.COMPLETE else None

    current = store.get(job.task_id)
    if current is None or current.state != RUNNING or current.attempts != job.attempt:
        log.warning("task %s was cancelled or superseded while running; result dropped", job.task_id)
        return 0
    doc.exports = {}
    for name, text in exports.items():
        key = result_key(job.task_id, name)
        objects.put_bytes(key, text.encode("utf-8"))
        doc.exports[name] = key
    document = doc.to_json()
    objects.put_bytes(result_key(job.task_id), document.encode("utf-8"), "application/json")
    if store.finish(job.task_id, job.attempt, doc.status, document, doc.error, doc.error_code):
        log.info("task %s finished: %s", job.task_id, doc.status.value)
    else:
        log.warning("task %s: this attempt was superseded before it could finish", job.task_id)
    return 0


def main() -> int:
    job = WorkerJob.model_validate_json(sys.stdin.read())
    _die_with_parent(job.parent_pid)
    # Models take every core they can; the API (status reads, uploads) must still answer at once.
    # Set before any model thread exists: Linux threads inherit their creator's niceness.
    with contextlib.suppress(OSError):
        os.nice(int(job.settings.get("worker_nice", 0)))
    settings_env = job.settings.get("environment", "development")
    setup_logging(str(settings_env), bool(job.settings.get("debug", False)))
    request_id_var.set(job.task_id)
    return run_job(job)


def settings_payload(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON for the worker, secrets included (they travel over a pipe only)."""
    data = json.loads(settings.model_dump_json())
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            data[name] = value.get_secret_value()
    return data


if __name__ == "__main__":
    sys.exit(main())
