"""Reading an audio file's headers with PyAV: what the API checks before queueing and what the
runner's preprocess stage starts from. In core, so the API never imports the runner for it."""

from __future__ import annotations

from pathlib import Path

import av

from maie.contract import AudioInfo
from maie.errors import AudioError

MIN_DURATION_SECONDS = 1.0  # shorter audio is rejected (API: 422 before queueing; runner: a failed task)


def open_audio(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise AudioError(f"audio file not found: {path.name}")
    if path.stat().st_size == 0:
        raise AudioError(f"{path.name} is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise AudioError(f"{path.name} is not decodable audio ({decode_error_reason(exc)})") from exc


def decode_error_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__


def probe_audio(path: Path) -> AudioInfo:
    """Container, codec, sample rate, channels and duration, reading only the headers.

    Raises AudioError for undecodable input or a file without an audio stream. Duration comes from
    the container; preprocess() replaces it with the decoded length.
    """
    with open_audio(path) as container:
        return describe(container, path.name)


def describe(container: av.container.InputContainer, name: str) -> AudioInfo:
    """AudioInfo of an open container's first audio stream, from its headers (AudioError: none)."""
    if not container.streams.audio:
        raise AudioError(f"{name} has no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return AudioInfo(
        format=container.format.name.split(",")[0],
        codec=ctx.name,
        duration=round(duration, 3),
        sample_rate=int(ctx.sample_rate or 0),
        channels=int(ctx.channels or 0),
    )
