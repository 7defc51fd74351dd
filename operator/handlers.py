"""kopf handlers: Transcription → one runner Job; Job and pod state → the Transcription's status.

Every handler is idempotent (kopf may replay events, a restarted operator sees everything again):
the Job name is derived from the resource, a 409 on create is success, and status is patched as a
diff of what is observed. Status goes through the status subresource with our own client rather
than kopf's `patch`, because one handler may update several resources (admitting queued ones).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from maie.kube import Kube
from maie.operator import status as st
from maie.operator.jobs import build_job
from maie.settings import Settings
from maie.storage.base import results_prefix
from maie.transcription import (
    API_VERSION,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_TRANSCRIPTION,
    MANAGED_BY,
    MANAGED_BY_API,
    PLURAL,
    VERSION,
    DeletionPolicy,
    Phase,
    Transcription,
    TranscriptionStatus,
    job_name_for,
    parse_s3_uri,
)

log = logging.getLogger("maie.operator")


@dataclass
class Context:
    """What the handlers share: settings, the client, the watched namespaces, the admission lock."""

    settings: Settings
    namespaces: list[str]
    kube: Kube | None = None
    admission: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api(self) -> Kube:
        if self.kube is None:
            self.kube = Kube()
        return self.kube

    def lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self._locks_guard:
            self._locks.pop((namespace, name), None)


Change = Callable[[Transcription], tuple[TranscriptionStatus, list[st.Event]]]


def update(ctx: Context, namespace: str, name: str, change: Change) -> Transcription | None:
    """Read the resource fresh, apply `change` to its status, patch the difference, post Events.

    Job, pod and resource handlers run in parallel threads and the bodies they are given may be
    stale, so every status change is a read-modify-write under a per-resource lock. Lock order is
    admission lock, then resource lock — never the reverse. Returns the resource as it was read.
    """
    with ctx.lock_for(namespace, name):
        raw = ctx.api.get_transcription(namespace, name)
        if raw is None:
            return None
        tx = Transcription.model_validate(raw)
        new, events = change(tx)
        _patch(ctx, tx, tx.status, new)
    _post(raw, events)
    return tx


def _ref(tx: dict[str, Any]) -> dict[str, Any]:
    meta = tx.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    }


def _post(tx: dict[str, Any], events: list[st.Event]) -> None:
    for event in events:
        # kopf accepts any mapping with apiVersion/kind/metadata (typed as its Body class only).
        kopf.event(_ref(tx), type=event.type, reason=event.reason, message=event.message[:1024])  # type: ignore[arg-type]


def _patch(ctx: Context, tx: Transcription, old: TranscriptionStatus, new: TranscriptionStatus) -> None:
    patch = st.status_patch(old, new)
    if patch:
        ctx.api.patch_transcription_status(tx.namespace, tx.name, patch)


def _owner_name(obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return str(ref["name"])
    return (meta.get("annotations") or {}).get(LABEL_TRANSCRIPTION) or (meta.get("labels") or {}).get(
        LABEL_TRANSCRIPTION
    )


def _queue_key(tx: Transcription) -> tuple[str, str, str]:
    created = str(tx.metadata.get("creationTimestamp") or "")
    submitted = tx.status.submitted_at.isoformat() if tx.status.submitted_at else "~"
    return created, submitted, tx.name


def admit(ctx: Context) -> set[tuple[str, str]]:
    """Start runner Jobs for the oldest Queued resources while fewer than the cap are running.

    Returns (namespace, name) of every resource that has a Job. Serialised by a lock: handlers of
    different resources run in parallel threads, and two of them must not both take the last slot.
    """
    with ctx.admission:
        jobs = ctx.api.list_runner_jobs(ctx.namespaces)
        with_job = {(j["metadata"].get("namespace"), _owner_name(j)) for j in jobs}
        active = sum(1 for j in jobs if not st.job_finished(j))
        free = ctx.settings.operator_max_concurrent_jobs - active
        if free <= 0:
            return {(ns, n) for ns, n in with_job if n}
        waiting: list[Transcription] = []
        for body in ctx.api.list_transcriptions(ctx.namespaces):
            try:
                tx = Transcription.model_validate(body)
            except ValidationError:
                continue
            deleting = bool(tx.metadata.get("deletionTimestamp"))
            if tx.status.phase is Phase.QUEUED and not deleting and (tx.namespace, tx.name) not in with_job:
                waiting.append(tx)
        for tx in sorted(waiting, key=_queue_key)[:free]:
            job = build_job(tx, ctx.settings)
            job_name = job["metadata"]["name"]
            created = ctx.api.create_job(tx.namespace, job)
            update(ctx, tx.namespace, tx.name, _job_created_change(job_name, created))
            with_job.add((tx.namespace, tx.name))
        return {(ns, n) for ns, n in with_job if n}


def _job_created_change(job_name: str, created: bool) -> Change:
    def change(tx: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
        events = [st.Event("Normal", "JobCreated", f"runner Job {job_name}")] if created else []
        return st.job_created(tx.status, job_name), events

    return change


def _active_jobs(ctx: Context) -> int:
    return sum(1 for j in ctx.api.list_runner_jobs(ctx.namespaces) if not st.job_finished(j))


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Add the handlers to a registry (a fresh one per operator run keeps tests independent)."""

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="schedule")
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reschedule")
    def schedule(*, body: kopf.Body, meta: kopf.Meta, name: str, namespace: str | None, **_: Any) -> None:
        """Accept the resource, then run it when a Job slot is free (retried while Queued)."""
        namespace = namespace or "default"
        raw = dict(body)
        generation = meta.get("generation")
        try:
            Transcription.model_validate(raw)
        except ValidationError as exc:
            message = f"invalid spec: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            with ctx.lock_for(namespace, name):
                old = TranscriptionStatus.model_validate(raw.get("status") or {})
                ctx.api.patch_transcription_status(
                    namespace, name, st.status_patch(old, st.reject(old, message, generation=generation))
                )
            _post(raw, [st.Event("Warning", "InvalidSpec", message)])
            raise kopf.PermanentError(message) from exc
        if meta.get("deletionTimestamp"):
            return

        def accept(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
            if t.status.phase is not None:
                return t.status, []
            new = st.accept(t.status, task_id=t.task_id, generation=generation)
            return new, [st.Event("Normal", "Accepted", f"queued as task {t.task_id}")]

        current = update(ctx, namespace, name, accept)
        if current is None or (current.status.phase and current.status.phase.finished):
            return
        if current.status.job_name:  # resumed with a Job: the Job's events keep the status current
            _check_job_exists(ctx, current)
            return
        if (namespace, name) in admit(ctx):
            return
        cap = ctx.settings.operator_max_concurrent_jobs
        active = _active_jobs(ctx)
        update(ctx, namespace, name, lambda t: (st.queued(t.status, active=active, cap=cap), []))
        raise kopf.TemporaryError(
            f"queued: {cap} runner Jobs are running", delay=ctx.settings.operator_queue_retry_seconds
        )

    @kopf.on.event(
        "batch", "v1", "jobs", registry=registry, labels={LABEL_MANAGED_BY: MANAGED_BY}, id="mirror-job"
    )
    def mirror_job(*, type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        """Job state → resource status; a finished Job frees a slot for the next Queued resource."""
        namespace = namespace or "default"
        job = dict(body)
        owner = _owner_name(job)
        if not owner:
            return
        if type == "DELETED":
            update(ctx, namespace, owner, _lost_job)
            admit(ctx)
            return
        update(ctx, namespace, owner, lambda t: st.mirror_job(t.status, job))
        if st.job_finished(job):
            admit(ctx)

    @kopf.on.event(
        "", "v1", "pods", registry=registry, labels={LABEL_MANAGED_BY: MANAGED_BY}, id="mirror-pod"
    )
    def mirror_pod(*, type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        """Scheduling, image-pull and OOM problems of the runner pod → status and Events."""
        namespace = namespace or "default"
        if type == "DELETED":
            return
        pod = dict(body)
        owner = _owner_name(pod)
        if not owner:
            return
        stop: list[bool] = []

        def change(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
            new, events, fatal = st.mirror_pod(t.status, pod)
            stop.append(fatal)
            return new, events

        tx = update(ctx, namespace, owner, change)
        if tx is not None and any(stop):
            ctx.api.delete_job(namespace, tx.status.job_name or job_name_for(owner))  # frees GPU and slot
            admit(ctx)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="expire",
        interval=ctx.settings.operator_gc_interval,
        labels={LABEL_MANAGED_BY: MANAGED_BY_API},
    )
    def expire(*, body: kopf.Body, name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """API tasks are kept RESULT_TTL seconds after they finish, as in embedded mode; then the
        resource is deleted and the finalizer removes its files. kubectl-made ones are left alone."""
        # The timer's body can lag behind the status the operator itself just patched: read it.
        namespace = namespace or "default"
        fresh = ctx.api.get_transcription(namespace, name)
        if fresh is None:
            return
        try:
            tx = Transcription.model_validate(fresh)
        except ValidationError:
            return
        done = tx.status.completed_at
        if not (tx.status.phase and tx.status.phase.finished) or done is None:
            return
        if datetime.now(UTC) - done > timedelta(seconds=ctx.settings.result_ttl):
            logger.info("result expired (RESULT_TTL=%s s); deleting", ctx.settings.result_ttl)
            ctx.api.delete_transcription(namespace, name)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="cleanup", retries=6, backoff=10)
    def cleanup(*, body: kopf.Body, name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """Stop the Job (and its pod), then delete stored objects as the policy says."""
        namespace = namespace or "default"
        raw = dict(body)
        try:
            tx: Transcription | None = Transcription.model_validate(raw)
        except ValidationError:
            tx = None
        job_name = (tx.status.job_name if tx else None) or job_name_for(name)
        if ctx.api.delete_job(namespace, job_name):
            logger.info("deleted runner Job %s", job_name)
        if tx is not None:
            _delete_objects(ctx, tx, logger)
        ctx.forget(namespace, name)
        admit(ctx)


def _check_job_exists(ctx: Context, tx: Transcription) -> None:
    """On resume: a Job that vanished while the operator was away (TTL, a person) is a lost task."""
    assert tx.status.job_name
    job = ctx.api.get_job(tx.namespace, tx.status.job_name)
    if job is None:
        update(ctx, tx.namespace, tx.name, _lost_job)
    else:
        update(ctx, tx.namespace, tx.name, lambda t: st.mirror_job(t.status, job))


def _lost_job(tx: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
    """The Job is gone: fine if the runner had finished (TTL cleanup) or the resource is being
    deleted (the finalizer stopped it), a failure otherwise."""
    if tx.metadata.get("deletionTimestamp"):
        return tx.status, []
    if tx.status.phase and tx.status.phase.finished and tx.status.condition(tx.status.phase.value):
        return tx.status, []
    return st.job_lost(tx.status)


def _delete_objects(ctx: Context, tx: Transcription, logger: kopf.Logger) -> None:
    policy = tx.spec.deletion_policy or DeletionPolicy(ctx.settings.operator_deletion_policy)
    if policy is DeletionPolicy.RETAIN:
        return
    from maie.storage.s3 import S3ObjectStore

    store = S3ObjectStore.from_settings(ctx.settings)
    prefixes: list[tuple[S3ObjectStore, str]] = []
    # Only what MAIE put there: the task's own audio/{id}/ folder, never a user's other objects.
    if tx.spec.audio.uri.startswith("s3://"):
        bucket, key = parse_s3_uri(tx.spec.audio.uri)
        own = f"audio/{tx.task_id}/"
        if key.startswith(own):
            prefixes.append((store.for_bucket(bucket) if bucket != store.bucket else store, own))
    if policy is DeletionPolicy.DELETE:
        prefixes.append((store, results_prefix(tx.task_id)))
    try:
        for target, prefix in prefixes:
            removed = target.delete_prefix(prefix)
            logger.info("deleted %d object(s) under s3://%s/%s", removed, target.bucket, prefix)
    except Exception as exc:  # S3 down: keep the finalizer and retry
        raise kopf.TemporaryError(f"cannot delete stored objects yet: {exc}", delay=10) from exc
