"""One declaration of the request's options (TaskRequest) reaches every surface: the API form and
its parser, the CLI, the Transcription spec and CRD, docs/api.md; backend names come from one place.

The generators take the request model as an argument, so a variant of TaskRequest with one more
field (top-level, or inside the asr group) shows what adding an option to TaskRequest alone does —
without touching the real model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from maie.api.routers.process import build_request
from maie.api.schemas import FORM_FIELDS, PROCESS_OPENAPI
from maie.cli import app as cli_app
from maie.cli import with_request_options
from maie.contract import AsrOptions, TaskRequest
from maie.crd import build as build_crd
from maie.options import END, START, form_fields, render_markdown, request_options
from maie.settings import ASR_BACKEND_NAMES, LLM_BACKEND_NAMES, Settings
from maie.transcription import TranscriptionSpec, spec_model

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


class WithSpeakers(TaskRequest):
    """A variant with a new top-level option."""

    speaker_count: int | None = Field(None, ge=1, le=10, description="Speakers to expect.")


class AsrWithHotwords(AsrOptions):
    hotwords: str | None = Field(None, max_length=200, description="Words to favour.")


class WithHotwords(TaskRequest):
    """A variant whose asr group has a new option."""

    asr: AsrWithHotwords = Field(default_factory=AsrWithHotwords)


def cli_for(model: type[TaskRequest]) -> tuple[typer.Typer, dict[str, Any]]:
    """A one-command CLI whose options are generated from `model`; records what the command got."""
    seen: dict[str, Any] = {}
    app = typer.Typer()

    @app.command()
    @with_request_options(lambda o: True, model=model)
    def run(audio: Path, **options: Any) -> None:
        seen.update(options)

    return app, seen


def spec_properties(model: type[TaskRequest]) -> dict[str, Any]:
    (version,) = build_crd(model)["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


@pytest.mark.parametrize(
    ("model", "name", "flag", "value", "path", "crd_path", "description"),
    [
        (
            WithSpeakers,
            "speaker_count",
            "--speaker-count",
            "3",
            ("speaker_count",),
            ("speakerCount",),
            "Speakers to expect.",
        ),
        (
            WithHotwords,
            "hotwords",
            "--hotwords",
            "MAIE",
            ("asr", "hotwords"),
            ("asr", "hotwords"),
            "Words to favour.",
        ),
    ],
    ids=["top-level", "in-a-group"],
)
def test_an_option_added_to_task_request_alone_appears_everywhere(
    tmp_path: Path,
    model: type[TaskRequest],
    name: str,
    flag: str,
    value: str,
    path: tuple[str, ...],
    crd_path: tuple[str, ...],
    description: str,
) -> None:
    # the API form: documented, and parsed into the request with the model's bounds
    assert name in form_fields(model) and name not in FORM_FIELDS
    request = build_request({"features": ["raw_transcript"], name: [value]}, model=model)
    got: Any = request
    for part in path:
        got = getattr(got, part)
    assert str(got) == value
    # the CLI: a generated option, its value handed to the command by public name
    app, seen = cli_for(model)
    result = CliRunner().invoke(app, [str(tmp_path / "a.wav"), flag, value])
    assert result.exit_code == 0, result.output
    assert str(seen[name]) == value
    assert flag in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    # the spec and the CRD: a camelCase property with the model's description and bounds
    node = spec_properties(model)
    for part in crd_path[:-1]:
        node = node[part]["properties"]
    assert node[crd_path[-1]]["description"] == description
    spec = spec_model(model).model_validate(
        {"audio": {"uri": "s3://m/a"}, crd_path[0]: _nested(crd_path, value)}
    )
    got = spec.to_task_request()
    for part in path:
        got = getattr(got, part)
    assert str(got) == value
    # the real model is untouched
    assert name not in {o.name for o in request_options()}
    assert crd_path[-1] not in str(spec_properties(TaskRequest))


def _nested(path: tuple[str, ...], value: str) -> Any:
    out: Any = int(value) if value.isdigit() else value
    for part in reversed(path[1:]):
        out = {part: out}
    return out


def test_a_bound_on_the_model_is_enforced_by_every_surface(tmp_path: Path) -> None:
    from maie.api.errors import ApiError

    with pytest.raises(ApiError, match="speaker_count"):
        build_request({"features": ["raw_transcript"], "speaker_count": ["11"]}, model=WithSpeakers)
    node = spec_properties(WithSpeakers)["speakerCount"]
    assert (node["minimum"], node["maximum"]) == (1, 10)
    assert form_fields(WithSpeakers)["speaker_count"]["maximum"] == 10


def test_todays_flags_form_fields_and_spec_names_stay() -> None:
    """The generated surfaces keep the names clients already use."""
    flags = {p.opts[0] for p in typer.main.get_command(cli_app).commands["transcribe"].params}  # type: ignore[attr-defined]
    assert {"--asr-model", "--asr-backend", "--beam-size", "--batch-size", "--llm-backend", "--llm-model",
            "--llm-base-url", "--template", "--features", "--language", "--enhancement"} <= flags  # fmt: skip
    assert {"asr_backend", "asr_model", "language", "beam_size", "vad_filter", "word_timestamps",
            "batch_size", "llm_backend", "llm_model", "enhancement", "temperature", "top_p", "top_k",
            "max_tokens", "repetition_penalty", "features", "template_id"} <= set(FORM_FIELDS)  # fmt: skip
    assert "llm_base_url" not in FORM_FIELDS  # a server URL is the deployment's business, not a client's
    schema = PROCESS_OPENAPI["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(schema) == {"file", *FORM_FIELDS}
    assert FORM_FIELDS["asr_model"]["pattern"].startswith("^[A-Za-z0-9]")  # a name, never a path
    assert set(spec_properties(TaskRequest)) == {
        f.alias or n for n, f in TranscriptionSpec.model_fields.items()
    }


def test_backend_names_come_from_one_place() -> None:
    from maie.catalog import list_models
    from maie.runner.asr import ASR_BACKENDS
    from maie.runner.llm import LLM_BACKENDS

    assert tuple(ASR_BACKENDS) == ASR_BACKEND_NAMES
    assert tuple(LLM_BACKENDS) == LLM_BACKEND_NAMES
    assert FORM_FIELDS["asr_backend"]["enum"] == list(ASR_BACKEND_NAMES)
    assert FORM_FIELDS["llm_backend"]["enum"] == list(LLM_BACKEND_NAMES)
    items = list_models(Settings(_env_file=None))  # type: ignore[call-arg]
    assert tuple(m.backend_id for m in items if m.kind == "asr") == ASR_BACKEND_NAMES
    assert tuple(m.backend_id for m in items if m.kind == "llm") == LLM_BACKEND_NAMES


def test_the_docs_options_table_is_current() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == render_markdown(), "run `python -m maie.options` to refresh docs/api.md"
