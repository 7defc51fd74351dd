"""The REST API in Kubernetes mode, end to end without a cluster:
POST /v1/process → S3 (moto) + a Transcription (KMock) → the operator's Job → `maie run-task` as the
kubelet would run it (real whisper, real recording) → GET /v1/status returns the result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from k8s_support import (
    JOBS,
    NS,
    TX,
    cluster_config,
    e2e_settings,
    eventually,
    job_complete,
    run_as_kubelet,
    running_operator,
)

from maie.api.app import create_app
from maie.api.k8s_backend import KubernetesBackend
from maie.settings import Settings
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for, resource_name_for_task

AUDIO = Path(__file__).resolve().parents[1] / "data" / "audio" / "en_jfk_inaugural.flac"
KEY = {"X-API-Key": "k8s-test-key"}
pytestmark = [
    pytest.mark.skipif(not AUDIO.is_file(), reason=f"recording not found: {AUDIO}"),
    pytest.mark.timeout(400),
]


def api_settings(s3_endpoint: str, bucket: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        mode="kubernetes",
        namespace=NS,
        secret_api_key="k8s-test-key",
        data_dir=tmp_path / "api",
        s3_endpoint=s3_endpoint,
        s3_bucket=bucket,
        s3_access_key="testing",
        s3_secret_key="testing",
        **extra,
    )


@pytest.fixture()
async def api(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = api_settings(s3_endpoint, s3_store.bucket, tmp_path, max_queue_depth=1)
    backend = KubernetesBackend(settings)
    app = create_app(settings, backend=backend)
    await backend.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://maie") as client:
        yield client
    await backend.stop()


async def submit(api: httpx.AsyncClient, features: str = "raw_transcript") -> httpx.Response:
    with AUDIO.open("rb") as f:
        return await api.post(
            "/v1/process",
            headers=KEY,
            files={"file": (AUDIO.name, f, "audio/flac")},
            data={"features": features},
        )


async def test_submit_run_and_read_the_result(
    api: httpx.AsyncClient, kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    await cluster_config(kube)
    async with running_operator(e2e_settings(s3_endpoint, s3_store.bucket), [NS]):
        response = await submit(api)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        name = resource_name_for_task(task_id)

        # The upload is in S3 under the contract's key (namespace first); the resource points at it.
        assert s3_store.exists(f"audio/{NS}/{task_id}/raw.flac")
        resource = dict(kube.objects[TX, NS, name].raw)
        assert resource["spec"]["audio"]["uri"] == f"s3://{s3_store.bucket}/audio/{NS}/{task_id}/raw.flac"
        assert resource["spec"]["taskId"] == task_id and resource["spec"]["features"] == ["raw_transcript"]

        early = (await api.get(f"/v1/status/{task_id}", headers=KEY)).json()
        assert early["status"] == "PENDING" and early["task_id"] == task_id

        # Backpressure: MAX_QUEUE_DEPTH=1 and one unfinished Transcription.
        busy = await submit(api)
        assert busy.status_code == 429, busy.text

        job = await eventually(lambda: dict(kube.objects[JOBS, NS, job_name_for(name)].raw), what="the Job")
        code, output = await run_as_kubelet(kube, job, tmp_path)
        assert code == 0, output
        await job_complete(kube, job_name_for(name), code)
        await eventually(
            lambda: dict(kube.objects[TX, NS, name].raw)["status"].get("phase") == "Succeeded",
            what="Succeeded",
        )

        body = (await api.get(f"/v1/status/{task_id}", headers=KEY)).json()
        health = (await api.get("/health")).json()
        # The exports are streamed from S3 by the API (the runner stored them under the namespace).
        text = await api.get(body["exports"]["transcript.txt"], headers=KEY)
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        assert text.content == s3_store.get_bytes(f"results/{NS}/{task_id}/transcript.txt")

    assert body["status"] == "COMPLETE", body
    assert "ask not what your country" in body["results"]["raw_transcript"].lower()
    assert body["versions"]["asr_backend"]["name"] == "whisper"
    assert body["metrics"]["rtf"] > 0 and body["metrics"]["input_duration_seconds"] == pytest.approx(
        11, abs=0.5
    )
    assert body["completed_at"]
    assert health["status"] == "ok", health
    assert {"storage", "kubernetes", "operator"} <= set(health["checks"])
    assert health["queue_depth"] == 0


async def test_unknown_task_is_404_and_cancel_deletes_resource_and_files(
    api: httpx.AsyncClient, kube: Any, s3_store: S3ObjectStore
) -> None:
    missing = await api.get("/v1/status/00000000-0000-4000-8000-000000000000", headers=KEY)
    assert missing.status_code == 404
    # No operator running: the task stays PENDING; cancelling it removes the resource and the upload.
    response = await submit(api)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    cancelled = await api.delete(f"/v1/tasks/{task_id}", headers=KEY)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancelled"] is True and cancelled.json()["files_removed"] == 1
    assert kube.objects[TX, NS, resource_name_for_task(task_id)].deleted
    assert not s3_store.exists(f"audio/{NS}/{task_id}/raw.flac")
    assert (await api.get(f"/v1/status/{task_id}", headers=KEY)).status_code == 404
