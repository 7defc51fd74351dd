"""`maie models` / the catalog, and the runner's start-up model check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backend_support import HAS_CHUNKFORMER, free_port

from maie.catalog import list_models
from maie.contract import Feature, TaskRequest
from maie.errors import ModelNotFoundError
from maie.model_check import missing_models, require_models
from maie.settings import Settings

pytestmark = pytest.mark.model


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_", "CHUNKFORMER_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "MODELS_DIR": str(tmp_path / "models"), **extra})
    return env


def test_maie_models_lists_every_backend_with_availability_and_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "maie.cli", "models", "--json"],
        env=_env(tmp_path),
        cwd=tmp_path,  # no .env from the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    items = {m["backend_id"]: m for m in json.loads(proc.stdout)}
    assert set(items) == {"whisper", "chunkformer", "llama_cpp", "openai", "vllm"}
    assert [items[k]["kind"] for k in ("whisper", "chunkformer")] == ["asr", "asr"]
    assert {items[k]["kind"] for k in ("llama_cpp", "openai", "vllm")} == {"llm"}
    # The bundled defaults are here; the production ones are not, and each says why.
    assert items["whisper"]["available"] is True and "tiny.en" in items["whisper"]["models"]
    assert items["llama_cpp"]["available"] is True
    assert items["openai"]["available"] is False and "OPENAI_BASE_URL" in items["openai"]["reason"]
    assert items["vllm"]["available"] is False and items["vllm"]["reason"]
    assert items["chunkformer"]["available"] is False
    assert (
        "chunkformer-large-vie" in items["chunkformer"]["reason"]
        or "not installed" in items["chunkformer"]["reason"]
    )
    for item in items.values():
        assert item["available"] or item["reason"], item


def test_catalog_openai_checks_the_server(settings: Settings, llama_server: str) -> None:
    up = {m.backend_id: m for m in list_models(settings.model_copy(update={"openai_base_url": llama_server}))}
    assert up["openai"].available is True
    down_url = f"http://127.0.0.1:{free_port()}/v1"
    down = {m.backend_id: m for m in list_models(settings.model_copy(update={"openai_base_url": down_url}))}
    assert down["openai"].available is False
    assert down_url in (down["openai"].reason or "")


@pytest.mark.skipif(not HAS_CHUNKFORMER, reason="the chunkformer package is not installed")
def test_catalog_sees_a_chunkformer_model_under_models_dir(
    settings: Settings, tiny_chunkformer_dir: Path
) -> None:
    cfg = settings.model_copy(
        update={
            "models_dir": tiny_chunkformer_dir.parent.parent,
            "chunkformer_model_name": "tiny-chunkformer",
        }
    )
    item = {m.backend_id: m for m in list_models(cfg)}["chunkformer"]
    assert item.available is True, item.reason
    assert item.models == ["tiny-chunkformer"]


def test_model_check_names_every_missing_model_and_the_fix(settings: Settings) -> None:
    cfg = settings.model_copy(update={"whisper_model_variant": "large-v3", "llm_backend": "vllm"})
    request = TaskRequest(features=[Feature.CLEAN_TRANSCRIPT, Feature.SUMMARY], template_id="generic")
    missing = missing_models(cfg, request)
    assert [(m.role, m.backend) for m in missing] == [("asr", "whisper"), ("summary LLM", "vllm")]
    with pytest.raises(ModelNotFoundError) as err:
        require_models(cfg, request)
    message = err.value.message
    assert str(cfg.models_dir / "whisper" / "large-v3") in message
    assert "bash scripts/download_models.sh whisper:large-v3" in message
    assert "LLM_SUMMARY_MODEL" in message


def test_model_check_follows_the_enhancement_rule(settings: Settings, tmp_path: Path) -> None:
    # ChunkFormer does not punctuate, so a clean transcript needs the enhancement LLM too.
    cfg = settings.model_copy(update={"asr_backend": "chunkformer", "llm_backend": "openai"})
    request = TaskRequest(features=[Feature.CLEAN_TRANSCRIPT, Feature.SUMMARY], template_id="generic")
    roles = [(m.role, m.problem) for m in missing_models(cfg, request)]
    assert roles[0][0] == "asr" and "chunkformer-large-vie" in roles[0][1]
    assert [r for r, _ in roles[1:]] == ["enhancement LLM", "summary LLM"]
    assert all(p == "no server URL is set" for _, p in roles[1:])


def test_model_check_passes_with_the_bundled_defaults(settings: Settings) -> None:
    require_models(
        settings, TaskRequest(features=[Feature.CLEAN_TRANSCRIPT, Feature.SUMMARY], template_id="x")
    )
    assert missing_models(settings) == []


@pytest.mark.unit
def test_download_script_lists_the_production_set() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["bash", str(root / "scripts" / "download_models.sh"), "--list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert "chunkformer" in proc.stdout.split() and any(s.startswith("whisper:") for s in proc.stdout.split())
