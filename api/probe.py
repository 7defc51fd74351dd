"""Check an uploaded file really is audio of at least a second, before it is queued.

Headers alone can lie (a wav header followed by garbage, a renamed text file), so besides the
container's headers this decodes up to the first second of audio: that is what proves it is audio,
and it is all that is decoded (the rest of the file is the runner's work). The container is opened
once for both; frames are decoded one at a time and dropped, so memory stays small.
"""

from __future__ import annotations

from pathlib import Path

import av

from maie.audio import MIN_DURATION_SECONDS, describe, open_audio
from maie.contract import AudioInfo
from maie.errors import AudioError


class AudioTooShortError(AudioError):
    code = "audio_too_short"


def check_audio(path: Path, min_duration: float = MIN_DURATION_SECONDS) -> AudioInfo:
    """AudioInfo of a decodable file of at least `min_duration` seconds; AudioError otherwise."""
    decoded = 0.0
    with open_audio(path) as container:
        info = describe(container, path.name)
        try:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if frame.sample_rate:
                    decoded += frame.samples / frame.sample_rate
                if decoded >= min_duration:
                    return info
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            raise AudioError(f"the upload is not decodable audio ({type(exc).__name__})") from exc
    if decoded == 0.0:
        raise AudioError("the upload contains no decodable audio frames")
    raise AudioTooShortError(
        f"audio is {decoded:.2f} s long; at least {min_duration:.0f} s is needed for transcription"
    )
