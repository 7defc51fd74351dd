"""The local executor of embedded mode: worker processes, a bounded number at once, in order.

It lives in the API's event loop. Each tick it writes a heartbeat (what /health checks), sweeps
expired results, and starts queued tasks while fewer than MAX_CONCURRENT_TASKS run. A worker that
exits without finishing its task (a crash, an OOM kill) has its task requeued until MAX_ATTEMPTS
runs were spent; on start-up, tasks left RUNNING by a killed service are requeued the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil

from maie import metrics
from maie.api.logging import request_id_var
from maie.api.task_store import DONE, RUNNING, TaskRow, TaskStore
from maie.api.worker import WorkerJob, settings_payload
from maie.contract import ResultDocument
from maie.settings import Settings
from maie.storage.base import results_prefix
from maie.storage.local import LocalObjectStore

log = logging.getLogger("maie.executor")

HEARTBEAT_KEY = "executor_heartbeat"
SWEEP_INTERVAL = 60.0


@dataclass
class _Running:
    task_id: str
    attempt: int
    process: asyncio.subprocess.Process
    watcher: asyncio.Task[None]


def task_prefixes(task_id: str) -> list[str]:
    return [f"audio/{task_id}/", results_prefix(task_id)]


class LocalExecutor:
    def __init__(self, settings: Settings, store: TaskStore, objects: LocalObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.objects = objects
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_sweep = 0.0
        self.last_heartbeat: float | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._kill_orphans)
        requeued, failed = await asyncio.to_thread(self.store.recover, self.settings.max_attempts)
        if requeued or failed:
            log.warning(
                "recovered after restart: %d requeued, %d failed (out of attempts)",
                len(requeued),
                len(failed),
            )
        await self._beat()  # healthy from the first request on, not from the first tick
        self._loop_task = asyncio.create_task(self._loop(), name="maie-executor")

    async def stop(self) -> None:
        """Graceful shutdown: stop workers and put their tasks back, without spending an attempt."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for run in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
        for run in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(run.watcher, timeout=10)

    @property
    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def running(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("executor tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.heartbeat_interval)
            self._wake.clear()

    async def _beat(self) -> None:
        await asyncio.to_thread(self.store.set_meta, HEARTBEAT_KEY, datetime.now(UTC).isoformat())
        self.last_heartbeat = time.time()

    async def _tick(self) -> None:
        await self._beat()
        if time.monotonic() - self._last_sweep > SWEEP_INTERVAL:
            self._last_sweep = time.monotonic()
            await self.sweep_expired()
        while not self._stopping and len(self._running) < self.settings.max_concurrent_tasks:
            row = await asyncio.to_thread(self.store.claim_next)
            if row is None:
                break
            try:
                await self._spawn(row)
            except Exception as exc:  # e.g. out of processes or file descriptors: retry later
                log.error("could not start a worker for task %s: %s", row.id, exc)
                await asyncio.to_thread(
                    self.store.requeue, row.id, row.attempts, f"worker start failed: {exc}"
                )
                break

    async def _spawn(self, row: TaskRow) -> None:
        job = WorkerJob(
            task_id=row.id,
            attempt=row.attempts,
            db_path=str(self.store.path),
            objects_root=str(self.objects.root),
            parent_pid=os.getpid(),
            settings=settings_payload(self.settings),
        )
        token = request_id_var.set(row.request_id or row.id)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "maie.api.worker", "--task", row.id, stdin=asyncio.subprocess.PIPE
            )
            assert process.stdin is not None
            process.stdin.write(job.model_dump_json().encode())
            await process.stdin.drain()
            process.stdin.close()
            await asyncio.to_thread(self.store.set_worker_pid, row.id, row.attempts, process.pid)
            log.info("task %s attempt %d started in worker pid %d", row.id, row.attempts, process.pid)
            watcher = asyncio.create_task(self._watch(row, process), name=f"watch-{row.id}")
            self._running[row.id] = _Running(row.id, row.attempts, process, watcher)
        finally:
            request_id_var.reset(token)

    async def _watch(self, row: TaskRow, process: asyncio.subprocess.Process) -> None:
        """Wait for the worker; settle the task if the worker could not (crash, timeout, shutdown)."""
        timed_out = False
        try:
            try:
                await asyncio.wait_for(process.wait(), timeout=self.settings.job_timeout)
            except TimeoutError:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            await self._settle(row, process.returncode, timed_out)
            await self._count_finished(row)
        finally:
            self._running.pop(row.id, None)
            self.wake()

    async def _settle(self, row: TaskRow, returncode: int | None, timed_out: bool) -> None:
        current = await asyncio.to_thread(self.store.get, row.id)
        if current is None or current.state == DONE or current.attempts != row.attempts:
            return  # finished normally, or cancelled
        if current.state != RUNNING:
            return
        if timed_out:
            await asyncio.to_thread(
                self.store.fail,
                row.id,
                row.attempts,
                f"the task ran longer than JOB_TIMEOUT ({self.settings.job_timeout} s) and was stopped",
                "timeout",
            )
            log.warning("task %s timed out", row.id)
        elif self._stopping:
            await asyncio.to_thread(
                self.store.requeue, row.id, row.attempts, "service shutting down", count_attempt=False
            )
            log.info("task %s put back in the queue for the next start", row.id)
        elif row.attempts >= self.settings.max_attempts:
            await asyncio.to_thread(
                self.store.fail,
                row.id,
                row.attempts,
                f"the worker process died (exit code {returncode}; a crash or out of memory) "
                f"{row.attempts} times; giving up after MAX_ATTEMPTS={self.settings.max_attempts}",
                "worker_crashed",
            )
            log.error("task %s failed: worker died %d times", row.id, row.attempts)
        else:
            await asyncio.to_thread(
                self.store.requeue, row.id, row.attempts, f"worker exited with code {returncode}"
            )
            log.warning("task %s: worker exited with code %s; requeued", row.id, returncode)

    async def _count_finished(self, row: TaskRow) -> None:
        """The task's final status and stage seconds into the metrics, once (by this attempt)."""
        current = await asyncio.to_thread(self.store.get, row.id)
        if current is None or current.state != DONE or current.attempts != row.attempts:
            return  # requeued, cancelled or finished by another attempt
        measured = None
        if current.document:
            with contextlib.suppress(ValueError):
                measured = ResultDocument.model_validate_json(current.document).metrics
        metrics.observe_finished(
            current.status.value,
            current.error_code,
            measured.stage_seconds if measured else None,
            measured.processing_time_seconds if measured else None,
        )

    # --- cancel and expiry ------------------------------------------------------------------
    async def cancel(self, task_id: str) -> tuple[TaskRow, int] | None:
        """Delete the task (stopping its worker if it runs) and its files: (the row, files removed)."""
        row = await asyncio.to_thread(self.store.delete, task_id)
        if row is None:
            return None
        run = self._running.get(task_id)
        if run is not None:
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(run.watcher), timeout=10)
        removed = await asyncio.to_thread(self._remove_files, task_id)
        log.info("task %s deleted (was %s); %d files removed", task_id, row.status.value, removed)
        return row, removed

    def _remove_files(self, task_id: str) -> int:
        return sum(self.objects.delete_prefix(p) for p in task_prefixes(task_id))

    async def sweep_expired(self) -> int:
        before = datetime.now(UTC) - timedelta(seconds=self.settings.result_ttl)
        ids = await asyncio.to_thread(self.store.expired, before)
        for task_id in ids:
            await asyncio.to_thread(self.store.delete, task_id)
            await asyncio.to_thread(self._remove_files, task_id)
        if ids:
            log.info(
                "expired %d finished tasks older than RESULT_TTL=%d s", len(ids), self.settings.result_ttl
            )
        return len(ids)

    def _kill_orphans(self) -> None:
        """Workers of a previous, killed service that are somehow still alive must not finish too."""
        for row in self.store.list_state(RUNNING):
            if not row.worker_pid:
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(row.worker_pid)
                if "maie.api.worker" in " ".join(proc.cmdline()) and row.id in proc.cmdline():
                    log.warning("killing orphan worker pid %d of task %s", row.worker_pid, row.id)
                    proc.kill()
                    proc.wait(timeout=10)
