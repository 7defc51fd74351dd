"""The embedded task backend: SQLite + a local directory + worker processes on this machine."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path
from typing import IO

from maie import checkpoint as records
from maie.api.backends import BackendHealth, CancelOutcome, Submission, TaskFile, open_task_file
from maie.api.executor import HEARTBEAT_KEY, LocalExecutor
from maie.api.schemas import CheckResult
from maie.api.task_store import DONE, RUNNING, TaskStore
from maie.checkpoint import Progress
from maie.contract import ResultDocument, TaskRequest, WebhookStatus
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.storage.local import LocalObjectStore


class EmbeddedBackend:
    """SQLite + a local directory + worker processes on this machine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data_dir = Path(settings.data_dir).resolve()
        self.store = TaskStore(data_dir / "tasks.sqlite3")
        self.objects = LocalObjectStore(data_dir / "objects")
        self.executor = LocalExecutor(settings, self.store, self.objects)
        self._staging = data_dir / "uploads"
        self._lock_path = data_dir / "executor.lock"
        self._lock: IO[str] | None = None

    @property
    def staging_dir(self) -> Path:
        return self._staging

    def _take_lock(self) -> None:
        """One service per data directory: a second one would requeue the first one's running tasks."""
        self._lock = self._lock_path.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(
                f"another `maie serve` is already using {self._lock_path.parent}; "
                "stop it or give this one its own --data-dir"
            ) from None
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    async def start(self) -> None:
        self._take_lock()
        self._staging.mkdir(parents=True, exist_ok=True)
        # Half-received uploads of a killed service are garbage.
        for leftover in self._staging.glob("*.part"):
            leftover.unlink(missing_ok=True)
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    async def submit(self, submission: Submission) -> None:
        keys = TaskKeys(submission.task_id)
        key = keys.audio(submission.upload.extension)
        await asyncio.to_thread(self.objects.adopt_file, key, submission.upload.path)
        try:
            await asyncio.to_thread(
                self.store.create,
                submission.task_id,
                submission.request.model_dump_json(),
                key,
                filename=submission.upload.filename,
                content_type=submission.upload.content_type,
                size=submission.upload.size,
                request_id=submission.request_id,
                submitted_at=submission.submitted_at,
            )
        except BaseException:
            await asyncio.to_thread(self.objects.delete_prefix, keys.audio_prefix)
            raise
        self.executor.wake()

    async def get(self, task_id: str) -> ResultDocument | None:
        row = await asyncio.to_thread(self.store.get, task_id)
        if row is None:
            return None
        if row.document:
            doc = ResultDocument.model_validate_json(row.document)
            doc.status = row.status
            doc.webhook = WebhookStatus.model_validate_json(row.webhook) if row.webhook else None
            return doc
        doc = ResultDocument(
            task_id=row.id,
            status=row.status,
            progress=None if row.state == DONE else 0.0,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            request=TaskRequest.model_validate_json(row.request),
            error=row.error,
            error_code=row.error_code,
            attempts=row.attempts or None,
        )
        if row.state != DONE and row.attempts:
            # The runner reports through progress.json, as a Job does; read it as the operator would.
            progress = await asyncio.to_thread(
                records.read, self.objects, TaskKeys(row.id).progress, Progress
            )
            if progress is not None:
                doc.history = progress.history
                if row.state == RUNNING and not progress.stage.finished and progress.attempt == row.attempts:
                    doc.status, doc.step, doc.progress = (
                        progress.stage,
                        progress.step,
                        round(progress.percent, 1),
                    )
        return doc

    async def count_unfinished(self) -> int:
        return await asyncio.to_thread(self.store.count_unfinished)

    async def cancel(self, task_id: str) -> CancelOutcome | None:
        before = await self.get(task_id)  # the live stage, as status showed it
        result = await self.executor.cancel(task_id)
        if result is None or before is None:
            return None
        row, removed = result
        return CancelOutcome(
            task_id=task_id,
            previous_status=before.status,
            was_unfinished=row.state != DONE,
            files_removed=removed,
        )

    async def file(self, task_id: str, name: str) -> TaskFile | None:
        if await asyncio.to_thread(self.store.get, task_id) is None:
            return None
        return await asyncio.to_thread(open_task_file, self.objects, TaskKeys(task_id), name)

    async def health(self) -> BackendHealth:
        checks: dict[str, CheckResult] = {}
        try:
            await asyncio.to_thread(self.objects.check_writable)
            checks["storage"] = CheckResult(ok=True, detail=f"writable: {self.objects.root}")
        except Exception as exc:
            checks["storage"] = CheckResult(ok=False, detail=f"not writable: {exc}")
        depth = running = 0
        heartbeat: str | None = None
        try:
            depth = await asyncio.to_thread(self.store.count_unfinished)
            running = await asyncio.to_thread(self.store.count, RUNNING)
            heartbeat = await asyncio.to_thread(self.store.get_meta, HEARTBEAT_KEY)
            checks["task_store"] = CheckResult(ok=True, detail=f"sqlite: {self.store.path}")
        except Exception as exc:
            checks["task_store"] = CheckResult(ok=False, detail=f"unreachable: {exc}")
        limit = max(3 * self.settings.heartbeat_interval, 10.0)
        last = self.executor.last_heartbeat
        age = None if last is None else time.time() - last
        if not self.executor.alive:
            checks["executor"] = CheckResult(ok=False, detail="executor loop is not running")
        elif age is None or age > limit:
            seen = "never" if age is None else f"{age:.1f} s ago"
            checks["executor"] = CheckResult(
                ok=False, detail=f"no heartbeat within {limit:.0f} s (last {seen})"
            )
        else:
            checks["executor"] = CheckResult(
                ok=True,
                detail=f"heartbeat {age:.1f} s ago (stored {heartbeat}); "
                f"{self.executor.running}/{self.settings.max_concurrent_tasks} workers busy",
            )
        return BackendHealth(checks=checks, queue_depth=depth, running=running)
