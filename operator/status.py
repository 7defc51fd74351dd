"""Pure functions from observed Job / pod state to a Transcription's status (and the Events to post).

Kept free of I/O so the translation of every Kubernetes failure mode into a clear `error` can be
read and tested in one place. Each function takes the current status and returns a new one plus
the Events worth telling people about; the caller diffs and patches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from maie.contract import TaskStatus, utcnow
from maie.transcription import ConditionType as C
from maie.transcription import Phase, TranscriptionStatus

# Waiting reasons that will not fix themselves: the Job is stopped and the resource fails.
FATAL_WAITING = {
    "ImagePullBackOff": "the runner image cannot be pulled",
    "InvalidImageName": "the runner image name is invalid",
    "CreateContainerConfigError": "the runner container cannot be configured (missing Secret/ConfigMap?)",
}
# Waiting reasons worth showing while they last (they may clear up on their own).
TRANSIENT_WAITING = {"ErrImagePull", "CreateContainerError", "ContainerCreating", "PodInitializing"}


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


def reject(status: TranscriptionStatus, message: str, *, generation: int | None) -> TranscriptionStatus:
    new = status.model_copy(deep=True)
    new.phase, new.stage, new.error, new.error_code = Phase.FAILED, TaskStatus.FAILED, message, "invalid_spec"
    new.completed_at = new.completed_at or utcnow()
    new.set_condition(C.ACCEPTED, False, "InvalidSpec", message, generation=generation)
    new.set_condition(C.FAILED, True, "InvalidSpec", message, generation=generation)
    return new


def queued(status: TranscriptionStatus, *, active: int, cap: int) -> TranscriptionStatus:
    new = status.model_copy(deep=True)
    new.set_condition(C.QUEUED, True, "MaxConcurrentJobs", f"{active} of {cap} runner Jobs are running")
    return new


def job_created(status: TranscriptionStatus, job_name: str) -> TranscriptionStatus:
    new = status.model_copy(deep=True)
    new.phase = Phase.RUNNING if not (new.phase and new.phase.finished) else new.phase
    new.job_name = job_name
    if new.condition(C.QUEUED) is not None:
        new.set_condition(C.QUEUED, False, "Admitted", "a runner Job slot is free")
    new.set_condition(C.JOB_CREATED, True, "JobCreated", f"runner Job {job_name} created")
    return new


def job_lost(status: TranscriptionStatus) -> tuple[TranscriptionStatus, list[Event]]:
    """The Job disappeared (a person, or TTL while the operator was away)."""
    new = status.model_copy(deep=True)
    if new.stage is TaskStatus.COMPLETE:  # the runner finished and said so; only the Job is gone
        new.phase = Phase.SUCCEEDED
        new.set_condition(C.SUCCEEDED, True, "RunnerReported", "the runner reported completion")
        return new, []
    message = "the runner Job was deleted before it finished"
    new.phase, new.stage, new.error, new.error_code = Phase.FAILED, TaskStatus.FAILED, message, "job_lost"
    new.completed_at = new.completed_at or utcnow()
    new.set_condition(C.FAILED, True, "JobDeleted", message)
    return new, [Event("Warning", "JobDeleted", message)]


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


def mirror_job(status: TranscriptionStatus, job: dict[str, Any]) -> tuple[TranscriptionStatus, list[Event]]:
    """Copy the Job's state in: attempts, then success or the reason it failed, in words."""
    new = status.model_copy(deep=True)
    events: list[Event] = []
    js = job.get("status") or {}
    spec = job.get("spec") or {}
    name = (job.get("metadata") or {}).get("name", "")
    new.job_name = new.job_name or name
    attempts = int(js.get("active") or 0) + int(js.get("failed") or 0) + int(js.get("succeeded") or 0)
    if attempts:
        new.attempts = max(attempts, new.attempts or 0)
    if new.phase and new.phase.finished and new.condition(new.phase.value) is not None:
        return new, events  # already final: a late event must not flip it

    complete = _job_condition(job, "Complete")
    failed = _job_condition(job, "Failed")
    if complete is not None and new.stage is not TaskStatus.FAILED:
        new.phase, new.stage, new.progress = Phase.SUCCEEDED, TaskStatus.COMPLETE, 100.0
        new.completed_at = new.completed_at or _ts(js.get("completionTime")) or utcnow()
        new.error = new.error_code = None
        new.set_condition(C.RUNNING, False, "Completed", "the runner finished")
        new.set_condition(C.SUCCEEDED, True, "JobComplete", f"runner Job {name} completed")
        events.append(Event("Normal", "Succeeded", f"runner Job {name} completed"))
    elif failed is not None or complete is not None:
        reason = (failed or {}).get("reason") or "RunnerFailed"
        new.phase, new.stage = Phase.FAILED, TaskStatus.FAILED
        new.completed_at = new.completed_at or utcnow()
        new.error = _failure_message(new, failed or {}, spec, attempts)
        new.error_code = new.error_code if reason in {"PodFailurePolicy", "RunnerFailed"} else _code(reason)
        new.set_condition(C.RUNNING, False, reason, new.error)
        new.set_condition(C.FAILED, True, reason, new.error)
        events.append(Event("Warning", reason, new.error))
    elif int(js.get("active") or 0) > 0 and new.phase is not Phase.RUNNING:
        new.phase = Phase.RUNNING
    return new, events


