"""The CRD's openAPIV3Schema: examples validate, bad manifests are rejected (incl. the CEL rule),
and the schema agrees with the Pydantic models that api, operator and runner use."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from maie.transcription import (
    AsrSpec,
    JobOverrides,
    LlmSpec,
    Transcription,
    TranscriptionSpec,
    TranscriptionStatus,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return dict(v)


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(version(crd)["schema"]["openAPIV3Schema"])


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """What the API server does before validation: fill `default`s of absent properties."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in node.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = apply_defaults(sub, out[key])
    return out


def cel_errors(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule where it is declared, as the API server does."""
    errors: list[str] = []
    env = celpy.Environment()
    for rule in node.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                errors.extend(cel_errors(sub, value[key], f"{path}.{key}"))
    return errors


def validate(crd: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    s = schema(crd)
    manifest = apply_defaults(s, manifest)
    # OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
    errors = [e.message for e in jsonschema.Draft4Validator(s).iter_errors(manifest)]
    if not errors:
        errors = cel_errors(s, manifest)
    return errors


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_crd_and_the_models(crd: dict[str, Any], path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "maie.io/v1alpha1" and manifest["kind"] == "Transcription"
    assert validate(crd, manifest) == []
    tx = Transcription.model_validate(manifest)
    tx.spec.to_task_request()  # and it converts to the pipeline's request


def test_there_are_several_examples() -> None:
    assert len(EXAMPLES) >= 3


BASE = {"apiVersion": "maie.io/v1alpha1", "kind": "Transcription", "metadata": {"name": "x"}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"audio": {"uri": "s3://maie/a.flac"}, "features": ["summary"]}, "templateId is required"),
        ({"audio": {"uri": "s3://maie/a.flac"}}, "templateId is required"),  # default features ask summary
        ({"audio": {"uri": "s3://maie/a.flac"}, "features": ["subtitles"]}, "is not one of"),
        ({"audio": {"uri": "ftp://host/a.flac"}, "features": ["raw_transcript"]}, "does not match"),
        ({"features": ["raw_transcript"]}, "'audio' is a required property"),
        ({"audio": {"uri": "s3://m/a"}, "features": ["raw_transcript"], "asr": {"beamSize": 50}}, "maximum"),
        ({"audio": {"uri": "s3://m/a"}, "features": ["raw_transcript"], "llm": {"topP": 0}}, "minimum"),
        (
            {"audio": {"uri": "s3://m/a"}, "features": ["raw_transcript"], "asr": {"backend": "kaldi"}},
            "one of",
        ),
        ({"audio": {"uri": "s3://m/a"}, "features": []}, "non-empty"),
    ],
)
def test_bad_manifests_are_rejected(crd: dict[str, Any], spec: dict[str, Any], expected: str) -> None:
    errors = validate(crd, {**BASE, "spec": spec})
    assert errors and any(expected in e for e in errors), errors
    with pytest.raises(ValueError):  # the models reject the same (the operator's last line)
        TranscriptionSpec.model_validate(spec)


def test_summary_with_template_passes_the_cel_rule(crd: dict[str, Any]) -> None:
    spec = {"audio": {"uri": "s3://maie/a.flac"}, "features": ["summary"], "templateId": "meeting_notes_v1"}
    assert validate(crd, {**BASE, "spec": spec}) == []


def aliases(model: type[Any]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_schema_and_models_have_the_same_fields(crd: dict[str, Any]) -> None:
    spec = schema(crd)["properties"]["spec"]["properties"]
    assert set(spec) == aliases(TranscriptionSpec)
    assert set(spec["asr"]["properties"]) == aliases(AsrSpec)
    assert set(spec["llm"]["properties"]) == aliases(LlmSpec)
    assert set(spec["job"]["properties"]) == aliases(JobOverrides)
    assert set(schema(crd)["properties"]["status"]["properties"]) == aliases(TranscriptionStatus)


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    """Every node has a type unless it preserves unknown fields (the API server refuses otherwise)."""

    def walk(node: dict[str, Any], path: str) -> list[str]:
        bad = [] if "type" in node or node.get("x-kubernetes-preserve-unknown-fields") else [path]
        for key, sub in node.get("properties", {}).items():
            bad += walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            bad += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            bad += walk(node["additionalProperties"], f"{path}{{}}")
        return bad

    assert walk(schema(crd), "") == []


def test_crd_names_status_subresource_and_printer_columns(crd: dict[str, Any]) -> None:
    assert crd["spec"]["group"] == "maie.io" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["tx"] and crd["spec"]["names"]["plural"] == "transcriptions"
    v = version(crd)
    assert v["name"] == "v1alpha1" and v["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in v["additionalPrinterColumns"]}
    assert {"Phase", "Stage", "Progress", "Duration", "RTF", "Age"} <= set(columns)
    for name, json_path in columns.items():  # each column points at a field the schema has
        node = schema(crd)
        for part in json_path.strip(".").split("."):
            if part == "metadata":
                break
            node = node["properties"][part]
        else:
            assert "type" in node, name


def test_the_chart_ships_the_same_crd() -> None:
    assert (ROOT / "charts/maie/crds/transcription.yaml").read_text() == (
        ROOT / "crds/transcription.yaml"
    ).read_text()
