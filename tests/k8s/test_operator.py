"""The real kopf operator against KMock and moto's S3: Jobs, status, queueing, deletion, restarts.

KMock has no controllers: the tests play the Job controller (patching Job status), the kubelet
(creating and patching the runner pod) and the runner (its progress.json, checkpoint.json and
result.json in S3), exactly the objects and fields each of them writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, running_operator, tx_body

from maie import checkpoint as records
from maie.checkpoint import Checkpoint, TranscriptRecord
from maie.contract import (
    AsrVersion,
    AudioInfo,
    Metrics,
    ResultDocument,
    Segment,
    Step,
    TaskRequest,
    TaskStatus,
)
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def bucket(s3_store: S3ObjectStore, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3ObjectStore:
    """Every operator here reads and writes results in a fresh bucket of moto's S3 server."""
    monkeypatch.setitem(S3, "endpoint", s3_endpoint)
    monkeypatch.setitem(S3, "bucket", s3_store.bucket)
    return s3_store


S3: dict[str, str] = {}
LAST_HANDLED = "operator.maie.io/last-handled-configuration"


def op_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "operator_runner_image": "registry.example/maie-runner:test",
        "operator_image_pull_policy": "Always",
        "operator_gpu_count": 1,
        "operator_node_selector": {"nvidia.com/gpu.present": "true"},
        "operator_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "operator_runtime_class": "nvidia",
        "operator_resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
        "operator_max_concurrent_jobs": 4,
        "operator_queue_retry_seconds": 0.3,
        "operator_ttl_seconds_after_finished": 600,
        "operator_s3_secret": "maie-s3",
        "operator_models_pvc": "maie-models",
        "job_timeout": 1800,
        "max_attempts": 3,
        "s3_endpoint": S3["endpoint"],
        "s3_bucket": S3["bucket"],
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "operator_image_pull_grace": 0,
    }
    base.update(overrides)
    return Settings(**base)


def obj(kube: Any, resource: str, name: str) -> dict[str, Any]:
    found = kube.objects[resource, NS, name]
    if found.deleted:
        raise KeyError(name)
    return dict(found.raw)


def gone(kube: Any, resource: str, name: str) -> bool:
    try:
        return bool(kube.objects[resource, NS, name].deleted)
    except KeyError:
        return True


def status(kube: Any, name: str) -> dict[str, Any]:
    return dict(obj(kube, TX, name).get("status") or {})


def conditions(kube: Any, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status(kube, name).get("conditions", [])}


def events_for(kube: Any, name: str) -> list[tuple[str, str]]:
    """(type, reason) of the Events posted about a Transcription."""
    out = []
    for res, _, ev_name in kube.objects:
        if res.plural == "events" and not kube.objects[res, NS, ev_name].deleted:
            ev = dict(kube.objects[res, NS, ev_name].raw)
            if ev.get("involvedObject", {}).get("name") == name:
                out.append((ev.get("type"), ev.get("reason")))
    return sorted(out)


def job_names(kube: Any) -> list[str]:
    return sorted(
        name for res, _, name in kube.objects if res.plural == "jobs" and not gone(kube, JOBS, name)
    )


