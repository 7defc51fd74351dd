"""vLLM backend: argument and model checks everywhere; real generation and unload on a CUDA GPU."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import jsonschema
import pytest
from backend_support import cuda_device

from maie.errors import BackendUnavailableError, LlmError, ModelNotFoundError
from maie.runner.llm import create_llm_backend
from maie.runner.llm.base import ChatMessage, GenerationParams
from maie.runner.llm.vllm_backend import VllmBackend, quantization_of
from maie.settings import Settings, get_settings

pytestmark = pytest.mark.model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
# A 4B-class instruct model in Hugging Face format under MODELS_DIR/llm/ (download_models.sh).
GPU_MODEL = os.environ.get("MAIE_TEST_VLLM_MODEL", "Qwen3-4B-Instruct-2507")


def _fake_model_dir(settings: Settings, name: str = "tiny-hf") -> Path:
    path = settings.models_dir / "llm" / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "awq", "bits": 4}}))
    return path


def test_needs_a_model(settings: Settings) -> None:
    with pytest.raises(LlmError, match="needs a model directory"):
        create_llm_backend("vllm", settings, model=None)


def test_missing_model_names_path_and_script(settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        VllmBackend(settings, model="Qwen3-4B-Instruct-2507")
    assert str(settings.models_dir / "llm" / "Qwen3-4B-Instruct-2507") in err.value.message
    assert "download_models.sh" in err.value.message


def test_reads_quantization_and_generation_config(settings: Settings) -> None:
    path = _fake_model_dir(settings)
    backend = VllmBackend(settings, model="tiny-hf")
    assert backend.model_path == path.resolve()
    assert quantization_of(path) == "awq"
    assert backend.generation_config_path is None
    (path / "generation_config.json").write_text('{"temperature": 0.7}')
    assert backend.generation_config_path == path.resolve() / "generation_config.json"
    assert backend.context_tokens == settings.llm_max_model_len


@pytest.mark.skipif(HAS_VLLM and cuda_device(), reason="vLLM and a GPU are present here")
def test_load_without_vllm_or_gpu_is_a_clear_error(settings: Settings) -> None:
    _fake_model_dir(settings)
    backend = VllmBackend(settings, model="tiny-hf")
    with pytest.raises(BackendUnavailableError, match=r"(pip install '\.\[vllm\]'|needs a CUDA GPU)"):
        backend.load()
    backend.unload()  # nothing loaded: a no-op, never an error


def _gpu_model_present() -> bool:
    try:
        VllmBackend(get_settings(), model=GPU_MODEL)
    except (ModelNotFoundError, LlmError):
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_model_present(), reason=f"{GPU_MODEL} is not under MODELS_DIR/llm")
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (pip install '.[vllm]')")
@pytest.mark.skipif(not cuda_device(), reason="needs a CUDA GPU (none on this machine)")
def test_guided_json_and_full_unload_on_gpu() -> None:
    settings = get_settings()
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 80},
            "decisions": {"type": "array", "maxItems": 3},
        },
        "required": ["title", "decisions"],
    }
    backend = VllmBackend(settings, model=GPU_MODEL)
    backend.load()
    try:
        text = backend.complete(
            [ChatMessage("user", "Summarise as JSON: we agreed to ship on Friday and hire two engineers.")],
            GenerationParams(temperature=0.0, max_tokens=256),
            json_schema=schema,
        )
        jsonschema.validate(json.loads(text), schema)
        version = backend.version("summarization", GenerationParams(temperature=0.0), {"schema": "t"})
        assert version.thinking is False and version.chat_template
        assert backend.count_tokens("hello world") >= 2
    finally:
        backend.unload()
    assert backend.last_unload is not None
    assert backend.last_unload["not_returned_bytes"] < 1024**3  # the engine's memory came back
