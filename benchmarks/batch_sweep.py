"""Which faster-whisper batch size (and chunk length) pays on this machine? Interleaved rounds of bare
sequential WhisperModel.transcribe vs BatchedInferencePipeline at several batch sizes, same model,
beam and VAD; wall time (model load included) and WER on one recording.

    .venv/bin/python benchmarks/batch_sweep.py --recording en_hp0 --batch-sizes 4,8,16 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import recordings, wer
from run import BEAM, COMPUTE_TYPE, MODEL, VAD, _spawn


def worker(audio: str, batch: int, chunk_length: int | None) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from maie.model_paths import resolve_whisper_model
    from maie.settings import Settings

    path = resolve_whisper_model(MODEL, Settings(_env_file=None))  # type: ignore[call-arg]
    start = time.perf_counter()
    model = WhisperModel(str(path), device="cpu", compute_type=COMPUTE_TYPE, local_files_only=True)
    if batch <= 1:
        segments, _ = model.transcribe(
            audio, beam_size=BEAM, vad_filter=True, vad_parameters=VAD, condition_on_previous_text=True
        )
    else:
        extra: dict[str, Any] = {"chunk_length": chunk_length} if chunk_length else {}
        pipeline = BatchedInferencePipeline(model=model)
        segments, _ = pipeline.transcribe(
            audio, beam_size=BEAM, vad_filter=True, vad_parameters=VAD, batch_size=batch, **extra
        )
    text = " ".join(s.text.strip() for s in segments)
    return {"wall_s": time.perf_counter() - start, "text": text}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--chunk-length", type=int, default=0, help="batched chunk_length (s); 0 = default 30")
    ap.add_argument("--recording", default="en_hp0")
    ap.add_argument("--batch-sizes", default="4,8,16")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.audio, args.batch, args.chunk_length or None)))
        return 0
    rec = next(r for r in recordings() if r.name.startswith(args.recording))
    sizes = [1] + [int(b) for b in args.batch_sizes.split(",")]
    results: dict[int, list[tuple[float, float | None]]] = {b: [] for b in sizes}
    for rnd in range(args.rounds):
        for b in sizes:
            cmd = [sys.executable, __file__, "--worker", "--audio", str(rec.path), "--batch", str(b)]
            cmd += ["--chunk-length", str(args.chunk_length)]
            _, _, out, _ = _spawn(cmd)
            data = json.loads(out.strip().splitlines()[-1])
            w = wer(rec.reference, data["text"]) if rec.reference else None
            results[b].append((data["wall_s"], w))
            print(f"r{rnd} batch {b:2}: {data['wall_s']:6.2f} s  WER {w}", flush=True)
    base = statistics.median(t for t, _ in results[1])
    for b in sizes:
        med = statistics.median(t for t, _ in results[b])
        print(f"batch {b:2}: median {med:6.2f} s  ratio {med / base:.3f}  WER {results[b][0][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
