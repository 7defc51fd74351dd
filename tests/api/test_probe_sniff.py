"""The Kubernetes-mode upload check (api/probe.py `sniff_audio`): every audio container the API
accepts is recognised from its first bytes — real recordings, and the same speech encoded by PyAV into
the other containers — and documents, images and archives renamed to an audio extension are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maie.api.probe import container_of, sniff_audio
from maie.errors import AudioError
from tests.conftest import recording

pytestmark = pytest.mark.unit

REAL = {
    "en_jfk_inaugural.flac": "flac",
    "en_jfk_inaugural.mp3": "mp3",
    "en_timit_LDC93S1.wav": "wav",
    "en_hp0_henry_f_phillips_spoken_wikipedia.ogg": "ogg",
}


@pytest.mark.parametrize("name", REAL)
def test_real_recordings(name: str) -> None:
    assert sniff_audio(recording(name).path) == REAL[name]


def encode(tmp_path: Path, codec: str, fmt: str, suffix: str, rate: int) -> Path:
    import av

    from maie.runner.preprocess import preprocess

    source = preprocess(recording("en_librispeech_1089-134691-0000.flac").path).samples
    target = tmp_path / f"clip.{suffix}"
    with av.open(str(target), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(
            (source * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for resampled in resampler.resample(frame):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


@pytest.mark.parametrize(
    ("codec", "fmt", "suffix", "rate", "container"),
    [
        ("aac", "ipod", "m4a", 16000, "mp4"),
        ("aac", "adts", "aac", 16000, "aac"),
        ("libopus", "webm", "webm", 48000, "matroska"),
        ("libopus", "ogg", "opus", 48000, "ogg"),
        ("libmp3lame", "mp3", "mp3", 16000, "mp3"),  # with an ID3v2 tag in front
    ],
)
def test_encoded_containers(
    tmp_path: Path, codec: str, fmt: str, suffix: str, rate: int, container: str
) -> None:
    path = encode(tmp_path, codec, fmt, suffix, rate)
    assert sniff_audio(path) == container


@pytest.mark.parametrize(
    "head",
    [
        b"meeting notes, not audio\n",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # JPEG: 0xFF first, but no audio frame sync
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        b"RIFF\x24\x00\x00\x00AVI LIST",  # RIFF, but not WAVE
        b"",
    ],
)
def test_other_files_are_refused(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "renamed.mp3"
    path.write_bytes(head + bytes(200))
    assert container_of(head + bytes(200)) is None
    with pytest.raises(AudioError, match="not audio"):
        sniff_audio(path)


def test_an_id3_tag_alone_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "tag.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10))
    with pytest.raises(AudioError, match="only an ID3 tag"):
        sniff_audio(path)
