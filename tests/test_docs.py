"""The README and docs/*.md link to each other: every relative link must reach a file that exists,
and every `#anchor` a heading of the document it names (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: link text only, lower case, punctuation dropped (hyphens and
    underscores kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _prose(path: Path) -> list[str]:
    """The document's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 … for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [m.group(1) for line in _prose(path) for m in LINK.finditer(CODE_SPAN.sub("", line))]


def test_anchor_follows_githubs_rules() -> None:
    assert anchor("A native library crashes (exit 139, SIGSEGV, SIGILL, `worker_crashed`)") == (
        "a-native-library-crashes-exit-139-sigsegv-sigill-worker_crashed"
    )
    assert anchor("Images: one per deployable") == "images-one-per-deployable"
    assert anchor("`openai` — any OpenAI-compatible server") == "openai--any-openai-compatible-server"
    assert anchor("What happens when …") == "what-happens-when-"


def test_the_checker_sees_links_and_headings() -> None:
    readme = ROOT / "README.md"
    assert any(target.startswith("docs/") for target in links(readme))
    assert "quick-start-a-fresh-debianubuntu-machine-with-python-311" in anchors(readme)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(document: Path) -> None:
    broken = []
    for target in links(document):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
            continue
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading makes #{fragment} in {linked.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)
