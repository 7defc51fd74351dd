"""End to end over real HTTP: real recordings, bundled tiny.en whisper and SmolLM2, real worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jsonschema
import psutil
from api_support import (
    JFK,
    JFK_TEXT,
    LIBRI,
    LIBRI_TEXT,
    RUNNING_STAGES,
    STEW,
    STEW_TEXT,
    TIMIT,
    TIMIT_TEXT,
    ApiServer,
    running_server,
    submit,
    wait_for,
    wer,
)

from maie.api.task_store import TaskStore


def worker_pids(server: ApiServer) -> list[int]:
    children = psutil.Process(server.pid).children(recursive=True)
    return [p.pid for p in children if "maie.runner.task" in " ".join(p.cmdline())]


def store_of(server: ApiServer) -> TaskStore:
    return TaskStore(server.data_dir / "tasks.sqlite3")


def test_transcribe_and_summarize_end_to_end(client: httpx.Client, server: ApiServer) -> None:
    templates = client.get("/v1/templates").json()["templates"]
    schema = next(t["schema"] for t in templates if t["template_id"] == "meeting_notes_v1")

    # Per-task LLM overrides travel from the form to the model (a small model needs the penalty).
    task_id = submit(
        client,
        STEW,
        ["raw_transcript", "summary"],
        template_id="meeting_notes_v1",
        repetition_penalty="1.3",
        max_tokens="256",
    )
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + 600  # a 135M model on two shared cores: slow when the box is busy
    while time.monotonic() < deadline:
        doc = client.get(f"/v1/status/{task_id}").json()
        if doc["status"] in RUNNING_STAGES:
            seen.append((doc["status"], doc["progress"]))
        if doc["status"] in ("COMPLETE", "FAILED"):
            break
        time.sleep(0.1)
    assert doc["status"] == "COMPLETE", doc.get("error")

    # Live stage and progress were visible while it ran, and progress never went backwards.
    stages = [s for s, _ in seen]
    assert "PROCESSING_ASR" in stages and "PROCESSING_LLM" in stages, stages
    assert stages.index("PROCESSING_ASR") < stages.index("PROCESSING_LLM")
    percents = [p for _, p in seen]
    assert all(0 <= p <= 100 for p in percents) and percents == sorted(percents), percents

    results = doc["results"]
    assert wer(STEW_TEXT, results["raw_transcript"]) <= 0.2, results["raw_transcript"]
    jsonschema.validate(results["summary"], schema)
    assert doc["progress"] == 100
    assert doc["submitted_at"] <= doc["started_at"] <= doc["completed_at"]

    versions = doc["versions"]
    assert versions["asr_backend"]["name"] == "whisper"
    assert versions["asr_backend"]["model_variant"] == "tiny.en"
    assert len(versions["asr_backend"]["checkpoint_hash"]) == 64
    assert versions["summarization_llm"]["task"] == "summarization"
    assert versions["summarization_llm"]["decoding_params"]["repetition_penalty"] == 1.3
    metrics = doc["metrics"]
    assert abs(metrics["input_duration_seconds"] - 10.4) < 0.5
    assert metrics["processing_time_seconds"] > 0 and metrics["rtf"] > 0

    # The same document sits in the object store under the S3 key layout, with its exports.
    objects = server.data_dir / "objects"
    stored = json.loads((objects / "results" / task_id / "result.json").read_text())
    assert stored["results"] == results and stored["status"] == "COMPLETE"
    assert (objects / "audio" / task_id / "raw.flac").read_bytes() == STEW.read_bytes()
    # Every export and result.json is served by the API, with its content type.
    assert set(doc["exports"]) == {"transcript.srt", "transcript.vtt", "transcript.txt", "result.json"}
    types = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain"}
    types["json"] = "application/json"
    for name, url in doc["exports"].items():
        assert url == f"/v1/tasks/{task_id}/files/{name}"
        got = client.get(url)
        assert got.status_code == 200 and got.headers["content-type"].startswith(types[name.rsplit(".")[-1]])
        assert got.content == (objects / "results" / task_id / name).read_bytes(), name
        assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert " --> " in client.get(doc["exports"]["transcript.srt"]).text
    # The runner's own records are not served.
    missing = client.get(f"/v1/tasks/{task_id}/files/checkpoint.json")
    assert missing.status_code == 404 and missing.json()["code"] == "file_not_found"
    # The runner's history: one attempt, each step started and finished once, in order.
    steps = [(e["event"], e["step"]) for e in doc["history"] if e["step"]]
    assert steps == [(ev, st) for st in ("preprocessing", "asr", "summary") for ev in ("started", "finished")]
    assert doc["attempts"] == 1


def test_raw_transcript_only(client: httpx.Client) -> None:
    task_id = submit(client, TIMIT, ["raw_transcript"])
    doc = wait_for(client, task_id, {"COMPLETE"})
    assert wer(TIMIT_TEXT, doc["results"]["raw_transcript"]) <= 0.25, doc["results"]["raw_transcript"]
    assert doc["results"]["summary"] is None
    assert doc["request"]["features"] == ["raw_transcript"]
    assert doc["versions"]["summarization_llm"] is None


def test_cancel_running_and_queued_tasks(client: httpx.Client, server: ApiServer) -> None:
    running = submit(client, JFK)
    queued = submit(client, TIMIT)
    wait_for(client, running, RUNNING_STAGES)
    pids = worker_pids(server)
    assert len(pids) == 1
    assert client.get(f"/v1/status/{queued}").json()["status"] == "PENDING"

    gone = client.delete(f"/v1/tasks/{queued}").json()
    assert gone == {"task_id": queued, "cancelled": True, "previous_status": "PENDING", "files_removed": 1}
    stopped = client.delete(f"/v1/tasks/{running}").json()
    assert stopped["cancelled"] is True and stopped["previous_status"] in RUNNING_STAGES

    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE
    for task_id in (running, queued):
        assert client.get(f"/v1/status/{task_id}").status_code == 404
        assert not (server.data_dir / "objects" / "audio" / task_id).exists()
        assert not (server.data_dir / "objects" / "results" / task_id).exists()
    # The executor goes on with the next task.
    after = submit(client, LIBRI)
    doc = wait_for(client, after, {"COMPLETE"})
    assert wer(LIBRI_TEXT, doc["results"]["raw_transcript"]) <= 0.25


def test_worker_killed_mid_task_is_retried_and_api_stays_up(client: httpx.Client, server: ApiServer) -> None:
    """What an OOM kill in a model does: the worker dies, the API does not, the task runs again."""
    task_id = submit(client, JFK)
    wait_for(client, task_id, RUNNING_STAGES)
    (pid,) = worker_pids(server)
    psutil.Process(pid).kill()
    assert client.get("/health").status_code == 200
    doc = wait_for(client, task_id, {"COMPLETE"})
    assert wer(JFK_TEXT, doc["results"]["raw_transcript"]) <= 0.15
    events = store_of(server).events(task_id)
    queue = [(attempt, kind) for attempt, kind, _ in events if not kind.startswith("step_")]
    assert queue == [(1, "claimed"), (1, "requeued"), (2, "claimed"), (2, "finished")], events


def _kill_in_summary(client: httpx.Client, server: ApiServer, task_id: str) -> None:
    """SIGKILL the worker, by its PID, while the task is in the summary step of PROCESSING_LLM."""
    doc = wait_for(client, task_id, {"PROCESSING_LLM"}, timeout=300)
    deadline = time.monotonic() + 60
    while doc.get("step") != "summary" and time.monotonic() < deadline:
        doc = client.get(f"/v1/status/{task_id}").json()
        time.sleep(0.05)
    assert doc.get("step") == "summary", doc
    (pid,) = worker_pids(server)
    psutil.Process(pid).kill()


def test_worker_killed_in_the_llm_stage_resumes_without_repeating_the_asr(
    client: httpx.Client, server: ApiServer
) -> None:
    task_id = submit(client, JFK, ["raw_transcript", "summary"], template_id="meeting_notes_v1")
    _kill_in_summary(client, server, task_id)
    doc = wait_for(client, task_id, {"COMPLETE"}, timeout=600)
    assert wer(JFK_TEXT, doc["results"]["raw_transcript"]) <= 0.15 and doc["results"]["summary"]
    # The stored events say the ASR ran once; the second attempt resumed after it.
    events = store_of(server).events(task_id)
    started = [(attempt, detail) for attempt, kind, detail in events if kind == "step_started"]
    assert started.count((1, "asr")) == 1 and (2, "asr") not in started, events
    assert (1, "summary") in started and (2, "summary") in started
    assert (2, "step_resumed", "asr") in events
    assert doc["attempts"] == 2
    assert [e["step"] for e in doc["history"] if e["event"] == "resumed"] == ["preprocessing", "asr"]


def test_out_of_attempts_the_failed_document_keeps_the_transcript(data_dir: Path) -> None:
    with running_server(data_dir, secret_api_key="k-once", max_attempts=1) as srv, srv.client() as c:
        task_id = submit(c, JFK, ["raw_transcript", "summary"], template_id="meeting_notes_v1")
        _kill_in_summary(c, srv, task_id)
        doc = wait_for(c, task_id, {"FAILED"}, timeout=60)
    assert doc["error_code"] == "worker_crashed"
    assert doc["error"].startswith("the summary stage was killed (SIGKILL"), doc["error"]
    assert "attempt 1 of MAX_ATTEMPTS=1" in doc["error"]
    assert wer(JFK_TEXT, doc["results"]["raw_transcript"]) <= 0.15
    assert doc["versions"]["asr_backend"]["name"] == "whisper" and doc["audio"]["duration"] > 10
    assert doc["metrics"]["stage_seconds"]["asr"] > 0


def test_delete_finished_task_removes_results(client: httpx.Client, server: ApiServer) -> None:
    task_id = submit(client, LIBRI)
    wait_for(client, task_id, {"COMPLETE"})
    result_dir: Path = server.data_dir / "objects" / "results" / task_id
    assert (result_dir / "result.json").is_file()
    body = client.delete(f"/v1/tasks/{task_id}").json()
    assert body["cancelled"] is False and body["previous_status"] == "COMPLETE" and body["files_removed"] >= 2
    assert not result_dir.exists()
    assert client.get(f"/v1/status/{task_id}").status_code == 404


def test_task_over_job_timeout_is_stopped_and_failed(data_dir: Path) -> None:
    """A 4.5-minute recording transcribed (sequentially) and summarised cannot finish within
    JOB_TIMEOUT=10 s here; batched ASR alone sometimes did on a quiet machine (~8 s)."""
    long_talk = JFK.parent / "en_hp0_henry_f_phillips_spoken_wikipedia.ogg"
    with running_server(data_dir, secret_api_key="k-timeout", job_timeout=10) as srv, srv.client() as c:
        started = time.monotonic()
        task_id = submit(
            c, long_talk, ["raw_transcript", "summary"], template_id="meeting_notes_v1", batch_size="0"
        )
        wait_for(c, task_id, RUNNING_STAGES)
        doc = wait_for(c, task_id, {"FAILED"}, timeout=60)
        assert doc["error_code"] == "timeout" and "JOB_TIMEOUT" in doc["error"]
        assert time.monotonic() - started < 40
        assert worker_pids(srv) == []
        assert c.get("/health").status_code == 200
