"""Running the real operator in a thread against KMock, and waiting without blocking KMock's loop."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import kopf
from kopf.testing import KopfRunner

from maie.operator.main import build, configure
from maie.settings import Settings

T = TypeVar("T")


@attrs.frozen
class Invalid(kmock.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = ""


@attrs.frozen
class Conflict(kmock.KubernetesError):
    status: int = 409
    reason: str = "Conflict"
    message: str = (
        "the object has been modified; please apply your changes to the latest version and try again"
    )


def _invalid_quantities(job: dict[str, Any]) -> str | None:
    """What a real API server's validation says of a Job whose resources are not quantities."""
    from kubernetes.utils.quantity import parse_quantity

    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for i, container in enumerate(containers):
        for kind, values in (container.get("resources") or {}).items():
            for name, value in (values or {}).items():
                try:
                    parse_quantity(value)
                except ValueError:
                    field = f"spec.template.spec.containers[{i}].resources.{kind}[{name}]"
                    name_ = job["metadata"]["name"]
                    return (
                        f'Job.batch "{name_}" is invalid: {field}: Invalid value: "{value}": '
                        "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
                    )
    return None


@attrs.define(kw_only=True)
class ApiServerLike(kmock.KubernetesEmulator):
    """KMock plus what a real API server does that the tests rely on: on create, a name from
    generateName (kopf's Events), uid, generation and creationTimestamp; a new resourceVersion on
    every write (KMock keeps the first one through PATCHes, and kopf, which waits for the version its
    own patch returned, then takes stale events for fresh ones and re-runs handlers on them); PUT with
    optimistic concurrency on resourceVersion (the leader-election Lease); and the schema validation
    that refuses a Job whose resources are not quantities (422)."""

    _version: int = attrs.field(default=1, init=False)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.method == kmock.method.PUT and request.name:
            return await self._replace(request)
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and request.resource.plural == "jobs"
            and isinstance(request.data, dict)
        ):
            problem = _invalid_quantities(request.data)
            if problem:
                raise Invalid(message=problem)
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = self._next_version()
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif request.resource is not None and request.method == kmock.method.PATCH and request.name:
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = self._next_version()
            elif isinstance(data, list):  # a JSON patch: its own "test" ops still see the old version
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next_version()})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:  # kopf's finalizer patch tests resourceVersion
            raise Invalid(
                message=f"the server rejected our request due to an error in our request: {exc}"
            ) from exc

    async def _serve_list(self, request: Any) -> Any:
        listing = await super()._serve_list(request)
        listing["metadata"]["resourceVersion"] = str(self._version)  # what a watch continues from
        return listing

    async def _serve_watch(self, request: Any) -> Any:
        """Continue from the list's resourceVersion, as a real server does: KMock replays every stored
        object, so an object already listed would come again, older than what its patches made it."""
        since = str(request.params.get("resourceVersion") or "")
        async for event in super()._serve_watch(request):
            if (
                since.isdigit()
                and isinstance(event, dict)
                and event.get("type") == "ADDED"
                and int(str((event["object"].get("metadata") or {}).get("resourceVersion") or 0))
                <= int(since)
            ):
                continue
            yield event

    async def _replace(self, request: Any) -> Any:
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            stored = self._objects[key]
            current = str((stored.get("metadata") or {}).get("resourceVersion") or "1")
            sent = str((request.data.get("metadata") or {}).get("resourceVersion") or current)
            if sent != current:
                raise Conflict()
            data = dict(request.data)
            data["metadata"] = {**(data.get("metadata") or {}), "resourceVersion": self._next_version()}
            stored.patch(data)
            raw = stored.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)


TX = "maie.io/v1alpha1/transcriptions"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
NS = "ns1"


@asynccontextmanager
async def running_operator(settings: Settings, namespaces: list[str]) -> AsyncIterator[KopfRunner]:
    """`maie operator` in a thread; entered and left in threads so KMock (this loop) keeps serving."""
    registry, _ = build(settings, namespaces)
    args = ["run", "--standalone", "--verbose", *[a for ns in namespaces for a in ("--namespace", ns)]]
    runner = KopfRunner(args, registry=registry, settings=configure(kopf.OperatorSettings()), timeout=30)
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


async def eventually(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy (asyncio.sleep: KMock serves from this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (KeyError, LookupError, AttributeError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


def tx_body(name: str, spec: dict[str, Any] | None = None, *, uid: str | None = None) -> dict[str, Any]:
    """A Transcription as kubectl would send it; KMock sets no uid/resourceVersion, so we do."""
    return {
        "apiVersion": "maie.io/v1alpha1",
        "kind": "Transcription",
        "metadata": {"name": name, "namespace": NS, "uid": uid or str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": spec
        or {"audio": {"uri": f"https://media.example/{name}.flac"}, "features": ["raw_transcript"]},
    }


# ---- end to end: the cluster config helm installs, the kubelet, the Job controller ----
def e2e_settings(s3_endpoint: str, bucket: str, **extra: Any) -> Settings:
    return Settings(
        operator_runner_image="registry.example/maie-runner:test",
        operator_gpu_count=0,  # a CPU cluster: the kind setup
        operator_s3_secret="maie-s3",
        operator_runner_config_map="maie-runner",
        operator_queue_retry_seconds=0.3,
        runner_status_interval=0.5,
        s3_endpoint=s3_endpoint,
        s3_bucket=bucket,
        s3_access_key="testing",  # the operator reads the runner's progress and results
        s3_secret_key="testing",
        **extra,
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


def kubelet_command(kube: Any, job: dict[str, Any], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The Job's container command and env as the kubelet would run it. No KUBECONFIG, no token: the
    runner pod has no Kubernetes credentials (automountServiceAccountToken: false)."""
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    container = pod_spec["containers"][0]
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:]]
    env = {
        "PATH": os.environ["PATH"],
        **container_env(kube, job, tmp_path),
        "MODELS_DIR": str(tmp_path / "models"),
    }
    return [*command, *container.get("args", [])], env


async def run_as_kubelet(kube: Any, job: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """Run the Job's container command as a process, with its env."""
    command, env = kubelet_command(kube, job, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *command,
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_process(s3_endpoint: str, bucket: str, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`maie operator` as its own process (as the Deployment runs it) against the KMOCK kubeconfig in
    the environment and moto's S3; MAIE settings from the caller's environment are left out, so only
    these and `settings` apply. Each gets its own health and metrics ports (two may run at once)."""
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(
        OPERATOR_NAMESPACE=NS,
        OPERATOR_LEASE_SECONDS="2",
        OPERATOR_QUEUE_RETRY_SECONDS="0.3",
        OPERATOR_HEALTH_PORT=str(free_port()),
        OPERATOR_METRICS_PORT=str(free_port()),
        OPERATOR_GPU_COUNT="0",
        S3_ENDPOINT=s3_endpoint,
        S3_BUCKET=bucket,
        S3_ACCESS_KEY="testing",
        S3_SECRET_KEY="testing",
        **settings,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "maie.cli", "operator", "--namespace", NS],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