async def create(kube: Any, body: dict[str, Any]) -> None:
    async with kube.post(f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


async def delete_tx(kube: Any, name: str) -> None:
    async with kube.delete(f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions/{name}") as resp:
        assert resp.status == 200, await resp.text()


async def job_status(kube: Any, job: str, **fields: Any) -> None:
    """What the Job controller writes."""
    url = f"/apis/batch/v1/namespaces/{NS}/jobs/{job}/status"
    async with kube.patch(url, json={"status": fields}) as resp:
        assert resp.status == 200, await resp.text()


def finished(kind: str, reason: str = "", message: str = "") -> list[dict[str, Any]]:
    return [{"type": kind, "status": "True", "reason": reason, "message": message}]


async def pod(kube: Any, tx_name: str, pod_status: dict[str, Any]) -> str:
    """What the kubelet reports for the runner pod: the Job's template labels, a Job owner."""
    job = obj(kube, JOBS, job_name_for(tx_name))
    name = f"{job['metadata']['name']}-x7k2p"
    template = job["spec"]["template"]["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"pod-{tx_name}",
            "resourceVersion": "1",
            "labels": {**template["labels"], "job-name": job["metadata"]["name"]},
            "annotations": template["annotations"],
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": "job-uid",
                    "controller": True,
                }
            ],
        },
        "spec": job["spec"]["template"]["spec"],
        "status": pod_status,
    }
    async with kube.post(f"/api/v1/namespaces/{NS}/pods", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()
    return name


async def started(kube: Any, name: str, spec: dict[str, Any] | None = None) -> str:
    await create(kube, tx_body(name, spec, uid=f"uid-{name}"))
    await eventually(lambda: obj(kube, JOBS, job_name_for(name)), what=f"the Job of {name}")
    return job_name_for(name)


def keys(name: str) -> TaskKeys:
    """The resources here have no spec.taskId: the task id is their uid (uid-<name>)."""
    return TaskKeys(f"uid-{name}", NS)


def runner_result(bucket: S3ObjectStore, name: str, status: TaskStatus, **fields: Any) -> ResultDocument:
    """What the runner writes at the end: result.json."""
    doc = ResultDocument(
        task_id=f"uid-{name}",
        status=status,
        request=TaskRequest(features=["raw_transcript"]),
        metrics=Metrics(processing_time_seconds=3.0, input_duration_seconds=11.0, rtf=0.27),
        **fields,
    )
    bucket.put_bytes(keys(name).result(), doc.to_json().encode())
    return doc


def runner_checkpoint(bucket: S3ObjectStore, name: str) -> None:
    """What the runner stores once the ASR has finished: the transcript, before the LLM starts."""
    version = AsrVersion(
        name="whisper", model_variant="tiny.en", model_path="/m", checkpoint_hash="h", compute_type="int8",
        device="cpu", decoding_params={}, inference="sequential",
    )  # fmt: skip
    audio = AudioInfo(format="flac", codec="flac", duration=11.0, sample_rate=16000, channels=1)
    segment = Segment(start=0.0, end=11.0, text="And so my fellow Americans, ask not.")
    transcript = TranscriptRecord(
        audio=audio, segments=[segment], language="en", version=version, punctuates=True
    )
    records.write(bucket, keys(name).checkpoint, Checkpoint(task_id=f"uid-{name}", transcript=transcript))
    progress = records.Progress(task_id=f"uid-{name}", attempt=1, stage=TaskStatus.PROCESSING_LLM)
    for step in ("preprocessing", "asr"):
        progress.record("started", step)  # type: ignore[arg-type]
        progress.record("finished", step)  # type: ignore[arg-type]
    progress.record("started", "summary")  # type: ignore[arg-type]
    progress.step = progress.history[-1].step
    records.write(bucket, keys(name).progress, progress)


# --------------------------------------------------------------------------------------
async def test_create_makes_one_job_with_the_configured_spec(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        await create(kube, tx_body("tx-a", uid="uid-a"))
        job = await eventually(lambda: obj(kube, JOBS, "tx-a-run"), what="the Job")
        await eventually(lambda: status(kube, "tx-a").get("jobName"), what="status.jobName")

    meta, spec = job["metadata"], job["spec"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "maie.io/v1alpha1",
            "kind": "Transcription",
            "name": "tx-a",
            "uid": "uid-a",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"]["maie.io/transcription"] == "tx-a"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "maie-operator"
    assert meta["annotations"]["maie.io/transcription-uid"] == "uid-a"
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    pod_spec = spec["template"]["spec"]
    # Each run may take JOB_TIMEOUT from its pod's start; the Job allows every attempt plus the wait
    # for a node (a GPU may be busy for hours), so waiting does not eat the run's time.
    assert pod_spec["activeDeadlineSeconds"] == 1800
    assert spec["activeDeadlineSeconds"] == 3 * 1800 + 21600
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (2, 600)
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == "maie-runner"
    assert pod_spec["automountServiceAccountToken"] is False  # the runner has no API credentials
    assert pod_spec["runtimeClassName"] == "nvidia"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "maie-models", "readOnly": True},
    } in pod_spec["volumes"]
    (container,) = pod_spec["containers"]
    assert container["image"] == "registry.example/maie-runner:test"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["maie", "run-task"] and "args" not in container
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    env = {e["name"]: e for e in container["env"]}
    task = json.loads(env["MAIE_TASK"]["value"])
    assert (task["task_id"], task["namespace"]) == ("uid-a", NS)
    assert task["audio"] == "https://media.example/tx-a.flac"
    assert env["S3_BUCKET"]["value"] == S3["bucket"] and env["WHISPER_DEVICE"]["value"] == "cuda"
    assert env["S3_SECRET_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "maie-s3", "key": "S3_SECRET_KEY"}}
    assert "value" not in env["S3_ACCESS_KEY"]  # credentials only by reference
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    st = status(kube, "tx-a")
    assert st["phase"] == "Running" and st["stage"] == "PENDING" and st["taskId"] == "uid-a"
    assert st["submittedAt"]
    conds = conditions(kube, "tx-a")
    assert conds["Accepted"]["status"] == "True" and conds["JobCreated"]["status"] == "True"
    # The phase label that lets the API count unfinished tasks with a selector (no full listing).
    assert obj(kube, TX, "tx-a")["metadata"]["labels"]["maie.io/phase"] == "Running"


async def test_per_resource_overrides_win_and_gpu_count_zero_means_cpu(kube: Any) -> None:
    spec = {
        "audio": {"uri": "https://example.org/a.mp3"},
        "features": ["raw_transcript"],
        "taskId": "task-cpu",
        "job": {
            "gpuCount": 0,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 60,
            "ttlSecondsAfterFinished": 5,
            "nodeSelector": {"pool": "cpu"},
            "resources": {"limits": {"cpu": 4}},
        },
    }
    # nodeSelector and resources only because the platform team allows them; the numbers are lower
    # than the operator's own (always allowed).
    allowed = op_settings(operator_allowed_job_overrides=["nodeSelector", "resources"])
    async with running_operator(allowed, [NS]):
        job = obj(kube, JOBS, await started(kube, "tx-cpu", spec))
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 60
    assert job["spec"]["ttlSecondsAfterFinished"] == 5
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "cpu"}
    (container,) = pod_spec["containers"]
    assert container["resources"] == {"limits": {"cpu": "4"}}  # no nvidia.com/gpu at all
    assert {"name": "WHISPER_DEVICE", "value": "cpu"} in container["env"]
    assert job["metadata"]["labels"]["maie.io/task-id"] == "task-cpu"


async def test_a_disallowed_override_is_refused_before_it_queues(kube: Any) -> None:
    spec = {
        "audio": {"uri": "https://example.org/a.mp3"},
        "features": ["raw_transcript"],
        "job": {"tolerations": [{"operator": "Exists"}]},  # would tolerate every taint
    }
    async with running_operator(op_settings(), [NS]):
        await create(kube, tx_body("tx-taint", spec, uid="uid-taint"))
        await eventually(lambda: status(kube, "tx-taint").get("phase") == "Failed", what="Failed")
    st = status(kube, "tx-taint")
    assert st["errorCode"] == "override_not_allowed" and "spec.job.tolerations" in st["error"]
    assert conditions(kube, "tx-taint")["Accepted"]["reason"] == "OverrideNotAllowed"
    assert job_names(kube) == []


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_job_success_is_mirrored_from_the_runners_result(kube: Any, bucket: S3ObjectStore) -> None:
    created, completed = (
        sample("maie_operator_jobs_created_total"),
        sample("maie_tasks_finished_total", status="COMPLETE", error_code=""),
    )
    async with running_operator(op_settings(runner_status_interval=0.2), [NS]):
        job = await started(kube, "tx-ok")
        await job_status(kube, job, active=1, startTime="2026-01-01T00:00:00Z")
        await eventually(lambda: status(kube, "tx-ok").get("attempts") == 1, what="attempts")
        # The runner's progress.json reaches status while it runs (the operator's progress timer).
        live = records.Progress(task_id="uid-tx-ok", attempt=1, stage=TaskStatus.PROCESSING_ASR, percent=40.0)
        live.step = Step.ASR
        records.write(bucket, keys("tx-ok").progress, live)
        await eventually(lambda: status(kube, "tx-ok").get("progress") == 40.0, what="progress mirrored")
        assert status(kube, "tx-ok")["stage"] == "PROCESSING_ASR" and status(kube, "tx-ok")["step"] == "asr"
        runner_result(bucket, "tx-ok", TaskStatus.COMPLETE, attempts=1)
        await job_status(
            kube,
            job,
            active=0,
            succeeded=1,
            completionTime="2026-01-01T00:01:00Z",
            conditions=finished("Complete"),
        )
        await eventually(lambda: status(kube, "tx-ok").get("phase") == "Succeeded", what="Succeeded")
    st = status(kube, "tx-ok")
    assert st["stage"] == "COMPLETE" and st["progress"] == 100 and "step" not in st
    assert st["resultUri"] == f"s3://{bucket.bucket}/results/{NS}/uid-tx-ok/result.json"
    assert st["metrics"]["rtf"] == 0.27 and st["completedAt"]
    assert "error" not in st
    assert conditions(kube, "tx-ok")["Succeeded"]["status"] == "True"
    assert obj(kube, TX, "tx-ok")["metadata"]["labels"]["maie.io/phase"] == "Succeeded"
    # The operator's /metrics moved with the task: one Job created, one task COMPLETE.
    assert sample("maie_operator_jobs_created_total") == created + 1
    assert sample("maie_tasks_finished_total", status="COMPLETE", error_code="") == completed + 1


async def test_a_job_that_completes_without_a_result_fails_clearly(kube: Any, bucket: S3ObjectStore) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-nores")
        await job_status(kube, job, active=0, succeeded=1, conditions=finished("Complete"))
        await eventually(lambda: status(kube, "tx-nores").get("phase") == "Failed", what="Failed")
    st = status(kube, "tx-nores")
    assert st["errorCode"] == "result_missing" and "no result.json" in st["error"]
    assert json.loads(bucket.get_bytes(keys("tx-nores").result()))["status"] == "FAILED"


async def test_deadline_exceeded_fails_naming_the_stage_and_keeps_the_transcript(
    kube: Any, bucket: S3ObjectStore
) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-slow")
        runner_checkpoint(bucket, "tx-slow")
        await job_status(
            kube,
            job,
            active=0,
            failed=1,
            conditions=finished("Failed", "DeadlineExceeded", "Job was active longer than specified"),
        )
        await eventually(lambda: status(kube, "tx-slow").get("phase") == "Failed", what="Failed")
    st = status(kube, "tx-slow")
    assert st["stage"] == "FAILED" and st["errorCode"] == "deadline_exceeded"
    assert st["error"].startswith("the summary stage was still running at the Job's deadline"), st["error"]
    assert conditions(kube, "tx-slow")["Failed"]["reason"] == "DeadlineExceeded"
    # The FAILED document keeps what the ASR had finished.
    doc = ResultDocument.model_validate_json(bucket.get_bytes(keys("tx-slow").result()))
    assert doc.status is TaskStatus.FAILED and doc.results is not None
    assert doc.results.raw_transcript == "And so my fellow Americans, ask not."
    assert doc.versions is not None and doc.versions.asr_backend is not None


async def test_oom_killed_then_retries_exhausted(kube: Any, bucket: S3ObjectStore) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-oom")
        runner_checkpoint(bucket, "tx-oom")
        await pod(
            kube,
            "tx-oom",
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "x",
                        "ready": False,
                        "restartCount": 0,
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    }
                ],
            },
        )
        await eventually(lambda: "OOMKilled" in status(kube, "tx-oom").get("lastFailure", ""), what="OOM")
        assert status(kube, "tx-oom")["phase"] == "Running"  # the Job may still retry
        await job_status(
            kube,
            job,
            active=0,
            failed=3,
            conditions=finished("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit"),
        )
        await eventually(lambda: status(kube, "tx-oom").get("phase") == "Failed", what="Failed")
    st = status(kube, "tx-oom")
    assert "failed 3 time(s)" in st["error"] and "out of memory (OOMKilled)" in st["error"]
    assert st["attempts"] == 3 and st["errorCode"] == "retries_exhausted"
    doc = ResultDocument.model_validate_json(bucket.get_bytes(keys("tx-oom").result()))
    assert doc.results and doc.results.raw_transcript  # the transcript survived the crashes


