"""`maie run-task NAME --namespace NS`: the runner Job's entrypoint.

Reads its Transcription, fetches the audio from S3 (or an http(s) URL) into a temp dir, runs the
same pipeline as embedded mode, reports each stage into the resource's status as it goes (stage
changes at once, progress at most every RUNNER_STATUS_INTERVAL seconds), writes result.json and the
exports to results/{id}/ and records their URIs in status.

Exit codes tell the Job what to do next: 0 done; 2 the task itself failed (bad audio, missing
model: the Job's podFailurePolicy stops at once); 1 anything else (S3 or API unreachable: the Job's
backoff retries it).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from pydantic import ValidationError

from maie.contract import ResultDocument, TaskStatus, utcnow
from maie.errors import ModelNotFoundError
from maie.kube import Kube
from maie.model_check import require_models
from maie.settings import Settings, get_settings
from maie.storage.base import ObjectNotFound, result_key
from maie.storage.s3 import S3ObjectStore
from maie.transcription import (
    EXIT_OK,
    EXIT_RETRYABLE,
    EXIT_TASK_FAILED,
    Phase,
    Transcription,
    parse_s3_uri,
    status_from_document,
)

log = logging.getLogger("maie.runner")

_CONTENT_TYPES = {".json": "application/json", ".srt": "application/x-subrip", ".vtt": "text/vtt"}


class TaskInputError(Exception):
    """The task's own input is unusable (missing object, 404 URL, too large): no retry helps."""


class StatusReporter:
    """Patches status.stage / progress; never lets a failed patch stop the pipeline."""

    def __init__(self, kube: Kube, namespace: str, name: str, interval: float) -> None:
        self.kube, self.namespace, self.name, self.interval = kube, namespace, name, interval
        self._stage: TaskStatus | None = None
        self._last = 0.0

    def patch(self, fields: dict[str, Any]) -> None:
        try:
            self.kube.patch_transcription_status(self.namespace, self.name, fields)
        except Exception as exc:  # progress is best effort; the final patch is checked
            log.warning("status patch failed: %s", exc)

    def __call__(self, stage: TaskStatus, percent: float) -> None:
        now = time.monotonic()
        if stage is self._stage and now - self._last < self.interval:
            return
        self._stage, self._last = stage, now
        self.patch({"stage": stage.value, "progress": round(max(0.0, min(100.0, percent)), 1)})


