"""`maie serve`: the API and the local executor in one process (embedded mode)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn

from maie.api.app import api_key_location, create_app
from maie.logs import setup_logging
from maie.settings import Settings

log = logging.getLogger("maie.api.server")


def build_settings(
    host: str | None = None, port: int | None = None, data_dir: Path | None = None
) -> Settings:
    """Environment/.env settings with the command-line options on top."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    if data_dir is not None:
        overrides["data_dir"] = Path(data_dir)
    return Settings(**overrides)


def serve(host: str | None = None, port: int | None = None, data_dir: Path | None = None) -> None:
    settings = build_settings(host, port, data_dir)
    setup_logging(settings.environment, settings.debug)
    app = create_app(settings)
    key_path = api_key_location(app)
    base = f"http://{settings.api_host}:{settings.api_port}"
    if key_path is not None:
        print(
            f'MAIE API key: stored in {key_path} (owner-only). Use it as: -H "X-API-Key: $(cat {key_path})"',
            file=sys.stderr,
            flush=True,
        )
    else:
        print("MAIE API key: from SECRET_API_KEY", file=sys.stderr, flush=True)
    print(
        f"MAIE API on {base}  (docs: {base}/docs, data: {Path(settings.data_dir).resolve()})", file=sys.stderr
    )
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # httptools parses HTTP in C. The loop stays asyncio's: uvloop starts worker processes with
        # fork(), which copies the API's page tables and held the loop 30 ms per task started here;
        # asyncio's subprocess uses vfork (about 1 ms).
        http="httptools",
        loop="asyncio",
    )
