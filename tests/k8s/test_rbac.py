"""Every role the chart renders grants exactly the API calls its code makes: nothing missing, nothing
unused. The calls are collected from KMock while the real code runs its paths — the `maie operator`
process (leader election included) through a task's life, a refusal, a deletion, an expiry and a
restart that finds its Job gone; the API's Kubernetes backend through submit, status, queue depth,
health and cancel — and compared with the rendered Roles, verb by verb."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, operator_process, tx_body
from test_chart import render

from maie.contract import Metrics, ResultDocument, TaskRequest, TaskStatus
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.storage.s3 import S3ObjectStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Granted although no request shows it: with OwnerReferencesPermissionEnforcement, creating a Job
# whose owner reference has blockOwnerDeletion: true needs `update` on the owner's finalizers.
IMPLIED = {"operator": {("maie.io", "transcriptions/finalizers", "update")}, "api": set()}
OUR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf's client and the kubernetes client (ours)


def verb(request: Any) -> str:
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if method == "GET":
        if str(request.params.get("watch", "")).lower() == "true":
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def calls(kube: Any) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every request our code sent (not the test's own)."""
    out = set()
    for request in kube:
        agent = str(request.headers.get("User-Agent", ""))
        if request.resource is None or not request.resource.plural or not agent.startswith(OUR_AGENTS):
            continue  # discovery, or the test playing a controller
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        out.add((request.resource.group or "", resource, verb(request)))
    return out


def granted(component: str) -> set[tuple[str, str, str]]:
    docs = render("defaults")
    rules = [
        rule
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        for rule in d["rules"]
    ]
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_the_runner_has_no_role_and_no_token() -> None:
    docs = render("defaults")
    assert granted("runner") == set()
    (account,) = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "runner"
    ]
    assert account["automountServiceAccountToken"] is False


