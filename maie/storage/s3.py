"""Object storage on any S3-protocol server (MinIO in-cluster by default) through the `minio` client.

Same interface and key layout as the local directory store, so the API and the runner do not know
which one they have. Streams in parts: an upload or a download is never held whole in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from maie.storage.base import ObjectNotFound

if TYPE_CHECKING:
    from maie.settings import Settings

_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def _stream(response: Any, size: int) -> Iterator[bytes]:
    try:
        yield from response.stream(size)
    finally:
        response.close()
        response.release_conn()


class S3ObjectStore:
    """`maie.storage.base.ObjectStore` on one bucket of an S3-protocol server."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = False,
        region: str | None = "us-east-1",
        create_bucket: bool = False,
        client: Minio | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = client or Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        if create_bucket:
            self.ensure_bucket()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, bucket: str | None = None, create_bucket: bool = False
    ) -> S3ObjectStore:
        return cls(
            settings.s3_endpoint,
            bucket or settings.s3_bucket,
            access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            secure=settings.s3_secure,
            region=settings.s3_region,
            create_bucket=create_bucket,
        )

    def for_bucket(self, bucket: str) -> S3ObjectStore:
        """The same server and credentials on another bucket (audio given as s3://other/key)."""
        return S3ObjectStore(self.endpoint, bucket, client=self.client)

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:  # created meanwhile by another replica
                if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    # --- writes ---------------------------------------------------------------------------
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        self.client.fput_object(
            self.bucket, key, str(path), content_type=content_type or "application/octet-stream"
        )

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type or "application/octet-stream",
        )

    # --- reads ----------------------------------------------------------------------------
    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            raise self._not_found(exc, key) from exc
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def iter_bytes(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            raise self._not_found(exc, key) from exc
        return _stream(response, chunk_size)

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.fget_object(self.bucket, key, str(path))
        except S3Error as exc:
            raise self._not_found(exc, key) from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise
        return True

    def size(self, key: str) -> int:
        try:
            stat = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            raise self._not_found(exc, key) from exc
        return int(stat.size or 0)

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(
            str(obj.object_name)
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if obj.object_name is not None
        )

    # --- deletes --------------------------------------------------------------------------
    def delete_prefix(self, prefix: str) -> int:
        if not prefix or not prefix.endswith("/"):
            raise ValueError(f"refusing to delete a prefix that is not a folder: {prefix!r}")
        keys = self.list_keys(prefix)
        if not keys:
            return 0
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise OSError(f"S3 delete failed for {len(errors)} object(s) under {prefix}: {errors[0]}")
        return len(keys)

    # --- locations ------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A time-limited GET URL for clients that cannot hold S3 credentials."""
        return self.client.presigned_get_object(self.bucket, key, expires=expires)

    def check_writable(self) -> None:
        key = ".maie-health/probe"
        self.put_bytes(key, b"ok", "text/plain")
        self.client.remove_object(self.bucket, key)

    @staticmethod
    def _not_found(exc: S3Error, key: str) -> Exception:
        return ObjectNotFound(key) if exc.code in _MISSING else exc
