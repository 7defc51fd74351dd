"""Pure functions from what the operator observes to a Transcription's status (and Events worth posting).

The operator is the one writer of a Transcription's status: the runner reports only through its
task's objects (progress.json, result.json), and the Job and pod say how a run went. Kept free of
I/O, so the translation of every failure mode into a clear `error` reads and tests in one place. Each
function takes the current status and returns a new one (plus Events); the caller diffs and patches.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from maie.checkpoint import Progress
from maie.contract import ResultDocument, TaskStatus, utcnow
from maie.failures import describe_death
from maie.transcription import ConditionType as C
from maie.transcription import Phase, StatusMetrics, TranscriptionStatus

# Waiting reasons that will not fix themselves once they have lasted a grace period (registries
# throttle; a first ImagePullBackOff is often transient): then the Job is stopped and the task fails.
FATAL_WAITING = {
    "ImagePullBackOff": "the runner image cannot be pulled",
    "ErrImagePull": "the runner image cannot be pulled",
    "InvalidImageName": "the runner image name is invalid",
    "CreateContainerConfigError": "the runner container cannot be configured (missing Secret/ConfigMap?)",
}
# Never fixes itself, whatever the wait.
AT_ONCE = {"InvalidImageName"}


class Event(NamedTuple):
    type: str  # Normal | Warning
    reason: str
    message: str


def status_patch(old: TranscriptionStatus, new: TranscriptionStatus) -> dict[str, Any]:
    """A merge patch turning old into new: changed keys, and None for keys that must go."""
    before, after = old.wire(), new.wire()
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch


def accept(status: TranscriptionStatus, *, task_id: str, generation: int | None) -> TranscriptionStatus:
    """First sight of a resource: Queued, stage PENDING, the submission time that orders the queue."""
    new = status.model_copy(deep=True)
    new.phase = new.phase or Phase.QUEUED
    new.stage = new.stage or TaskStatus.PENDING
    new.task_id = task_id
    new.submitted_at = new.submitted_at or utcnow()
    new.observed_generation = generation
    new.set_condition(C.ACCEPTED, True, "Accepted", "the spec is valid", generation=generation)
    return new


def reject(
    status: TranscriptionStatus, message: str, *, reason: str = "InvalidSpec", code: str = "invalid_spec",
    generation: int | None = None,
) -> TranscriptionStatus:  # fmt: skip
    """Refused before any Job: an invalid spec, an unprovisioned namespace, audio it may not read."""
    new = status.model_copy(deep=True)
    new.phase, new.stage, new.error, new.error_code = Phase.FAILED, TaskStatus.FAILED, message, code
    new.completed_at = new.completed_at or utcnow()
    new.set_condition(C.ACCEPTED, False, reason, message, generation=generation)
    new.set_condition(C.FAILED, True, reason, message, generation=generation)
    return new


def queued(status: TranscriptionStatus, cap: int) -> TranscriptionStatus:
    """Waiting for a slot: a condition, no Event (a thousand waiting resources must not flood Events)."""
    new = status.model_copy(deep=True)
    if new.phase is Phase.QUEUED:
        new.set_condition(C.QUEUED, True, "MaxConcurrentJobs", f"waiting for one of {cap} runner Job slots")
    return new


def job_created(status: TranscriptionStatus, job_name: str) -> TranscriptionStatus:
    new = status.model_copy(deep=True)
    new.phase = Phase.RUNNING if not (new.phase and new.phase.finished) else new.phase
    new.job_name = job_name
    if new.condition(C.QUEUED) is not None:
        new.set_condition(C.QUEUED, False, "Admitted", "a runner Job slot is free")
    new.set_condition(C.JOB_CREATED, True, "JobCreated", f"runner Job {job_name} created")
    return new


def job_refused(status: TranscriptionStatus, message: str) -> TranscriptionStatus:
    """The API server refused the Job (a 422 from bad resources, a quota 403): this resource fails alone."""
    new = status.model_copy(deep=True)
    new.phase, new.stage, new.error, new.error_code = Phase.FAILED, TaskStatus.FAILED, message, "job_refused"
    new.completed_at = new.completed_at or utcnow()
    new.set_condition(C.FAILED, True, "JobRefused", message)
    return new


def job_lost(status: TranscriptionStatus) -> tuple[TranscriptionStatus, list[Event]]:
    """The Job disappeared before it finished (a person, or TTL while the operator was away)."""
    new = status.model_copy(deep=True)
    message = "the runner Job was deleted before it finished"
    new.phase, new.stage, new.error, new.error_code = Phase.FAILED, TaskStatus.FAILED, message, "job_lost"
    new.completed_at = new.completed_at or utcnow()
    new.set_condition(C.FAILED, True, "JobDeleted", message)
    return new, [Event("Warning", "JobDeleted", message)]


def progress(status: TranscriptionStatus, record: Progress) -> TranscriptionStatus:
    """What the runner reports in progress.json: stage, step, percent (while the task runs)."""
    new = status.model_copy(deep=True)
    if new.phase is not Phase.RUNNING or record.stage.finished:
        return new
    new.stage, new.step, new.progress = record.stage, record.step, round(record.percent, 1)
    return new


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def job_finished(job: dict[str, Any]) -> bool:
    return _job_condition(job, "Complete") is not None or _job_condition(job, "Failed") is not None


def job_verdict(job: dict[str, Any]) -> tuple[bool, str]:
    """(succeeded, reason) of a finished Job: reason Complete, PodFailurePolicy (the runner's exit 2:
    the task failed and said why in result.json), BackoffLimitExceeded, DeadlineExceeded …"""
    if _job_condition(job, "Complete") is not None:
        return True, "Complete"
    failed = _job_condition(job, "Failed") or {}
    return False, str(failed.get("reason") or "Failed")


def running(status: TranscriptionStatus, job: dict[str, Any]) -> TranscriptionStatus:
    """A Job that has not finished: its attempts so far."""
    new = status.model_copy(deep=True)
    js = job.get("status") or {}
    new.job_name = new.job_name or (job.get("metadata") or {}).get("name")
    attempts = int(js.get("active") or 0) + int(js.get("failed") or 0) + int(js.get("succeeded") or 0)
    if attempts:
        new.attempts = max(attempts, new.attempts or 0)
    if int(js.get("active") or 0) > 0 and not (new.phase and new.phase.finished):
        new.phase = Phase.RUNNING
    return new


def finished(
    status: TranscriptionStatus, job: dict[str, Any], doc: ResultDocument, result_uri: str
) -> tuple[TranscriptionStatus, list[Event]]:
    """The task's end: the result document (the runner's, or the one written after its death) and
    the Job's verdict, copied into status."""
    new = running(status, job)
    name = new.job_name or ""
    succeeded = doc.status is TaskStatus.COMPLETE
    new.phase = Phase.SUCCEEDED if succeeded else Phase.FAILED
    new.stage = doc.status
    new.step = None
    new.progress = 100.0 if succeeded else None
    new.completed_at = (
        new.completed_at or doc.completed_at or _ts((job.get("status") or {}).get("completionTime"))
    )
    new.completed_at = new.completed_at or utcnow()
    new.started_at = new.started_at or doc.started_at
    new.versions = doc.versions.model_dump(mode="json") if doc.versions else None
    new.metrics = StatusMetrics.model_validate(doc.metrics.model_dump()) if doc.metrics else None
    new.result_uri = result_uri
    new.exports = dict(doc.exports) or None
    new.error, new.error_code = doc.error, doc.error_code
    if doc.attempts:
        new.attempts = max(doc.attempts, new.attempts or 0)
    reason = "JobComplete" if succeeded else job_verdict(job)[1]
    if succeeded:
        new.set_condition(C.RUNNING, False, "Completed", "the runner finished")
        new.set_condition(C.SUCCEEDED, True, reason, f"runner Job {name} completed")
        return new, [Event("Normal", "Succeeded", f"runner Job {name} completed")]
    message = doc.error or "the task failed"
    new.set_condition(C.RUNNING, False, reason, message)
    new.set_condition(C.FAILED, True, reason, message)
    return new, [Event("Warning", reason, message)]