async def test_a_crash_is_described_with_the_signal_and_the_last_output(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        await started(kube, "tx-segv")
        trace = "Fatal Python error: Segmentation fault\n\nCurrent thread (most recent call first):\n"
        trace += '  File "/opt/venv/lib/python3.11/site-packages/llama_cpp/llama.py", line 1 in eval\n'
        await pod(
            kube,
            "tx-segv",
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "x",
                        "ready": False,
                        "restartCount": 0,
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 139, "reason": "Error", "message": trace}},
                    }
                ],
            },
        )
        await eventually(lambda: "SIGSEGV" in status(kube, "tx-segv").get("lastFailure", ""), what="SIGSEGV")
    failure = status(kube, "tx-segv")["lastFailure"]
    assert "crashed: SIGSEGV (segmentation fault)" in failure and "llama_cpp/llama.py" in failure


def pull_backoff(message: str) -> dict[str, Any]:
    """A runner pod's status while its image cannot be pulled."""
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
    container = {"name": "runner", "image": "registry.example/maie-runner:test", "ready": False,
                 "restartCount": 0, "imageID": "", "state": waiting}  # fmt: skip
    return {"phase": "Pending", "containerStatuses": [container]}


async def test_image_pull_backoff_fails_after_its_grace_and_stops_the_job(kube: Any) -> None:
    async with running_operator(op_settings(operator_image_pull_grace=0), [NS]):
        job = await started(kube, "tx-img")
        await pod(
            kube,
            "tx-img",
            pull_backoff("Back-off pulling image"),
        )
        await eventually(lambda: status(kube, "tx-img").get("phase") == "Failed", what="Failed")
        await eventually(lambda: gone(kube, JOBS, job), what="the Job deleted")
        await eventually(lambda: ("Warning", "ImagePullBackOff") in events_for(kube, "tx-img"), what="Event")
    assert ("Normal", "JobCreated") in events_for(kube, "tx-img")
    st = status(kube, "tx-img")
    assert "cannot be pulled" in st["error"] and "registry.example/maie-runner:test" in st["error"]
    assert conditions(kube, "tx-img")["Failed"]["reason"] == "ImagePullBackOff"


