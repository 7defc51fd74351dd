"""Where tasks go: the `TaskBackend` protocol the routers use.

The routers know only the protocol. Embedded mode (`embedded_backend.py`) = SQLite task store + local
object store + local executor; the Kubernetes backend (`k8s_backend.py`) = Transcription resources +
S3. Both hand tasks to the same runner and read its result.json; `app.py` picks one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from maie.api.schemas import CheckResult
from maie.api.uploads import StagedUpload
from maie.contract import AudioInfo, ResultDocument, TaskRequest, TaskStatus
from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys


@dataclass
class Submission:
    """One accepted upload: what to run, and the checked audio file staged on local disk."""

    task_id: str
    request: TaskRequest
    upload: StagedUpload
    audio: AudioInfo | None  # None in kubernetes mode: the runner decodes it
    submitted_at: datetime
    request_id: str | None = None


@dataclass
class CancelOutcome:
    task_id: str
    previous_status: TaskStatus
    was_unfinished: bool
    files_removed: int


@dataclass
class BackendHealth:
    checks: dict[str, CheckResult]
    queue_depth: int
    running: int

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())


@dataclass
class TaskFile:
    """A file of a task's results (result.json or an export), streamed from its store."""

    name: str
    size: int
    chunks: Iterator[bytes]


def open_task_file(store: ObjectStore, keys: TaskKeys, name: str) -> TaskFile | None:
    """The named file under the task's results/ prefix, or None when there is no such file."""
    key = keys.result(name)
    try:
        return TaskFile(name=name, size=store.size(key), chunks=store.iter_bytes(key))
    except ObjectNotFound:
        return None


@runtime_checkable
class TaskBackend(Protocol):
    """What the API needs from wherever tasks run."""

    @property
    def staging_dir(self) -> Path:
        """Local directory for uploads while they stream in and are probed."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, submission: Submission) -> None:
        """Take ownership of the staged file and queue the task."""
        ...

    async def get(self, task_id: str) -> ResultDocument | None:
        """The result document with the live stage and progress; None when unknown."""
        ...

    async def count_unfinished(self) -> int: ...

    async def cancel(self, task_id: str) -> CancelOutcome | None:
        """Stop a queued or running task and remove its files (or delete a finished one)."""
        ...

    async def file(self, task_id: str, name: str) -> TaskFile | None:
        """A file of the task's results (result.json, transcript.srt …); None when it has none."""
        ...

    async def health(self) -> BackendHealth: ...
