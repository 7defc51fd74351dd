"""The object-store interface shared by the local directory store and the S3 store, and the key layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


@dataclass(frozen=True)
class TaskKeys:
    """Where one task's objects live: the one place the key layout is spelled out.

    Embedded mode has one tenant: `audio/{id}/raw.{ext}`, `results/{id}/…`. In Kubernetes mode every
    key carries the namespace (`audio/{ns}/{id}/…`, `results/{ns}/{id}/…`), so a task id chosen in one
    namespace can never name, read or delete another namespace's objects.
    """

    task_id: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        for part in (self.task_id, self.namespace):
            if part is not None and not _SEGMENT.match(part):
                raise ValueError(f"not a safe object-key segment: {part!r}")

    def _prefix(self, kind: str) -> str:
        if self.namespace:
            return f"{kind}/{self.namespace}/{self.task_id}/"
        return f"{kind}/{self.task_id}/"

    @property
    def audio_prefix(self) -> str:
        return self._prefix("audio")

    def audio(self, ext: str) -> str:
        """The uploaded recording: raw.{ext}, ext without the dot, lower case."""
        return f"{self.audio_prefix}raw.{ext.lstrip('.').lower()}"

    @property
    def results_prefix(self) -> str:
        return self._prefix("results")

    def result(self, name: str = "result.json") -> str:
        """result.json (whose presence means "finished"), an export, or the runner's own records."""
        return f"{self.results_prefix}{name}"

    @property
    def progress(self) -> str:
        """What the runner is doing now and what every attempt did (runner → queue owner)."""
        return self.result("progress.json")

    @property
    def checkpoint(self) -> str:
        """The outputs of the finished stages, so a new attempt resumes after the last one."""
        return self.result("checkpoint.json")

    @property
    def prefixes(self) -> tuple[str, str]:
        """Everything the task owns (what deleting it removes)."""
        return self.audio_prefix, self.results_prefix


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""


@runtime_checkable
class ObjectStore(Protocol):
    """Blocking operations; async callers wrap them with asyncio.to_thread."""

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """The object in chunks (a download is never held whole in memory); ObjectNotFound if absent."""
        ...

    def download(self, key: str, path: Path) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is a local directory (read in place, no copy); else None."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix; returns how many were removed."""
        ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def uri(self, key: str) -> str:
        """A location people and tools understand (file:///… or s3://bucket/key)."""
        ...

    def check_writable(self) -> None:
        """Raise if the store cannot be written (used by /health)."""
        ...