def fetch_audio(uri: str, store: S3ObjectStore, target_dir: Path, settings: Settings) -> Path:
    """Download the recording next to the work dir; the file keeps the extension (format probing)."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        source = store if bucket == store.bucket else store.for_bucket(bucket)
        path = target_dir / f"raw{PurePosixPath(key).suffix.lower()}"
        try:
            source.download(key, path)
        except ObjectNotFound as exc:
            raise TaskInputError(f"audio not found: {uri}") from exc
        return path
    suffix = PurePosixPath(httpx.URL(uri).path).suffix.lower()
    path = target_dir / f"raw{suffix}"
    limit = settings.max_file_size_mb * 1024 * 1024
    with httpx.stream("GET", uri, follow_redirects=True, timeout=60.0) as response:
        if response.status_code in (401, 403, 404, 410):
            raise TaskInputError(f"audio URL answered {response.status_code}: {uri}")
        response.raise_for_status()
        size = 0
        with path.open("wb") as out:
            for chunk in response.iter_bytes(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise TaskInputError(f"audio is larger than MAX_FILE_SIZE_MB={settings.max_file_size_mb}")
                out.write(chunk)
    return path


def store_results(store: S3ObjectStore, doc: ResultDocument, exports: dict[str, str]) -> str:
    """Exports first, then result.json (whose presence means "finished"); returns its URI."""
    uris: dict[str, str] = {}
    for filename, text in exports.items():
        key = result_key(doc.task_id, filename)
        content_type = _CONTENT_TYPES.get(PurePosixPath(filename).suffix, "text/plain")
        store.put_bytes(key, text.encode("utf-8"), f"{content_type}; charset=utf-8")
        uris[filename] = store.uri(key)
    doc.exports = uris
    key = result_key(doc.task_id)
    store.put_bytes(key, doc.to_json().encode("utf-8"), "application/json")
    return store.uri(key)


def _failed_document(tx: Transcription, message: str, code: str) -> ResultDocument:
    return ResultDocument(
        task_id=tx.task_id,
        status=TaskStatus.FAILED,
        submitted_at=tx.status.submitted_at,
        started_at=tx.status.started_at or utcnow(),
        completed_at=utcnow(),
        request=tx.spec.to_task_request(),
        error=message,
        error_code=code,
    )


def _finish(
    kube: Kube, store: S3ObjectStore, tx: Transcription, doc: ResultDocument, exports: dict[str, str]
) -> int:
    result_uri = store_results(store, doc, exports)
    final = status_from_document(doc, result_uri=result_uri).wire()
    final.pop("conditions", None)  # conditions are the operator's
    if doc.status is TaskStatus.COMPLETE:
        final.update(error=None, errorCode=None)
    kube.patch_transcription_status(tx.namespace, tx.name, final)
    log.info("task %s %s: %s", tx.task_id, doc.status.value, result_uri)
    return EXIT_OK if doc.status is TaskStatus.COMPLETE else EXIT_TASK_FAILED


def run(name: str, namespace: str, settings: Settings, kube: Kube) -> int:
    raw = kube.get_transcription(namespace, name)
    if raw is None:
        log.error("Transcription %s/%s not found", namespace, name)
        return EXIT_TASK_FAILED
    try:
        tx = Transcription.model_validate(raw)
    except ValidationError as exc:
        kube.patch_transcription_status(
            namespace,
            name,
            {"phase": "Failed", "stage": "FAILED", "error": f"invalid spec: {exc.errors()[0]['msg']}"},
        )
        return EXIT_TASK_FAILED
    if tx.status.phase is Phase.SUCCEEDED:
        log.info("already succeeded; nothing to do")
        return EXIT_OK

    store = S3ObjectStore.from_settings(settings)
    reporter = StatusReporter(kube, namespace, name, settings.runner_status_interval)
    started = tx.status.started_at or utcnow()
    kube.patch_transcription_status(
        namespace,
        name,
        {
            "phase": "Running",
            "stage": "PREPROCESSING",
            "progress": 0.0,
            "taskId": tx.task_id,
            "startedAt": started.isoformat().replace("+00:00", "Z"),
        },
    )
    with tempfile.TemporaryDirectory(prefix=f"maie-{tx.task_id}-") as tmp:
        work = Path(tmp)
        try:  # start-up check: every missing model named at once, before any download or load
            require_models(settings, tx.spec.to_task_request())
        except ModelNotFoundError as exc:
            log.error("%s", exc.message)
            return _finish(kube, store, tx, _failed_document(tx, exc.message, exc.code), {})
        try:
            audio = fetch_audio(tx.spec.audio.uri, store, work, settings)
        except TaskInputError as exc:
            return _finish(kube, store, tx, _failed_document(tx, str(exc), "audio_not_found"), {})
        doc, exports = run_pipeline_for(tx, audio, settings, reporter, work / "out")
    doc.started_at = doc.started_at or started
    return _finish(kube, store, tx, doc, exports)


def run_pipeline_for(
    tx: Transcription, audio: Path, settings: Settings, reporter: StatusReporter, work_dir: Path
) -> tuple[ResultDocument, dict[str, str]]:
    from maie.runner.pipeline import run_pipeline

    work_dir.mkdir(parents=True, exist_ok=True)
    return run_pipeline(
        audio,
        tx.spec.to_task_request(),
        settings=settings,
        task_id=tx.task_id,
        submitted_at=tx.status.submitted_at,
        progress=reporter,
        work_dir=work_dir,
    )


def main(*, name: str, namespace: str) -> int:
    """The exit code for the Job (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        kube = Kube()
        return run(name, namespace, settings, kube)
    except Exception as exc:  # infrastructure: S3 or the API server; the Job's backoff retries
        log.exception("runner failed; the Job will retry: %s", exc)
        with contextlib.suppress(Exception):
            Kube().patch_transcription_status(
                namespace, name, {"error": f"runner attempt failed: {exc}"[:2000]}
            )
        return EXIT_RETRYABLE


if __name__ == "__main__":
    sys.exit(main(name=sys.argv[1], namespace=sys.argv[2] if len(sys.argv) > 2 else "default"))
