"""Stage 1 on real recordings of every format in the data set, and on bad input."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from maie.errors import AudioError
from maie.runner.preprocess import TARGET_SAMPLE_RATE, preprocess, probe_audio, write_wav
from tests.conftest import recording

pytestmark = pytest.mark.unit

FORMATS = [
    ("en_jfk_inaugural.flac", "flac", 44100, 2),
    ("en_jfk_inaugural.mp3", "mp3", 16000, 1),
    ("en_hotwords_comfyui_youtube.mp3", "mp3", 44100, 2),
    ("en_ljspeech_LJ050-0131.wav", "wav", 22050, 1),
    ("en_stereo_2spk_librispeech.wav", "wav", 16000, 2),
    ("vi_vivos_VIVOSDEV01_R002.wav", "wav", 16000, 1),
]


@pytest.mark.parametrize(("name", "fmt", "rate", "channels"), FORMATS)
def test_decodes_to_16k_mono_exactly_as_faster_whisper(name: str, fmt: str, rate: int, channels: int) -> None:
    rec = recording(name)
    prepared = preprocess(rec.path)
    assert prepared.info.format == fmt
    assert prepared.info.sample_rate == rate
    assert prepared.info.channels == channels
    assert prepared.samples.dtype == np.float32
    assert abs(prepared.duration - rec.duration) < 0.15
    # Same samples as faster-whisper's own decoder: preprocessing cannot cost accuracy.
    assert np.array_equal(prepared.samples, decode_audio(str(rec.path), sampling_rate=TARGET_SAMPLE_RATE))


def test_ogg_vorbis_long_recording() -> None:
    rec = recording("en_hp0_henry_f_phillips_spoken_wikipedia.ogg")
    info = probe_audio(rec.path)
    assert (info.format, info.codec) == ("ogg", "vorbis")
    prepared = preprocess(rec.path)
    assert abs(prepared.duration - 273.287) < 0.2


@pytest.mark.parametrize("codec", ["libopus", "aac"])
def test_other_common_codecs(tmp_path: Path, codec: str) -> None:
    """opus (in webm/ogg) and m4a: encode a real recording with PyAV, then decode it back."""
    import av

    source = preprocess(recording("en_jfk_inaugural.flac").path).samples
    suffix = {"libopus": "webm", "aac": "m4a"}[codec]
    target = tmp_path / f"clip.{suffix}"
    rate = 48000 if codec == "libopus" else 16000
    with av.open(str(target), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        pcm = (source * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = TARGET_SAMPLE_RATE
        for resampled in resampler.resample(frame):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    prepared = preprocess(target)
    assert abs(prepared.duration - 11.0) < 0.2
    assert prepared.info.codec == {"libopus": "opus", "aac": "aac"}[codec]
    assert prepared.info.sample_rate == rate


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "meeting.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 40)
    with pytest.raises(AudioError, match=r"meeting\.wav .*(not decodable|could not be decoded|no audio)"):
        preprocess(bad)


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_text("this is not audio at all\n" * 100)
    with pytest.raises(AudioError):
        preprocess(bad)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        preprocess(empty)


def test_half_second_clip_is_too_short(tmp_path: Path) -> None:
    samples = preprocess(recording("en_jfk_inaugural.flac").path).samples[: TARGET_SAMPLE_RATE // 2]
    short = write_wav(samples, tmp_path / "short.wav")
    with wave.open(str(short)) as w:
        assert w.getnframes() == TARGET_SAMPLE_RATE // 2
    with pytest.raises(AudioError, match=r"0\.50 s long; at least 1\.0 s"):
        preprocess(short)
