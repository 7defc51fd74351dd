"""The request's options, read off `TaskRequest`: every surface that takes them is generated here.

`TaskRequest` (maie.contract) declares each option once, with its bounds, description and an
optional `Expose` (public name, CLI flag, whether the API form takes it). From that come the API
form fields and their OpenAPI schema (api/schemas.py), the form parser's conversions
(api/routers/process.py), the `maie transcribe`/`summarize` options (maie/cli.py), the
Transcription spec (maie/transcription.py derives it) and its CRD schema (maie/crd.py), and the
options table in docs/api.md (`python -m maie.options` rewrites it; a test checks it is current).
Every generator takes the request model as an argument, so a test can run them on a variant.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from maie.contract import Expose, TaskRequest

Schema = dict[str, Any]


@dataclass(frozen=True)
class Option:
    """One request option: where it lives in TaskRequest and how it is exposed."""

    path: tuple[str, ...]  # ("asr", "beam_size") or ("template_id",)
    name: str  # the flat public name: the form field, and the CLI flag with dashes
    cli_flag: str
    on_cli: bool
    form: bool
    form_pattern: str | None
    schema: Schema  # JSON Schema of one value (no null), description included

    @property
    def kind(self) -> str:
        """string | integer | number | boolean | array."""
        return str(self.schema.get("type", "string"))

    @property
    def choices(self) -> list[str] | None:
        node = self.schema.get("items", self.schema)
        return list(node["enum"]) if "enum" in node else None

    @property
    def help(self) -> str:
        text = str(self.schema.get("description", "")).rstrip(".")
        if self.choices:
            text += f" ({' | '.join(self.choices)})"
        return text + "."

    @property
    def spec_path(self) -> str:
        """Where it is in a Transcription's spec: asr.beamSize, templateId."""
        return ".".join(to_camel(p) for p in self.path)


def inline_schema(node: Any, defs: Mapping[str, Any]) -> Any:
    """A pydantic JSON Schema with $refs replaced by their definitions and `Optional`'s null
    branch, titles and null defaults removed: the plain shape the form and the CRD build on."""
    if isinstance(node, list):
        return [inline_schema(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]  # its docstring is for Python readers:
        target = {k: v for k, v in target.items() if k != "description"}  # fields describe
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    out = {k: inline_schema(v, defs) for k, v in node.items() if k not in ("$defs", "title")}
    if "anyOf" in out:
        rest = [n for n in out["anyOf"] if n != {"type": "null"}]
        if len(rest) < len(out["anyOf"]):
            out.pop("anyOf")
            out = {**rest[0], **out} if len(rest) == 1 else {**out, "anyOf": rest}
    if out.get("default", 0) is None:
        out.pop("default")
    return out


def _expose(field: FieldInfo) -> Expose:
    return next((m for m in field.metadata if isinstance(m, Expose)), Expose())


def _is_group(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


@cache
def request_options(model: type[BaseModel] = TaskRequest) -> tuple[Option, ...]:
    """Every option of a request model, in declaration order (groups' fields flattened)."""
    out: list[Option] = []

    def leaves(group: type[BaseModel], prefix: tuple[str, ...]) -> None:
        schema = group.model_json_schema(mode="validation")
        defs = schema.get("$defs", {})
        for name, field in group.model_fields.items():
            if _is_group(field):
                assert isinstance(field.annotation, type)
                leaves(field.annotation, (*prefix, name))
                continue
            expose = _expose(field)
            flat = expose.name or name
            out.append(
                Option(
                    path=(*prefix, name),
                    name=flat,
                    cli_flag=expose.cli or "--" + flat.replace("_", "-"),
                    on_cli=expose.on_cli,
                    form=expose.form,
                    form_pattern=expose.form_pattern,
                    schema=inline_schema(schema["properties"][name], defs),
                )
            )

    leaves(model, ())
    names = [o.name for o in out]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{model.__name__}: options share a public name: {duplicated} (set Expose(name))")
    return tuple(out)


def nest(values: Mapping[str, Any], model: type[BaseModel] = TaskRequest) -> dict[str, Any]:
    """Flat public names → the request model's nested shape; None (not given) is left out."""
    data: dict[str, Any] = {}
    for option in request_options(model):
        value = values.get(option.name)
        if value is None:
            continue
        node = data
        for part in option.path[:-1]:
            node = node.setdefault(part, {})
        node[option.path[-1]] = value
    return data


def public_name(loc: tuple[int | str, ...], model: type[BaseModel] = TaskRequest) -> str:
    """A validation error's location (("asr", "beam_size")) as the public name (beam_size)."""
    path = tuple(str(p) for p in loc)
    for option in request_options(model):
        if path[: len(option.path)] == option.path:
            return option.name
    return ".".join(path)


def form_fields(model: type[BaseModel] = TaskRequest) -> dict[str, Schema]:
    """The multipart fields of POST /v1/process besides `file`, as OpenAPI 3.1 schemas."""
    fields: dict[str, Schema] = {}
    for option in request_options(model):
        if not option.form:
            continue
        schema = copy.deepcopy(option.schema)
        if option.form_pattern:
            schema["pattern"] = option.form_pattern
            schema.pop("maxLength", None)
        if option.kind == "array":
            schema["description"] = f"{schema.get('description', '')} Repeat the field, or comma-separate."
        fields[option.name] = schema
    return fields


# --------------------------------------------------------------------------------------
# The options table of docs/api.md
# --------------------------------------------------------------------------------------
def _values(schema: Schema) -> str:
    node = schema.get("items", schema)
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "string")
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum"))
        low_text = "" if low is None else (f">{low}" if "exclusiveMinimum" in node else f"{low}")
        high = node.get("maximum")
        return f"{kind} {low_text}–{'' if high is None else high}".strip()
    if kind == "boolean":
        return "`true` \\| `false`"
    return "text" + (f" (≤ {node['maxLength']})" if "maxLength" in node else "")


def render_markdown(model: type[BaseModel] = TaskRequest) -> str:
    """The options table for docs/api.md (between the options markers)."""
    rows = [
        "| API form field | CLI option | Transcription spec | Values | What it does |",
        "|---|---|---|---|---|",
    ]
    for o in request_options(model):
        form = f"`{o.name}`" if o.form else "—"
        cli = f"`{o.cli_flag}`" if o.on_cli else "—"
        what = str(o.schema.get("description", "")).replace("|", "\\|")
        rows.append(f"| {form} | {cli} | `{o.spec_path}` | {_values(o.schema)} | {what} |")
    return "\n".join(rows)


START, END = "<!-- options:start -->", "<!-- options:end -->"


def update_table(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{render_markdown()}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    default = Path(__file__).resolve().parent.parent / "docs" / "api.md"
    update_table(Path(sys.argv[1]) if len(sys.argv) > 1 else default)


if __name__ == "__main__":
    main()
