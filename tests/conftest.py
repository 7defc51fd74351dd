"""Shared test set-up: where the real recordings are (tests/recordings.py), and skipping (never
faking) gpu/cluster tests."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.recordings import REPO, SHARED_DATA, Recording, all_recordings, find, why_missing

if TYPE_CHECKING:
    from maie.storage.s3 import S3ObjectStore

__all__ = ["REPO", "SHARED_DATA", "Recording", "data_file", "recording"]

# Tests never write into the checkout's data/: one throw-away data dir per test session
# (model caches, checksums). Subprocesses inherit it.
_SESSION_DATA = Path(tempfile.mkdtemp(prefix="maie-test-data-"))
os.environ.setdefault("DATA_DIR", str(_SESSION_DATA))

RECORDINGS = all_recordings()


def recording(name: str) -> Recording:
    """A real recording by file name (tests/data first, then shared data), or a skip naming why."""
    if name not in RECORDINGS:
        pytest.skip(why_missing(f"audio/{name}"))
    return RECORDINGS[name]


def data_file(relpath: str) -> Path:
    """Any data file by its path under the data root (meetings/qmsum/ES2004a.json), or a skip."""
    path = find(relpath)
    if path is None:
        pytest.skip(why_missing(relpath))
    return path


def normalize(text: str) -> str:
    """Lower case, no punctuation, single spaces: how transcripts are compared (WER)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


# --------------------------------------------------------------------------------------
# A real S3-protocol server (moto's server mode), used by the Kubernetes-mode tests and by the runner
# tests that run against both of the runner's stores.
# --------------------------------------------------------------------------------------
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
    from maie.storage.s3 import S3ObjectStore

    return S3ObjectStore(
        s3_endpoint,
        f"maie-{uuid.uuid4().hex[:12]}",
        access_key="testing",
        secret_key="testing",
        secure=False,
        create_bucket=True,
    )


def _cuda() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = _cuda()
    cluster = bool(os.environ.get("KUBECONFIG")) and shutil.which("kubectl") is not None
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible here"))
        if "cluster" in item.keywords and not cluster:
            item.add_marker(pytest.mark.skip(reason="needs a Kubernetes cluster (KUBECONFIG + kubectl)"))
