"""End to end without a cluster: operator (KMock) → Job → `maie run-task` run as the kubelet would
(real faster-whisper tiny.en on a real recording) → result.json in S3 (moto) → resource Succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, running_operator, tx_body

from maie.contract import ResultDocument, TaskStatus
from maie.settings import Settings
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for

AUDIO = Path("/work/shared/data/audio/en_jfk_inaugural.flac")
pytestmark = pytest.mark.skipif(not AUDIO.is_file(), reason=f"recording not found: {AUDIO}")


def e2e_settings(s3_endpoint: str, bucket: str) -> Settings:
    return Settings(
        operator_runner_image="registry.example/maie-runner:test",
        operator_gpu_count=0,  # a CPU cluster: the kind setup
        operator_s3_secret="maie-s3",
        operator_runner_config_map="maie-runner",
        operator_queue_retry_seconds=0.3,
        runner_status_interval=0.5,
        s3_endpoint=s3_endpoint,
        s3_bucket=bucket,
    )


async def put(kube: Any, path: str, body: dict[str, Any]) -> None:
    async with kube.post(path, json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


async def cluster_config(kube: Any) -> None:
    """What `helm install` puts next to the operator: the S3 Secret and the runner ConfigMap."""
    secret = {"S3_ACCESS_KEY": "testing", "S3_SECRET_KEY": "testing"}
    await put(
        kube,
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "maie-s3", "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
        },
    )
    await put(
        kube,
        f"/api/v1/namespaces/{NS}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "maie-runner", "namespace": NS},
            "data": {
                "WHISPER_MODEL_VARIANT": "tiny.en",
                "WHISPER_BEAM_SIZE": "1",
                "WHISPER_CPU_THREADS": "2",
            },
        },
    )


def container_env(kube: Any, job: dict[str, Any], volumes_root: Path) -> dict[str, str]:
    """Resolve the runner container's env as the kubelet does (values, Secret and ConfigMap refs)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]
        found = kube.objects["v1/configmaps", NS, ref["name"]]
        env.update(dict(found.raw).get("data", {}))
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            data = dict(kube.objects["v1/secrets", NS, ref["name"]].raw)["data"]
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
    # The pod's volumes (/work emptyDir) live under a temp dir here.
    for key, value in env.items():
        if value.startswith("/work"):
            env[key] = str(volumes_root / value.lstrip("/"))
    return env


async def run_as_kubelet(kube: Any, job: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """Run the Job's container command as a process, with its env and the API via KUBECONFIG."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:]]
    env = {
        "PATH": os.environ["PATH"],
        "KUBECONFIG": os.environ["KUBECONFIG"],
        **container_env(kube, job, tmp_path),
        "MODELS_DIR": str(tmp_path / "models"),
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        *container["args"],
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    return int(proc.returncode or 0), out.decode(errors="replace")


async def job_complete(kube: Any, name: str, code: int) -> None:
    """The Job controller's verdict on the pod's exit code."""
    cond = (
        {"type": "Complete", "status": "True"}
        if code == 0
        else {"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}
    )
    fields = {"active": 0, ("succeeded" if code == 0 else "failed"): 1, "conditions": [cond]}
    async with kube.patch(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}/status", json={"status": fields}) as r:
        assert r.status == 200


async def test_transcription_runs_through_the_runner_job(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    task = "jfk-e2e"
    s3_store.put_file(f"audio/{task}/raw.flac", AUDIO, "audio/flac")
    await cluster_config(kube)
    spec = {
        "audio": {"uri": f"s3://{s3_store.bucket}/audio/{task}/raw.flac"},
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
        await eventually(
            lambda: (
                dict(kube.objects[TX, NS, "jfk"].raw)["status"].get("conditions")
                and any(
                    c["type"] == "Succeeded"
                    for c in dict(kube.objects[TX, NS, "jfk"].raw)["status"]["conditions"]
                )
            ),
            what="Succeeded condition",
        )
    status = dict(kube.objects[TX, NS, "jfk"].raw)["status"]
    assert status["phase"] == "Succeeded" and status["stage"] == "COMPLETE" and status["progress"] == 100
    assert status["resultUri"] == f"s3://{s3_store.bucket}/results/{task}/result.json"
    assert status["versions"]["asr_backend"]["name"] == "whisper"
    assert status["versions"]["asr_backend"]["checkpoint_hash"]
    assert status["metrics"]["inputDurationSeconds"] == pytest.approx(11.0, abs=0.5)
    assert status["metrics"]["rtf"] > 0 and status["metrics"]["processingTimeSeconds"] > 0
    assert status["startedAt"] and status["completedAt"]

    doc = ResultDocument.model_validate_json(s3_store.get_bytes(f"results/{task}/result.json"))
    assert doc.status is TaskStatus.COMPLETE and doc.task_id == task
    assert "ask not what your country can do for you" in (doc.results.raw_transcript or "").lower()
    for name, uri in doc.exports.items():
        assert uri == f"s3://{s3_store.bucket}/results/{task}/{name}"
        assert s3_store.exists(f"results/{task}/{name}")
    # Progress was reported while it ran (several status patches), not only at the end.
    stages = [v.get("status", {}).get("stage") for v in kube.objects[TX, NS, "jfk"].history if v is not None]
    assert "PROCESSING_ASR" in stages and stages.index("PROCESSING_ASR") < stages.index("COMPLETE")


async def test_missing_audio_fails_the_task_without_retrying(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    await cluster_config(kube)
    spec = {
        "audio": {"uri": f"s3://{s3_store.bucket}/audio/nope/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": "nope",
    }
    async with running_operator(e2e_settings(s3_endpoint, s3_store.bucket), [NS]):
        await put(kube, f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions", tx_body("nope", spec))
        job = await eventually(lambda: dict(kube.objects[JOBS, NS, job_name_for("nope")].raw), what="the Job")
        code, output = await run_as_kubelet(kube, job, tmp_path)
        assert code == 2, output  # podFailurePolicy: FailJob, no retries
        await job_complete(kube, job_name_for("nope"), code)
        await eventually(
            lambda: dict(kube.objects[TX, NS, "nope"].raw)["status"].get("phase") == "Failed", what="Failed"
        )
    status = dict(kube.objects[TX, NS, "nope"].raw)["status"]
    assert "audio not found" in status["error"] and status["errorCode"] == "audio_not_found"
    doc = json.loads(s3_store.get_bytes("results/nope/result.json"))
    assert doc["status"] == "FAILED"
