"""Two `maie operator` processes against one API server (KMock): one leads (the Lease), the other
waits; the concurrency cap holds throughout, and when the leader is killed the other takes over and
finishes the queue — no resource lost, no second Job for any of them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, operator_process, tx_body

from maie.contract import Metrics, ResultDocument, TaskRequest, TaskStatus
from maie.storage.base import TaskKeys
from maie.storage.s3 import S3ObjectStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
CAP = 2
TASKS = 6


def start_operator(s3_endpoint: str, bucket: str, log: Path) -> subprocess.Popen[bytes]:
    return operator_process(
        s3_endpoint, bucket, log, OPERATOR_MAX_CONCURRENT_JOBS=str(CAP), RUNNER_STATUS_INTERVAL="0.5"
    )


def active_jobs(kube: Any) -> list[str]:
    out = []
    for res, _, name in list(kube.objects):
        if res.plural != "jobs" or kube.objects[res, NS, name].deleted:
            continue
        conds = (dict(kube.objects[res, NS, name].raw).get("status") or {}).get("conditions") or []
        if not any(c.get("type") in ("Complete", "Failed") for c in conds):
            out.append(name)
    return out


def phases(kube: Any) -> dict[str, str | None]:
    return {
        name: (dict(kube.objects[res, NS, name].raw).get("status") or {}).get("phase")
        for res, _, name in list(kube.objects)
        if res.plural == "transcriptions" and not kube.objects[res, NS, name].deleted
    }


def leader_pid(kube: Any) -> int | None:
    for res, _, name in list(kube.objects):
        if res.plural == "leases" and name == "maie-operator":
            holder = ((dict(kube.objects[res, NS, name].raw).get("spec") or {}).get("holderIdentity")) or ""
            parts = holder.split("-")
            return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
    return None


async def test_two_operators_never_exceed_the_cap_and_survive_the_leaders_death(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    operators = [start_operator(s3_endpoint, s3_store.bucket, tmp_path / f"op{i}.log") for i in range(2)]
    seen_max = 0
    completed: set[str] = set()
    killed: int | None = None
    try:
        pid = await eventually(lambda: leader_pid(kube), timeout=60, what="a leader")
        for i in range(TASKS):
            async with kube.post(
                f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions",
                json=tx_body(f"ha-{i}", uid=f"uid-ha-{i}"),
            ) as resp:
                assert resp.status in (200, 201)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while loop.time() < deadline:
            running = active_jobs(kube)
            seen_max = max(seen_max, len(running))
            assert len(running) <= CAP, running
            # Play the runner and the Job controller: finish one running Job per round, once the
            # operator has filled every slot (or nothing waits any more).
            waiting = [n for n, p in phases(kube).items() if p in (None, "Queued")]
            if running and (len(running) == CAP or not waiting):
                job = sorted(running)[0]
                owner = job.removesuffix("-run")
                doc = ResultDocument(
                    task_id=f"uid-{owner}",
                    status=TaskStatus.COMPLETE,
                    request=TaskRequest(features=["raw_transcript"]),
                    metrics=Metrics(processing_time_seconds=1.0),
                )
                s3_store.put_bytes(TaskKeys(f"uid-{owner}", NS).result(), doc.to_json().encode())
                status = {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
                async with kube.patch(
                    f"/apis/batch/v1/namespaces/{NS}/jobs/{job}/status", json={"status": status}
                ) as resp:
                    assert resp.status == 200
                completed.add(job)
            if killed is None and len(completed) >= TASKS // 2:
                # The leader dies (SIGKILL: no clean-up, its Lease simply stops being renewed).
                leader = next(p for p in operators if p.pid == pid)
                leader.send_signal(signal.SIGKILL)
                killed = pid
            if all(p == "Succeeded" for p in phases(kube).values()) and len(phases(kube)) == TASKS:
                break
            await asyncio.sleep(0.4)
        assert phases(kube) == {f"ha-{i}": "Succeeded" for i in range(TASKS)}, phases(kube)
        new_leader = leader_pid(kube)
    finally:
        for p in operators:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in operators:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    logs = "\n".join((tmp_path / f"op{i}.log").read_text(errors="replace") for i in range(2))
    assert killed is not None and new_leader is not None and new_leader != killed, logs[-3000:]
    assert seen_max == CAP  # the cap was used, and never exceeded
    creates = [
        r for r in kube if r.resource is not None and r.resource.plural == "jobs" and r.action == "CREATE"
    ]
    assert len(creates) == TASKS  # one Job per resource: the follower never duplicated the leader's
    assert {dict(kube.objects[JOBS, NS, f"ha-{i}-run"].raw)["metadata"]["name"] for i in range(TASKS)}
    assert all(kube.objects[TX, NS, f"ha-{i}"] for i in range(TASKS))