def _operator(s3_endpoint: str, bucket: str, log: Path) -> subprocess.Popen[bytes]:
    return operator_process(
        s3_endpoint,
        bucket,
        log,
        OPERATOR_GC_INTERVAL="0.3",
        OPERATOR_DELETION_POLICY="Retain",
        RESULT_TTL="60",
        RUNNER_STATUS_INTERVAL="0.3",
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _status(kube: Any, name: str) -> dict[str, Any]:
    return dict(dict(kube.objects[TX, NS, name].raw).get("status") or {})


async def _post(kube: Any, path: str, body: dict[str, Any]) -> None:
    async with kube.post(path, json=body) as resp:
        assert resp.status in (200, 201), await resp.text()


async def _complete(kube: Any, bucket: S3ObjectStore, name: str, **doc: Any) -> None:
    """Play the runner (result.json) and the Job controller (Complete)."""
    result = ResultDocument(
        task_id=f"uid-{name}", status=TaskStatus.COMPLETE, request=TaskRequest(features=["raw_transcript"]),
        metrics=Metrics(processing_time_seconds=1.0), **doc,
    )  # fmt: skip
    bucket.put_bytes(TaskKeys(f"uid-{name}", NS).result(), result.to_json().encode())
    status = {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    async with kube.patch(
        f"/apis/batch/v1/namespaces/{NS}/jobs/{name}-run/status", json={"status": status}
    ) as r:
        assert r.status == 200


async def test_the_operator_role_is_exactly_what_the_operator_calls(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    txs = f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions"
    operator = _operator(s3_endpoint, s3_store.bucket, tmp_path / "op1.log")
    try:
        # A task's whole life: Job, pod news, the runner's progress, its result, Succeeded.
        await _post(kube, txs, tx_body("rb-ok", uid="uid-rb-ok"))
        job = await eventually(lambda: dict(kube.objects[JOBS, NS, "rb-ok-run"].raw), timeout=60, what="Job")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "rb-ok-run-abcde", "namespace": NS, "uid": "pod-rb-ok", "resourceVersion": "1",
                "labels": job["spec"]["template"]["metadata"]["labels"],
                "annotations": job["spec"]["template"]["metadata"]["annotations"],
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": job["spec"]["template"]["spec"],
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "runner", "image": "x", "ready": True, "restartCount": 0, "imageID": "",
                 "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
            ]},
        }  # fmt: skip
        await _post(kube, f"/api/v1/namespaces/{NS}/pods", pod)
        await eventually(lambda: _status(kube, "rb-ok").get("startedAt"), what="pod mirrored")
        await asyncio.sleep(1.0)  # a progress-timer round
        await _complete(kube, s3_store, "rb-ok")
        await eventually(lambda: _status(kube, "rb-ok").get("phase") == "Succeeded", what="Succeeded")
        # A refusal (an invalid spec), a deletion (finalizer, Job deleted), an expiry (deleted by TTL).
        await _post(
            kube, txs, tx_body("rb-bad", {"audio": {"uri": "s3://x/a.flac"}, "features": ["summary"]})
        )
        await eventually(lambda: _status(kube, "rb-bad").get("phase") == "Failed", what="refused")
        await _post(kube, txs, tx_body("rb-del", uid="uid-rb-del"))
        await eventually(lambda: dict(kube.objects[JOBS, NS, "rb-del-run"].raw), what="Job")
        async with kube.delete(f"{txs}/rb-del") as resp:
            assert resp.status == 200
        await eventually(lambda: kube.objects[TX, NS, "rb-del"].deleted, what="rb-del finalized")
        old = tx_body("rb-old", uid="uid-rb-old")
        old["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "maie-api"}
        await _post(kube, txs, old)
        await eventually(lambda: dict(kube.objects[JOBS, NS, "rb-old-run"].raw), what="Job")
        await _complete(kube, s3_store, "rb-old", completed_at=datetime(2020, 1, 1, tzinfo=UTC))
        await eventually(lambda: kube.objects[TX, NS, "rb-old"].deleted, what="rb-old expired")
        # A restart that finds a Job gone while the operator was away.
        await _post(kube, txs, tx_body("rb-away", uid="uid-rb-away"))
        await eventually(lambda: _status(kube, "rb-away").get("jobName"), what="the Job in status")
        _stop(operator)
        async with kube.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/rb-away-run") as resp:
            assert resp.status == 200
        await asyncio.sleep(2.5)  # the stopped leader's Lease expires
        operator = _operator(s3_endpoint, s3_store.bucket, tmp_path / "op2.log")
        await eventually(
            lambda: _status(kube, "rb-away").get("errorCode") == "job_lost", timeout=60, what="lost"
        )
    finally:
        _stop(operator)
    made = calls(kube)
    logs = (tmp_path / "op1.log").read_text(errors="replace")[-2000:]
    assert made <= granted("operator"), f"missing from the Role: {made - granted('operator')}\n{logs}"
    assert granted("operator") - made == IMPLIED["operator"], (
        f"granted, never used: {granted('operator') - made}"
    )


async def test_the_api_role_is_exactly_what_the_api_calls(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    import httpx

    from maie.api.app import create_app
    from maie.api.k8s_backend import KubernetesBackend
    from tests.conftest import recording

    settings = Settings(
        mode="kubernetes", namespace=NS, secret_api_key="k", data_dir=tmp_path / "api",
        s3_endpoint=s3_endpoint, s3_bucket=s3_store.bucket, s3_access_key="testing", s3_secret_key="testing",
    )  # fmt: skip
    backend = KubernetesBackend(settings)
    app = create_app(settings, backend=backend)
    await backend.start()
    audio = recording("en_librispeech_1089-134691-0000.flac").path
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://maie") as api:
            with audio.open("rb") as f:
                response = await api.post(
                    "/v1/process", headers={"X-API-Key": "k"}, files={"file": (audio.name, f, "audio/flac")},
                    data={"features": "raw_transcript"},
                )  # fmt: skip
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]
            assert (await api.get(f"/v1/status/{task_id}", headers={"X-API-Key": "k"})).status_code == 200
            await api.get("/health")
            await api.get("/health/ready")
            assert (await api.delete(f"/v1/tasks/{task_id}", headers={"X-API-Key": "k"})).status_code == 200
    finally:
        await backend.stop()
    made = calls(kube)
    assert made == granted("api") - IMPLIED["api"], (made, granted("api"))
