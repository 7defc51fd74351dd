"""Prometheus metrics, defined once for the API and the operator (the official prometheus_client).

Who observes what: the API counts HTTP requests, uploads and submissions; whoever runs tasks counts
how they end and how long their stages took — the embedded executor (inside the API process, so the
API's /metrics shows it) or, in Kubernetes mode, the operator (its own /metrics port). Queue depth
and running tasks are gauges read from the task backend at scrape time.

Labels are bounded: routes are path templates (`/v1/status/{task_id}`, never an id), statuses and
error codes are the contract's own small sets.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

disable_created_metrics()  # no `*_created` twin of every series: Prometheus does not need them

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "observe_finished",
    "render",
    "start_operator_metrics_server",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_SIZE_BUCKETS = (16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6, 256e6, 1e9)

# --- API ------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "maie_http_requests_total", "HTTP requests answered, by route template, method and status code.",
    ["method", "route", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "maie_http_request_duration_seconds", "Seconds from request start to the end of the response, by route.",
    ["method", "route"], buckets=_LATENCY_BUCKETS,
)  # fmt: skip
UPLOAD_BYTES = Counter("maie_upload_bytes_total", "Bytes of audio accepted in uploads (queued tasks).")
UPLOAD_SIZE = Histogram("maie_upload_size_bytes", "Size of accepted uploads.", buckets=_SIZE_BUCKETS)
TASKS_SUBMITTED = Counter(
    "maie_tasks_submitted_total", "Tasks accepted and queued, by the route that took them.", ["route"]
)
QUEUE_DEPTH = Gauge("maie_queue_depth", "Unfinished tasks (queued + running), read at scrape time.")
TASKS_RUNNING = Gauge("maie_tasks_running", "Tasks running now, read at scrape time.")
HEALTH_CHECK = Gauge("maie_health_check_ok", "1 when a /health check passes, else 0.", ["check"])

# --- whoever runs tasks (embedded executor, operator) -----------------------------------------
TASKS_FINISHED = Counter(
    "maie_tasks_finished_total", "Tasks that reached a final status, by status and error code.",
    ["status", "error_code"],
)  # fmt: skip
STAGE_SECONDS = Histogram(
    "maie_stage_seconds", "Seconds each pipeline stage took, per finished task.", ["stage"],
    buckets=_STAGE_BUCKETS,
)  # fmt: skip
TASK_SECONDS = Histogram(
    "maie_task_processing_seconds", "Processing seconds of finished tasks (the result's metrics).",
    buckets=_STAGE_BUCKETS,
)  # fmt: skip

# --- operator ---------------------------------------------------------------------------------
OPERATOR_JOBS_CREATED = Counter("maie_operator_jobs_created_total", "Runner Jobs the operator created.")
OPERATOR_JOBS_RUNNING = Gauge("maie_operator_jobs_running", "Runner Jobs running now (the concurrency cap).")
OPERATOR_QUEUED = Gauge("maie_operator_queued_resources", "Transcriptions waiting in phase Queued.")


def observe_finished(
    status: str,
    error_code: str | None = None,
    stage_seconds: Mapping[str, float] | None = None,
    processing_seconds: float | None = None,
) -> None:
    """Count one task that reached COMPLETE or FAILED, with its stage timings when it has them."""
    TASKS_FINISHED.labels(status=status, error_code=error_code or "").inc()
    for stage, seconds in (stage_seconds or {}).items():
        STAGE_SECONDS.labels(stage=stage).observe(max(float(seconds), 0.0))
    if processing_seconds is not None:
        TASK_SECONDS.observe(max(float(processing_seconds), 0.0))


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(registry)


def start_operator_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics for `maie operator` on its own port (a daemon thread); 0 = off."""
    if port:
        start_http_server(port, addr=addr)