def death_message(
    status: TranscriptionStatus, job: dict[str, Any], step: Any, reason: str
) -> tuple[str, str]:
    """(error, code) for a Job that failed because its runner died or ran out of time or retries."""
    spec = job.get("spec") or {}
    js = job.get("status") or {}
    attempts = int(js.get("failed") or 0) + int(js.get("succeeded") or 0) or status.attempts or 1
    last = f"; last attempt: {status.last_failure}" if status.last_failure else ""
    if reason == "DeadlineExceeded":
        deadline = spec.get("activeDeadlineSeconds")
        where = f"the {step.value} stage" if step is not None else "the runner Job"
        return f"{where} was still running at the Job's deadline ({deadline} s) and was stopped{last}", (
            "deadline_exceeded"
        )
    if reason == "BackoffLimitExceeded":
        limit = spec.get("backoffLimit")
        return (
            f"the runner failed {attempts} time(s), the retry limit (backoffLimit {limit}){last}",
            "retries_exhausted",
        )
    return f"the runner Job failed ({reason}){last}", "job_failed"


def mirror_pod(
    status: TranscriptionStatus, pod: dict[str, Any], *, grace: timedelta, now: datetime | None = None
) -> tuple[TranscriptionStatus, list[Event], bool]:
    """Scheduling, image and crash news of the runner pod, in words. Third value: stop the Job now."""
    new = status.model_copy(deep=True)
    events: list[Event] = []
    if new.phase and new.phase.finished:
        return new, events, False
    now = now or utcnow()
    meta = pod.get("metadata") or {}
    ps = pod.get("status") or {}
    for cond in ps.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            message = f"the runner pod cannot be scheduled: {cond.get('message', '')}".strip()
            if new.set_condition(C.RUNNING, False, "Unschedulable", message):
                events.append(Event("Warning", "Unschedulable", message))
    created = _ts(meta.get("creationTimestamp")) or now
    for cs in ps.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in FATAL_WAITING:
            message = f"{FATAL_WAITING[reason]} ({cs.get('image', '')}): {waiting.get('message', '')}".strip()
            if reason in AT_ONCE or now - created >= grace:
                new.phase, new.stage, new.error, new.error_code = (
                    Phase.FAILED, TaskStatus.FAILED, message, "job_failed",
                )  # fmt: skip
                new.completed_at = now
                new.set_condition(C.RUNNING, False, reason, message)
                new.set_condition(C.FAILED, True, reason, message)
                events.append(Event("Warning", reason, message))
                return new, events, True
            if new.set_condition(C.RUNNING, False, reason, f"{message} (retrying for up to {grace})"):
                events.append(Event("Warning", reason, message))
        for term in (state.get("terminated") or {}, (cs.get("lastState") or {}).get("terminated") or {}):
            if term and term.get("exitCode") not in (None, 0, 2):
                oom = term.get("reason") == "OOMKilled"
                text = describe_death(
                    step=new.step,
                    returncode=int(term["exitCode"]),
                    oom=oom,
                    output=str(term.get("message") or ""),
                )
                if new.last_failure != text:
                    new.last_failure = text
                    events.append(Event("Warning", "OOMKilled" if oom else "RunnerDied", text))
        if state.get("running"):
            new.phase = Phase.RUNNING
            new.started_at = new.started_at or _ts(state["running"].get("startedAt")) or now
            new.set_condition(C.RUNNING, True, "PodRunning", f"runner pod {meta.get('name')} is running")
    return new, events, False
