"""kopf handlers: Transcription → one runner Job; the Job, its pod and the runner's progress → status.

The operator owns the queue and is the one writer of a Transcription's status. The runner has no
Kubernetes credentials: it reports through its task's objects in S3 (progress.json while it runs,
result.json at the end, checkpoint.json after each stage), and the operator copies them in.

Admission works from an in-memory view fed by the watch streams (two kopf indices: Transcriptions,
and runner Jobs by owner) — never by listing resources — and runs when a resource arrives, when a
Job finishes or disappears, when a resource is deleted, and on a timer as a safety net. Waiting
posts no Events and logs no errors. Errors are per resource: a Job the API server refuses fails that
resource alone, and the queue goes on.

Every handler is idempotent (kopf replays events; a restarted operator sees everything again): Job
names are derived from the resource, a 409 on create is success, Jobs and pods are matched to their
resource by uid, and status is patched as a diff of what is observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from maie import checkpoint as records
from maie import metrics, webhooks
from maie.checkpoint import Progress
from maie.contract import ResultDocument, TaskStatus, WebhookAttempt, WebhookStatus
from maie.kube import Kube
from maie.operator import status as st
from maie.operator.jobs import OverrideNotAllowed, build_job, refused_overrides
from maie.settings import Settings
from maie.storage.access import AudioAccessError, check_audio_location
from maie.storage.base import ObjectNotFound, TaskKeys
from maie.storage.bucket import BucketCreator
from maie.storage.s3 import S3ObjectStore
from maie.transcription import (
    ANNOTATION_UID,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_PHASE,
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
    live_document,
    runner_task,
)

log = logging.getLogger("maie.operator")

PENDING_FORGET_SECONDS = 120.0  # a created Job the watch never showed is forgotten after this

Key = tuple[str, str]  # (namespace, resource name)


@dataclass(frozen=True)
class TxEntry:
    """What admission needs of a Transcription (the `transcriptions` index)."""

    namespace: str
    name: str
    uid: str
    phase: str | None
    created: str
    submitted: str
    task_id: str
    deleting: bool


@dataclass(frozen=True)
class JobEntry:
    """A runner Job (the `runner_jobs` index, keyed by its owner)."""

    name: str
    owner_uid: str
    finished: bool


@dataclass
class Context:
    """What the handlers share: settings, the clients, and the Jobs created but not yet watched."""

    settings: Settings
    namespaces: list[str]
    kube: Kube | None = None
    store: S3ObjectStore | None = None
    pending: dict[Key, float] = field(default_factory=dict)
    webhooks: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    queue_task: asyncio.Task[None] | None = None
    bucket: BucketCreator | None = None
    _admission: asyncio.Lock | None = None
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api(self) -> Kube:
        if self.kube is None:
            self.kube = Kube()
        return self.kube

    @property
    def objects(self) -> S3ObjectStore:
        if self.store is None:
            self.store = S3ObjectStore.from_settings(self.settings)
        return self.store

    @property
    def admission(self) -> asyncio.Lock:
        if self._admission is None:
            self._admission = asyncio.Lock()
        return self._admission

    def lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self._locks_guard:
            self._locks.pop((namespace, name), None)


Change = Callable[[Transcription], tuple[TranscriptionStatus, list[st.Event]]]


def update(
    ctx: Context, namespace: str, name: str, change: Change, *, uid: str | None = None
) -> Transcription | None:
    """Read the resource fresh, apply `change` to its status, patch the difference, post Events.

    Handlers run in parallel threads and the bodies they are given may be stale, so every status
    change is a read-modify-write under a per-resource lock. With `uid`, a resource of the same name
    but another uid (deleted and made again) is left alone. Returns the resource as it was read."""
    with ctx.lock_for(namespace, name):
        raw = ctx.api.get_transcription(namespace, name)
        if raw is None:
            return None
        tx = Transcription.model_validate(raw)
        if uid is not None and str(tx.metadata.get("uid") or "") != uid:
            return None
        new, events = change(tx)
        patch = st.status_patch(tx.status, new)
        if patch:
            ctx.api.patch_transcription_status(namespace, name, patch)
        if new.phase is not None and new.phase != tx.status.phase:
            ctx.api.label_transcription(namespace, name, {LABEL_PHASE: new.phase.value})
            if new.phase.finished and not (tx.status.phase and tx.status.phase.finished):
                measured = new.metrics
                metrics.observe_finished(
                    (new.stage or TaskStatus.FAILED).value,
                    new.error_code,
                    measured.stage_seconds if measured else None,
                    measured.processing_time_seconds if measured else None,
                )
    _post(raw, events, ctx.api)
    return tx


def _post(tx: dict[str, Any], events: list[st.Event], api: Kube | None = None) -> None:
    meta = tx.get("metadata") or {}
    involved = {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}
    ref = {"apiVersion": API_VERSION, "kind": KIND, "metadata": involved}
    for event in events:
        message = event.message[:1024]
        try:
            # kopf accepts any mapping with apiVersion/kind/metadata (typed as its Body class only).
            kopf.event(ref, type=event.type, reason=event.reason, message=message)  # type: ignore[arg-type]
        except LookupError:
            # kopf posts Events only from its handlers' context; the admission timer runs outside it.
            if api is not None:
                _post_directly(api, involved, event.type, event.reason, message)


def _post_directly(api: Kube, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """A core/v1 Event as kopf posts them (source "kopf"), through our client; best effort, as kopf's."""
    now = datetime.now(UTC).isoformat()
    namespace = str(involved.get("namespace") or "default")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": "kopf-event-"},
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": "kopf"},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, **involved, "namespace": namespace},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        api.create_event(namespace, body)
    except Exception as exc:  # an Event is never worth failing the admission that made it
        log.warning("could not post the %s Event of %s/%s: %s", reason, namespace, involved.get("name"), exc)


