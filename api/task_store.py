"""The embedded task store: one SQLite file shared by the API process and its worker processes.

Why SQLite: tasks must survive a kill of the service (the restart finishes them), several processes
write (the API claims tasks, workers report progress), and it needs no server. WAL mode and a busy
timeout make the short writes of both sides safe.

Only the executor (the queue owner) writes here: the worker process runs the one task runner, which
reports through the task's objects (progress.json, result.json), exactly as a Kubernetes Job does.
Every run of a task has an attempt number, and the executor's writes about a run are conditional on
its attempt still being the current one, so a run that was superseded (requeued, cancelled) can
never finish the task a second time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from maie.contract import TaskStatus

QUEUED, RUNNING, DONE = "queued", "running", "done"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL,
    status       TEXT NOT NULL,
    progress     REAL NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    request      TEXT NOT NULL,
    audio_key    TEXT NOT NULL,
    filename     TEXT,
    content_type TEXT,
    size         INTEGER,
    request_id   TEXT,
    submitted_at TEXT NOT NULL,
    started_at   TEXT,
    completed_at TEXT,
    updated_at   TEXT NOT NULL,
    worker_pid   INTEGER,
    document     TEXT,
    error        TEXT,
    error_code   TEXT,
    webhook      TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, seq);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT,
    at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def iso(value: datetime) -> str:
    """Fixed-width UTC timestamps, so that text comparison in SQL is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class TaskRow:
    seq: int
    id: str
    state: str
    status: TaskStatus
    progress: float
    attempts: int
    request: str
    audio_key: str
    filename: str | None
    content_type: str | None
    size: int | None
    request_id: str | None
    submitted_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    worker_pid: int | None
    document: str | None
    error: str | None
    error_code: str | None
    webhook: str | None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> TaskRow:
        return cls(
            seq=row["seq"],
            id=row["id"],
            state=row["state"],
            status=TaskStatus(row["status"]),
            progress=float(row["progress"] or 0.0),
            attempts=int(row["attempts"]),
            request=row["request"],
            audio_key=row["audio_key"],
            filename=row["filename"],
            content_type=row["content_type"],
            size=row["size"],
            request_id=row["request_id"],
            submitted_at=datetime.fromisoformat(row["submitted_at"]),
            started_at=parse_time(row["started_at"]),
            completed_at=parse_time(row["completed_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            worker_pid=row["worker_pid"],
            document=row["document"],
            error=row["error"],
            error_code=row["error_code"],
            webhook=row["webhook"],
        )


class TaskStore:
    """One connection per thread, kept open: safe from any thread and any process.

    Opening a connection per operation cost more than the operation: each open re-reads the schema,
    and each close of the last connection checkpoints the WAL and deletes it, so under load (API
    threads polling status while workers report progress) most of the store's time went there.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(tasks)")}
            if "webhook" not in columns:  # a store made before webhooks
                db.execute("ALTER TABLE tasks ADD COLUMN webhook TEXT")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        elif db.in_transaction:  # an operation that failed mid-transaction must not leak into the next
            db.execute("ROLLBACK")
        yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- executor bookkeeping ---------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def get_meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    # --- submission and reads -----------------------------------------------------------
    def create(
        self,
        task_id: str,
        request_json: str,
        audio_key: str,
        *,
        filename: str | None,
        content_type: str | None,
        size: int | None,
        request_id: str | None,
        submitted_at: datetime,
    ) -> None:
        ts = iso(submitted_at)
        with self._connect() as db:
            db.execute(
                "INSERT INTO tasks(id, state, status, request, audio_key, filename, content_type, size,"
                " request_id, submitted_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                (
                    task_id, QUEUED, TaskStatus.PENDING.value, request_json, audio_key, filename,
                    content_type, size, request_id, ts, ts,
                ),
            )  # fmt: skip

    def get(self, task_id: str) -> TaskRow | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        return None if row is None else TaskRow.from_sql(row)

    def list_state(self, state: str) -> list[TaskRow]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM tasks WHERE state=? ORDER BY seq", (state,)).fetchall()
        return [TaskRow.from_sql(r) for r in rows]

    def count(self, *states: str) -> int:
        marks = ",".join("?" for _ in states)
        with self._connect() as db:
            row = db.execute(f"SELECT COUNT(*) AS n FROM tasks WHERE state IN ({marks})", states).fetchone()
        return int(row["n"])

    def count_unfinished(self) -> int:
        return self.count(QUEUED, RUNNING)

    def events(self, task_id: str) -> list[tuple[int, str, str | None]]:
        """(attempt, kind, detail) in order: claimed, finished, requeued, failed … (an audit trail)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT attempt, kind, detail FROM events WHERE task_id=? ORDER BY id", (task_id,)
            ).fetchall()
        return [(int(r["attempt"]), str(r["kind"]), r["detail"]) for r in rows]

    # --- executor side --------------------------------------------------------------------
    def claim_next(self) -> TaskRow | None:
        """Oldest queued task → running, with a new attempt number (submission order)."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE state=? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            ts = now_iso()
            attempt = int(row["attempts"]) + 1
            db.execute(
                "UPDATE tasks SET state=?, attempts=?, started_at=?, updated_at=?, progress=0,"
                " status=?, worker_pid=NULL WHERE id=?",
                (RUNNING, attempt, ts, ts, TaskStatus.PENDING.value, row["id"]),
            )
            db.execute(
                "INSERT INTO events(task_id, attempt, kind, at) VALUES(?,?,?,?)",
                (row["id"], attempt, "claimed", ts),
            )
            claimed = db.execute("SELECT * FROM tasks WHERE id=?", (row["id"],)).fetchone()
        return TaskRow.from_sql(claimed)

    def set_worker_pid(self, task_id: str, attempt: int, pid: int | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE tasks SET worker_pid=? WHERE id=? AND attempts=?", (pid, task_id, attempt))

    def requeue(self, task_id: str, attempt: int, reason: str, *, count_attempt: bool = True) -> bool:
        """Back to the queue (after a crash, or a shutdown when count_attempt is False)."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE tasks SET state=?, status=?, progress=0, worker_pid=NULL, updated_at=?,"
                " attempts=attempts - ? WHERE id=? AND attempts=? AND state=?",
                (QUEUED, TaskStatus.PENDING.value, now_iso(), 0 if count_attempt else 1, task_id, attempt,
                 RUNNING),
            )  # fmt: skip
            if cur.rowcount:
                db.execute(
                    "INSERT INTO events(task_id, attempt, kind, detail, at) VALUES(?,?,?,?,?)",
                    (task_id, attempt, "requeued", reason, now_iso()),
                )
        return bool(cur.rowcount)

    def fail(
        self, task_id: str, attempt: int | None, error: str, code: str, document: str | None = None
    ) -> bool:
        """Finish a task as FAILED (timeouts, crashes past max_attempts); conditional on the attempt."""
        ts = now_iso()
        with self._transaction() as db:
            query = (
                "UPDATE tasks SET state=?, status=?, error=?, error_code=?, completed_at=?, updated_at=?,"
                " worker_pid=NULL, document=COALESCE(?, document) WHERE id=? AND state != ?"
            )
            params: tuple[object, ...] = (
                DONE,
                TaskStatus.FAILED.value,
                error,
                code,
                ts,
                ts,
                document,
                task_id,
                DONE,
            )
            if attempt is not None:
                query += " AND attempts=?"
                params = (*params, attempt)
            cur = db.execute(query, params)
            if cur.rowcount:
                db.execute(
                    "INSERT INTO events(task_id, attempt, kind, detail, at) VALUES(?,?,?,?,?)",
                    (task_id, attempt or 0, "failed", code, ts),
                )
        return bool(cur.rowcount)

    def set_webhook(self, task_id: str, webhook_json: str) -> None:
        """The webhook's delivery record (every attempt), shown in the task's status."""
        with self._connect() as db:
            db.execute("UPDATE tasks SET webhook=? WHERE id=?", (webhook_json, task_id))

    def add_events(self, task_id: str, events: list[tuple[int, str, str | None, str]]) -> None:
        """Append (attempt, kind, detail, at) lines to the audit trail (the runner's step history)."""
        with self._connect() as db:
            db.executemany(
                "INSERT INTO events(task_id, attempt, kind, detail, at) VALUES(?,?,?,?,?)",
                [(task_id, attempt, kind, detail, at) for attempt, kind, detail, at in events],
            )

    # --- results ---------------------------------------------------------------------
    def finish(
        self,
        task_id: str,
        attempt: int,
        status: TaskStatus,
        document_json: str,
        error: str | None,
        error_code: str | None,
    ) -> bool:
        """Store the runner's final document; False when this attempt was superseded (it must not count)."""
        ts = now_iso()
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE tasks SET state=?, status=?, progress=100, document=?, error=?, error_code=?,"
                " completed_at=?, updated_at=?, worker_pid=NULL WHERE id=? AND attempts=? AND state=?",
                (DONE, status.value, document_json, error, error_code, ts, ts, task_id, attempt, RUNNING),
            )
            if cur.rowcount:
                db.execute(
                    "INSERT INTO events(task_id, attempt, kind, detail, at) VALUES(?,?,?,?,?)",
                    (task_id, attempt, "finished", status.value, ts),
                )
        return bool(cur.rowcount)

    # --- removal ------------------------------------------------------------------------
    def delete(self, task_id: str) -> TaskRow | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM tasks WHERE id=?", (task_id,))
            db.execute(
                "INSERT INTO events(task_id, attempt, kind, at) VALUES(?,?,?,?)",
                (task_id, int(row["attempts"]), "deleted", now_iso()),
            )
        return TaskRow.from_sql(row)

    def expired(self, before: datetime) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT id FROM tasks WHERE state=? AND completed_at < ? ORDER BY seq",
                (DONE, iso(before)),
            ).fetchall()
        return [str(r["id"]) for r in rows]
