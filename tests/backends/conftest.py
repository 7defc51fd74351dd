"""Fixtures for the production-backend tests: settings in a temporary data dir, a tiny ChunkFormer
checkpoint built with the package's own classes, and a real llama.cpp OpenAI-compatible server
serving the bundled SmolLM2 GGUF on 127.0.0.1.

Needs: `pip install -e '.[dev]'` (llama-cpp-python[server], jiwer); the ChunkFormer tests also need
`bash scripts/install_chunkformer_cpu.sh` (they skip, naming that command, where it was not run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import (
    CHUNKFORMER_MISSING,
    HAS_CHUNKFORMER,
    ScriptedServer,
    build_tiny_chunkformer,
    free_port,
)

from maie.settings import Settings
from tests.conftest import recording


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the developer's .env: data and models under a temporary directory."""
    return Settings(_env_file=None, data_dir=tmp_path / "data", models_dir=tmp_path / "models")  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def tiny_chunkformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_CHUNKFORMER:
        pytest.skip(CHUNKFORMER_MISSING)
    target = tmp_path_factory.mktemp("models") / "asr" / "tiny-chunkformer"
    calibration = recording("en_2spk_conversation_pyannote_sample.wav").path
    return build_tiny_chunkformer(target, calibration_wav=calibration)


# --------------------------------------------------------------------------------------
# A real OpenAI-compatible server: llama-cpp-python's own, serving the bundled SmolLM2 GGUF
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `python -m llama_cpp.server` once per session; yields its base URL (…/v1)."""
    if (
        importlib.util.find_spec("sse_starlette") is None
        or importlib.util.find_spec("starlette_context") is None
    ):
        pytest.skip("llama-cpp-python[server] is not installed: pip install -e '.[dev]'")
    from maie.model_paths import resolve_gguf

    gguf = resolve_gguf(None, Settings(_env_file=None))  # type: ignore[call-arg]
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    threads = str(max((os.cpu_count() or 2) // 2, 1))  # as MAIE's own llama.cpp backend: half the cores
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
        "--n_threads", threads, "--n_threads_batch", threads, "--seed", "0",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if json.load(r)["data"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within 90 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------
# A tiny real HTTP server that fails on purpose (transient errors, refusals)
# --------------------------------------------------------------------------------------
@pytest.fixture
def scripted_server() -> Iterator[Any]:
    servers: list[ScriptedServer] = []

    def make(script: list[tuple[int, dict[str, Any]]]) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