async def test_a_first_image_pull_backoff_within_its_grace_is_only_reported(kube: Any) -> None:
    """Registries throttle: one ImagePullBackOff must not fail the task for good."""
    async with running_operator(op_settings(operator_image_pull_grace=3600), [NS]):
        job = await started(kube, "tx-throttled")
        await pod(
            kube,
            "tx-throttled",
            pull_backoff("429 Too Many Requests"),
        )
        await eventually(
            lambda: conditions(kube, "tx-throttled").get("Running", {}).get("reason") == "ImagePullBackOff",
            what="the pull problem reported",
        )
    assert status(kube, "tx-throttled")["phase"] == "Running" and not gone(kube, JOBS, job)
    assert "retrying for up to 1:00:00" in conditions(kube, "tx-throttled")["Running"]["message"]


async def test_unschedulable_pod_is_explained_not_failed(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        await started(kube, "tx-gpu")
        await pod(
            kube,
            "tx-gpu",
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        )
        await eventually(
            lambda: conditions(kube, "tx-gpu").get("Running", {}).get("reason") == "Unschedulable",
            what="Unschedulable condition",
        )
    assert "Insufficient nvidia.com/gpu" in conditions(kube, "tx-gpu")["Running"]["message"]
    assert status(kube, "tx-gpu")["phase"] == "Running"


async def test_task_failure_reported_by_the_runner_is_kept(kube: Any, bucket: S3ObjectStore) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-bad")
        # The runner writes a FAILED result.json, then exits 2; podFailurePolicy fails the Job.
        runner_result(
            bucket, "tx-bad", TaskStatus.FAILED, error="audio shorter than 1 s", error_code="invalid_audio"
        )
        await job_status(
            kube, job, active=0, failed=1, conditions=finished("Failed", "PodFailurePolicy", "exit 2")
        )
        await eventually(lambda: "Failed" in conditions(kube, "tx-bad"), what="Failed condition")
    st = status(kube, "tx-bad")
    assert (st["error"], st["errorCode"]) == ("audio shorter than 1 s", "invalid_audio")


async def test_invalid_spec_is_rejected_with_a_reason(kube: Any) -> None:
    # The CRD's CEL rule stops this at a real API server; KMock does not validate, so the operator must.
    bad = tx_body("tx-invalid", {"audio": {"uri": "s3://maie/a.flac"}, "features": ["summary"]})
    async with running_operator(op_settings(), [NS]):
        await create(kube, bad)
        await eventually(lambda: status(kube, "tx-invalid").get("phase") == "Failed", what="Failed")
    assert "templateId is required" in status(kube, "tx-invalid")["error"]
    assert job_names(kube) == []


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://{bucket}/audio/other-team/task/raw.flac", "AudioNotAllowed"),
        (f"s3://{{bucket}}/results/{NS}/someone/result.json", "AudioNotAllowed"),
        ("s3://not-allowed/a.flac", "AudioNotAllowed"),
    ],
)
async def test_audio_of_another_tenant_is_refused(
    kube: Any, bucket: S3ObjectStore, uri: str, reason: str
) -> None:
    spec = {"audio": {"uri": uri.format(bucket=bucket.bucket)}, "features": ["raw_transcript"]}
    async with running_operator(op_settings(), [NS]):
        await create(kube, tx_body("tx-steal", spec, uid="uid-steal"))
        await eventually(lambda: status(kube, "tx-steal").get("phase") == "Failed", what="Failed")
    assert conditions(kube, "tx-steal")["Accepted"]["reason"] == reason
    assert status(kube, "tx-steal")["errorCode"] == "audio_not_allowed"
    assert job_names(kube) == []