def _tx_entry(
    namespace: str, name: str, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> TxEntry:
    uid = str(meta.get("uid") or "")
    return TxEntry(
        namespace=namespace,
        name=name,
        uid=uid,
        phase=status.get("phase"),
        created=str(meta.get("creationTimestamp") or ""),
        submitted=str(status.get("submittedAt") or "~"),
        task_id=str(spec.get("taskId") or uid or name),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _owner(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """(name, uid) of the Transcription a Job (owner reference) or a pod (annotations) belongs to."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return str(ref["name"]), str(ref.get("uid") or "") or None
    annotations = meta.get("annotations") or {}
    return annotations.get(LABEL_TRANSCRIPTION), annotations.get(ANNOTATION_UID)


def _api_message(exc: ApiException) -> str:
    with contextlib.suppress(ValueError, TypeError):
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    return str(exc.reason)


# --------------------------------------------------------------------------------------
# admission
# --------------------------------------------------------------------------------------
def _start_job(ctx: Context, entry: TxEntry) -> str | None:
    """Create the runner Job of one queued resource: "started", "refused" (it failed alone),
    "skipped" (no longer queued), or None when the API server is in trouble (try later)."""
    raw = ctx.api.get_transcription(entry.namespace, entry.name)
    if raw is None:
        return "skipped"
    tx = Transcription.model_validate(raw)
    if tx.status.phase is not Phase.QUEUED or tx.metadata.get("deletionTimestamp"):
        return "skipped"
    try:
        job = build_job(tx, ctx.settings)
    except OverrideNotAllowed as exc:  # allowed when it queued; the settings changed since
        refusal = exc.message
        update(ctx, tx.namespace, tx.name, lambda t: (st.job_refused(t.status, refusal), []), uid=entry.uid)
        return "refused"
    job_name = job["metadata"]["name"]
    try:
        created = ctx.api.create_job(tx.namespace, job)
    except ApiException as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (409, 429):
            message = f"the API server refused the runner Job ({exc.status}): {_api_message(exc)}"
            log.warning("%s/%s: %s", tx.namespace, tx.name, message)
            update(
                ctx, tx.namespace, tx.name, lambda t: (st.job_refused(t.status, message), []), uid=entry.uid
            )
            return "refused"
        log.warning("could not create the Job of %s/%s yet: %s", tx.namespace, tx.name, exc.reason)
        return None
    events = [st.Event("Normal", "JobCreated", f"runner Job {job_name}")] if created else []
    update(ctx, tx.namespace, tx.name, lambda t: (st.job_created(t.status, job_name), events), uid=entry.uid)
    return "started"


def queue_view(
    transcriptions: Mapping[Key, Iterable[TxEntry]],
    runner_jobs: Mapping[Key, Iterable[JobEntry]],
    pending: Mapping[Key, float],
    cap: int,
) -> tuple[int, list[TxEntry]]:
    """(free slots, the Queued resources in the order they start): the queue's rule, pure.

    A slot is held by a resource whose Job has not finished, or whose Job was just created and the
    watch has not shown yet (`pending`). Queued resources start in creation order (then submission
    time, then name); one being deleted, or already with a Job, never starts."""
    jobs = {key: list(entries) for key, entries in runner_jobs.items()}
    holders = {k for k, entries in jobs.items() if any(not j.finished for j in entries)} | set(pending)
    waiting = sorted(
        (
            e
            for key, entries in transcriptions.items()
            for e in entries
            if e.phase == Phase.QUEUED.value and not e.deleting and key not in jobs and key not in pending
        ),
        key=lambda e: (e.created, e.submitted, e.name),
    )
    return cap - len(holders), waiting


async def admit(
    ctx: Context,
    transcriptions: kopf.Index[Key, TxEntry],
    runner_jobs: kopf.Index[Key, JobEntry],
    fresh: TxEntry | None = None,
) -> None:
    """Start runner Jobs for the oldest Queued resources while fewer than the cap run.

    Reads only the indices (and the Jobs created since the watch last spoke), in the event loop, so
    no listing and no race with the watch; one admission at a time, so two cannot take one slot.
    `fresh` is the resource whose handler has just queued it: the index shows that only with the
    next event of that resource, which kopf handles after this handler."""
    async with ctx.admission:
        now = time.monotonic()
        for key in [
            k for k, t in ctx.pending.items() if k in runner_jobs or now - t > PENDING_FORGET_SECONDS
        ]:
            del ctx.pending[key]
        cap = ctx.settings.operator_max_concurrent_jobs
        view: dict[Key, Iterable[TxEntry]] = dict(transcriptions.items())
        if fresh is not None:
            view[fresh.namespace, fresh.name] = [fresh]
        free, waiting = queue_view(view, runner_jobs, ctx.pending, cap)
        metrics.OPERATOR_JOBS_RUNNING.set(cap - free)
        metrics.OPERATOR_QUEUED.set(len(waiting))
        for entry in waiting:
            if free <= 0:
                return
            outcome = await asyncio.to_thread(_start_job, ctx, entry)
            if outcome is None:
                return
            if outcome == "refused":
                _notify(ctx, entry.namespace, entry.name)
            if outcome == "started":
                ctx.pending[(entry.namespace, entry.name)] = time.monotonic()
                free -= 1
                metrics.OPERATOR_JOBS_CREATED.inc()
                metrics.OPERATOR_JOBS_RUNNING.inc()
                metrics.OPERATOR_QUEUED.dec()


def _admission_problem(
    ctx: Context, tx: Transcription, transcriptions: kopf.Index[Key, TxEntry]
) -> tuple[str, str, str] | None:
    """(reason, code, message) when this resource must be refused before it queues."""
    provisioned = ctx.settings.operator_runner_namespaces or ctx.namespaces
    if provisioned and tx.namespace not in provisioned:
        return (
            "NamespaceNotProvisioned",
            "namespace_not_provisioned",
            f"namespace {tx.namespace} is not provisioned for MAIE runner Jobs (no runner Secret or "
            f"ConfigMap there); provisioned: {', '.join(provisioned)}",
        )
    refused = refused_overrides(tx, ctx.settings)
    if refused:
        exc = OverrideNotAllowed(refused, list(ctx.settings.operator_allowed_job_overrides))
        return exc.reason, exc.code, exc.message
    try:
        check_audio_location(
            tx.spec.audio.uri, TaskKeys(tx.task_id, tx.namespace), ctx.settings, resolve=False
        )
    except AudioAccessError as exc:
        return "AudioNotAllowed", exc.code, exc.message
    except ValueError as exc:  # a task id that cannot be an object-key segment
        return "InvalidSpec", "invalid_spec", str(exc)
    mine = (str(tx.metadata.get("creationTimestamp") or ""), tx.name)
    for store in transcriptions.values():
        for e in store:
            if (
                e.namespace == tx.namespace
                and e.task_id == tx.task_id
                and e.name != tx.name
                and (e.created, e.name) < mine
            ):
                return (
                    "DuplicateTaskId",
                    "duplicate_task_id",
                    f"task id {tx.task_id} is already used by Transcription {e.name} in this namespace",
                )
    return None


# --------------------------------------------------------------------------------------
# the end of a Job: read what the runner left, or write what its death leaves
# --------------------------------------------------------------------------------------
def _result(ctx: Context, keys: TaskKeys) -> ResultDocument | None:
    try:
        return ResultDocument.model_validate_json(ctx.objects.get_bytes(keys.result()))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        log.warning("unreadable %s: %s", keys.result(), exc)
        return None


def _finish(ctx: Context, namespace: str, name: str, uid: str | None, job: dict[str, Any] | None) -> None:
    """The Job finished (or vanished): copy the runner's result.json into status, or — when the
    runner died and no attempt is left — write the FAILED document that keeps what its finished
    stages stored, with an error naming the stage and the cause."""
    raw = ctx.api.get_transcription(namespace, name)
    if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
        return
    tx = Transcription.model_validate(raw)
    if uid and str(tx.metadata.get("uid") or "") != uid:
        return
    if tx.status.phase and tx.status.phase.finished and tx.status.condition(tx.status.phase.value):
        return  # already final: a late event must not flip it
    task = runner_task(tx)
    keys = task.keys
    doc = _result(ctx, keys)
    job = job or {}
    succeeded, reason = st.job_verdict(job) if job else (False, "JobDeleted")
    if doc is None or (
        not succeeded and reason != "PodFailurePolicy" and doc.status is not TaskStatus.COMPLETE
    ):
        if not job:
            update(ctx, namespace, name, lambda t: st.job_lost(t.status), uid=uid)
            return
        _, progress = records.load(ctx.objects, keys)
        step = records.dying_step(progress)
        if succeeded:
            error, code = "the runner Job completed but left no result.json", "result_missing"
        else:
            error, code = st.death_message(tx.status, job, step, reason)
        doc = records.fail_after_death(
            task, ctx.objects, error=error, code=code, pipeline_version=ctx.settings.pipeline_version
        )
    result_uri = ctx.objects.uri(keys.result())
    update(ctx, namespace, name, lambda t: st.finished(t.status, job, doc, result_uri), uid=uid)


def _stop_for_good(ctx: Context, tx: Transcription) -> None:
    """A pod problem that will not fix itself: stop the Job (frees the GPU and the slot) and leave
    a FAILED result.json with whatever the runner had finished, as every ended task has."""
    fresh = ctx.api.get_transcription(tx.namespace, tx.name)
    error = (fresh or {}).get("status", {}).get("error") or "the runner pod cannot run"
    ctx.api.delete_job(tx.namespace, tx.status.job_name or job_name_for(tx.name))
    records.fail_after_death(
        runner_task(tx),
        ctx.objects,
        error=error,
        code="job_failed",
        pipeline_version=ctx.settings.pipeline_version,
    )


def _mirror_progress(ctx: Context, namespace: str, name: str, tx: Transcription) -> None:
    record = records.read(ctx.objects, TaskKeys(tx.task_id, namespace).progress, Progress)
    if record is not None:
        update(
            ctx,
            namespace,
            name,
            lambda t: (st.progress(t.status, record), []),
            uid=str(tx.metadata.get("uid") or "") or None,
        )


# --------------------------------------------------------------------------------------
# webhooks: when a resource ends, POST its result document to spec.callbackUrl (signed)
# --------------------------------------------------------------------------------------
def _notify(ctx: Context, namespace: str, name: str) -> None:
    """Deliver the finished resource's webhook in the background (no-op without a callbackUrl)."""
    key = (namespace, name)
    if key not in ctx.webhooks:
        task = asyncio.create_task(_deliver(ctx, namespace, name), name=f"webhook-{namespace}-{name}")
        ctx.webhooks[key] = task
        task.add_done_callback(lambda _: ctx.webhooks.pop(key, None))


async def _deliver(ctx: Context, namespace: str, name: str) -> None:
    raw = await asyncio.to_thread(ctx.api.get_transcription, namespace, name)
    if raw is None:
        return
    tx = Transcription.model_validate(raw)
    url = tx.spec.callback_url
    done = tx.status.phase is not None and tx.status.phase.finished
    if not url or not done or (tx.status.webhook is not None and tx.status.webhook.state != "pending"):
        return
    uid = str(tx.metadata.get("uid") or "") or None

    async def record(webhook: WebhookStatus) -> None:
        def change(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
            new = t.status.model_copy(deep=True)
            new.webhook = webhook
            return new, []

        await asyncio.to_thread(update, ctx, namespace, name, change, uid=uid)

    secret = ctx.settings.webhook_secret
    if secret is None or not secret.get_secret_value():
        refusal = "WEBHOOK_SECRET is not set for the operator: webhooks are never sent unsigned"
        await record(WebhookStatus(url=url, state="failed", attempts=[WebhookAttempt(error=refusal)]))
        return
    try:  # the document as stored; a resource refused before any run has only its status
        body = await asyncio.to_thread(ctx.objects.get_bytes, TaskKeys(tx.task_id, namespace).result())
    except ObjectNotFound:
        body = live_document(tx).to_json().encode("utf-8")
    try:
        await webhooks.deliver(url, body, ctx.settings, secret.get_secret_value(), record, tx.status.webhook)
    except Exception:
        log.exception("webhook of %s/%s failed", namespace, name)


# --------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------
def _indices(
    ctx: Context, kwargs: dict[str, Any]
) -> tuple[kopf.Index[Key, TxEntry], kopf.Index[Key, JobEntry]]:
    """The two indices kopf passes every handler by name (see `register`); the first handler to
    get them also starts the queue's safety net, from its own context, where kopf can post Events."""
    transcriptions, runner_jobs = kwargs["transcriptions"], kwargs["runner_jobs"]
    if ctx.queue_task is None:

        async def loop() -> None:
            while True:
                await asyncio.sleep(ctx.settings.operator_queue_retry_seconds)
                try:
                    await admit(ctx, transcriptions, runner_jobs)
                except Exception:
                    log.exception("admission failed; retrying")

        ctx.queue_task = asyncio.create_task(loop(), name="maie-queue")
    return transcriptions, runner_jobs


def _running(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("phase") == Phase.RUNNING.value)


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Add the handlers to a registry (a fresh one per operator run keeps tests independent)."""
    settings = ctx.settings

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id="transcriptions")
    def transcriptions_index(
        *, body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
    ) -> dict[Key, TxEntry]:
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        return {(namespace, name): _tx_entry(namespace, name, meta, spec, status)}

    @kopf.index(
        "batch", "v1", "jobs", registry=registry, id="runner_jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}
    )
    def runner_jobs_index(
        *, body: kopf.Body, meta: kopf.Meta, namespace: str | None, **_: Any
    ) -> dict[Key, JobEntry]:
        owner, owner_uid = _owner(dict(body))
        if not owner:
            return {}
        entry = JobEntry(
            name=str(meta.get("name")), owner_uid=owner_uid or "", finished=st.job_finished(dict(body))
        )
        return {(namespace or "default", owner): entry}

    @kopf.on.startup(registry=registry)
    async def start_bucket(**_: Any) -> None:
        """Installs without the API (kubectl only) still need the bucket the runners write to."""
        ctx.bucket = BucketCreator(ctx.objects)
        ctx.bucket.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_queue(**_: Any) -> None:
        if ctx.queue_task is not None:
            ctx.queue_task.cancel()
        for delivery in list(ctx.webhooks.values()):  # resumed by the next leader (state pending)
            delivery.cancel()
        if ctx.bucket is not None:
            await ctx.bucket.stop()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="schedule")
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reschedule")
    async def schedule(
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        **kwargs: Any,
    ) -> None:
        """Accept (or refuse) the resource, then run it when a slot is free."""
        transcriptions, runner_jobs = _indices(ctx, kwargs)
        namespace = namespace or "default"
        raw = dict(body)
        generation = meta.get("generation")
        fresh: TxEntry | None = None
        if meta.get("deletionTimestamp"):
            return
        try:
            tx = Transcription.model_validate(raw)
        except ValidationError as exc:
            message = f"invalid spec: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            old = TranscriptionStatus.model_validate(raw.get("status") or {})
            refused = st.reject(old, message, generation=generation)
            await asyncio.to_thread(
                ctx.api.patch_transcription_status, namespace, name, st.status_patch(old, refused)
            )
            _post(raw, [st.Event("Warning", "InvalidSpec", message)])
            return
        uid = str(meta.get("uid") or "")
        if tx.status.phase and tx.status.phase.finished:
            _notify(ctx, namespace, name)  # a delivery the operator's restart interrupted
            return
        if tx.status.phase is None:
            problem = _admission_problem(ctx, tx, transcriptions)
            if problem is not None:
                reason, code, message = problem

                def refuse(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
                    new = st.reject(t.status, message, reason=reason, code=code, generation=generation)
                    return new, [st.Event("Warning", reason, message)]

                await asyncio.to_thread(update, ctx, namespace, name, refuse, uid=uid)
                _notify(ctx, namespace, name)
                return

            now: list[TranscriptionStatus] = []

            def accept(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
                if t.status.phase is not None:
                    now.append(t.status)
                    return t.status, []
                new = st.accept(t.status, task_id=t.task_id, generation=generation)
                now.append(new)
                return new, [st.Event("Normal", "Accepted", f"queued as task {t.task_id}")]

            await asyncio.to_thread(update, ctx, namespace, name, accept, uid=uid)
            if now:  # admission must see it Queued now, not when kopf has handled our own patch
                fresh = _tx_entry(namespace, name, meta, spec, now[-1].wire())
        elif tx.status.job_name and (namespace, name) not in runner_jobs:
            # Resumed with a Job that is gone (TTL, a person, while the operator was away).
            job = await asyncio.to_thread(ctx.api.get_job, namespace, tx.status.job_name)
            await asyncio.to_thread(_finish, ctx, namespace, name, uid, job)
            return
        await admit(ctx, transcriptions, runner_jobs, fresh)
        if (namespace, name) not in runner_jobs and (namespace, name) not in ctx.pending:
            cap = settings.operator_max_concurrent_jobs
            await asyncio.to_thread(
                update, ctx, namespace, name, lambda t: (st.queued(t.status, cap), []), uid=uid
            )

    @kopf.on.event(
        "batch", "v1", "jobs", registry=registry, labels={LABEL_MANAGED_BY: MANAGED_BY}, id="mirror-job"
    )
    async def mirror_job(
        *,
        type: str,
        body: kopf.Body,
        namespace: str | None,
        **kwargs: Any,
    ) -> None:
        """Job state → status; a finished or deleted Job frees a slot for the next Queued resource."""
        transcriptions, runner_jobs = _indices(ctx, kwargs)
        namespace = namespace or "default"
        job = dict(body)
        owner, owner_uid = _owner(job)
        if not owner:
            return
        if type == "DELETED":
            await asyncio.to_thread(_finish, ctx, namespace, owner, owner_uid, None)
            _notify(ctx, namespace, owner)
        elif st.job_finished(job):
            await asyncio.to_thread(_finish, ctx, namespace, owner, owner_uid, job)
            _notify(ctx, namespace, owner)
        else:
            await asyncio.to_thread(
                update, ctx, namespace, owner, lambda t: (st.running(t.status, job), []), uid=owner_uid
            )
            return
        await admit(ctx, transcriptions, runner_jobs)

    @kopf.on.event(
        "", "v1", "pods", registry=registry, labels={LABEL_MANAGED_BY: MANAGED_BY}, id="mirror-pod"
    )
    async def mirror_pod(*, type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        """Scheduling, image-pull and crash news of the runner pod → status and Events."""
        namespace = namespace or "default"
        if type == "DELETED":
            return
        pod = dict(body)
        owner, owner_uid = _owner(pod)
        if not owner:
            return
        stop: list[bool] = []
        grace = timedelta(seconds=settings.operator_image_pull_grace)

        def change(t: Transcription) -> tuple[TranscriptionStatus, list[st.Event]]:
            new, events, fatal = st.mirror_pod(t.status, pod, grace=grace)
            stop.append(fatal)
            return new, events

        tx = await asyncio.to_thread(update, ctx, namespace, owner, change, uid=owner_uid)
        if tx is not None and any(stop):
            await asyncio.to_thread(_stop_for_good, ctx, tx)
            _notify(ctx, namespace, owner)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="progress",
        interval=settings.runner_status_interval,
        # A callback, not field=/value=: a field filter puts status.phase into kopf's diff base, and
        # kopf then rewrites its last-handled-configuration annotation at every phase change.
        when=_running,
    )
    def progress(*, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
        """The runner's progress.json → status.stage / step / progress, while it runs."""
        with contextlib.suppress(ValidationError):
            _mirror_progress(ctx, namespace or "default", name, Transcription.model_validate(dict(body)))

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="expire",
        interval=settings.operator_gc_interval,
        labels={LABEL_MANAGED_BY: MANAGED_BY_API},
    )
    def expire(*, name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """API tasks are kept RESULT_TTL seconds after they finish, as in embedded mode; then the
        resource is deleted and the finalizer removes its files. kubectl-made ones are left alone."""
        namespace = namespace or "default"
        fresh = ctx.api.get_transcription(namespace, name)  # the timer's body can lag behind our patches
        if fresh is None:
            return
        try:
            tx = Transcription.model_validate(fresh)
        except ValidationError:
            return
        done = tx.status.completed_at
        if not (tx.status.phase and tx.status.phase.finished) or done is None:
            return
        if datetime.now(UTC) - done > timedelta(seconds=settings.result_ttl):
            logger.info("result expired (RESULT_TTL=%s s); deleting", settings.result_ttl)
            ctx.api.delete_transcription(namespace, name)

    # retries=None: the finalizer stays until the objects are gone (docs/kubernetes.md: delete waits for S3).
    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="cleanup", backoff=10)
    async def cleanup(
        *,
        body: kopf.Body,
        name: str,
        namespace: str | None,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        """Stop the Job (and its pod), then delete the task's stored objects as the policy says."""
        transcriptions, runner_jobs = _indices(ctx, kwargs)
        namespace = namespace or "default"
        raw = dict(body)
        try:
            tx: Transcription | None = Transcription.model_validate(raw)
        except ValidationError:
            tx = None
        job_name = (tx.status.job_name if tx else None) or job_name_for(name)
        if await asyncio.to_thread(ctx.api.delete_job, namespace, job_name):
            logger.info("deleted runner Job %s", job_name)
        if tx is not None:
            await asyncio.to_thread(_delete_objects, ctx, tx, logger)
        ctx.forget(namespace, name)
        ctx.pending.pop((namespace, name), None)
        await admit(ctx, transcriptions, runner_jobs)


def _delete_objects(ctx: Context, tx: Transcription, logger: kopf.Logger) -> None:
    """Only the task's own prefixes (`audio/{ns}/{id}/`, `results/{ns}/{id}/`): never a user's other
    objects, never another namespace's."""
    policy = tx.spec.deletion_policy or DeletionPolicy(ctx.settings.operator_deletion_policy)
    if policy is DeletionPolicy.RETAIN:
        return
    try:
        keys = TaskKeys(tx.task_id, tx.namespace)
    except ValueError:
        return
    prefixes = [keys.audio_prefix] + ([keys.results_prefix] if policy is DeletionPolicy.DELETE else [])
    try:
        for prefix in prefixes:
            removed = ctx.objects.delete_prefix(prefix)
            logger.info("deleted %d object(s) under s3://%s/%s", removed, ctx.objects.bucket, prefix)
    except Exception as exc:  # S3 down: keep the finalizer and retry (deletion waits for it)
        raise kopf.TemporaryError(f"cannot delete stored objects yet: {exc}", delay=30) from exc
