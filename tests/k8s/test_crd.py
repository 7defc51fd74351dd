"""The CRD's openAPIV3Schema: generated from the models and current, examples validate, bad
manifests are rejected (incl. the CEL rules), the spec is immutable, and the schema agrees with the
Pydantic models that api, operator and runner use."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from maie.contract import Feature
from maie.crd import TARGETS, render
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


def cel_errors(node: dict[str, Any], value: Any, old: Any = None, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule where it is declared, as the API server does:
    transition rules (those reading oldSelf) only on an update, where the old value exists."""
    errors: list[str] = []
    env = celpy.Environment()
    for rule in node.get("x-kubernetes-validations", []):
        activation = {"self": celpy.json_to_cel(value)}
        if "oldSelf" in rule["rule"]:
            if old is None:
                continue
            activation["oldSelf"] = celpy.json_to_cel(old)
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate(activation)):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                before = old.get(key) if isinstance(old, dict) else None
                errors.extend(cel_errors(sub, value[key], before, f"{path}.{key}"))
    return errors


def validate(crd: dict[str, Any], manifest: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    s = schema(crd)
    manifest = apply_defaults(s, manifest)
    # OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
    errors = [e.message for e in jsonschema.Draft4Validator(s).iter_errors(manifest)]
    if not errors:
        errors = cel_errors(s, manifest, apply_defaults(s, old) if old else None)
    return errors


def test_the_crd_files_are_generated_from_the_models() -> None:
    for target in TARGETS:
        assert target.read_text(encoding="utf-8") == render(), (
            f"{target.relative_to(ROOT)} is stale: run `python -m maie.crd`"
        )


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
        ({"audio": {"uri": "s3://m/a"}, "job": {"tolerations": [{"operator": "Maybe"}]}}, "is not one of"),
        ({"audio": {"uri": "s3://m/a"}, "job": {"nodeSelector": {"gpu": "x" * 64}}}, "is too long"),
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


def test_a_manifest_with_only_audio_is_valid(crd: dict[str, Any]) -> None:
    """Default features need no template: without templateId they are the transcript alone."""
    spec = {"audio": {"uri": "s3://maie/a.flac"}}
    assert validate(crd, {**BASE, "spec": spec}) == []
    request = TranscriptionSpec.model_validate(spec).to_task_request()
    assert request.features == [Feature.CLEAN_TRANSCRIPT] and request.template_id is None
    with_template = TranscriptionSpec.model_validate({**spec, "templateId": "meeting_notes_v1"})
    assert with_template.features == [Feature.CLEAN_TRANSCRIPT, Feature.SUMMARY]


def test_the_spec_is_immutable_after_creation(crd: dict[str, Any]) -> None:
    old = {**BASE, "spec": {"audio": {"uri": "s3://maie/a.flac"}, "features": ["raw_transcript"]}}
    assert validate(crd, old, old=old) == []  # an update that leaves the spec alone (status, labels)
    for change in ({"features": ["raw_transcript", "clean_transcript"]}, {"asr": {"beamSize": 2}}):
        new = {**old, "spec": {**old["spec"], **change}}
        assert validate(crd, new) == []  # valid as a new resource
        assert any("spec is immutable" in e for e in validate(crd, new, old=old)), change


def test_a_quantity_that_is_not_one_is_rejected_by_the_api_server(crd: dict[str, Any]) -> None:
    """The quantity grammar is checked by the API server (here, by the CRD's pattern); the models
    leave it to it, so the operator's report of a refused Job stays reachable without one."""
    spec = {"audio": {"uri": "s3://m/a"}, "job": {"resources": {"limits": {"cpu": "lots"}}}}
    assert any("does not match" in e for e in validate(crd, {**BASE, "spec": spec}))
    for good in ("500m", "4Gi", "1.5", "2e3", 8):
        ok = {**spec, "job": {"resources": {"limits": {"cpu": good}}}}
        assert validate(crd, {**BASE, "spec": ok}) == [], good


def test_tolerations_and_resources_have_schemas(crd: dict[str, Any]) -> None:
    job = {
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "pool", "operator": "Equal", "value": "a100", "tolerationSeconds": 60},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "4Gi"}, "limits": {"memory": 8, "cpu": 2}},
    }
    spec = {"audio": {"uri": "s3://maie/a.flac"}, "job": job}
    assert validate(crd, {**BASE, "spec": spec}) == []
    tx = TranscriptionSpec.model_validate(spec)
    assert tx.job.tolerations == job["tolerations"] and tx.job.resources == job["resources"]
    node = schema(crd)["properties"]["spec"]["properties"]["job"]["properties"]
    assert set(node["tolerations"]["items"]["properties"]) == {
        "key", "operator", "value", "effect", "tolerationSeconds"
    }  # fmt: skip
    assert node["resources"]["properties"]["limits"]["additionalProperties"]["x-kubernetes-int-or-string"]


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
    """Every node has a type unless it preserves unknown fields or is int-or-string (the API server
    refuses otherwise)."""

    def walk(node: dict[str, Any], path: str) -> list[str]:
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        bad = [] if typed or node.get("x-kubernetes-preserve-unknown-fields") else [path]
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


def test_the_schema_is_bounded_for_the_cel_cost_budget(crd: dict[str, Any]) -> None:
    """The API server prices `self == oldSelf` over the whole spec by the largest spec the schema
    allows: every string value, list and map size in it is bounded (map keys cannot be, in
    OpenAPI v3; a real API server, `-m cluster`, is the final check)."""

    def unbounded(node: dict[str, Any], path: str) -> list[str]:
        kind = node.get("type")
        bad = []
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            bad.append(path)
        if kind == "array" and "maxItems" not in node:
            bad.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            bad.append(path)
        if node.get("x-kubernetes-preserve-unknown-fields"):
            bad.append(path)
        for key, sub in node.get("properties", {}).items():
            bad += unbounded(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict) and "x-kubernetes-int-or-string" not in node[key]:
                bad += unbounded(node[key], f"{path}[]")
        return bad

    assert unbounded(schema(crd)["properties"]["spec"], "spec") == []
