"""On a real cluster (KUBECONFIG pointing at one, e.g. kind from kind-config.yaml): install the chart,
run its `helm test` (a real clip through API → operator → runner Job), then uninstall.

Skipped, not faked, where no cluster is reachable. Images must be pullable or loaded into the
cluster (`kind load docker-image …`); MAIE_TEST_VALUES names a values file (default: values-kind.yaml).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "maie"
pytestmark = pytest.mark.cluster


def _tool(name: str) -> str:
    local = ROOT / ".cache" / "bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (scripts/fetch_helm.sh)")
    return found


@pytest.fixture(scope="module")
def cluster() -> tuple[str, str]:
    if not os.environ.get("KUBECONFIG") and not Path.home().joinpath(".kube/config").exists():
        pytest.skip("no KUBECONFIG: no cluster to install into")
    kubectl, helm = _tool("kubectl"), _tool("helm")
    probe = subprocess.run([kubectl, "version", "--request-timeout=5s"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cluster not reachable: {probe.stderr.strip()[-300:]}")
    return kubectl, helm


def test_chart_installs_and_helm_test_transcribes_a_clip(cluster: tuple[str, str]) -> None:
    kubectl, helm = cluster
    namespace = f"maie-test-{uuid.uuid4().hex[:6]}"
    values = os.environ.get("MAIE_TEST_VALUES", str(CHART / "values-kind.yaml"))
    release = "maie"
    try:
        install = subprocess.run(
            [
                helm,
                "install",
                release,
                str(CHART),
                "-n",
                namespace,
                "--create-namespace",
                "-f",
                values,
                "--wait",
                "--timeout",
                "10m",
            ],
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, install.stderr
        crd = subprocess.run(
            [kubectl, "get", "crd", "transcriptions.maie.io"], capture_output=True, text=True
        )
        assert crd.returncode == 0, crd.stderr
        test = subprocess.run(
            [helm, "test", release, "-n", namespace, "--logs", "--timeout", "20m"],
            capture_output=True,
            text=True,
        )
        assert test.returncode == 0, test.stdout + test.stderr
        assert "transcript:" in test.stdout
        listing = subprocess.run([kubectl, "get", "tx", "-n", namespace], capture_output=True, text=True)
        assert "Succeeded" in listing.stdout, listing.stdout
    finally:
        subprocess.run([helm, "uninstall", release, "-n", namespace, "--wait"], capture_output=True)
        subprocess.run([kubectl, "delete", "namespace", namespace, "--wait=false"], capture_output=True)


AUDIO = Path(__file__).resolve().parents[1] / "data" / "audio" / "en_jfk_inaugural.flac"


def test_default_values_run_the_example_manifest_to_succeeded(cluster: tuple[str, str]) -> None:
    """`helm install` with the chart's defaults (GPU runner, large-v3-turbo, vLLM + Qwen3-4B in the
    Job, the model loader filling a ReadWriteMany PVC from Hugging Face), then the kubectl path:
    upload the audio to MinIO and apply examples/transcription.yaml; it must reach Succeeded.

    Needs a GPU cluster with a ReadWriteMany default storage class and network to huggingface.co:
    opt in with MAIE_TEST_GPU_CLUSTER=1 (MAIE_TEST_DEFAULTS_VALUES may name a values file with
    only what the cluster needs, e.g. image registry or storage class; never models or backends).
    """
    if os.environ.get("MAIE_TEST_GPU_CLUSTER") != "1":
        pytest.skip("set MAIE_TEST_GPU_CLUSTER=1 on a GPU cluster with ReadWriteMany storage and HF access")
    if not AUDIO.is_file():
        pytest.skip(f"recording not found: {AUDIO}")
    import socket
    import time

    from maie.storage.s3 import S3ObjectStore

    kubectl, helm = cluster
    namespace = f"maie-defaults-{uuid.uuid4().hex[:6]}"
    extra = os.environ.get("MAIE_TEST_DEFAULTS_VALUES")
    release = "maie"
    forward: subprocess.Popen[str] | None = None

    def kube(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "-n", namespace, *args], capture_output=True, text=True, timeout=timeout
        )

    try:
        install = subprocess.run(
            [helm, "install", release, str(CHART), "-n", namespace, "--create-namespace", "--wait"]
            + ["--timeout", "90m"]
            + (["-f", extra] if extra else []),
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, install.stderr
        loaded = kube(
            "wait",
            "--for=condition=complete",
            "job",
            "-l",
            "app.kubernetes.io/component=model-loader",
            "--timeout=90m",
            timeout=95 * 60,
        )
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        forward = subprocess.Popen(
            [kubectl, "-n", namespace, "port-forward", f"svc/{release}-minio", f"{port}:9000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(3)

        def secret(key: str) -> str:
            out = kube("get", "secret", release, "-o", f"jsonpath={{.data.{key}}}")
            return base64.b64decode(out.stdout).decode()

        store = S3ObjectStore(
            f"127.0.0.1:{port}",
            "maie",
            access_key=secret("S3_ACCESS_KEY"),
            secret_key=secret("S3_SECRET_KEY"),
        )
        store.put_file("audio/jfk-inaugural/raw.flac", AUDIO, "audio/flac")
        applied = kube("apply", "-f", str(ROOT / "examples" / "transcription.yaml"))
        assert applied.returncode == 0, applied.stderr
        done = kube(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "transcription/jfk-inaugural",
            "--timeout=30m",
            timeout=31 * 60,
        )
        described = kube("get", "transcription", "jfk-inaugural", "-o", "yaml").stdout
        assert done.returncode == 0, described
        assert "resultUri: s3://maie/results/" in described
    finally:
        if forward is not None:
            forward.terminate()
        kube("delete", "transcriptions", "--all", "--wait=true", timeout=300)  # before the operator goes
        subprocess.run([helm, "uninstall", release, "-n", namespace, "--wait"], capture_output=True)
        subprocess.run([kubectl, "delete", "namespace", namespace, "--wait=false"], capture_output=True)
