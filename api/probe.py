"""Check an uploaded file really is audio, before it is queued.

Embedded mode (`check_audio`): headers alone can lie (a wav header followed by garbage, a renamed text
file), so besides the container's headers this decodes up to the first second of audio with PyAV:
that is what proves it is audio, and it is all that is decoded (the rest of the file is the runner's
work). The container is opened once for both; frames are decoded one at a time and dropped.

Kubernetes mode (`sniff_audio`): the API does not decode. It checks that the file starts with the
signature of an audio container (RIFF/WAVE, fLaC, Ogg, MP3, ADTS, MP4/M4A, WebM/Matroska), which
refuses renamed documents, images and archives with 415 before anything is stored; the runner decodes
the audio in a pod that holds no Kubernetes credentials and fails a file it cannot decode (or one under
a second) at once, without retries. So FFmpeg never parses untrusted input in the pod that may create
Transcriptions and read every tenant's audio, and the API image carries no PyAV (docs/kubernetes.md: Images).
"""

from __future__ import annotations

from pathlib import Path

from maie.contract import AudioInfo
from maie.errors import AudioError


class AudioTooShortError(AudioError):
    code = "audio_too_short"


def check_audio(path: Path, min_duration: float | None = None) -> AudioInfo:
    """AudioInfo of a decodable file of at least `min_duration` seconds (default: the runner's
    minimum); AudioError otherwise. Embedded mode only: the API image (kubernetes mode) has no PyAV."""
    import av

    from maie.audio import MIN_DURATION_SECONDS, describe, open_audio

    min_duration = MIN_DURATION_SECONDS if min_duration is None else min_duration
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


def _id3_size(head: bytes) -> int:
    """Length of a leading ID3v2 tag (10-byte header + syncsafe size), 0 when there is none."""
    if len(head) < 10 or not head.startswith(b"ID3"):
        return 0
    size = 0
    for byte in head[6:10]:
        size = (size << 7) | (byte & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)  # footer flag


def container_of(head: bytes) -> str | None:
    """The audio container a file's first bytes announce, or None when they announce none."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"ADIF"):
        return "aac"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, layer 00
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG audio frame: 11 sync bits, a layer
            return "mp3"
    return None


def sniff_audio(path: Path) -> str:
    """The container of an upload whose first bytes are an audio container's signature (ID3 tags
    skipped); AudioError otherwise. Reads at most the ID3 tag and a few bytes: nothing is decoded."""
    with path.open("rb") as fh:
        head = fh.read(16)
        skip = _id3_size(head)
        if skip:
            fh.seek(skip)
            head = fh.read(16)
            if not head:
                raise AudioError("the upload is only an ID3 tag: it contains no audio")
    found = container_of(head)
    if found is None:
        raise AudioError(
            "the upload is not audio: it starts with no audio container's signature (wav, flac, ogg, "
            "mp3, aac, m4a, webm)"
        )
    return found
