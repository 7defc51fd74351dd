"""The object store of embedded mode: a local directory with the same key layout as S3.

Keys map to files under the root (`audio/{id}/raw.wav` → ROOT/audio/{id}/raw.wav). Writes go to a
temporary file in the same directory and are renamed into place, so a reader (or a crash) never
sees half an object.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from maie.storage.base import ObjectNotFound

_COPY_CHUNK = 1024 * 1024


def _chunks(fh: BinaryIO, size: int) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(size):
            yield chunk


class LocalObjectStore:
    """ObjectStore over a directory. Safe for several processes (atomic renames, no shared state)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # --- key handling -------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        """The file of a key; refuses keys that would leave the root (`..`, absolute paths)."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise ValueError(f"invalid object key: {key!r}")
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in ("", ".", ".."):
            raise ValueError(f"invalid object key: {key!r}")
        path = self.root.joinpath(*parts)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid object key: {key!r}")
        return path

    def _tmp_for(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    # --- writes -------------------------------------------------------------------------
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        target = self.path_for(key)
        tmp = self._tmp_for(target)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def adopt_file(self, key: str, path: Path) -> None:
        """Move a file into the store (a rename when on the same filesystem: no copy of big uploads)."""
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:
            self.put_file(key, path)
            Path(path).unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        target = self.path_for(key)
        tmp = self._tmp_for(target)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    # --- reads --------------------------------------------------------------------------
    def get_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        path = self.path_for(key)
        try:
            fh = path.open("rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        return _chunks(fh, chunk_size)

    def download(self, key: str, path: Path) -> None:
        source = self.path_for(key)
        if not source.is_file():
            raise ObjectNotFound(key)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)

    def local_path(self, key: str) -> Path | None:
        path = self.path_for(key)
        return path if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def size(self, key: str) -> int:
        path = self.path_for(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.stat().st_size

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix; a prefix ending in '/' removes its whole directory."""
        removed = 0
        for key in self.list_keys(prefix):
            try:
                self.path_for(key).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        if prefix.endswith("/") and prefix.strip("/"):
            directory = self.path_for(prefix.rstrip("/"))
            if directory.is_dir():
                shutil.rmtree(directory, ignore_errors=True)
        return removed

    def uri(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def check_writable(self) -> None:
        """Write, read back and delete a small probe object (what /health calls)."""
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".health-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
        usage = shutil.disk_usage(self.root)
        if usage.free < 16 * 1024 * 1024:
            raise OSError(f"less than 16 MiB free under {self.root}")
