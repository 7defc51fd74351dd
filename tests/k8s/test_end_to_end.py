"""End to end without a cluster: operator (KMock) → Job → `maie run-task` run as the kubelet would
(real faster-whisper tiny.en on a real recording, no Kubernetes credentials) → progress and
result.json in S3 (moto) → the operator copies them into the resource → Succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from k8s_support import (
    JOBS,
    NS,
    TX,
    cluster_config,
    e2e_settings,
    eventually,
    job_complete,
    put,
    run_as_kubelet,
    running_operator,
    tx_body,
)

from maie.contract import ResultDocument, TaskStatus
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for
from tests.conftest import recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def tx_status(kube: Any, name: str) -> dict[str, Any]:
    return dict(dict(kube.objects[TX, NS, name].raw).get("status") or {})


async def test_transcription_runs_through_the_runner_job(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    audio = recording("en_jfk_inaugural.flac").path
    task = "jfk-e2e"
    s3_store.put_file(f"audio/{NS}/{task}/raw.flac", audio, "audio/flac")
    await cluster_config(kube)
    spec = {
        "audio": {"uri": f"s3://{s3_store.bucket}/audio/{NS}/{task}/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": task,
        "asr": {"language": "en"},
    }
    async with running_operator(e2e_settings(s3_endpoint, s3_store.bucket), [NS]):
        await put(kube, f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions", tx_body("jfk", spec))
        job = await eventually(lambda: dict(kube.objects[JOBS, NS, job_name_for("jfk")].raw), what="the Job")
        code, output = await run_as_kubelet(kube, job, tmp_path)
        assert code == 0, output
        await job_complete(kube, job_name_for("jfk"), code)
        await eventually(lambda: tx_status(kube, "jfk").get("phase") == "Succeeded", what="Succeeded")
    status = tx_status(kube, "jfk")
    assert status["stage"] == "COMPLETE" and status["progress"] == 100
    assert status["resultUri"] == f"s3://{s3_store.bucket}/results/{NS}/{task}/result.json"
    assert status["versions"]["asr_backend"]["name"] == "whisper"
    assert status["versions"]["asr_backend"]["checkpoint_hash"]
    assert status["metrics"]["inputDurationSeconds"] == pytest.approx(11.0, abs=0.5)
    assert status["metrics"]["rtf"] > 0 and status["metrics"]["processingTimeSeconds"] > 0
    assert status["startedAt"] and status["completedAt"]
    assert status["attempts"] == 1

    doc = ResultDocument.model_validate_json(s3_store.get_bytes(f"results/{NS}/{task}/result.json"))
    assert doc.status is TaskStatus.COMPLETE and doc.task_id == task
    assert "ask not what your country can do for you" in (doc.results.raw_transcript or "").lower()  # type: ignore[union-attr]
    for name, uri in doc.exports.items():
        assert uri == f"s3://{s3_store.bucket}/results/{NS}/{task}/{name}"
        assert s3_store.exists(f"results/{NS}/{task}/{name}")
    # Only the runner's own prefixes were written.
    assert {k.split("/")[0] + "/" + k.split("/")[1] for k in s3_store.list_keys("")} == {
        f"audio/{NS}",
        f"results/{NS}",
    }


async def test_missing_audio_fails_the_task_without_retrying(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    await cluster_config(kube)
    spec = {
        "audio": {"uri": f"s3://{s3_store.bucket}/audio/{NS}/nope/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": "nope",
    }
    async with running_operator(e2e_settings(s3_endpoint, s3_store.bucket), [NS]):
        await put(kube, f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions", tx_body("nope", spec))
        job = await eventually(lambda: dict(kube.objects[JOBS, NS, job_name_for("nope")].raw), what="the Job")
        code, output = await run_as_kubelet(kube, job, tmp_path)
        assert code == 2, output  # podFailurePolicy: FailJob, no retries
        await job_complete(kube, job_name_for("nope"), code)
        await eventually(lambda: tx_status(kube, "nope").get("phase") == "Failed", what="Failed")
    status = tx_status(kube, "nope")
    assert "audio not found" in status["error"] and status["errorCode"] == "audio_not_found"
    doc = json.loads(s3_store.get_bytes(f"results/{NS}/nope/result.json"))
    assert doc["status"] == "FAILED"


async def test_unreachable_s3_is_a_retryable_failure(kube: Any, tmp_path: Path) -> None:
    """Infrastructure trouble exits 1, so the Job's backoff retries it; the task is not Failed."""
    await cluster_config(kube)
    spec = {
        "audio": {"uri": f"s3://maie/audio/{NS}/x/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": "x",
    }
    async with running_operator(e2e_settings("127.0.0.1:9", "maie"), [NS]):
        await put(kube, f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions", tx_body("unreach", spec))
        job = await eventually(
            lambda: dict(kube.objects[JOBS, NS, job_name_for("unreach")].raw), what="the Job"
        )
        code, output = await run_as_kubelet(kube, job, tmp_path)
    assert code == 1, output
    assert "will be retried" in output
    assert tx_status(kube, "unreach")["phase"] == "Running"  # not Failed: the Job may still retry
