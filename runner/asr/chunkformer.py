"""ChunkFormer ASR backend: the `chunkformer` package's `endless_decode` for long audio.

ChunkFormer (masked chunking conformer, CTC) decodes hours of audio with steady memory by encoding
fixed-size chunks with left/right context, `total_batch_duration` seconds at a time. It does not
punctuate, so the enhancement stage runs after it in `auto` mode.

The package is an optional extra (`pip install '.[chunkformer]'`, or on a CPU machine
`bash scripts/install_chunkformer_cpu.sh`): it is imported in load(), never at import time.
Weights are never downloaded at run time: the model must be a local directory (MODELS_DIR or a path)
holding config.yaml, pytorch_model.bin, optionally global_cmvn and vocab.txt.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import tempfile
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from maie.contract import AsrOptions, AsrVersion, Segment
from maie.errors import BackendUnavailableError, MaieError
from maie.model_paths import check_chunkformer_dir, checkpoint_hash, resolve_model_dir
from maie.runner.asr.base import AsrInput, AsrOutput
from maie.settings import Settings

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def parse_timestamp(value: str | float | int) -> float:
    """ChunkFormer's "HH:MM:SS:mmm" (or seconds) → seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = value.strip().split(":")
    if len(parts) != 4:
        raise ValueError(f"unexpected ChunkFormer timestamp {value!r} (want HH:MM:SS:mmm)")
    hours, minutes, seconds, millis = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds + millis / 1000.0


