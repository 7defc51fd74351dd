"""Fixtures for the API tests: one shared real server (session), fresh ones where a test needs its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import AUDIO, MAX_FILE_SIZE_MB, ApiServer


@pytest.fixture(scope="session", autouse=True)
def _audio_present() -> None:
    if not AUDIO.is_dir():
        pytest.fail(f"the recordings in tests/data are missing: {AUDIO}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The shared server: generated API key (no SECRET_API_KEY), 2 MB upload limit; quick SSE polling
    and keep-alives, and a 60 s limit on synchronous OpenAI-style transcriptions (for their tests)."""
    srv = ApiServer(
        tmp_path_factory.mktemp("shared") / "data",
        max_file_size_mb=MAX_FILE_SIZE_MB,
        live_poll_interval=0.1,
        sse_keepalive_seconds=1.0,
        transcriptions_max_duration_seconds=60,
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def anon(server: ApiServer) -> Iterator[httpx.Client]:
    """A client without the API key."""
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
