"""The Kubernetes task backend (MODE=kubernetes): uploads go to S3, each task is a Transcription.

Same five operations as the embedded backend, so the routers, the contract and the error codes do
not change. The resource name is derived from the task id (no generateName), so a retried submit
can never make a second resource; queue depth is the number of unfinished resources; status is the
resource's status, or result.json from S3 once the runner has written it. The API never runs models
and never creates Jobs: the operator does.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from maie import checkpoint as records
from maie.api.backends import BackendHealth, CancelOutcome, Submission, TaskFile, open_task_file
from maie.api.schemas import CheckResult
from maie.checkpoint import Progress
from maie.contract import ResultDocument
from maie.kube import Kube
from maie.settings import Settings
from maie.storage.base import ObjectNotFound, TaskKeys
from maie.storage.bucket import BucketCreator
from maie.storage.s3 import S3ObjectStore
from maie.transcription import (
    API_VERSION,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_PHASE,
    LABEL_TASK_ID,
    MANAGED_BY_API,
    DeletionPolicy,
    Phase,
    Transcription,
    TranscriptionSpec,
    live_document,
    resource_name_for_task,
)

UNFINISHED = f"{LABEL_PHASE} notin ({Phase.SUCCEEDED.value},{Phase.FAILED.value})"

# A resource with no status this long after creation means no operator is processing work.
OPERATOR_GRACE = timedelta(seconds=60)


class KubernetesBackend:
    """`maie.api.backends.TaskBackend` on Transcription resources and S3."""

    def __init__(
        self, settings: Settings, *, kube: Kube | None = None, store: S3ObjectStore | None = None
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._kube = kube
        self._store = store
        self._staging = Path(settings.data_dir) / "uploads"
        self._bucket: BucketCreator | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube()
        return self._kube

    @property
    def store(self) -> S3ObjectStore:
        if self._store is None:
            self._store = S3ObjectStore.from_settings(self.settings)
        return self._store

    @property
    def staging_dir(self) -> Path:
        return self._staging

    async def start(self) -> None:
        self._staging.mkdir(parents=True, exist_ok=True)
        for leftover in self._staging.glob("*.part"):
            leftover.unlink(missing_ok=True)
        # S3 (a fresh MinIO) often comes up after the API: create the bucket in the background,
        # retrying until it answers; readiness stays red (the storage check) until then.
        self._bucket = BucketCreator(self.store)
        self._bucket.start()

    async def stop(self) -> None:
        if self._bucket is not None:
            await self._bucket.stop()

    # --- submit ----------------------------------------------------------------------------
    async def submit(self, submission: Submission) -> None:
        task_id = submission.task_id
        keys = TaskKeys(task_id, self.namespace)
        key = keys.audio(submission.upload.extension)
        await asyncio.to_thread(
            self.store.put_file, key, submission.upload.path, submission.upload.content_type
        )
        submission.upload.path.unlink(missing_ok=True)
        spec = TranscriptionSpec.from_task_request(
            submission.request, audio_uri=self.store.uri(key), task_id=task_id
        )
        spec.deletion_policy = DeletionPolicy.DELETE  # API tasks own their files
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": resource_name_for_task(task_id),
                "namespace": self.namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_API, LABEL_TASK_ID: task_id},
                "annotations": {
                    "maie.io/filename": submission.upload.filename[:253],
                    "maie.io/submitted-at": submission.submitted_at.isoformat(),
                    **({"maie.io/request-id": submission.request_id} if submission.request_id else {}),
                },
            },
            "spec": spec.wire(),
        }
        try:
            await asyncio.to_thread(self.kube.create_transcription, self.namespace, body)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.delete_prefix, keys.audio_prefix)
            raise

    # --- read --------------------------------------------------------------------------------
    async def _resource(self, task_id: str) -> Transcription | None:
        raw = await asyncio.to_thread(
            self.kube.get_transcription, self.namespace, resource_name_for_task(task_id)
        )
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return None  # cancelled: the finalizer is still cleaning up
        tx = Transcription.model_validate(raw)
        if tx.status.submitted_at is None:  # the operator has not seen it yet
            stamp = (tx.metadata.get("annotations") or {}).get("maie.io/submitted-at")
            if stamp:
                tx.status.submitted_at = datetime.fromisoformat(stamp)
        return tx

    async def get(self, task_id: str) -> ResultDocument | None:
        tx = await self._resource(task_id)
        if tx is None:
            return None
        keys = TaskKeys(tx.task_id, tx.namespace)
        stored: ResultDocument | None = None
        if tx.status.result_uri or (tx.status.phase and tx.status.phase.finished):
            try:
                data = await asyncio.to_thread(self.store.get_bytes, keys.result())
                stored = ResultDocument.model_validate_json(data)
            except ObjectNotFound:
                stored = None
        doc = live_document(tx, stored)
        if stored is None and tx.status.phase is Phase.RUNNING:
            # Fresher than the operator's copy in status: the runner's own progress.json.
            progress = await asyncio.to_thread(records.read, self.store, keys.progress, Progress)
            if progress is not None and not progress.stage.finished:
                doc.status, doc.step, doc.progress = progress.stage, progress.step, round(progress.percent, 1)
                doc.history, doc.attempts = progress.history, progress.attempt
        return doc

    async def count_unfinished(self) -> int:
        """Bounded: at most MAX_QUEUE_DEPTH + 1 resources are read (a selector on the operator's label)."""
        raws = await asyncio.to_thread(
            self.kube.list_transcriptions,
            self.namespace,
            label_selector=UNFINISHED,
            limit=self.settings.max_queue_depth + 1,
        )
        unfinished = 0
        for raw in raws:
            phase = (raw.get("status") or {}).get("phase")
            unfinished += phase not in (Phase.SUCCEEDED.value, Phase.FAILED.value)
        return unfinished

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, task_id: str) -> CancelOutcome | None:
        tx = await self._resource(task_id)
        if tx is None:
            return None
        previous = live_document(tx).status
        unfinished = not (tx.status.phase and tx.status.phase.finished)
        # Deleting the resource stops the Job (the operator's finalizer); the files go now.
        await asyncio.to_thread(self.kube.delete_transcription, self.namespace, tx.name)
        removed = 0
        for prefix in TaskKeys(tx.task_id, tx.namespace).prefixes:
            with contextlib.suppress(Exception):
                removed += await asyncio.to_thread(self.store.delete_prefix, prefix)
        return CancelOutcome(
            task_id=task_id,
            previous_status=previous,
            was_unfinished=unfinished,
            files_removed=removed,
        )

    async def file(self, task_id: str, name: str) -> TaskFile | None:
        tx = await self._resource(task_id)
        if tx is None:
            return None
        return await asyncio.to_thread(open_task_file, self.store, TaskKeys(tx.task_id, tx.namespace), name)

    # --- health ------------------------------------------------------------------------------
    async def health(self) -> BackendHealth:
        checks: dict[str, CheckResult] = {}
        try:
            await asyncio.to_thread(self.store.check_writable)
            checks["storage"] = CheckResult(ok=True, detail=f"s3 writable: {self.store.uri('')}")
        except Exception as exc:
            checks["storage"] = CheckResult(ok=False, detail=f"s3 not writable: {exc}")
        try:
            depth = await self.count_unfinished()
            # Resources the operator has not labelled yet: none should stay that way for long.
            unseen_raws = await asyncio.to_thread(
                self.kube.list_transcriptions, self.namespace, label_selector=f"!{LABEL_PHASE}", limit=50
            )
            checks["kubernetes"] = CheckResult(ok=True, detail=f"Transcriptions readable in {self.namespace}")
        except Exception as exc:
            checks["kubernetes"] = CheckResult(ok=False, detail=f"Kubernetes API unreachable: {exc}")
            return BackendHealth(checks=checks, queue_depth=0, running=0)
        now = datetime.now(UTC)
        unseen = []
        for raw in unseen_raws:
            created = (raw.get("metadata") or {}).get("creationTimestamp")
            if not (raw.get("status") or {}).get("phase") and created:
                age = now - datetime.fromisoformat(str(created).replace("Z", "+00:00"))
                if age > OPERATOR_GRACE:
                    unseen.append(str(raw["metadata"].get("name")))
        if unseen:
            checks["operator"] = CheckResult(
                ok=False,
                detail=f"{len(unseen)} Transcription(s) have no status after {OPERATOR_GRACE.seconds} s "
                f"(e.g. {unseen[0]}): is the operator running?",
            )
        else:
            checks["operator"] = CheckResult(
                ok=True, detail=f"{depth} unfinished (counted up to MAX_QUEUE_DEPTH)"
            )
        return BackendHealth(checks=checks, queue_depth=depth, running=0)
