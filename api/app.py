"""The FastAPI application: routers, auth, error handlers and the task backend's lifecycle."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from maie.api.auth import resolve_api_key
from maie.api.backends import TaskBackend
from maie.api.errors import install_error_handlers
from maie.api.middleware import RequestContextMiddleware
from maie.api.routers import discovery, events, health, metrics, openai, process, status, web
from maie.settings import Settings, get_settings

DESCRIPTION = """\
Upload a recording, follow its progress (poll, or Server-Sent Events), read the raw transcript, clean
transcript and structured summary, with the versions and metrics of the run. Every `/v1` route needs
the `X-API-Key` header (or `Authorization: Bearer <key>`); `/health`, `/metrics`, the web page at `/`
and these docs are public. Errors are `{"detail": "...", "code": "..."}`.
`POST /v1/audio/transcriptions` speaks OpenAI's transcription API, so OpenAI clients work unchanged.
"""


def create_backend(settings: Settings) -> TaskBackend:
    """Embedded (SQLite + local files + worker processes) or Kubernetes (Transcriptions + S3)."""
    if settings.mode == "embedded":
        from maie.api.embedded_backend import EmbeddedBackend

        return EmbeddedBackend(settings)
    from maie.api.k8s_backend import KubernetesBackend  # imports the kubernetes client only when used

    return KubernetesBackend(settings)


def _telemetry() -> TelemetryConfig | None:
    """FastAPI's native OpenTelemetry hooks, only where OpenTelemetry is configured (OTEL_* set).

    Otherwise they would look up the global OpenTelemetry providers (environment reads) on every
    request to find out they have nothing to do; MAIE's own metrics are Prometheus' (/metrics).
    """
    if any(name.startswith("OTEL_") for name in os.environ):
        return None  # FastAPI's defaults
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None, backend: TaskBackend | None = None) -> FastAPI:
    """Build the app; the backend starts with the server (lifespan) and stops with it."""
    settings = settings or get_settings()
    api_key, key_path = resolve_api_key(settings)
    task_backend = backend or create_backend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await task_backend.start()
        try:
            yield
        finally:
            await task_backend.stop()

    app = FastAPI(
        title="MAIE",
        version=settings.pipeline_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        debug=False,  # our own handler decides what an error shows (settings.debug)
        telemetry=_telemetry(),
    )
    app.state.settings = settings
    app.state.backend = task_backend
    app.state.api_key = api_key
    app.state.api_key_path = key_path
    app.state.started_at = time.time()
    install_error_handlers(app, debug=settings.debug)
    app.add_middleware(RequestContextMiddleware)
    for module in (process, status, events, openai, discovery, health, metrics, web):
        app.include_router(module.router)
    return app


def api_key_location(app: FastAPI) -> Path | None:
    """Where the generated key is stored (None when SECRET_API_KEY was given)."""
    path: Path | None = app.state.api_key_path
    return path
