"""Fixtures for the production-backend tests: settings in a temporary data dir, a tiny ChunkFormer
checkpoint built with the package's own classes, and a real llama.cpp OpenAI-compatible server
serving the bundled SmolLM2 GGUF on 127.0.0.1.

Needs: `pip install -e '.[dev]'` (llama-cpp-python[server], jiwer); the ChunkFormer tests also need
`bash scripts/install_chunkformer_cpu.sh` (they skip, naming that command, where it was not run).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_support import AUDIO, CHUNKFORMER_MISSING, HAS_CHUNKFORMER, build_tiny_chunkformer

from maie.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the developer's .env: data and models under a temporary directory."""
    return Settings(_env_file=None, data_dir=tmp_path / "data", models_dir=tmp_path / "models")  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def tiny_chunkformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_CHUNKFORMER:
        pytest.skip(CHUNKFORMER_MISSING)
    target = tmp_path_factory.mktemp("models") / "asr" / "tiny-chunkformer"
    return build_tiny_chunkformer(target, calibration_wav=AUDIO / "en_mm1_micro_machines.wav")
