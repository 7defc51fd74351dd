"""Transcript exports beside result.json: SubRip (.srt), WebVTT (.vtt) and plain text (.txt)."""

from __future__ import annotations

import textwrap

from maie.contract import ResultDocument, Segment


def _stamp(seconds: float, sep: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _lines(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=84)) or text


def to_srt(segments: list[Segment]) -> str:
    blocks = [
        f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{_lines(s.text)}\n"
        for i, s in enumerate((s for s in segments if s.text), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment]) -> str:
    blocks = [
        f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{_lines(s.text)}\n" for s in segments if s.text
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(doc: ResultDocument) -> dict[str, str]:
    """{filename: content} for what the document holds: timed exports need segments."""
    files: dict[str, str] = {}
    results = doc.results
    if results is None:
        return files
    if results.segments:
        files["transcript.srt"] = to_srt(results.segments)
        files["transcript.vtt"] = to_vtt(results.segments)
    text = results.clean_transcript or results.raw_transcript
    if text:
        files["transcript.txt"] = "\n".join(textwrap.wrap(text, width=100)) + "\n"
    return files
