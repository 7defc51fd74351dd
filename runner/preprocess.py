"""Stage 1 — decode any common audio format with PyAV and normalise it to 16 kHz mono float32.

The resampling is exactly faster-whisper's own (`AudioResampler(format="s16", layout="mono",
rate=16000)`), so preprocessing here never costs accuracy against a bare faster-whisper run on
the same file. PyAV ships FFmpeg's libraries in its wheel: no system packages are needed.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from maie.audio import MIN_DURATION_SECONDS, decode_error_reason, open_audio, probe_audio
from maie.contract import AudioInfo
from maie.errors import AudioError

TARGET_SAMPLE_RATE = 16000
_GROUP_SAMPLES = 500_000


@dataclass
class PreparedAudio:
    samples: np.ndarray  # float32 in [-1, 1), 16 kHz mono
    info: AudioInfo  # what the input was (container, codec, rate, channels, duration)

    @property
    def duration(self) -> float:
        return float(len(self.samples)) / TARGET_SAMPLE_RATE


def preprocess(
    path: Path,
    progress: Callable[[float], None] | None = None,
    min_duration: float = MIN_DURATION_SECONDS,
) -> PreparedAudio:
    """Decode and resample the whole file. Raises AudioError naming the problem."""
    info = probe_audio(path)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    decoded_seconds = 0.0
    last_report = 0.0
    try:
        with open_audio(path) as container:
            stream = container.streams.audio[0]
            # Frames are grouped before resampling (as faster-whisper does): far fewer calls.
            fifo = av.AudioFifo()
            for frame in _valid_frames(container.decode(stream)):
                if frame.time is not None:
                    decoded_seconds = float(frame.time)
                frame.pts = None  # the FIFO checks timestamps; continuity is not needed here
                fifo.write(frame)
                if fifo.samples >= _GROUP_SAMPLES:
                    for out in resampler.resample(fifo.read()):
                        chunks.append(out.to_ndarray().reshape(-1))
                if progress and info.duration > 0 and decoded_seconds - last_report > 5:
                    last_report = decoded_seconds
                    progress(min(decoded_seconds / info.duration, 1.0))
            if fifo.samples:
                for out in resampler.resample(fifo.read()):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise AudioError(f"{path.name} could not be decoded ({decode_error_reason(exc)})") from exc
    if not chunks:
        raise AudioError(f"{path.name} contains no decodable audio frames")
    pcm = np.concatenate(chunks)
    samples = pcm.astype(np.float32) / 32768.0
    duration = len(samples) / TARGET_SAMPLE_RATE
    if duration < min_duration:
        raise AudioError(
            f"{path.name} is {duration:.2f} s long; at least {min_duration:.1f} s of audio is needed"
        )
    info = info.model_copy(update={"duration": round(duration, 3)})
    if progress:
        progress(1.0)
    return PreparedAudio(samples=samples, info=info)


def _valid_frames(frames):  # type: ignore[no-untyped-def]
    """Skip frames FFmpeg cannot decode mid-stream (as faster-whisper does) instead of failing."""
    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def write_wav(samples: np.ndarray, path: Path) -> Path:
    """16-bit PCM wav of prepared samples, for backends that read files (ChunkFormer)."""
    pcm = np.clip(samples * 32768.0, -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TARGET_SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path
