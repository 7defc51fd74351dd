"""Settings from env/.env with clear validation errors; the listing commands; the package layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from maie.contract import GenerationOptions, TaskRequest
from maie.env_template import render
from maie.runner.llm.generation import model_options, resolve
from maie.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_QUEUE_DEPTH=7\nWHISPER_BEAM_SIZE=3\nASR_LANGUAGE=auto\n")
    monkeypatch.setenv("WHISPER_BEAM_SIZE", "2")  # the environment wins over .env
    s = Settings()
    assert (s.max_queue_depth, s.whisper_beam_size, s.asr_language) == (7, 2, None)
    assert s.llm_summary_temperature is None  # None = take the model's default


def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPER_BEAM_SIZE", "0")
    monkeypatch.setenv("LLM_SUMMARY_TEMPERATURE", "hot")
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert "whisper_beam_size" in text and "greater than or equal to 1" in text
    assert "llm_summary_temperature" in text


def test_env_template_lists_every_setting_and_is_current() -> None:
    committed = (REPO / ".env.template").read_text()
    assert committed == render(), "run `python -m maie.env_template` to refresh .env.template"
    for name, field in Settings.model_fields.items():
        assert f"# {name.upper()}=" in committed
        assert field.description, f"{name} needs a description"


def test_generation_hierarchy(tmp_path: Path) -> None:
    config = tmp_path / "generation_config.json"
    config.write_text(json.dumps({"temperature": 0.7, "top_p": 0.8, "max_new_tokens": 300}))
    params, sources = resolve(
        runtime=GenerationOptions(temperature=0.05),
        env=GenerationOptions(temperature=0.1, top_p=0.9),
        model=model_options(config),
        library={"temperature": 1.0, "top_p": 1.0, "top_k": 40, "repetition_penalty": 1.0},
    )
    assert (params.temperature, sources["temperature"]) == (0.05, "runtime")
    assert (params.top_p, sources["top_p"]) == (0.9, "env")
    assert (params.max_tokens, sources["max_tokens"]) == (300, "model")
    assert (params.top_k, sources["top_k"]) == (40, "library")


def test_summary_needs_a_template() -> None:
    with pytest.raises(ValidationError, match="template_id is required"):
        TaskRequest(features=["summary"])


@pytest.mark.e2e
def test_templates_and_models_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("templates")
    assert proc.returncode == 0
    for template_id in ("meeting_notes_v1", "interview_v1", "lecture_notes_v1"):
        assert template_id in proc.stdout
    proc = run_cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    models = {m["backend_id"]: m for m in json.loads(proc.stdout)}
    assert set(models) == {"whisper", "chunkformer", "llama_cpp", "openai", "vllm"}
    assert models["whisper"]["available"] and models["llama_cpp"]["available"]
    assert not models["vllm"]["available"] and models["vllm"]["reason"]


def test_no_top_level_operator_package_shadows_the_stdlib() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    code = "import operator, maie.operator; print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "site-packages" not in out.stdout and "/lib/python3" in out.stdout


def test_docs_settings_table_is_current() -> None:
    from maie.env_template import END, START, render_markdown

    readme = (REPO / "docs" / "configuration.md").read_text()
    table = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == render_markdown(), "run `python -m maie.env_template` to refresh docs/configuration.md"
