"""The real kopf operator against KMock: Jobs, status mirroring, queueing, deletion, restarts.

KMock has no controllers: the tests play the Job controller (patching Job status) and the kubelet
(creating and patching the runner pod), exactly the objects and fields those controllers write.
"""

from __future__ import annotations

from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, running_operator, tx_body

from maie.settings import Settings
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for

pytestmark = pytest.mark.timeout(120)


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
        "s3_endpoint": "minio.maie:9000",
        "s3_bucket": "maie",
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
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (
        1800,
        2,
        600,
    )
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == "maie-runner"
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
    assert container["command"] + container["args"] == ["maie", "run-task", "tx-a", "--namespace", NS]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["S3_ENDPOINT"]["value"] == "minio.maie:9000" and env["S3_BUCKET"]["value"] == "maie"
    assert env["WHISPER_DEVICE"]["value"] == "cuda"
    assert env["S3_SECRET_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "maie-s3", "key": "S3_SECRET_KEY"}}
    assert "value" not in env["S3_ACCESS_KEY"]  # credentials only by reference
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    st = status(kube, "tx-a")
    assert st["phase"] == "Running" and st["stage"] == "PENDING" and st["taskId"] == "uid-a"
    assert st["submittedAt"]
    conds = conditions(kube, "tx-a")
    assert conds["Accepted"]["status"] == "True" and conds["JobCreated"]["status"] == "True"


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
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 60)
    assert job["spec"]["ttlSecondsAfterFinished"] == 5
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "cpu"}
    (container,) = pod_spec["containers"]
    assert container["resources"] == {"limits": {"cpu": "4"}}  # no nvidia.com/gpu at all
    assert {"name": "WHISPER_DEVICE", "value": "cpu"} in container["env"]
    assert job["metadata"]["labels"]["maie.io/task-id"] == "task-cpu"


async def test_job_success_is_mirrored(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-ok")
        await job_status(kube, job, active=1, startTime="2026-01-01T00:00:00Z")
        await eventually(lambda: status(kube, "tx-ok").get("attempts") == 1, what="attempts")
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
    assert st["stage"] == "COMPLETE" and st["progress"] == 100
    assert st["completedAt"].startswith("2026-01-01T00:01:00")
    assert "error" not in st
    assert conditions(kube, "tx-ok")["Succeeded"]["status"] == "True"


async def test_deadline_exceeded_fails_with_a_clear_error(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-slow")
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
    assert "deadline (1800 s)" in st["error"]
    assert conditions(kube, "tx-slow")["Failed"]["reason"] == "DeadlineExceeded"


async def test_oom_killed_then_retries_exhausted(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-oom")
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
                        "image_id": "",
                        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    }
                ],
            },
        )
        await eventually(lambda: "OOMKilled" in status(kube, "tx-oom").get("error", ""), what="OOM error")
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
    assert "failed 3 time(s)" in st["error"] and "OOMKilled" in st["error"]
    assert st["attempts"] == 3


async def test_image_pull_backoff_fails_and_stops_the_job(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-img")
        await pod(
            kube,
            "tx-img",
            {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "registry.example/maie-runner:test",
                        "ready": False,
                        "restartCount": 0,
                        "imageID": "",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
                        },
                    }
                ],
            },
        )
        await eventually(lambda: status(kube, "tx-img").get("phase") == "Failed", what="Failed")
        await eventually(lambda: gone(kube, JOBS, job), what="the Job deleted")
        await eventually(lambda: ("Warning", "ImagePullBackOff") in events_for(kube, "tx-img"), what="Event")
    assert ("Normal", "JobCreated") in events_for(kube, "tx-img")
    st = status(kube, "tx-img")
    assert "cannot be pulled" in st["error"] and "registry.example/maie-runner:test" in st["error"]
    assert conditions(kube, "tx-img")["Failed"]["reason"] == "ImagePullBackOff"


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


