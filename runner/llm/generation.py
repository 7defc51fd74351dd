"""Generation settings: runtime request > environment > the model's generation_config.json >
library default. None at a level means "take the level below", never zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from maie.contract import GenerationOptions
from maie.runner.llm.base import GenerationParams
from maie.settings import Settings

FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty")
# Hugging Face generation_config.json names for our fields.
_HF_NAMES = {"max_tokens": "max_new_tokens"}

Task = Literal["enhancement", "summary"]


def env_options(settings: Settings, task: Task) -> GenerationOptions:
    """The deployment's LLM_<TASK>_* settings."""
    return GenerationOptions(**{f: getattr(settings, f"llm_{task}_{f}") for f in FIELDS})


def model_options(config_path: Path | None) -> GenerationOptions:
    """The model author's recommendations from generation_config.json (missing file = nothing)."""
    if config_path is None or not config_path.is_file():
        return GenerationOptions()
    data: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    values = {f: data.get(_HF_NAMES.get(f, f)) for f in FIELDS}
    if data.get("do_sample") is False:
        values["temperature"] = 0.0
    return GenerationOptions.model_validate({k: v for k, v in values.items() if v is not None})


def resolve(
    runtime: GenerationOptions,
    env: GenerationOptions,
    model: GenerationOptions,
    library: dict[str, Any],
) -> tuple[GenerationParams, dict[str, str]]:
    """The merged parameters and, for each, which level it came from."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in FIELDS:
        for level, options in (("runtime", runtime), ("env", env), ("model", model)):
            value = getattr(options, field)
            if value is not None:
                merged[field], sources[field] = value, level
                break
        else:
            if library.get(field) is not None:
                merged[field], sources[field] = library[field], "library"
    return GenerationParams(**merged), sources