def _write_wav(samples: np.ndarray, path: Path) -> None:
    """16-bit PCM wav: pydub (inside chunkformer) reads wav without ffmpeg, other formats need it."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


class ChunkFormerBackend:
    """One ChunkFormer model; load() → transcribe() → unload()."""

    name = "chunkformer"
    needs_wav = True  # endless_decode reads a file: the pipeline hands over its 16 kHz mono wav

    def __init__(self, settings: Settings, options: AsrOptions) -> None:
        self.settings = settings
        self.options = options
        # CTC over a lower-case syllable vocabulary: no punctuation or casing (enhancement adds them).
        self.punctuates = False if settings.asr_punctuates is None else settings.asr_punctuates
        self.model_name = options.model or settings.chunkformer_model_name
        self.chunk_size = settings.chunkformer_chunk_size
        self.left_context = settings.chunkformer_left_context
        self.right_context = settings.chunkformer_right_context
        self.total_batch_duration = settings.chunkformer_total_batch_duration
        self.return_timestamps = settings.chunkformer_return_timestamps
        self.max_silence_duration = settings.chunkformer_max_silence_duration
        self.device = "cpu"
        self.model: Any = None
        self.model_path: Path | None = None
        self._hash: str | None = None
        self._last: AsrOutput | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def load(self) -> None:
        if self.model is not None:
            return
        path = resolve_model_dir(self.model_name, self.settings, "asr")
        check_chunkformer_dir(path)
        try:
            with warnings.catch_warnings():
                # pydub warns that ffmpeg is missing; it is not needed: we always hand over a wav.
                warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
                import torch
                from chunkformer import ChunkFormerModel
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the chunkformer package is not installed ({exc}); pip install '.[chunkformer]' "
                "(GPU) or bash scripts/install_chunkformer_cpu.sh (CPU)"
            ) from exc
        self.device = self._resolve_device(torch)
        try:
            model = ChunkFormerModel.from_pretrained(str(path))
        except (ValueError, OSError, RuntimeError, KeyError) as exc:
            raise MaieError(f"could not load the ChunkFormer model in {path}: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.model_path = path
        logger.info("ChunkFormer %s loaded from %s on %s", self.model_name, path, self.device)

    def _resolve_device(self, torch: Any) -> str:
        wanted = self.settings.chunkformer_device
        has_cuda = bool(torch.cuda.is_available())
        if wanted == "cuda" and not has_cuda:
            raise BackendUnavailableError("CHUNKFORMER_DEVICE=cuda but no CUDA GPU is visible to torch")
        if wanted == "auto":
            return "cuda" if has_cuda else "cpu"
        return wanted

    def unload(self) -> None:
        """Drop the model and return its GPU memory before the next stage loads."""
        if self.model is None:
            return
        self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # --- decoding -------------------------------------------------------------------------
    def decoding_params(self) -> dict[str, Any]:
        """The exact keyword arguments given to endless_decode (recorded in versions)."""
        return {
            "chunk_size": self.chunk_size,
            "left_context_size": self.left_context,
            "right_context_size": self.right_context,
            "total_batch_duration": self.total_batch_duration,
            "return_timestamps": True,
            "max_silence_duration": self.max_silence_duration,
        }

    def check_window(self) -> None:
        """endless_decode keeps total_batch_duration/2 s per step in whole chunks of 8 frames x 10 ms."""
        frames = int(self.total_batch_duration // 0.01) // 2
        if frames // self.chunk_size // 8 < 1:
            least = self.chunk_size * 8 * 0.02
            raise MaieError(
                f"CHUNKFORMER_TOTAL_BATCH_DURATION={self.total_batch_duration} s is too short for "
                f"CHUNKFORMER_CHUNK_SIZE={self.chunk_size}: use at least {least:.2f} s"
            )

    def transcribe(self, audio: AsrInput) -> Iterator[Segment]:
        if self.model is None:
            self.load()
        self.check_window()
        import torch

        with tempfile.TemporaryDirectory(prefix="maie-chunkformer-") as tmp:
            wav = audio.wav_path
            if wav is None or wav.suffix.lower() != ".wav":
                wav = Path(tmp) / "audio.wav"
                _write_wav(audio.samples, wav)
            with torch.inference_mode():
                raw = self.model.endless_decode(str(wav), **self.decoding_params())
        segments = self._to_segments(raw, audio.duration)
        self._last = AsrOutput(
            segments=segments,
            language=self._language(),
            language_probability=None,
            duration=audio.duration,
            speech_duration=sum(s.end - s.start for s in segments),
            extra={"windows": self._windows(audio.duration)},
        )
        yield from segments

    def _language(self) -> str | None:
        """ChunkFormer has no language detection: the request's, the setting's, or the model's own."""
        chosen = self.options.language or self.settings.asr_language
        if chosen:
            return chosen
        return "vi" if self.model_name.rstrip("/").endswith("-vie") else None

    def _windows(self, duration: float) -> int:
        """How many encoder windows endless_decode ran (1 unless the audio exceeds one window)."""
        frames = int(self.total_batch_duration // 0.01) // 2
        step_seconds = (frames // self.chunk_size // 8) * self.chunk_size * 8 * 0.01
        return max(1, int(np.ceil(duration / step_seconds)))

    def _to_segments(self, raw: Any, duration: float) -> list[Segment]:
        if isinstance(raw, str):  # return_timestamps=False or a model without vocab
            return [Segment(start=0.0, end=duration, text=raw.strip())] if raw.strip() else []
        if not isinstance(raw, list):
            raise MaieError("ChunkFormer returned token ids, not text: the model directory has no vocab.txt")
        segments: list[Segment] = []
        for item in raw:
            text = str(item.get("decode", "")).strip()
            if not text:
                continue
            start = min(parse_timestamp(item["start"]), duration)
            end = min(max(parse_timestamp(item["end"]), start), duration)
            segments.append(Segment(start=round(start, 3), end=round(end, 3), text=text))
        if not self.return_timestamps and segments:
            joined = " ".join(s.text for s in segments)
            return [Segment(start=segments[0].start, end=segments[-1].end, text=joined)]
        return segments

    def progress(self) -> float | None:
        return None  # one pass in time order: the segments tell

    def result_info(self) -> AsrOutput:
        if self._last is None:
            raise MaieError("result_info() called before transcribe() was consumed")
        return self._last

    def version(self) -> AsrVersion:
        if self.model_path is None:
            raise MaieError("version() called before load()")
        if self._hash is None:
            self._hash = checkpoint_hash(self.model_path, self.settings)
        try:
            library = importlib.metadata.version("chunkformer")
        except importlib.metadata.PackageNotFoundError:
            library = None
        return AsrVersion(
            name=self.name,
            model_variant=self.model_name,
            model_path=str(self.model_path),
            checkpoint_hash=self._hash,
            compute_type="float32",
            device=self.device,
            decoding_params=self.decoding_params(),
            inference="endless_decode",
            library_version=library,
        )
