"""Fixtures for the Kubernetes-mode tests: a real S3-protocol server (moto) and KMock for the API.

Nothing here fakes a part under test: the operator is the real kopf operator, the store is the real
minio client, and the API server is KMock speaking the Kubernetes API over HTTP.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import TX, ApiServerLike

from maie.storage.s3 import S3ObjectStore

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "transcription.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto in server mode on 127.0.0.1: a real S3 HTTP API (any credentials, plain HTTP)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_store(s3_endpoint: str) -> S3ObjectStore:
    """A fresh bucket per test."""
    return S3ObjectStore(
        s3_endpoint,
        f"maie-{uuid.uuid4().hex[:12]}",
        access_key="testing",
        secret_key="testing",
        secure=False,
        create_bucket=True,
    )


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