async def test_task_failure_reported_by_the_runner_is_kept(kube: Any) -> None:
    async with running_operator(op_settings(), [NS]):
        job = await started(kube, "tx-bad")
        # The runner patches status itself, then exits 2; podFailurePolicy fails the Job.
        url = f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions/tx-bad/status"
        patch = {
            "status": {
                "stage": "FAILED",
                "phase": "Failed",
                "error": "audio shorter than 1 s",
                "errorCode": "invalid_audio",
            }
        }
        async with kube.patch(url, json=patch) as resp:
            assert resp.status == 200
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
        assert conditions(kube, "q-2")["Queued"]["message"] == "1 of 1 runner Jobs are running"

        await job_status(kube, first, active=0, succeeded=1, conditions=finished("Complete"))
        await eventually(lambda: job_names(kube) == [first, "q-2-run"], what="q-2 admitted")
        assert status(kube, "q-3")["phase"] == "Queued"
        await eventually(lambda: conditions(kube, "q-2")["Queued"]["status"] == "False", what="q-2 admitted")

        await job_status(
            kube, "q-2-run", active=0, failed=1, conditions=finished("Failed", "BackoffLimitExceeded")
        )
        await eventually(lambda: "q-3-run" in job_names(kube), what="q-3 admitted")
        await eventually(lambda: status(kube, "q-3").get("phase") == "Running", what="q-3 Running")


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


@pytest.mark.parametrize(
    ("policy", "audio_left", "results_left"),
    [("Delete", False, False), ("DeleteAudio", False, True), ("Retain", True, True)],
)
async def test_delete_stops_the_job_and_applies_the_storage_policy(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, policy: str, audio_left: bool, results_left: bool
) -> None:
    task = "task-del"
    s3_store.put_bytes(f"audio/{task}/raw.flac", b"fLaC")
    s3_store.put_bytes(f"results/{task}/result.json", b"{}")
    s3_store.put_bytes("results/other/result.json", b"{}")
    spec = {
        "audio": {"uri": f"s3://{s3_store.bucket}/audio/{task}/raw.flac"},
        "features": ["raw_transcript"],
        "taskId": task,
        "deletionPolicy": policy,
    }
    settings = op_settings(
        s3_endpoint=s3_endpoint, s3_bucket=s3_store.bucket, s3_access_key="testing", s3_secret_key="testing"
    )
    async with running_operator(settings, [NS]):
        job = await started(kube, "tx-del", spec)
        assert "operator.maie.io/cleanup" in obj(kube, TX, "tx-del")["metadata"]["finalizers"]
        await delete_tx(kube, "tx-del")
        await eventually(lambda: gone(kube, TX, "tx-del"), what="the resource released by the finalizer")
    assert gone(kube, JOBS, job)
    assert s3_store.exists(f"audio/{task}/raw.flac") is audio_left
    assert s3_store.exists(f"results/{task}/result.json") is results_left
    assert s3_store.exists("results/other/result.json")


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


async def test_finished_api_tasks_expire_after_result_ttl(kube: Any) -> None:
    api_made = tx_body("tx-old", uid="uid-old")
    api_made["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "maie-api"}
    by_hand = tx_body("tx-mine", uid="uid-mine")
    settings = op_settings(operator_gc_interval=0.2, result_ttl=60, operator_deletion_policy="Retain")
    async with running_operator(settings, [NS]):
        for body in (api_made, by_hand):
            await create(kube, body)
            job = await eventually(
                lambda n=body["metadata"]["name"]: obj(kube, JOBS, job_name_for(n))["metadata"]["name"]
            )
            await job_status(
                kube,
                job,
                active=0,
                succeeded=1,
                conditions=finished("Complete"),
                completionTime="2020-01-01T00:00:00Z",
            )
            await eventually(
                lambda n=body["metadata"]["name"]: status(kube, n).get("phase") == "Succeeded",
                what="Succeeded",
            )
        await eventually(lambda: gone(kube, TX, "tx-old"), what="the expired API task deleted")
    assert status(kube, "tx-mine")["phase"] == "Succeeded"  # kubectl-made resources stay
