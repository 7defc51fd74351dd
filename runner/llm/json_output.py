"""Reading a model's JSON answer the way every backend and CPU may produce it.

Two things differ between builds and must not fail a summary: raw control characters inside
strings (a llama.cpp server on an AMX machine wrote a literal tab/newline where JSON wants "\\n"; the
grammar admits it, strict JSON parsing does not) and an answer cut off by its token budget
mid-string. The first is parsed with strict=False; the second is closed where it was cut — the open
string ends at its last whole word, a dangling key or comma is dropped, open arrays and objects are
closed — so a budget can shorten an answer but never make it invalid.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str) -> Any:
    """json.loads that accepts control characters inside strings (which JSON forbids)."""
    return json.loads(text, strict=False)


def _close(text: str) -> str:
    """Close the open string (at its last whole word), drop a trailing comma or colon, close the
    open arrays and objects."""
    stack: list[str] = []
    in_string = escaped = False
    string_start = -1
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string, string_start = True, i
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text
    if in_string:
        if escaped:
            out = out[:-1]
        head = out.rstrip().rpartition(" ")[0]
        out = (head if len(head) > string_start + 1 else out).rstrip() + '"'
    out = out.rstrip()
    while out and out[-1] in ",:":
        out = out[:-1].rstrip()
    return out + "".join(reversed(stack))


def close_truncated(text: str) -> str:
    """The longest valid JSON that the truncated answer `text` begins with, closed; cut back to an
    earlier comma or bracket where the cut fell inside a key or a literal."""
    cuts = [len(text)] + [i + (text[i] in "[{") for i in range(len(text) - 1, -1, -1) if text[i] in ",[{"]
    for cut in cuts:
        candidate = _close(text[:cut])
        try:
            loads(candidate)
        except json.JSONDecodeError:
            continue
        return candidate
    return text


def loads_lenient(text: str) -> Any:
    """Parse an answer, closing it first when its token budget cut it off."""
    try:
        return loads(text)
    except json.JSONDecodeError:
        return loads(close_truncated(text.strip()))
