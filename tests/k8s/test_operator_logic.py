"""The operator's rules on their own, without servers: the queue, status transitions, crashes in words."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maie.checkpoint import Progress
from maie.contract import Metrics, ResultDocument, Step, TaskRequest, TaskStatus
from maie.failures import describe_death, output_excerpt, signal_from_returncode
from maie.operator import status as st
from maie.operator.handlers import JobEntry, TxEntry, queue_view
from maie.transcription import Phase, TranscriptionStatus


def tx(name: str, phase: str | None = "Queued", created: str = "2026-01-01T00:00:00Z", **kw: Any) -> TxEntry:
    fields = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "phase": phase, "created": created,
              "submitted": "~", "task_id": name, "deleting": False, **kw}  # fmt: skip
    return TxEntry(**fields)


def index(*entries: Any) -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for key, entry in entries:
        out.setdefault(key, []).append(entry)
    return out


# --- the queue ----------------------------------------------------------------------------------
def test_queued_resources_start_in_creation_order_then_submission_then_name() -> None:
    entries = [
        tx("c", created="2026-01-01T00:00:02Z"),
        tx("b", created="2026-01-01T00:00:01Z", submitted="2026-01-01T00:00:05Z"),
        tx("a", created="2026-01-01T00:00:01Z", submitted="2026-01-01T00:00:04Z"),
        tx("z", created="2026-01-01T00:00:01Z", submitted="2026-01-01T00:00:04Z"),
    ]
    free, waiting = queue_view(index(*[(("ns", e.name), e) for e in entries]), {}, {}, cap=4)
    assert free == 4 and [e.name for e in waiting] == ["a", "z", "b", "c"]


def test_slots_are_held_by_unfinished_jobs_and_jobs_not_yet_watched() -> None:
    txs = index(
        *[(("ns", n), tx(n, phase=p)) for n, p in [("r1", "Running"), ("r2", "Running"), ("q", "Queued")]]
    )
    jobs = index(
        (("ns", "r1"), JobEntry(name="r1-run", owner_uid="uid-r1", finished=False)),
        (("ns", "r2"), JobEntry(name="r2-run", owner_uid="uid-r2", finished=True)),
    )
    free, waiting = queue_view(txs, jobs, {("ns", "new"): 0.0}, cap=3)
    assert free == 1 and [e.name for e in waiting] == ["q"]
    # A resource with any Job (even a finished one), or being deleted, or not Queued, never starts.
    txs[("ns", "r2")] = [tx("r2")]
    txs[("ns", "gone")] = [tx("gone", deleting=True)]
    txs[("ns", "new")] = [tx("new")]
    _, waiting = queue_view(txs, jobs, {("ns", "new"): 0.0}, cap=3)
    assert [e.name for e in waiting] == ["q"]


def test_a_full_cap_leaves_no_slot() -> None:
    jobs = index(
        *[(("ns", f"r{i}"), JobEntry(name=f"r{i}-run", owner_uid="u", finished=False)) for i in range(4)]
    )
    free, waiting = queue_view(index((("ns", "q"), tx("q"))), jobs, {}, cap=4)
    assert free == 0 and len(waiting) == 1


# --- status transitions -------------------------------------------------------------------------
def doc(status: TaskStatus, **kw: Any) -> ResultDocument:
    return ResultDocument(
        task_id="t", status=status, request=TaskRequest(features=["raw_transcript"]),
        metrics=Metrics(processing_time_seconds=2.0, rtf=0.1), **kw,
    )  # fmt: skip


def job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "t-run"},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 100},
        "status": status,
    }


def test_a_finished_job_takes_the_runners_document() -> None:
    running = TranscriptionStatus(phase=Phase.RUNNING, stage=TaskStatus.PROCESSING_ASR, step=Step.ASR)
    complete = job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    new, events = st.finished(running, complete, doc(TaskStatus.COMPLETE, attempts=2), "s3://b/k")
    assert (new.phase, new.stage, new.step, new.progress) == (
        Phase.SUCCEEDED,
        TaskStatus.COMPLETE,
        None,
        100.0,
    )
    assert new.result_uri == "s3://b/k" and new.attempts == 2 and new.metrics and new.metrics.rtf == 0.1
    assert events[0].reason == "Succeeded"
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}])
    new, events = st.finished(
        running, failed, doc(TaskStatus.FAILED, error="bad audio", error_code="invalid_audio"), "u"
    )
    assert new.phase is Phase.FAILED and (new.error, new.error_code) == ("bad audio", "invalid_audio")
    assert new.condition("Failed") is not None and events[0].type == "Warning"


def test_death_messages_name_the_stage_the_limit_and_the_last_attempt() -> None:
    status = TranscriptionStatus(phase=Phase.RUNNING, last_failure="the summary stage crashed: SIGSEGV")
    deadline = job(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    message, code = st.death_message(status, deadline, Step.SUMMARY, "DeadlineExceeded")
    assert code == "deadline_exceeded" and message.startswith("the summary stage was still running")
    assert "(100 s)" in message and message.endswith("last attempt: the summary stage crashed: SIGSEGV")
    message, code = st.death_message(status, job(failed=3), None, "BackoffLimitExceeded")
    assert code == "retries_exhausted" and "failed 3 time(s)" in message and "backoffLimit 2" in message


def test_progress_reaches_status_only_while_running() -> None:
    record = Progress(
        task_id="t", attempt=1, stage=TaskStatus.PROCESSING_LLM, step=Step.SUMMARY, percent=72.46
    )
    running = st.progress(TranscriptionStatus(phase=Phase.RUNNING), record)
    assert (running.stage, running.step, running.progress) == (TaskStatus.PROCESSING_LLM, Step.SUMMARY, 72.5)
    done = TranscriptionStatus(phase=Phase.SUCCEEDED, stage=TaskStatus.COMPLETE)
    assert st.progress(done, record).stage is TaskStatus.COMPLETE  # a late record never flips a final state


def test_an_image_pull_failure_is_fatal_only_after_its_grace() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T11:58:00Z"},
        "status": {
            "containerStatuses": [{"image": "x", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
        },
    }
    running = TranscriptionStatus(phase=Phase.RUNNING)
    new, _, fatal = st.mirror_pod(running, pod, grace=timedelta(minutes=5), now=now)
    assert not fatal and new.phase is Phase.RUNNING and new.condition("Running").reason == "ImagePullBackOff"  # type: ignore[union-attr]
    new, _, fatal = st.mirror_pod(running, pod, grace=timedelta(minutes=1), now=now)
    assert fatal and new.phase is Phase.FAILED


# --- a dead runner in words ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("returncode", "oom", "expected"),
    [
        (
            -signal.SIGSEGV,
            False,
            "the summary stage crashed: SIGSEGV (segmentation fault) in the LLM runtime",
        ),
        (139, False, "the summary stage crashed: SIGSEGV (segmentation fault) in the LLM runtime"),
        (-signal.SIGILL, False, "crashed: SIGILL (illegal instruction: code built for another CPU)"),
        (-signal.SIGKILL, False, "was killed (SIGKILL: usually out of memory, or stopped from outside)"),
        (137, True, "was killed: out of memory (OOMKilled)"),
        (1, False, "exited with code 1 without finishing"),
    ],
)
def test_deaths_are_described_in_words(returncode: int, oom: bool, expected: str) -> None:
    assert expected in describe_death(step=Step.SUMMARY, returncode=returncode, oom=oom)


def test_the_excerpt_of_a_native_crash_is_faulthandlers_innermost_frames() -> None:
    output = "\n".join(
        [
            "loading model",
            "Fatal Python error: Segmentation fault",
            "",
            "Current thread (most recent call first):",
            '  File "/x/llama_cpp/llama.py", line 10 in eval',
            '  File "/x/runner/summarize.py", line 5 in run',
            '  File "/x/runner/pipeline.py", line 1 in run_pipeline',
            '  File "/x/runner/task.py", line 1 in main',
        ]
    )
    excerpt = output_excerpt(output)
    assert excerpt.startswith("Fatal Python error: Segmentation fault") and "llama_cpp/llama.py" in excerpt
    assert "task.py" not in excerpt  # three innermost frames only
    assert output_excerpt("a\nb\nc\nd\ne") == "b | c | d | e"
    assert signal_from_returncode(137) == signal.SIGKILL and signal_from_returncode(2) is None
