"""Real models, shared across the runner tests: loading costs seconds, so load each once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from maie.settings import Settings

MAIE = [sys.executable, "-m", "maie.cli"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def bare_whisper(settings: Settings):  # type: ignore[no-untyped-def]
    """A plain faster-whisper model from the same files MAIE uses (the comparison baseline)."""
    from faster_whisper import WhisperModel

    from maie.model_paths import resolve_whisper_model

    path = resolve_whisper_model(settings.whisper_model_variant, settings)
    return WhisperModel(str(path), device="cpu", compute_type="int8")


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `maie …` as a user would (a real process), returning its output and exit code."""

    def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(
            [*MAIE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )

    return run


def load_result(output_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((output_dir / "result.json").read_text())
