"""Why batched decoding loses a little WER on en_hp0, and the variants tried to win it back.

Each variant decodes the same samples with the same model (tiny.en int8), beam 5 and VAD
(min_silence_duration_ms=500, speech_pad_ms=400); only the decoding strategy differs. One process,
the model loaded once, variants interleaved over rounds. Prints wall seconds, WER (basic and
Whisper-normalised) and the words each variant drops or changes against the reference.

    .venv/bin/python benchmarks/decoding_variants.py                       # en_hp0, 2 rounds
    .venv/bin/python benchmarks/decoding_variants.py --audio benchmarks/work/long_45min.wav

Variants:
  sequential   plain WhisperModel.transcribe, condition_on_previous_text (the bare baseline)
  batched      BatchedInferencePipeline, batch 4 (what maie runs for audio >= 60 s)
  batched-ts   the same with timestamp tokens (without_timestamps=False)
  batched-c20  the same with 20 s chunks instead of 30 s
  conditioned  batched, the chunks split into 4 contiguous regions decoded in lockstep, each
               chunk prompted with its region's previous text (conditioning inside a batch)
  maie         what the pipeline runs: batched, then the speech left without words decoded again
               (runner/asr/whisper_recovery.py, WHISPER_RECOVER_GAP_SECONDS)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import data_path, has_whisper_normaliser, normalise, wer

ROOT = Path(__file__).resolve().parent.parent
HP0 = "audio/en_hp0_henry_f_phillips_spoken_wikipedia.ogg"
VAD = {"min_silence_duration_ms": 500, "speech_pad_ms": 400}


def conditioned_pipeline(model: Any) -> Any:
    """A BatchedInferencePipeline whose batch items are consecutive chunks of separate regions,
    each prompted with the text its region decoded last."""
    from faster_whisper import BatchedInferencePipeline

    class Conditioned(BatchedInferencePipeline):  # type: ignore[misc]
        previous: list[list[int]]

        def generate_segment_batched(self, features: np.ndarray, tokenizer: Any, options: Any) -> Any:
            # CTranslate2 wants <|startoftranscript|> at one position: same prompt length for all.
            keep = min([len(p) for p in self.previous] + [self.model.max_length // 2 - 1])
            prompts = [
                self.model.get_prompt(tokenizer, p[len(p) - keep :] if keep else [], without_timestamps=True)
                for p in self.previous
            ]
            encoder_output = self.model.encode(features)
            results = self.model.model.generate(
                encoder_output,
                prompts,
                beam_size=options.beam_size,
                max_length=self.model.max_length,
                suppress_blank=options.suppress_blank,
                suppress_tokens=options.suppress_tokens,
                return_scores=True,
                return_no_speech_prob=True,
            )
            out = []
            for r in results:
                n = len(r.sequences_ids[0])
                out.append(
                    {
                        "avg_logprob": r.scores[0] * n / (n + 1),
                        "no_speech_prob": r.no_speech_prob,
                        "tokens": r.sequences_ids[0],
                    }
                )
            return encoder_output, out

        def _batched_segments_generator(  # type: ignore[override]
            self,
            features: Any,
            tokenizer: Any,
            chunks_metadata: Any,
            batch_size: int,
            options: Any,
            log_progress: bool,
        ) -> Iterator[Any]:
            n = len(features)
            b = max(1, min(batch_size, n))
            bounds = [round(i * n / b) for i in range(b + 1)]
            regions = [list(range(bounds[i], bounds[i + 1])) for i in range(b)]
            previous: list[list[int]] = [[] for _ in regions]
            done: dict[int, Any] = {}
            emitted = 0
            for k in range(max(len(r) for r in regions)):
                active = [ri for ri, r in enumerate(regions) if k < len(r)]
                idx = [regions[ri][k] for ri in active]
                self.previous = [previous[ri] for ri in active]
                # One batch through faster-whisper's own generator: without timestamps, one segment
                # per chunk, in the order given.
                step = super()._batched_segments_generator(
                    features[idx], tokenizer, [chunks_metadata[i] for i in idx], len(idx), options, False
                )
                for ri, i, segment in zip(active, idx, step, strict=True):
                    done[i] = segment
                    previous[ri] += segment.tokens
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1

    return Conditioned(model)


def variants(model: Any) -> dict[str, Callable[[np.ndarray], tuple[Iterable[Any], Any]]]:
    from faster_whisper import BatchedInferencePipeline

    common: dict[str, Any] = {"language": "en", "beam_size": 5, "vad_filter": True, "vad_parameters": VAD}

    def batched(**extra: Any) -> Callable[[np.ndarray], tuple[Iterable[Any], Any]]:
        return lambda audio: BatchedInferencePipeline(model).transcribe(
            audio, batch_size=4, **common, **extra
        )

    from maie.contract import AsrOptions
    from maie.runner.asr.base import AsrInput
    from maie.runner.asr.whisper import WhisperBackend
    from maie.settings import Settings

    backend = WhisperBackend(Settings(_env_file=None), AsrOptions())  # type: ignore[call-arg]
    backend.load()

    def maie(audio: np.ndarray) -> tuple[Iterable[Any], Any]:
        segments = list(backend.transcribe(AsrInput(audio, 16000, len(audio) / 16000)))
        return sorted(segments, key=lambda s: s.start), None

    return {
        "maie": maie,
        "sequential": lambda audio: model.transcribe(audio, condition_on_previous_text=True, **common),
        "batched": batched(),
        "batched-ts": batched(without_timestamps=False),
        "batched-c20": batched(chunk_length=20),
        "conditioned": lambda audio: conditioned_pipeline(model).transcribe(audio, batch_size=4, **common),
    }


def word_errors(reference: str, hypothesis: str) -> list[str]:
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    out = jiwer.process_words(ref, hyp)
    r, h = ref.split(), hyp.split()
    return [
        f"{a.type}: {' '.join(r[a.ref_start_idx : a.ref_end_idx])!r} -> "
        f"{' '.join(h[a.hyp_start_idx : a.hyp_end_idx])!r}"
        for a in out.alignments[0]
        if a.type != "equal"
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, default=None, help="default: en_hp0 from tests/data")
    ap.add_argument(
        "--reference", type=Path, default=None, help="default: en_hp0's reference, or <audio>.ref.txt"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--errors", action="store_true", help="print each variant's word errors")
    args = ap.parse_args()

    from faster_whisper import WhisperModel, decode_audio

    from maie.model_paths import resolve_whisper_model
    from maie.settings import Settings

    if args.audio is None:
        args.audio = data_path(HP0)
        args.reference = args.reference or data_path(f"refs/{args.audio.stem}.txt")
    ref_path = args.reference or args.audio.with_suffix(".ref.txt")
    reference = ref_path.read_text(encoding="utf-8")
    audio = decode_audio(str(args.audio))
    path = resolve_whisper_model("tiny.en", Settings(_env_file=None))  # type: ignore[call-arg]
    model = WhisperModel(str(path), device="cpu", compute_type="int8", local_files_only=True)
    table = variants(model)
    names = [n for n in args.only.split(",") if n] or list(table)
    texts: dict[str, str] = {}
    print(f"{args.audio.name}: {len(audio) / 16000:.0f} s; {args.rounds} interleaved round(s)")
    print("variant       wall s   WER     WER (Whisper norm.)")
    for rnd in range(args.rounds):
        for name in names:
            start = time.perf_counter()
            segments, _ = table[name](audio)
            text = " ".join(s.text.strip() for s in segments)
            wall = time.perf_counter() - start
            texts[name] = text
            norm = f"{wer(reference, text, 'whisper'):.4f}" if has_whisper_normaliser() else "–"
            print(
                f"{name:12s} {wall:7.2f}   {wer(reference, text):.4f}  {norm}   (round {rnd + 1})", flush=True
            )
    if args.errors:
        for name in names:
            print(f"\n== {name}")
            print("\n".join(word_errors(reference, texts[name])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