def _code(reason: str) -> str:
    return {"DeadlineExceeded": "deadline_exceeded", "BackoffLimitExceeded": "retries_exhausted"}.get(
        reason, "job_failed"
    )


def _failure_message(
    status: TranscriptionStatus, failed: dict[str, Any], spec: dict[str, Any], attempts: int
) -> str:
    reason = failed.get("reason")
    last = f": {status.error}" if status.error else ""
    if reason == "DeadlineExceeded":
        deadline = spec.get("activeDeadlineSeconds")
        return f"the runner Job ran longer than its deadline ({deadline} s) and was stopped"
    if reason == "BackoffLimitExceeded":
        limit = spec.get("backoffLimit")
        return f"the runner failed {attempts} time(s), the retry limit (backoffLimit {limit}){last}"
    if reason == "PodFailurePolicy":  # the runner said the task itself failed; its error is the one
        return status.error or failed.get("message") or "the task failed"
    return status.error or failed.get("message") or f"the runner Job failed ({reason})"


def mirror_pod(
    status: TranscriptionStatus, pod: dict[str, Any]
) -> tuple[TranscriptionStatus, list[Event], bool]:
    """Scheduling, image and OOM problems of the runner pod, in words. Third value: stop the Job."""
    new = status.model_copy(deep=True)
    events: list[Event] = []
    if new.phase and new.phase.finished:
        return new, events, False
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
    for cs in ps.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        last_terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in FATAL_WAITING:
            reason = str(waiting["reason"])
            message = f"{FATAL_WAITING[reason]} ({cs.get('image', '')}): {waiting.get('message', '')}".strip()
            new.phase, new.stage, new.error, new.error_code = (
                Phase.FAILED,
                TaskStatus.FAILED,
                message,
                "job_failed",
            )
            new.completed_at = utcnow()
            new.set_condition(C.RUNNING, False, reason, message)
            new.set_condition(C.FAILED, True, reason, message)
            events.append(Event("Warning", reason, message))
            return new, events, True
        if waiting.get("reason") in TRANSIENT_WAITING and waiting.get("reason") not in {
            "ContainerCreating",
            "PodInitializing",
        }:
            message = f"{waiting['reason']}: {waiting.get('message', '')}".strip()
            if new.set_condition(C.RUNNING, False, str(waiting["reason"]), message):
                events.append(Event("Warning", str(waiting["reason"]), message))
        for term in (terminated, last_terminated):
            if term.get("reason") == "OOMKilled":
                message = (
                    "the runner ran out of memory (OOMKilled); raise its memory limit or use a smaller model"
                )
                if new.error != message:
                    new.error, new.error_code = message, "oom_killed"
                    events.append(Event("Warning", "OOMKilled", message))
        if state.get("running"):
            new.phase = Phase.RUNNING
            new.started_at = new.started_at or _ts(state["running"].get("startedAt")) or utcnow()
            new.set_condition(
                C.RUNNING, True, "PodRunning", f"runner pod {pod['metadata']['name']} is running"
            )
    return new, events, False
