"""The API in Kubernetes mode before its S3 exists: it creates the bucket in the background once S3
answers, and its probes say what they mean (live: the process; ready: S3 and the Kubernetes API;
/health: also whether an operator is processing). Real moto S3 server, started late; KMock."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from k8s_support import NS, TX

from maie.api.app import create_app
from maie.api.k8s_backend import KubernetesBackend
from maie.settings import Settings
from maie.storage import bucket
from maie.storage.s3 import S3ObjectStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_settings(endpoint: str, bucket_name: str, tmp_path: Path) -> Settings:
    return Settings(
        mode="kubernetes",
        namespace=NS,
        secret_api_key="k",
        data_dir=tmp_path / "api",
        s3_endpoint=endpoint,
        s3_bucket=bucket_name,
        s3_access_key="testing",
        s3_secret_key="testing",
    )


async def until(check: Any, timeout: float, what: str) -> Any:
    """Await `check()` until truthy (asyncio.sleep: KMock serves from this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await check()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_bucket_appears_when_s3_comes_up_and_readiness_follows(
    kube: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from moto.server import ThreadedMotoServer

    monkeypatch.setattr(bucket, "FIRST_WAIT", 0.2)
    monkeypatch.setattr(bucket, "MAX_WAIT", 0.5)
    port = _free_port()
    endpoint = f"127.0.0.1:{port}"  # nothing listens here yet
    settings = api_settings(endpoint, "maie-late", tmp_path)
    backend = KubernetesBackend(settings)
    app = create_app(settings, backend=backend)
    probe = S3ObjectStore(endpoint, "maie-late", access_key="testing", secret_key="testing")
    caplog.set_level(logging.INFO, logger="maie.storage.bucket")
    await backend.start()  # must not wait for S3, nor give up on it
    server: ThreadedMotoServer | None = None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://maie") as api:
            assert (await api.get("/health/live")).status_code == 200
            down = await api.get("/health/ready")
            assert down.status_code == 503
            checks = down.json()["checks"]
            assert checks["storage"]["ok"] is False and checks["kubernetes"]["ok"] is True
            assert set(checks) == {"storage", "kubernetes"}  # readiness ignores the operator check
            assert "not ready" in caplog.text and "maie-late" in caplog.text  # says why it waits

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()

            async def bucket_exists() -> bool:
                return bool(await asyncio.to_thread(probe.client.bucket_exists, "maie-late"))

            await until(bucket_exists, 60, "the bucket")
            up = await until(
                lambda: _ready(api),
                30,
                "readiness",
            )
            assert up.json()["checks"]["storage"]["ok"] is True
            assert "S3 bucket 'maie-late'" in caplog.text and "is ready" in caplog.text
            assert (await api.get("/health/live")).status_code == 200
    finally:
        await backend.stop()
        if server is not None:
            server.stop()


async def _ready(api: httpx.AsyncClient) -> httpx.Response | None:
    response = await api.get("/health/ready")
    return response if response.status_code == 200 else None


async def test_a_missing_operator_fails_health_but_not_readiness(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    """No operator: submissions wait (Queued), the API must stay in its Service; /health tells."""
    settings = api_settings(s3_endpoint, s3_store.bucket, tmp_path)
    backend = KubernetesBackend(settings)
    app = create_app(settings, backend=backend)
    stale = {
        "apiVersion": "maie.io/v1alpha1",
        "kind": "Transcription",
        "metadata": {
            "name": "never-seen",
            "namespace": NS,
            "uid": "u-stale",
            "resourceVersion": "1",
            "creationTimestamp": "2020-01-01T00:00:00Z",  # long past the operator's grace time
        },
        "spec": {
            "audio": {"uri": f"s3://{s3_store.bucket}/audio/x/raw.flac"},
            "features": ["raw_transcript"],
        },
    }
    async with kube.post(f"/apis/{TX.rsplit('/', 1)[0]}/namespaces/{NS}/transcriptions", json=stale) as resp:
        assert resp.status in (200, 201), await resp.text()
    await backend.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://maie") as api:
            full = await api.get("/health")
            assert full.status_code == 503 and full.json()["checks"]["operator"]["ok"] is False
            ready = await api.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"]) == {"storage", "kubernetes"}
            live = await api.get("/health/live")
            assert live.status_code == 200 and live.json()["status"] == "ok"
    finally:
        await backend.stop()
