"""The Transcription CRD, generated from the models in maie.transcription.

`python -m maie.crd` writes crds/transcription.yaml and the chart's copy
(charts/maie/crds/transcription.yaml); tests/k8s/test_crd.py fails when either is stale. The spec's
schema comes from TranscriptionSpec (which inherits TaskRequest's options), the status schema from
TranscriptionStatus: a field added to either model reaches the CRD by regenerating. What only the
CRD has is declared here: printer columns, CEL rules, list semantics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from maie.contract import TaskRequest
from maie.options import inline_schema
from maie.transcription import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    VERSION,
    TranscriptionSpec,
    TranscriptionStatus,
    spec_model,
)

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (ROOT / "crds" / "transcription.yaml", ROOT / "charts" / "maie" / "crds" / "transcription.yaml")

HEADER = """\
# The Transcription custom resource: one recording to transcribe (and optionally clean and summarize).
# The API creates these; platform teams may `kubectl apply -f` them directly. The maie operator runs
# one runner Job per resource and mirrors its state into .status.
# GENERATED from maie/transcription.py by `python -m maie.crd` (tests fail when it is stale): edit the
# models or maie/crd.py, never this file.
"""

# CEL rules on the spec (the API server checks them; the models check the same in Python).
SPEC_RULES: list[dict[str, str]] = [
    {
        "rule": "self == oldSelf",
        "message": "spec is immutable: delete the Transcription and create a new one",
    },
    {
        "rule": "!has(self.features) || !('summary' in self.features)"
        " || (has(self.templateId) && size(self.templateId) > 0)",
        "message": "templateId is required when 'summary' is among the features",
        "fieldPath": ".templateId",
        "reason": "FieldValueRequired",
    },
]

# Kubernetes list semantics the models cannot say (path of dotted property names → extras).
EXTRAS: dict[str, dict[str, Any]] = {
    "status.conditions": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    "status.observedGeneration": {"format": "int64"},
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {
        "name": "Progress",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.progress",
        "description": "Percent of the whole task.",
    },
    {
        "name": "Duration",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.metrics.processingTimeSeconds",
        "description": "Processing seconds.",
    },
    {
        "name": "RTF",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.metrics.rtf",
        "description": "Real-time factor (processing seconds / audio seconds).",
    },
    {"name": "Error", "type": "string", "jsonPath": ".status.error", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(node: Any, path: str = "") -> Any:
    """A plain JSON Schema (maie.options.inline_schema) as an OpenAPI v3.0 structural schema the
    API server accepts: boolean exclusive bounds, free-form objects as preserve-unknown-fields,
    no `additionalProperties: false` (unknown fields are pruned anyway)."""
    if isinstance(node, list):
        return [structural(n, path) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            prefix = f"{path}." if path else ""
            out[key] = {name: structural(sub, f"{prefix}{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    extra = out.get("additionalProperties")
    if extra is False:
        out.pop("additionalProperties")
    elif extra is True or extra == {}:
        out.pop("additionalProperties")
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    out.update(EXTRAS.get(path, {}))
    return out


def _schema(model: type[BaseModel], path: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = inline_schema(raw, raw.get("$defs", {}))
    schema.pop("description", None)  # the model's docstring is for Python readers
    return dict(structural(schema, path))


def openapi_schema(spec: type[TranscriptionSpec] = TranscriptionSpec) -> dict[str, Any]:
    spec_schema = {
        "description": "What to process and how. Unset fields take the deployment's settings.",
        **_schema(spec, "spec"),
        "x-kubernetes-validations": SPEC_RULES,
    }
    status_schema = {
        "description": "Observed state, written by the operator and the runner.",
        **_schema(TranscriptionStatus, "status"),
    }
    return {
        "type": "object",
        "description": "One recording to transcribe, clean and summarize; the operator runs it as a Job.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }


def build(request: type[TaskRequest] = TaskRequest) -> dict[str, Any]:
    """The whole CustomResourceDefinition for a request model (TaskRequest, or a variant in tests)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "maie", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["maie"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema(spec_model(request))},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: plain YAML for people
        return True


def render(request: type[TaskRequest] = TaskRequest) -> str:
    body = yaml.dump(build(request), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> None:
    targets = [Path(a) for a in sys.argv[1:]] or list(TARGETS)
    text = render()
    for target in targets:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
