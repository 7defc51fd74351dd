"""The one task runner: embedded worker and Kubernetes Job alike run `run_task` on a `RunnerTask`.

The only difference between the modes is the object store (a local directory or S3). The runner
reads and writes nothing but the task's own objects (`TaskKeys`): it fetches the audio, resumes from
`checkpoint.json` when an earlier attempt died, stores each finished stage's output there before the
next starts, reports what it is doing in `progress.json`, and writes the exports and `result.json`
(whose presence means "finished"). It needs no Kubernetes credentials and no database: the queue
owner (the embedded executor or the operator) reads those objects and owns the task's status.

Exit codes tell the queue owner what to do next: 0 done; 2 the task itself failed (bad audio, missing
model: retrying cannot help); 1 anything else (storage unreachable: retry). A crash (signal) is the
queue owner's to describe: the checkpoint and progress say which step died and what it had finished.

Entry points: `maie run-task` (the Job: the task in the MAIE_TASK environment variable, S3 from the
settings) and `python -m maie.runner.task --stdin` (the embedded executor: a `LocalJob` on stdin).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import faulthandler
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

import httpx

from maie import checkpoint as records
from maie.checkpoint import Checkpoint, Progress
from maie.contract import ResultDocument, RunnerTask, TaskStatus
from maie.errors import MaieError, ModelNotFoundError
from maie.logs import request_id_var, setup_logging
from maie.model_check import require_models
from maie.runner.pipeline import Update, run_pipeline
from maie.runner_protocol import EXIT_OK, EXIT_RETRYABLE, EXIT_TASK_FAILED, TASK_ENV, LocalJob
from maie.settings import Settings, get_settings
from maie.storage.access import AudioAccessError, check_audio_location, parse_s3_uri
from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys

log = logging.getLogger("maie.runner")

_CONTENT_TYPES = {".json": "application/json", ".srt": "application/x-subrip", ".vtt": "text/vtt"}


class StartupCheckError(MaieError):
    """The machine cannot do the work (`maie doctor` found problems): retrying here cannot help."""

    code = "startup_check_failed"


def startup_check(settings: Settings) -> None:
    """The runner images' start-up check (RUNNER_STARTUP_CHECK=true in their ENV): `maie doctor`'s
    checks for a Job — Python, the pinned packages of the image's extra, the llama.cpp build against
    this CPU, DATA_DIR/CACHE_DIR, the configured models loaded and run once in child processes (not
    the bundled ones the settings do not use, nor the API key). Raises StartupCheckError naming every
    problem with its fix."""
    from maie.runner import doctor

    checks = doctor.run_checks(settings, bundled=False, api_key=False)
    for check in checks:
        log.info("start-up check: %s", check.line())
    problems = [check.line() for check in checks if not check.ok]
    if problems:
        raise StartupCheckError(
            f"this machine cannot run the task ({len(problems)} problem(s) found by maie doctor): "
            + "; ".join(problems)
        )


class TaskInputError(MaieError):
    """The task's own input is unusable (missing object, 404 URL, too large): no retry helps."""

    code = "audio_not_found"


class ProgressWriter:
    """progress.json: events and step changes at once, the percent at most every `interval` s.

    Progress is best effort (a failed write is logged, the work goes on); the result is what counts."""

    def __init__(self, store: ObjectStore, keys: TaskKeys, progress: Progress, interval: float) -> None:
        self.store, self.keys, self.progress, self.interval = store, keys, progress, interval
        self._last = 0.0

    def __call__(self, update: Update) -> None:
        p = self.progress
        changed = update.step is not p.step or update.event is not None
        p.stage, p.step, p.percent = update.stage, update.step, update.percent
        if update.event is not None:
            p.record(update.event, update.step)
        if changed or time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        self.progress.updated_at = records.utcnow()
        try:
            records.write(self.store, self.keys.progress, self.progress)
        except Exception as exc:
            log.warning("progress write failed: %s", exc)


def fetch_audio(task: RunnerTask, store: ObjectStore, target_dir: Path, settings: Settings) -> Path:
    """The recording on local disk (in place for a local store); the file keeps its extension."""
    uri = task.audio
    check_audio_location(uri, task.keys, settings)
    if uri.startswith(("http://", "https://")):
        return _download_url(uri, target_dir, settings)
    key = uri
    source = store
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        for_bucket = getattr(store, "for_bucket", None)
        if bucket != getattr(store, "bucket", bucket) and for_bucket is not None:
            source = for_bucket(bucket)
    local = source.local_path(key)
    if local is not None:
        return local
    path = target_dir / f"raw{PurePosixPath(key).suffix.lower()}"
    try:
        source.download(key, path)
    except ObjectNotFound as exc:
        raise TaskInputError(f"audio not found: {uri}") from exc
    return path


def _download_url(uri: str, target_dir: Path, settings: Settings) -> Path:
    path = target_dir / f"raw{PurePosixPath(httpx.URL(uri).path).suffix.lower()}"
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


