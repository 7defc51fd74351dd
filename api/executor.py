"""The local executor of embedded mode: the queue owner, as the operator is in a cluster.

It lives in the API's event loop. Each tick it writes a heartbeat (what /health checks), sweeps
expired results, and starts queued tasks while fewer than MAX_CONCURRENT_TASKS run. Each task runs
the one task runner (`python -m maie.runner.task --stdin`) in its own process, with the local object
store. The executor decides every phase transition from what the runner leaves behind:

- exit 0 or 2: the runner wrote result.json (COMPLETE, or FAILED for the task's own reasons);
- any other exit (a crash, an OOM kill, a storage error): requeued, and the next attempt resumes after
  the last finished stage (checkpoint.json); once MAX_ATTEMPTS runs are spent, the task is FAILED with
  everything the finished stages stored and an error naming the stage and the cause;
- JOB_TIMEOUT: stopped and FAILED the same way.
On start-up, tasks left RUNNING by a killed service are requeued (or failed) by the same rules.
A task that ends with a `callback_url` gets its webhook (maie.webhooks), delivered in the background;
deliveries a killed service left pending are resumed at start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psutil

from maie import checkpoint as records
from maie import metrics, webhooks
from maie.api.task_store import DONE, RUNNING, TaskRow, TaskStore
from maie.contract import ResultDocument, RunnerTask, TaskRequest, WebhookStatus
from maie.failures import describe_death
from maie.logs import request_id_var
from maie.runner_protocol import EXIT_OK, EXIT_TASK_FAILED, WORKER_MODULE, LocalJob, settings_payload
from maie.secrets import stored_secret
from maie.settings import Settings
from maie.storage.base import ObjectNotFound, TaskKeys
from maie.storage.local import LocalObjectStore

log = logging.getLogger("maie.executor")

HEARTBEAT_KEY = "executor_heartbeat"
SWEEP_INTERVAL = 60.0
STDERR_LINES = 200  # what is kept of a worker's output to describe its death
WEBHOOK_SECRET_FILE = "webhook-secret"


@dataclass
class _Running:
    task_id: str
    attempt: int
    process: asyncio.subprocess.Process
    watcher: asyncio.Task[None]
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=STDERR_LINES))


def runner_task(row: TaskRow) -> RunnerTask:
    return RunnerTask(
        task_id=row.id,
        request=TaskRequest.model_validate_json(row.request),
        audio=row.audio_key,
        submitted_at=row.submitted_at,
        request_id=row.request_id,
    )


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
        # Workers start under `nice` (WORKER_NICE), from their first import on: models take every core
        # they can, and the API beside them must still answer at once.
        nice = shutil.which("nice")
        self._nice = [nice, "-n", str(settings.worker_nice)] if nice and settings.worker_nice else []
        self._webhooks: set[asyncio.Task[None]] = set()
        self._webhook_secret: str | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.recover()
        await self._beat()  # healthy from the first request on, not from the first tick
        self._loop_task = asyncio.create_task(self._loop(), name="maie-executor")

    async def recover(self) -> None:
        """Tasks a killed service left RUNNING: requeued (attempt counted), or FAILED when out of them."""
        await asyncio.to_thread(self._kill_orphans)
        for row in await asyncio.to_thread(self.store.list_state, RUNNING):
            await self._after_run(row, returncode=None, output="", reason="the service restarted")
        for row in await asyncio.to_thread(self.store.list_state, DONE):
            pending = row.webhook is None or WebhookStatus.model_validate_json(row.webhook).state == "pending"
            if pending and TaskRequest.model_validate_json(row.request).callback_url:
                self._notify(row.id)

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
        for delivery in list(self._webhooks):  # resumed at the next start (state pending)
            delivery.cancel()

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
        job = LocalJob(
            task=runner_task(row),
            objects_root=str(self.objects.root),
            parent_pid=os.getpid(),
            settings=settings_payload(self.settings),
        )
        token = request_id_var.set(row.request_id or row.id)
        try:
            process = await asyncio.create_subprocess_exec(
                *self._nice, sys.executable, "-m", WORKER_MODULE, "--stdin", "--task", row.id,
                stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert process.stdin is not None
            process.stdin.write(job.model_dump_json().encode())
            await process.stdin.drain()
            process.stdin.close()
            await asyncio.to_thread(self.store.set_worker_pid, row.id, row.attempts, process.pid)
            log.info("task %s attempt %d started in worker pid %d", row.id, row.attempts, process.pid)
            run = _Running(row.id, row.attempts, process, asyncio.create_task(asyncio.sleep(0)))
            run.watcher = asyncio.create_task(self._watch(row, run), name=f"watch-{row.id}")
            self._running[row.id] = run
        finally:
            request_id_var.reset(token)

    async def _relay(self, run: _Running) -> None:
        """The worker's stderr goes on to the service's (its log lines), the tail is kept."""
        stream = run.process.stderr
        assert stream is not None
        while line := await stream.readline():
            text = line.decode("utf-8", errors="replace")
            run.output.append(text.rstrip("\n"))
            sys.stderr.write(text)
        sys.stderr.flush()

    async def _watch(self, row: TaskRow, run: _Running) -> None:
        """Wait for the worker, then settle the task from what the runner left behind."""
        relay = asyncio.create_task(self._relay(run))
        reason: str | None = None
        try:
            try:
                await asyncio.wait_for(run.process.wait(), timeout=self.settings.job_timeout)
            except TimeoutError:
                reason = (
                    f"the task ran longer than JOB_TIMEOUT ({self.settings.job_timeout} s) and was stopped"
                )
                with contextlib.suppress(ProcessLookupError):
                    run.process.kill()
                await run.process.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay, timeout=5)
            await self._after_run(row, run.process.returncode, "\n".join(run.output), reason)
            await self._count_finished(row)
        finally:
            relay.cancel()
            self._running.pop(row.id, None)
            self.wake()

    async def _after_run(self, row: TaskRow, returncode: int | None, output: str, reason: str | None) -> None:
        current = await asyncio.to_thread(self.store.get, row.id)
        if current is None or current.state != RUNNING or current.attempts != row.attempts:
            return  # cancelled, or another attempt owns it now
        task = runner_task(row)
        await asyncio.to_thread(self._record_history, task, row.attempts)
        if reason is None and returncode in (EXIT_OK, EXIT_TASK_FAILED):
            doc = await asyncio.to_thread(self._result, task.keys)
            if doc is not None:
                if await asyncio.to_thread(
                    self.store.finish,
                    row.id,
                    row.attempts,
                    doc.status,
                    doc.to_json(),
                    doc.error,
                    doc.error_code,
                ):
                    log.info("task %s finished: %s", row.id, doc.status.value)
                    self._notify(row.id)
                return
        if self._stopping and reason is None:
            await asyncio.to_thread(
                self.store.requeue, row.id, row.attempts, "service shutting down", count_attempt=False
            )
            log.info("task %s put back in the queue for the next start", row.id)
            return
        _, progress = await asyncio.to_thread(records.load, self.objects, task.keys)
        step = records.dying_step(progress)
        timed_out = reason is not None and "JOB_TIMEOUT" in reason
        if timed_out:
            message = f"the {step.value} stage ran" if step else "the task ran"
            message += f" longer than JOB_TIMEOUT ({self.settings.job_timeout} s) and was stopped"
            await self._give_up(task, row.attempts, message, "timeout")
            return
        attempts = f"attempt {row.attempts} of MAX_ATTEMPTS={self.settings.max_attempts}"
        message = (
            f"{reason} during the {step.value if step else 'queued'} stage ({attempts})"
            if reason
            else describe_death(step=step, returncode=returncode, output=output, when=attempts)
        )
        if row.attempts >= self.settings.max_attempts:
            code = "worker_crashed" if reason is None else "max_attempts_exceeded"
            await self._give_up(task, row.attempts, message, code)
        else:
            await asyncio.to_thread(self.store.requeue, row.id, row.attempts, message)
            log.warning(
                "task %s: %s; requeued (the next attempt resumes after the last stage)", row.id, message
            )

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

    async def _give_up(self, task: RunnerTask, attempt: int, message: str, code: str) -> None:
        doc = await asyncio.to_thread(
            records.fail_after_death,
            task,
            self.objects,
            error=message,
            code=code,
            pipeline_version=self.settings.pipeline_version,
        )
        if await asyncio.to_thread(self.store.fail, task.task_id, attempt, message, code, doc.to_json()):
            self._notify(task.task_id)
        log.error("task %s failed: %s", task.task_id, message)

    # --- webhooks -----------------------------------------------------------------------------
    def _notify(self, task_id: str) -> None:
        """Deliver the finished task's webhook in the background (no-op without a callback_url)."""
        delivery = asyncio.create_task(self._deliver(task_id), name=f"webhook-{task_id}")
        self._webhooks.add(delivery)
        delivery.add_done_callback(self._webhooks.discard)

    def _secret(self) -> str:
        """WEBHOOK_SECRET, or the one generated once in DATA_DIR/webhook-secret."""
        if self._webhook_secret is None:
            path = self.settings.data_dir / WEBHOOK_SECRET_FILE
            self._webhook_secret = stored_secret(self.settings.webhook_secret, path)[0]
        return self._webhook_secret

    async def _deliver(self, task_id: str) -> None:
        row = await asyncio.to_thread(self.store.get, task_id)
        if row is None or row.document is None:
            return
        url = TaskRequest.model_validate_json(row.request).callback_url
        if not url:
            return
        secret = await asyncio.to_thread(self._secret)
        previous = WebhookStatus.model_validate_json(row.webhook) if row.webhook else None

        async def record(status: WebhookStatus) -> None:
            await asyncio.to_thread(self.store.set_webhook, task_id, status.model_dump_json())

        try:
            await webhooks.deliver(url, row.document.encode("utf-8"), self.settings, secret, record, previous)
        except Exception:
            log.exception("webhook of task %s failed", task_id)

    def _result(self, keys: TaskKeys) -> ResultDocument | None:
        try:
            return ResultDocument.model_validate_json(self.objects.get_bytes(keys.result()))
        except (ObjectNotFound, ValueError):
            return None

    def _record_history(self, task: RunnerTask, attempt: int) -> None:
        """Copy the runner's step events of this attempt into the task store's audit trail."""
        _, progress = records.load(self.objects, task.keys)
        if progress is None:
            return
        lines = [
            (e.attempt, f"step_{e.event}", e.step.value if e.step else e.detail, e.at.isoformat())
            for e in progress.history
            if e.attempt == attempt and e.event != "attempt"
        ]
        if lines:
            self.store.add_events(task.task_id, lines)

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
        return sum(self.objects.delete_prefix(p) for p in TaskKeys(task_id).prefixes)

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
                if WORKER_MODULE in " ".join(proc.cmdline()) and row.id in proc.cmdline():
                    log.warning("killing orphan worker pid %d of task %s", row.worker_pid, row.id)
                    proc.kill()
                    proc.wait(timeout=10)
