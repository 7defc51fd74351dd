"""The embedded parts on their own: local object store, SQLite task store, expiry, health, key file, logs."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from api_support import LIBRI

from maie import checkpoint as records
from maie.api.app import create_app
from maie.api.auth import resolve_api_key
from maie.api.embedded_backend import EmbeddedBackend
from maie.api.task_store import DONE, QUEUED, RUNNING, TaskStore
from maie.checkpoint import Checkpoint, TranscriptRecord
from maie.contract import AsrVersion, AudioInfo, ResultDocument, Segment, TaskStatus
from maie.logs import JsonFormatter, RequestIdFilter, request_id_var
from maie.settings import Settings
from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys
from maie.storage.local import LocalObjectStore

pytestmark = pytest.mark.unit


# --- LocalObjectStore ----------------------------------------------------------------------------
def test_local_store_key_layout_and_round_trip(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    assert isinstance(store, ObjectStore)
    store.put_bytes("audio/t1/raw.flac", b"abcd")
    assert store.get_bytes("audio/t1/raw.flac") == b"abcd"
    assert store.local_path("audio/t1/raw.flac") == tmp_path / "objects" / "audio" / "t1" / "raw.flac"
    assert (tmp_path / "objects" / "audio" / "t1" / "raw.flac").is_file()
    store.put_bytes("results/t1/result.json", b"{}")
    store.put_file("results/t1/transcript.txt", LIBRI)
    assert store.size("results/t1/transcript.txt") == LIBRI.stat().st_size
    assert store.list_keys("results/t1/") == ["results/t1/result.json", "results/t1/transcript.txt"]
    store.download("audio/t1/raw.flac", tmp_path / "copy.flac")
    assert (tmp_path / "copy.flac").read_bytes() == b"abcd"
    assert store.uri("audio/t1/raw.flac").startswith("file:///")
    assert store.delete_prefix("results/t1/") == 2
    assert not (tmp_path / "objects" / "results" / "t1").exists()
    with pytest.raises(ObjectNotFound):
        store.get_bytes("results/t1/result.json")
    store.check_writable()
    assert [p.name for p in (tmp_path / "objects").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "key", ["../escape", "audio/../../x", "/etc/passwd", "a//b", "a\\b", "audio/./x", ""]
)
def test_local_store_refuses_keys_outside_its_root(tmp_path: Path, key: str) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_adopt_file_moves_without_copying(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    staged = tmp_path / "upload.part"
    staged.write_bytes(b"audio")
    inode = staged.stat().st_ino
    store.adopt_file("audio/t2/raw.wav", staged)
    assert not staged.exists()
    assert store.path_for("audio/t2/raw.wav").stat().st_ino == inode


# --- TaskStore -------------------------------------------------------------------------------------
def _add(store: TaskStore, task_id: str) -> None:
    store.create(
        task_id, '{"features": ["raw_transcript"]}', f"audio/{task_id}/raw.wav",
        filename="a.wav", content_type="audio/wav", size=1, request_id="r", submitted_at=datetime.now(UTC),
    )  # fmt: skip


def test_claims_follow_submission_order_and_count_attempts(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.sqlite3")
    for t in ("a", "b", "c"):
        _add(store, t)
    claimed = [store.claim_next() for _ in range(3)]
    assert [r.id for r in claimed if r] == ["a", "b", "c"]
    assert all(r is not None and r.attempts == 1 and r.state == RUNNING for r in claimed)
    assert store.claim_next() is None
    assert store.count_unfinished() == 3


def test_a_superseded_attempt_can_neither_report_nor_finish(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.sqlite3")
    _add(store, "a")
    first = store.claim_next()
    assert first is not None
    assert store.requeue("a", 1, "worker died")
    second = store.claim_next()
    assert second is not None and second.attempts == 2
    # The first run (say, an orphan that survived) ends late: it cannot complete the task.
    assert not store.finish("a", 1, TaskStatus.COMPLETE, "{}", None, None)
    assert store.finish("a", 2, TaskStatus.COMPLETE, "{}", None, None)
    assert not store.finish("a", 2, TaskStatus.COMPLETE, "{}", None, None)  # never twice
    kinds = [k for _, k, _ in store.events("a")]
    assert kinds == ["claimed", "requeued", "claimed", "finished"]


async def test_restart_requeues_then_fails_keeping_what_finished_stages_stored(tmp_path: Path) -> None:
    """A service killed while a task runs: the task goes back to the queue (attempt counted); out of
    attempts it is FAILED, and the document keeps the transcript its checkpoint holds."""
    backend = EmbeddedBackend(_settings(tmp_path, max_attempts=2))
    _add(backend.store, "a")
    keys = TaskKeys("a")
    segment = Segment(start=0.0, end=2.0, text="He could wait no longer.")
    version = AsrVersion(
        name="whisper", model_variant="tiny.en", model_path="/m", checkpoint_hash="h", compute_type="int8",
        device="cpu", decoding_params={}, inference="sequential",
    )  # fmt: skip
    audio = AudioInfo(format="flac", codec="flac", duration=2.0, sample_rate=16000, channels=1)
    transcript = TranscriptRecord(
        audio=audio, segments=[segment], language="en", version=version, punctuates=True
    )
    records.write(backend.objects, keys.checkpoint, Checkpoint(task_id="a", transcript=transcript))
    for attempt in (1, 2):
        assert backend.store.claim_next() is not None
        await backend.executor.recover()  # what a restarted service does first
        row = backend.store.get("a")
        assert row is not None and row.attempts == attempt
        if attempt == 1:
            assert row.state == QUEUED
    assert row.state == DONE and row.status is TaskStatus.FAILED and row.error_code == "max_attempts_exceeded"
    assert "the service restarted" in (row.error or "") and "attempt 2 of MAX_ATTEMPTS=2" in (row.error or "")
    doc = ResultDocument.model_validate_json(row.document or "")
    assert doc.results is not None and doc.results.raw_transcript == "He could wait no longer."
    assert doc.versions is not None and doc.versions.asr_backend is not None
    assert json.loads(backend.objects.get_bytes(keys.result()))["status"] == "FAILED"


# --- expiry and health through the embedded backend ----------------------------------------------
def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", secret_api_key="k", result_ttl=60, **extra)  # type: ignore[arg-type]


async def test_finished_results_expire_after_result_ttl(tmp_path: Path) -> None:
    backend = EmbeddedBackend(_settings(tmp_path))
    for t in ("old", "fresh"):
        _add(backend.store, t)
        backend.objects.put_bytes(f"audio/{t}/raw.wav", b"x")
        backend.objects.put_bytes(f"results/{t}/result.json", b"{}")
        backend.store.claim_next()
        assert backend.store.finish(t, 1, TaskStatus.COMPLETE, "{}", None, None)
    long_ago = (datetime.now(UTC) - timedelta(seconds=61)).isoformat(timespec="microseconds")
    with sqlite3.connect(backend.store.path) as db:
        db.execute("UPDATE tasks SET completed_at=? WHERE id='old'", (long_ago,))
    assert await backend.executor.sweep_expired() == 1
    assert backend.store.get("old") is None and backend.store.get("fresh") is not None
    assert backend.objects.list_keys("") == ["audio/fresh/raw.wav", "results/fresh/result.json"]


async def test_health_reflects_the_executor(tmp_path: Path) -> None:
    settings = _settings(tmp_path, heartbeat_interval=0.2)
    app = create_app(settings)
    backend = app.state.backend
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        down = await client.get("/health")  # lifespan not run: no executor, no heartbeat
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unavailable" and body["checks"]["executor"]["ok"] is False
        assert body["checks"]["storage"]["ok"] and body["checks"]["task_store"]["ok"]
        await backend.start()
        try:
            up = await client.get("/health")
            assert up.status_code == 200, up.text
            assert up.json()["checks"]["executor"]["ok"] is True
        finally:
            await backend.stop()
        assert (await client.get("/health")).status_code == 503


async def test_one_service_per_data_directory(tmp_path: Path) -> None:
    first = EmbeddedBackend(_settings(tmp_path))
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="already using"):
            await EmbeddedBackend(_settings(tmp_path)).start()
    finally:
        await first.stop()
    again = EmbeddedBackend(_settings(tmp_path))
    await again.start()  # free once the first has stopped
    await again.stop()


# --- the API key file ------------------------------------------------------------------------------
def test_key_file_is_created_once_and_tightened(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    key, path = resolve_api_key(settings)
    assert path == tmp_path / "api-key" and len(key) >= 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    path.chmod(0o644)
    again, _ = resolve_api_key(settings)
    assert again == key and os.stat(path).st_mode & 0o777 == 0o600
    explicit, none = resolve_api_key(Settings(data_dir=tmp_path, secret_api_key="mine"))  # type: ignore[arg-type]
    assert (explicit, none) == ("mine", None)


# --- structured logs ---------------------------------------------------------------------------------
def test_json_log_lines_carry_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("maie.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-123")
    try:
        logger.warning("task %s queued", "t1", extra={"task_id": "t1"})
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["request_id"] == "req-123" and line["message"] == "task t1 queued"
    assert line["task_id"] == "t1" and line["level"] == "WARNING"