def store_results(store: ObjectStore, keys: TaskKeys, doc: ResultDocument, exports: dict[str, str]) -> None:
    """Exports first, then result.json (whose presence means "finished")."""
    doc.exports = {}
    for filename, text in exports.items():
        key = keys.result(filename)
        content_type = _CONTENT_TYPES.get(PurePosixPath(filename).suffix, "text/plain")
        store.put_bytes(key, text.encode("utf-8"), f"{content_type}; charset=utf-8")
        doc.exports[filename] = store.uri(key)
    store.put_bytes(keys.result(), doc.to_json().encode("utf-8"), "application/json")


def run_task(task: RunnerTask, store: ObjectStore, settings: Settings, work_dir: Path) -> ResultDocument:
    """Run (or resume) one task and store its result. Raises only for infrastructure trouble."""
    keys = task.keys
    checkpoint, progress = records.load(store, keys)
    if checkpoint is None or checkpoint.task_id != task.task_id:
        checkpoint = Checkpoint(task_id=task.task_id)
    progress = progress or Progress(task_id=task.task_id)
    progress.attempt += 1
    progress.record("attempt", detail=f"{socket.gethostname()} pid {os.getpid()}")
    writer = ProgressWriter(store, keys, progress, settings.runner_status_interval)
    writer.flush()
    started_at = progress.history[0].at

    def failed(exc: MaieError) -> ResultDocument:
        return records.document(
            task.task_id, task.request, checkpoint, status=TaskStatus.FAILED,
            pipeline_version=settings.pipeline_version,
            processing_seconds=sum(checkpoint.stage_seconds.values()),
            submitted_at=task.submitted_at, started_at=started_at, error=exc.message, error_code=exc.code,
        )  # fmt: skip

    exports: dict[str, str] = {}
    try:  # start-up check: every missing model named at once, before any download or load
        require_models(settings, task.request, asr_done=checkpoint.source_text is not None)
        if settings.runner_startup_check:
            startup_check(settings)
        audio = None
        if checkpoint.source_text is None:
            audio = fetch_audio(task, store, work_dir, settings)
    except (ModelNotFoundError, StartupCheckError, TaskInputError, AudioAccessError) as exc:
        log.error("%s", exc.message)
        doc = failed(exc)
    else:
        doc, exports = run_pipeline(
            audio,
            task.request,
            settings=settings,
            task_id=task.task_id,
            checkpoint=checkpoint,
            save=lambda cp: records.write(store, keys.checkpoint, cp),
            observer=writer,
            work_dir=work_dir / "out",
            submitted_at=task.submitted_at,
            started_at=started_at,
        )
    progress.stage = doc.status
    if doc.status is TaskStatus.FAILED:
        progress.record("failed", progress.step, doc.error_code)
    else:
        progress.percent = 100.0
    doc.attempts, doc.history = progress.attempt, list(progress.history)
    store_results(store, keys, doc, exports)
    writer.flush()
    log.info("task %s %s (attempt %d)", task.task_id, doc.status.value, progress.attempt)
    return doc


def execute(task: RunnerTask, store: ObjectStore, settings: Settings) -> int:
    """run_task with a scratch directory; the exit code for the queue owner (see the module doc)."""
    faulthandler.enable()  # a crash in native code leaves its Python stack in stderr for the report
    with tempfile.TemporaryDirectory(prefix=f"maie-{task.task_id}-") as tmp:
        try:
            doc = run_task(task, store, settings, Path(tmp))
        except Exception as exc:  # infrastructure: storage unreachable; the queue owner retries
            log.exception("runner failed; the attempt will be retried: %s", exc)
            return EXIT_RETRYABLE
    return EXIT_OK if doc.status is TaskStatus.COMPLETE else EXIT_TASK_FAILED


# --------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """Embedded worker: get SIGKILLed when the service dies, so a restart never runs a task twice."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(3)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def main_local(job: LocalJob) -> int:
    from maie.storage.local import LocalObjectStore

    _die_with_parent(job.parent_pid)
    settings = Settings(**job.settings)
    work = settings.data_dir / "work" / job.task.task_id
    shutil.rmtree(work, ignore_errors=True)
    return execute(job.task, LocalObjectStore(Path(job.objects_root)), settings)


def main_job() -> int:
    """The runner Job: the task from MAIE_TASK, S3 from the settings."""
    from maie.storage.s3 import S3ObjectStore

    raw = os.environ.get(TASK_ENV)
    if not raw:
        log.error("%s is not set: the operator passes the task in it", TASK_ENV)
        return EXIT_TASK_FAILED
    task = RunnerTask.model_validate_json(raw)
    settings = get_settings()
    return execute(task, S3ObjectStore.from_settings(settings), settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maie run-task", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdin", action="store_true", help="read a LocalJob (embedded executor)")
    parser.add_argument("--task", help="the task id (only so that `ps` shows whose worker it is)")
    args = parser.parse_args(argv)
    if args.stdin:
        job = LocalJob.model_validate_json(sys.stdin.read())
        setup_logging(str(job.settings.get("environment", "development")), bool(job.settings.get("debug")))
        request_id_var.set(job.task.request_id or job.task.task_id)
        return main_local(job)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return main_job()


if __name__ == "__main__":
    sys.exit(main())
