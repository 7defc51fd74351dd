"""The object-store interface shared by the local directory store and the S3 store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable


def audio_key(task_id: str, ext: str) -> str:
    """audio/{id}/raw.{ext} — ext without the dot, lower case."""
    return f"audio/{task_id}/raw.{ext.lstrip('.').lower()}"


def results_prefix(task_id: str) -> str:
    return f"results/{task_id}/"


def result_key(task_id: str, name: str = "result.json") -> str:
    return f"{results_prefix(task_id)}{name}"


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""


@runtime_checkable
class ObjectStore(Protocol):
    """Blocking operations; async callers wrap them with asyncio.to_thread."""

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def put_chunks(self, key: str, chunks: Iterator[bytes], content_type: str | None = None) -> int:
        """Stream chunks into key; returns the bytes written. Never holds the whole object."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, path: Path) -> None: ...

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


# Async upload source used by the API: chunks as they arrive from the client.
AsyncChunks = AsyncIterator[bytes]
