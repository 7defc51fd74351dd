"""S3ObjectStore against moto's S3 server through the real minio client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys
from maie.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.e2e


def test_implements_the_store_protocol(s3_store: S3ObjectStore) -> None:
    assert isinstance(s3_store, ObjectStore)


def test_bytes_roundtrip_exists_size_and_uri(s3_store: S3ObjectStore) -> None:
    key = TaskKeys("t1").result()
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


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    chunk = bytes(range(256)) * 4099
    big.write_bytes(chunk * 20)  # ~21 MB: more than one multipart part of the minio client
    key = TaskKeys("big", "ns").audio(".WAV")
    assert key == "audio/ns/big/raw.wav"
    s3_store.put_file(key, big, "audio/wav")
    assert s3_store.size(key) == big.stat().st_size and s3_store.local_path(key) is None
    target = tmp_path / "down" / "raw.wav"
    s3_store.download(key, target)
    assert target.read_bytes() == big.read_bytes()


def test_keys_of_two_namespaces_never_collide() -> None:
    a, b = TaskKeys("same-id", "team-a"), TaskKeys("same-id", "team-b")
    assert not set(a.prefixes) & set(b.prefixes)
    assert a.result() == "results/team-a/same-id/result.json"
    assert TaskKeys("same-id").audio_prefix == "audio/same-id/"  # embedded mode: one tenant
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            TaskKeys(bad, "ns")
        with pytest.raises(ValueError):
            TaskKeys("t", bad)


def test_put_file_list_and_delete_prefix_only_touch_that_task(
    s3_store: S3ObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "a.srt"
    src.write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    t1, t10 = TaskKeys("t1"), TaskKeys("t10")
    s3_store.put_file(t1.result("a.srt"), src, "text/plain")
    s3_store.put_bytes(t1.result(), b"{}")
    s3_store.put_bytes(t10.result(), b"{}")  # shares a string prefix, not the folder
    assert s3_store.list_keys(t1.results_prefix) == ["results/t1/a.srt", "results/t1/result.json"]
    assert s3_store.delete_prefix(t1.results_prefix) == 2
    assert s3_store.list_keys("results/") == ["results/t10/result.json"]
    assert s3_store.delete_prefix(t1.results_prefix) == 0
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
