"""faster-whisper (CTranslate2) backend: sequential or batched inference, VAD, word timestamps.

The model is loaded from a local directory only (bundled package, MODELS_DIR or a path); nothing
is downloaded. `version().decoding_params` are the exact keyword arguments given to transcribe(),
so `WhisperModel(model_path, device, compute_type).transcribe(audio, **decoding_params)` (or the
BatchedInferencePipeline when `inference` is "batched") reproduces the run by hand.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from importlib.metadata import version as package_version
from typing import Any

from maie.catalog import cuda_available
from maie.contract import AsrOptions, AsrVersion, Segment, Word
from maie.errors import ModelLoadError
from maie.model_paths import checkpoint_hash, resolve_whisper_model
from maie.runner.asr.base import AsrInput, AsrOutput
from maie.runner.asr.whisper_recovery import is_real_speech, unworded_speech
from maie.settings import Settings

# Below this length batching cannot help (one 30 s window) and sequential decoding is exact.
BATCH_MIN_SECONDS = 60.0
# The batched pass's share of the ASR progress bar; the recovery pass fills the rest.
FIRST_PASS_SHARE = 0.9


class WhisperBackend:
    name = "whisper"

    def __init__(self, settings: Settings, options: AsrOptions) -> None:
        self.settings = settings
        self.options = options
        self.model_variant = options.model or settings.whisper_model_variant
        self.model_path = resolve_whisper_model(self.model_variant, settings)
        device = settings.whisper_device
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        self.device = device
        compute = settings.whisper_compute_type
        # The effective type is what versions record: int8 suits CPUs, float16 GPUs.
        self.compute_type = ("float16" if device == "cuda" else "int8") if compute == "auto" else compute
        # Whisper writes cased, punctuated text; a deployment may override the flag.
        self.punctuates = True if settings.asr_punctuates is None else settings.asr_punctuates
        self._model: Any = None
        self._decoding_params: dict[str, Any] = {}
        self._inference = "sequential"
        self._info: Any = None
        self._recovery: dict[str, Any] | None = None
        self._progress: float | None = None

    # ----------------------------------------------------------------------------------
    def load(self) -> None:
        from faster_whisper import WhisperModel

        try:
            self._model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.settings.whisper_cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"whisper model at {self.model_path} could not be loaded ({reason}); "
                "replace its files (scripts/download_models.sh) or choose another model"
            ) from exc

    def decoding_params(self, duration: float) -> tuple[str, dict[str, Any]]:
        """(inference mode, the keyword arguments for transcribe()) for audio of this length."""
        o, s = self.options, self.settings
        vad_filter = s.whisper_vad_filter if o.vad_filter is None else o.vad_filter
        params: dict[str, Any] = {
            "language": o.language if o.language is not None else s.asr_language,
            "beam_size": o.beam_size or s.whisper_beam_size,
            "vad_filter": vad_filter,
            "word_timestamps": self._wants_words(),
        }
        if o.initial_prompt:
            params["initial_prompt"] = o.initial_prompt
        if o.temperature is not None:
            params["temperature"] = o.temperature
        if vad_filter:
            params["vad_parameters"] = {
                "min_silence_duration_ms": o.vad_min_silence_ms
                if o.vad_min_silence_ms is not None
                else s.whisper_vad_min_silence_ms,
                "speech_pad_ms": o.vad_speech_pad_ms
                if o.vad_speech_pad_ms is not None
                else s.whisper_vad_speech_pad_ms,
            }
        batch_size = s.whisper_batch_size if o.batch_size is None else o.batch_size
        if batch_size > 1 and duration >= BATCH_MIN_SECONDS and vad_filter:
            # Batched windows are decoded independently: previous-text conditioning does not apply.
            # They are cut from the VAD's speech regions, so without VAD decoding is sequential.
            params["batch_size"] = batch_size
            if s.whisper_recover_gap_seconds > 0:
                params["word_timestamps"] = True  # the recovery finds skipped speech by its words
            return "batched", params
        params["condition_on_previous_text"] = (
            s.whisper_condition_on_previous_text
            if o.condition_on_previous_text is None
            else o.condition_on_previous_text
        )
        return "sequential", params

    def transcribe(self, audio: AsrInput) -> Iterator[Segment]:
        if self._model is None:
            self.load()
        self._inference, self._decoding_params = self.decoding_params(audio.duration)
        self._recovery = None
        self._progress = None  # sequential: the segments' ends tell
        keep_words = self._wants_words()
        if self._inference != "batched":
            segments, self._info = self._model.transcribe(audio.samples, **self._decoding_params)
            for seg in segments:  # a generator: decoding happens as we iterate
                yield _segment(seg, keep_words)
            return

        from faster_whisper import BatchedInferencePipeline

        gap = self.settings.whisper_recover_gap_seconds
        first_share = FIRST_PASS_SHARE if gap > 0 else 1.0
        pipeline = BatchedInferencePipeline(model=self._model)
        segments, self._info = pipeline.transcribe(audio.samples, **self._decoding_params)
        spans: list[tuple[float, float]] = []
        for seg in segments:
            spans.extend((w.start, w.end) for w in seg.words or [])
            self._progress = first_share * min(seg.end / max(audio.duration, 1e-9), 1.0)
            yield _segment(seg, keep_words)
        if gap <= 0:
            return
        speech = self._info.transcription_options.clip_timestamps or []
        clips = unworded_speech(speech, spans, min_gap=gap, sample_rate=audio.sample_rate)
        self._recovery = {"min_gap_seconds": gap, "clip_timestamps": clips}
        self._progress = first_share
        if not clips:
            return
        # Out of time order: the transcribe stage sorts segments by start.
        again = {k: v for k, v in self._decoding_params.items() if k not in ("vad_filter", "vad_parameters")}
        again["word_timestamps"] = keep_words
        again["language"] = self._info.language  # as detected on the whole file, not per clip
        recovered, _ = pipeline.transcribe(audio.samples, clip_timestamps=clips, **again)
        for seg in recovered:
            done = sum(1 for c in clips if c["start"] < seg.end)
            self._progress = first_share + (1.0 - first_share) * done / len(clips)
            if is_real_speech(seg):
                yield _segment(seg, keep_words)

    def progress(self) -> float | None:
        return self._progress

    def _wants_words(self) -> bool:
        o, s = self.options, self.settings
        return s.asr_word_timestamps if o.word_timestamps is None else o.word_timestamps

    def result_info(self) -> AsrOutput:
        info = self._info
        return AsrOutput(
            segments=[],
            language=getattr(info, "language", None),
            language_probability=getattr(info, "language_probability", None),
            duration=float(getattr(info, "duration", 0.0) or 0.0),
            speech_duration=getattr(info, "duration_after_vad", None),
        )

    def version(self) -> AsrVersion:
        return AsrVersion(
            name=self.name,
            model_variant=self.model_variant,
            model_path=str(self.model_path),
            checkpoint_hash=checkpoint_hash(self.model_path, self.settings),
            compute_type=self.compute_type,
            device=self.device,
            decoding_params=self._decoding_params,
            inference=self._inference,
            recovery=self._recovery,
            library_version=f"faster-whisper {package_version('faster-whisper')}, "
            f"ctranslate2 {package_version('ctranslate2')}",
        )

    def unload(self) -> None:
        self._model = None
        gc.collect()
        if self.device == "cuda":
            _empty_cuda_cache()


def _segment(seg: Any, keep_words: bool) -> Segment:
    words = None
    if keep_words and seg.words:
        words = [
            Word(start=round(w.start, 3), end=round(w.end, 3), word=w.word, probability=w.probability)
            for w in seg.words
        ]
    return Segment(
        start=round(seg.start, 3),
        end=round(seg.end, 3),
        text=seg.text.strip(),
        avg_logprob=seg.avg_logprob,
        words=words,
        seek=getattr(seg, "seek", None),
        temperature=getattr(seg, "temperature", None),
        compression_ratio=getattr(seg, "compression_ratio", None),
        no_speech_prob=getattr(seg, "no_speech_prob", None),
    )


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        pass
