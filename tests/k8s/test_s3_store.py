"""S3ObjectStore against moto's S3 server through the real minio client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from maie.storage.base import ObjectNotFound, ObjectStore, audio_key, result_key, results_prefix
from maie.storage.s3 import PART_SIZE, S3ObjectStore


def test_implements_the_store_protocol(s3_store: S3ObjectStore) -> None:
    assert isinstance(s3_store, ObjectStore)


def test_bytes_roundtrip_exists_size_and_uri(s3_store: S3ObjectStore) -> None:
    key = result_key("t1")
    assert not s3_store.exists(key)
    s3_store.put_bytes(key, b'{"ok": true}', "application/json")
    assert s3_store.exists(key)
    assert s3_store.size(key) == 12
    assert s3_store.get_bytes(key) == b'{"ok": true}'
    assert s3_store.uri(key) == f"s3://{s3_store.bucket}/results/t1/result.json"


def test_missing_objects_raise_object_not_found(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        s3_store.get_bytes("results/nope/result.json")
    with pytest.raises(ObjectNotFound):
        s3_store.size("results/nope/result.json")
    with pytest.raises(ObjectNotFound):
        s3_store.download("audio/nope/raw.wav", tmp_path / "x.wav")


def test_put_chunks_streams_multipart_and_counts_bytes(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    # More than one part, odd chunk sizes: exercises the multipart path and the reader's buffering.
    chunk = bytes(range(256)) * 4099
    count = PART_SIZE // len(chunk) + 3
    key = audio_key("big", ".WAV")
    written = s3_store.put_chunks(key, iter([chunk] * count), "audio/wav")
    assert key == "audio/big/raw.wav"
    assert written == len(chunk) * count
    assert s3_store.size(key) == written
    target = tmp_path / "down" / "raw.wav"
    s3_store.download(key, target)
    data = target.read_bytes()
    assert len(data) == written and data[: len(chunk)] == chunk and data[-len(chunk) :] == chunk


def test_put_file_list_and_delete_prefix_only_touch_that_task(
    s3_store: S3ObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "a.srt"
    src.write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    s3_store.put_file(result_key("t1", "a.srt"), src, "text/plain")
    s3_store.put_bytes(result_key("t1"), b"{}")
    s3_store.put_bytes(result_key("t10"), b"{}")  # shares a string prefix, not the folder
    assert s3_store.list_keys(results_prefix("t1")) == ["results/t1/a.srt", "results/t1/result.json"]
    assert s3_store.delete_prefix(results_prefix("t1")) == 2
    assert s3_store.list_keys("results/") == ["results/t10/result.json"]
    assert s3_store.delete_prefix(results_prefix("t1")) == 0
    with pytest.raises(ValueError):
        s3_store.delete_prefix("results")


def test_presigned_url_serves_the_object_without_credentials(s3_store: S3ObjectStore) -> None:
    s3_store.put_bytes("results/t2/result.txt", b"hello", "text/plain")
    url = s3_store.presigned_url("results/t2/result.txt")
    assert "X-Amz-Signature" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"hello"


def test_check_writable_and_for_bucket(s3_store: S3ObjectStore) -> None:
    s3_store.check_writable()
    other = s3_store.for_bucket(s3_store.bucket + "-other")
    other.ensure_bucket()
    other.put_bytes("audio/x/raw.flac", b"fLaC")
    assert other.exists("audio/x/raw.flac") and not s3_store.exists("audio/x/raw.flac")
    assert s3_store.list_keys(".maie-health/") == []