async def test_a_namespace_without_runner_provisioning_is_refused_at_once(kube: Any) -> None:
    settings = op_settings(operator_runner_namespaces=["team-a"])
    async with running_operator(settings, [NS]):
        await create(kube, tx_body("tx-elsewhere", uid="uid-elsewhere"))
        await eventually(lambda: status(kube, "tx-elsewhere").get("phase") == "Failed", what="Failed")
    assert conditions(kube, "tx-elsewhere")["Accepted"]["reason"] == "NamespaceNotProvisioned"
    assert "not provisioned" in status(kube, "tx-elsewhere")["error"] and job_names(kube) == []


async def test_a_second_resource_with_the_same_task_id_is_refused(kube: Any) -> None:
    spec = {"audio": {"uri": "https://example.org/a.mp3"}, "features": ["raw_transcript"], "taskId": "shared"}
    async with running_operator(op_settings(), [NS]):
        await started(kube, "tx-first", spec)
        await create(kube, tx_body("tx-second", spec, uid="uid-second"))
        await eventually(lambda: status(kube, "tx-second").get("phase") == "Failed", what="Failed")
    assert status(kube, "tx-second")["errorCode"] == "duplicate_task_id"
    assert status(kube, "tx-first")["phase"] == "Running"


async def test_a_job_the_api_server_refuses_fails_alone_and_the_queue_goes_on(kube: Any) -> None:
    """A 422 for one resource's Job (its resources are not quantities) must not block the others:
    both wait behind a running Job; when its slot frees, the bad one fails and the next one starts."""
    bad = {
        "audio": {"uri": "https://example.org/a.mp3"},
        "features": ["raw_transcript"],
        "job": {"resources": {"limits": {"cpu": "lots"}}},
    }
    settings = op_settings(operator_max_concurrent_jobs=1, operator_allowed_job_overrides=["resources"])
    async with running_operator(settings, [NS]):
        first = await started(kube, "r-first")
        for name, spec in (("r-bad", bad), ("r-good", None)):
            await create(kube, tx_body(name, spec, uid=f"uid-{name}"))
            await eventually(lambda n=name: status(kube, n).get("phase") == "Queued", what=f"{name} Queued")
        await job_status(kube, first, active=0, succeeded=1, conditions=finished("Complete"))
        await eventually(lambda: status(kube, "r-bad").get("phase") == "Failed", what="r-bad Failed")
        await eventually(lambda: "r-good-run" in job_names(kube), what="r-good started")
    st = status(kube, "r-bad")
    assert (
        st["errorCode"] == "job_refused" and "422" in st["error"] and 'Invalid value: "lots"' in st["error"]
    )
    assert "r-bad-run" not in job_names(kube)


