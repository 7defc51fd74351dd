"""On a real cluster (KUBECONFIG pointing at one, e.g. kind from kind-config.yaml): install the chart,
run its `helm test` (a real clip through API → operator → runner Job), then uninstall.

Skipped, not faked, where no cluster is reachable. Images must be pullable or loaded into the
cluster (`kind load docker-image …`); MAIE_TEST_VALUES names a values file (default: values-kind.yaml).
"""

from __future__ import annotations

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
