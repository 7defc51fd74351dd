"""Writes .env.template from the Settings class, so the template can never drift from the code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from maie.settings import PROJECT_ROOT, Settings

HEADER = """\
# MAIE settings. Copy to .env and uncomment what you change; environment variables win over .env.
# Generated from maie/settings.py by `python -m maie.env_template` (tests check it is current).
# Unset LLM_* generation values mean "use the model's generation_config.json, then the library default".
"""


def _default(name: str, field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        try:
            return str(value.relative_to(PROJECT_ROOT))
        except ValueError:
            return str(value)
    return str(value)


def render() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        default = _default(name, field)
        shown = default if default else "(unset)"
        lines.append(f"# {description} Default: {shown}".replace("  ", " ").strip())
        lines.append(f"# {name.upper()}={default}")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render_markdown() -> str:
    """The settings table for docs/configuration.md (between the settings markers)."""
    rows = ["| Env var | Default | What it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(name, field) or "*(unset)*"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | `{default}` | {description} |")
    return "\n".join(rows)


def update_table(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{render_markdown()}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PROJECT_ROOT / ".env.template"
    target.write_text(render(), encoding="utf-8")
    doc = PROJECT_ROOT / "docs" / "configuration.md"
    if doc.is_file() and START in doc.read_text(encoding="utf-8"):
        update_table(doc)


if __name__ == "__main__":
    main()