async def test_cap_queues_and_starts_in_creation_order(kube: Any) -> None:
    async with running_operator(op_settings(operator_max_concurrent_jobs=1), [NS]):
        first = await started(kube, "q-1")
        for name in ("q-2", "q-3"):
            await create(kube, tx_body(name, uid=f"uid-{name}"))
            await eventually(
                lambda n=name: conditions(kube, n).get("Queued", {}).get("status") == "True",
                what=f"{name} Queued",
            )
        assert job_names(kube) == [first]
        assert status(kube, "q-3")["phase"] == "Queued"
        assert conditions(kube, "q-2")["Queued"]["message"] == "waiting for one of 1 runner Job slots"
        assert not [e for e in events_for(kube, "q-2") if e[1] == "Queued"]  # waiting posts no Events

        await job_status(kube, first, active=0, succeeded=1, conditions=finished("Complete"))
        await eventually(lambda: job_names(kube) == [first, "q-2-run"], what="q-2 admitted")
        assert status(kube, "q-3")["phase"] == "Queued"
        await eventually(lambda: conditions(kube, "q-2")["Queued"]["status"] == "False", what="q-2 admitted")

        await job_status(
            kube, "q-2-run", active=0, failed=1, conditions=finished("Failed", "BackoffLimitExceeded")
        )
        await eventually(lambda: "q-3-run" in job_names(kube), what="q-3 admitted")
        await eventually(lambda: status(kube, "q-3").get("phase") == "Running", what="q-3 Running")


async def test_a_resource_at_an_idle_operator_starts_without_waiting_for_the_timer(kube: Any) -> None:
    """The create handler's own admission sees the resource it has just queued (the index shows that
    only with the resource's next event). Found by benchmarks/operator_load.py: with free slots, every
    new resource waited for the safety-net timer (OPERATOR_QUEUE_RETRY_SECONDS, 10 s by default)."""
    async with running_operator(op_settings(operator_queue_retry_seconds=600), [NS]):
        for name in ("idle-1", "idle-2"):
            await create(kube, tx_body(name, uid=f"uid-{name}"))
        await eventually(
            lambda: job_names(kube) == ["idle-1-run", "idle-2-run"], timeout=10, what="both Jobs"
        )
        await eventually(lambda: status(kube, "idle-2").get("phase") == "Running", what="idle-2 Running")
    for name in ("idle-1", "idle-2"):
        assert "Queued" not in conditions(kube, name)  # it never waited


