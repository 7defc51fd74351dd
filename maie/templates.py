"""Summary templates: templates/{id}.json (a JSON Schema) + templates/prompts/{id}.jinja."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel

from maie.errors import TemplateNotFoundError

_PROMPTS = "prompts"


class TemplateInfo(BaseModel):
    template_id: str
    name: str
    description: str
    schema_: dict[str, Any]

    model_config = {"populate_by_name": True}


class TemplateCatalog:
    """The templates in one directory. Cheap to create; schemas are read on demand and cached."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def list(self) -> list[TemplateInfo]:
        return [self.get(t) for t in self.ids()]

    def exists(self, template_id: str) -> bool:
        return template_id in self.ids()

    def get(self, template_id: str) -> TemplateInfo:
        schema = self.schema(template_id)
        return TemplateInfo(
            template_id=template_id,
            name=str(schema.get("title", template_id)),
            description=str(schema.get("description", "")),
            schema_=schema,
        )

    def schema(self, template_id: str) -> dict[str, Any]:
        path = self.directory / f"{template_id}.json"
        if "/" in template_id or "\\" in template_id or not path.is_file():
            known = ", ".join(self.ids()) or "none"
            raise TemplateNotFoundError(f"template '{template_id}' does not exist (available: {known})")
        return _load_schema(path, path.stat().st_mtime_ns)

    def prompt_path(self, name: str) -> Path:
        return self.directory / _PROMPTS / f"{name}.jinja"


@lru_cache(maxsize=64)
def _load_schema(path: Path, _mtime: int) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema
