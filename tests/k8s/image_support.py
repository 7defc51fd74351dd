"""Running MAIE's images as a cluster would, on a machine without one: podman (or docker) runs the
container a pod spec describes — the chart's Deployments and Pods, or the Job the operator creates —
with its command, args, environment (values, Secret/ConfigMap/field references resolved as the kubelet
resolves them), its volumes (emptyDir = tmpfs, hostPath/PVC/ConfigMap = a host folder), its user and
its read-only root filesystem.

What differs from a pod, and why: the host's network (KMock and moto listen on 127.0.0.1), so the
ports the chart hard-codes (the API's 8000, the operator's 8080) are moved to free ones; and a
kubeconfig file instead of the service account token (KMock has no token authentication).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PREFIX = "localhost/"
TAG = "test"
BUILD_LOG = ROOT / ".cache" / "build_images.log"


def image_ref(name: str) -> str:
    """The reference of a test build: localhost/maie-api:test …"""
    return f"{IMAGE_PREFIX}maie-{name}:{TAG}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Engine:
    name: str  # podman | docker
    run_flags: tuple[str, ...]  # flags every `run` needs on this host

    def command(self, *args: str) -> list[str]:
        return [self.name, *args]

    def inspect(self, image: str) -> dict[str, Any]:
        out = subprocess.run(self.command("image", "inspect", image), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        found: list[dict[str, Any]] = json.loads(out.stdout)
        return found[0]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`run --rm` a throw-away container; stdout and stderr together."""
        return subprocess.run(
            self.command("run", "--rm", *self.run_flags, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    async def arun(self, *args: str, timeout: float = 300) -> tuple[int, str]:
        """The same without blocking the event loop (KMock serves from it)."""
        proc = await asyncio.create_subprocess_exec(
            *self.command("run", "--rm", *self.run_flags, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        except TimeoutError:
            proc.kill()
            raise
        return int(proc.returncode or 0), out.decode(errors="replace")

    async def start(self, name: str, *args: str) -> None:
        """A detached container (stopped by `remove`)."""
        code, out = await self._exec("run", "-d", "--name", name, *self.run_flags, *args)
        assert code == 0, out

    async def logs(self, name: str) -> str:
        return (await self._exec("logs", name))[1]

    async def running(self, name: str) -> bool:
        code, out = await self._exec("inspect", "--format", "{{.State.Running}}", name)
        return code == 0 and out.strip() == "true"

    async def remove(self, name: str) -> None:
        await self._exec("rm", "-f", "-t", "2", name)

    async def _exec(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.name, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return int(proc.returncode or 0), out.decode(errors="replace")


def find_engine() -> Engine | None:
    """podman or docker, whichever answers (the same choice as scripts/build_images.sh)."""
    for name in (os.environ.get("ENGINE") or "podman", "docker"):
        if shutil.which(name) is None:
            continue
        if subprocess.run([name, "info"], capture_output=True, timeout=60).returncode != 0:
            continue
        flags: list[str] = []
        if name == "podman":
            if shutil.which("runc"):
                flags += ["--runtime", "runc"]  # crun: "cgroups in hybrid mode not supported"
            import resource

            for opt, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
                hard = resource.getrlimit(limit)[1]
                if hard != resource.RLIM_INFINITY:
                    value = min(hard, 4096)
                    flags += ["--ulimit", f"{opt}={value}:{value}"]
        return Engine(name, tuple(flags))
    return None


def build(images: list[str]) -> subprocess.CompletedProcess[str]:
    """scripts/build_images.sh for the test tags; its log in .cache/build_images.log."""
    env = {**os.environ, "IMAGE_PREFIX": IMAGE_PREFIX, "TAG": TAG}
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOG.open("w") as log:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build_images.sh"), *images],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=5400,
        )
    return done


# --------------------------------------------------------------------------------------------
# pod specs → run flags
# --------------------------------------------------------------------------------------------
class Objects:
    """The Secrets and ConfigMaps a pod's environment refers to (rendered, or stored in KMock)."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._data: dict[tuple[str, str], dict[str, str]] = {}
        for doc in docs:
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            if kind == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                data.update(doc.get("stringData") or {})
                self._data["Secret", name] = data
            elif kind == "ConfigMap":
                self._data["ConfigMap", name] = dict(doc.get("data") or {})

    def get(self, kind: str, name: str) -> dict[str, str]:
        found = self._data.get((kind, name))
        assert found is not None, f"the pod refers to {kind} {name}, which the chart does not create"
        return found


def resolve_env(container: dict[str, Any], objects: Objects, namespace: str, pod: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects.get("ConfigMap", source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(objects.get("Secret", source["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            env[item["name"]] = objects.get("Secret", ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            env[item["name"]] = objects.get("ConfigMap", cm["name"])[cm["key"]]
        elif "fieldRef" in ref:
            field = ref["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.namespace": namespace, "metadata.name": pod}[field]
        else:
            raise AssertionError(f"unsupported env source {ref}")
    return env


def run_flags(
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, str],
    host_paths: dict[str, Path],
    scratch: Path,
    extra_mounts: dict[Path, str] | None = None,
) -> list[str]:
    """`run` flags for one container of a pod spec, followed by its image, command and args.

    `host_paths`: a host folder for each volume that is not an emptyDir (hostPath, PVC, ConfigMap).
    `scratch`: where emptyDirs live (a fresh world-writable folder each, as the kubelet makes them;
    podman's tmpfs mounts ignore `mode` on a folder the image has). `extra_mounts`: host file →
    container path, read-only (the kubeconfig)."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    flags = ["--network", "host"]
    if "runAsUser" in sc:
        flags += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # only the pod's own volumes are writable
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if "ALL" in ((sc.get("capabilities") or {}).get("drop") or []):
        flags += ["--cap-drop", "ALL"]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            if path == "/dev/shm":
                flags += ["--shm-size", "2g"]
            else:
                folder = scratch / mount["name"]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o1777)
                flags += ["-v", f"{folder}:{path}:rw"]
        else:
            source = host_paths[mount["name"]]
            read_only = mount.get("readOnly") or (volume.get("persistentVolumeClaim") or {}).get("readOnly")
            flags += ["-v", f"{source}:{path}:{'ro' if read_only or 'configMap' in volume else 'rw'}"]
    for source, target in (extra_mounts or {}).items():
        flags += ["-v", f"{source}:{target}:ro"]
    for key, value in env.items():
        flags += ["--env", f"{key}={value}"]
    # Kubernetes: `command` replaces the image's entrypoint, `args` its CMD.
    command = list(container.get("command") or [])
    if command:
        flags += ["--entrypoint", command[0]]
    return [*flags, container["image"], *command[1:], *container.get("args", [])]


def config_map_dir(doc: dict[str, Any], target: Path) -> Path:
    """A ConfigMap volume's files (data and binaryData) in a host folder."""
    target.mkdir(parents=True, exist_ok=True)
    for key, text in (doc.get("data") or {}).items():
        (target / key).write_text(text)
    for key, b64 in (doc.get("binaryData") or {}).items():
        (target / key).write_bytes(base64.b64decode(b64))
    for path in target.iterdir():
        path.chmod(0o644)
    target.chmod(0o755)
    return target