async def test_the_safety_net_timer_admits_with_its_event_and_without_an_error(
    kube: Any, bucket: S3ObjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer's admission runs outside kopf's handlers, where kopf.event has no poster. Found by
    benchmarks/operator_load.py: a tick that found a free slot created the Job, then failed on the
    JobCreated Event (LookupError), logged an error and left the round before recording the Job.
    Here the Job-completion handler is slow (as under load), so the timer takes the freed slot."""
    from maie.operator import handlers

    finish = handlers._finish

    def slow_finish(*args: Any, **kwargs: Any) -> None:
        time.sleep(6)
        finish(*args, **kwargs)

    monkeypatch.setattr(handlers, "_finish", slow_finish)
    caplog.set_level(logging.INFO, logger="maie.operator")
    async with running_operator(op_settings(operator_max_concurrent_jobs=1), [NS]):  # timer: 0.3 s
        first = await started(kube, "n-1")
        await create(kube, tx_body("n-2", uid="uid-n-2"))
        await eventually(
            lambda: conditions(kube, "n-2").get("Queued", {}).get("status") == "True", what="n-2 waiting"
        )
        runner_result(bucket, "n-1", TaskStatus.COMPLETE)
        await job_status(kube, first, active=0, succeeded=1, conditions=finished("Complete"))
        # Before the completion handler (6 s) could admit anything: the timer did.
        await eventually(lambda: "n-2-run" in job_names(kube), timeout=5, what="the timer admitting n-2")
        await eventually(lambda: ("Normal", "JobCreated") in events_for(kube, "n-2"), what="JobCreated")
        await eventually(lambda: status(kube, "n-1").get("phase") == "Succeeded", what="n-1 Succeeded")
    errors = [
        r.getMessage() for r in caplog.records if r.name == "maie.operator" and r.levelno >= logging.ERROR
    ]
    assert errors == []
    assert job_names(kube) == [first, "n-2-run"]


async def test_phase_changes_are_not_changes_for_kopf(kube: Any, bucket: S3ObjectStore) -> None:
    """The operator's own bookkeeping (status.phase, the maie.io/phase label) is not a change of the
    resource: kopf writes its last-handled-configuration once, not again at every phase (found by
    benchmarks/operator_load.py: two or three more PATCHes, and their watch events, per task)."""

    def handled() -> list[str]:
        return [
            r.text
            for r in kube
            if r.name == "tx-once" and r.method == "PATCH" and "last-handled-configuration" in r.text
        ]

    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-once")
        runner_result(bucket, "tx-once", TaskStatus.COMPLETE)
        await job_status(kube, job, active=0, succeeded=1, conditions=finished("Complete"))
        await eventually(lambda: status(kube, "tx-once").get("phase") == "Succeeded", what="Succeeded")
        await eventually(lambda: handled(), what="kopf's last-handled-configuration")
        await asyncio.sleep(1.0)  # what kopf would write after the last phase change
    stored = json.loads(obj(kube, TX, "tx-once")["metadata"]["annotations"][LAST_HANDLED])
    assert "status" not in stored and "maie.io/phase" not in stored.get("metadata", {}).get("labels", {})
    assert len(handled()) == 1


async def test_operator_restart_never_makes_a_second_job(kube: Any) -> None:
    def job_posts() -> int:
        return sum(
            1 for r in kube if r.resource is not None and r.resource.plural == "jobs" and r.action == "CREATE"
        )

    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-r")
        await eventually(lambda: status(kube, "tx-r").get("jobName"), what="jobName")
    posts = job_posts()
    async with running_operator(op_settings(), [NS]):
        # The restarted operator sees the resource again (KMock replays it as ADDED) and resumes.
        await job_status(kube, job, active=1)
        await eventually(lambda: status(kube, "tx-r").get("attempts") == 1, what="the new operator mirroring")
    assert job_names(kube) == [job]
    assert job_posts() == posts == 1


async def test_a_late_event_of_an_old_job_does_not_touch_a_new_resource_of_the_same_name(kube: Any) -> None:
    """Jobs are matched to their resource by uid, not only by name."""
    async with running_operator(op_settings(operator_deletion_policy="Retain"), [NS]):
        await started(kube, "tx-same")
        old_job = obj(kube, JOBS, "tx-same-run")
        await delete_tx(kube, "tx-same")
        await eventually(lambda: gone(kube, TX, "tx-same"), what="the first resource gone")
        await create(kube, tx_body("tx-same", uid="uid-tx-same-2"))
        await eventually(
            lambda: status(kube, "tx-same").get("phase") in ("Queued", "Running"), what="accepted"
        )
        # The old Job's DELETED event arrives late, with the old owner's uid.
        ghost = {**old_job, "metadata": {**old_job["metadata"], "name": "tx-same-ghost"}}
        async with kube.post(f"/apis/batch/v1/namespaces/{NS}/jobs", json=ghost) as resp:
            assert resp.status in (200, 201)
        async with kube.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/tx-same-ghost") as resp:
            assert resp.status == 200
        await eventually(lambda: "tx-same-run" in job_names(kube), what="the new resource's Job")
    st = status(kube, "tx-same")
    assert st["phase"] == "Running" and "error" not in st, st


@pytest.mark.parametrize(
    ("policy", "audio_left", "results_left"),
    [("Delete", False, False), ("DeleteAudio", False, True), ("Retain", True, True)],
)
async def test_delete_stops_the_job_and_applies_the_storage_policy(
    kube: Any, bucket: S3ObjectStore, policy: str, audio_left: bool, results_left: bool
) -> None:
    task = "task-del"
    bucket.put_bytes(f"audio/{NS}/{task}/raw.flac", b"fLaC")
    bucket.put_bytes(f"results/{NS}/{task}/result.json", b"{}")
    bucket.put_bytes(f"results/other-team/{task}/result.json", b"{}")  # same task id, another namespace
    spec = {
        "audio": {"uri": f"s3://{bucket.bucket}/audio/{NS}/{task}/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": task,
        "deletionPolicy": policy,
    }
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-del", spec)
        assert "operator.maie.io/cleanup" in obj(kube, TX, "tx-del")["metadata"]["finalizers"]
        await delete_tx(kube, "tx-del")
        await eventually(lambda: gone(kube, TX, "tx-del"), what="the resource released by the finalizer")
    assert gone(kube, JOBS, job)
    assert bucket.exists(f"audio/{NS}/{task}/raw.flac") is audio_left
    assert bucket.exists(f"results/{NS}/{task}/result.json") is results_left
    assert bucket.exists(f"results/other-team/{task}/result.json")


async def test_deleting_a_running_resource_frees_its_slot(kube: Any) -> None:
    async with running_operator(
        op_settings(operator_max_concurrent_jobs=1, operator_deletion_policy="Retain"), [NS]
    ):
        first = await started(kube, "s-1")
        await create(kube, tx_body("s-2", uid="uid-s-2"))
        await eventually(lambda: status(kube, "s-2").get("phase") == "Queued", what="s-2 Queued")
        await delete_tx(kube, "s-1")
        await eventually(lambda: "s-2-run" in job_names(kube), what="s-2 admitted")
    assert first not in job_names(kube)


async def test_finished_api_tasks_expire_after_result_ttl(kube: Any, bucket: S3ObjectStore) -> None:
    api_made = tx_body("tx-old", uid="uid-tx-old")
    api_made["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "maie-api"}
    by_hand = tx_body("tx-mine", uid="uid-tx-mine")
    settings = op_settings(operator_gc_interval=0.2, result_ttl=60, operator_deletion_policy="Retain")
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    async with running_operator(settings, [NS]):
        for body in (api_made, by_hand):
            name = body["metadata"]["name"]
            await create(kube, body)
            job = await eventually(lambda n=name: obj(kube, JOBS, job_name_for(n))["metadata"]["name"])
            runner_result(bucket, name, TaskStatus.COMPLETE, completed_at=long_ago)
            await job_status(kube, job, active=0, succeeded=1, conditions=finished("Complete"))
            await eventually(lambda n=name: status(kube, n).get("phase") == "Succeeded", what="Succeeded")
        await eventually(lambda: gone(kube, TX, "tx-old"), what="the expired API task deleted")
    assert status(kube, "tx-mine")["phase"] == "Succeeded"  # kubectl-made resources stay


async def test_the_operator_posts_the_webhook_when_the_task_ends(kube: Any, bucket: S3ObjectStore) -> None:
    from maie.webhooks import verify
    from tests.receiver import Receiver

    receiver = Receiver([502])
    spec = {
        "audio": {"uri": "https://media.example/a.flac"},
        "features": ["raw_transcript"],
        "callbackUrl": receiver.url,
    }
    settings = op_settings(webhook_secret="op-secret", allowed_internal_networks=["127.0.0.0/8"])
    try:
        async with running_operator(settings, [NS]):
            job = await started(kube, "tx-hook", spec)
            runner_result(bucket, "tx-hook", TaskStatus.COMPLETE)
            await job_status(kube, job, active=0, succeeded=1, conditions=finished("Complete"))
            await eventually(
                lambda: (status(kube, "tx-hook").get("webhook") or {}).get("state") == "delivered",
                timeout=30,
                what="the webhook delivered",
            )
    finally:
        receiver.close()
    hook = status(kube, "tx-hook")["webhook"]
    assert [a["status"] for a in hook["attempts"]] == [502, 200]
    headers, body, _ = receiver.received[-1]
    assert verify("op-secret", headers["maie-signature"], body)
    assert json.loads(body)["task_id"] == "uid-tx-hook" and json.loads(body)["status"] == "COMPLETE"
