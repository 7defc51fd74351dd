"""Fixtures for the Kubernetes-mode tests: a real S3-protocol server (moto) and KMock for the API.

Nothing here fakes a part under test: the operator is the real kopf operator, the store is the real
minio client, and the API server is KMock speaking the Kubernetes API over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import TX, ApiServerLike

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "transcription.yaml"


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


# --------------------------------------------------------------------------------------
# KMock: the Kubernetes API (no controllers: tests play the Job controller and the kubelet)
# --------------------------------------------------------------------------------------
@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ApiServerLike}


@pytest.fixture()
async def kube(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """KMock with the built-in resources and our CRD, and KUBECONFIG pointing at it."""
    import kubernetes.config.kube_config

    kmock.resources.load_bundled()
    kmock.resources[TX] = kmock.ResourceInfo(
        kind="Transcription",
        singular="transcription",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        shortnames={"tx"},
        subresources={"status"},
    )
    kubeconfig = tmp_path / "kubeconfig"
    server = str(kmock.url).rstrip("/")
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    return kmock
