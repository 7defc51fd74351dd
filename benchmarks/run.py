"""MAIE benchmarks: per-stage seconds, RTF and peak RSS per recording; maie vs bare sequential
faster-whisper vs whisper-ctranslate2 on the same model and parameters (time ratio and WER); a long
input made by concatenating real recordings; the API under concurrent clients. Writes
benchmarks/results/<date>-<machine>.md and a PNG plot.

    .venv/bin/python benchmarks/run.py                  # everything (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick          # hp0 comparison + short clips, no 45-min input

Every measured run is a fresh subprocess (model load included, as a user waits for it), so peak RSS
is that run's own (os.wait4). Comparisons are interleaved (maie, bare, wct2, maie, bare, wct2 …) so
that load from other processes on a shared machine hits every engine alike; ratios are per round.
Never part of the test suite; timings are reports, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import WORK, Recording, build_long_input, has_whisper_normaliser, recordings, wer, why_missing
from runs import Run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WCT2_VENV = WORK / "wct2"
MODEL = "tiny.en"
COMPUTE_TYPE = "int8"
BEAM = 5
VAD = {"min_silence_duration_ms": 500, "speech_pad_ms": 400}


# --------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line
# --------------------------------------------------------------------------------------
def worker_maie(audio: str, features: str, template: str | None) -> dict[str, Any]:
    """The maie pipeline API, exactly as `maie transcribe` runs it (default settings: tiny.en int8,
    beam 5, VAD 500/400, batched inference for long audio), result.json and exports written.

    Time spent inside faster-whisper (model load, VAD, decoding) is clocked in the same run, so
    the pipeline's own overhead (decoding the file, resampling, hashing, writing) is
    wall - engine_s, with no second run to compare against."""
    from maie.cli import _write_outputs
    from maie.contract import TaskRequest
    from maie.runner.pipeline import run_pipeline
    from maie.settings import Settings

    engine_s = _clock_faster_whisper()
    out_dir = Path(tempfile.mkdtemp(prefix="maie-bench-"))
    settings = Settings(_env_file=None, data_dir=out_dir / "data")  # type: ignore[call-arg]
    request = TaskRequest.model_validate({"features": features.split(","), "template_id": template})
    start = time.perf_counter()
    doc, exports = run_pipeline(Path(audio), request, settings=settings, task_id="bench")
    _write_outputs(doc, exports, out_dir / "out")
    wall = time.perf_counter() - start
    if doc.error:
        return {"wall_s": wall, "error": doc.error}
    asr = doc.versions.asr_backend if doc.versions else None
    return {
        "wall_s": wall,
        "engine_s": engine_s[0],
        "text": doc.results.raw_transcript if doc.results else "",
        "stage_seconds": doc.metrics.stage_seconds if doc.metrics else {},
        "inference": asr.inference if asr else None,
        "decoding_params": asr.decoding_params if asr else None,
    }


def _clock_faster_whisper() -> list[float]:
    """Wrap faster-whisper's entry points to add their time (and their segment generators') to a
    counter; returns the one-element list that accumulates the seconds."""
    import functools
    from collections.abc import Callable, Iterator

    import faster_whisper

    total = [0.0]

    def clocked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - start
            if isinstance(result, tuple) and len(result) == 2:  # transcribe(): (segments, info)
                return _clocked_iter(result[0]), result[1]
            return result

        return wrapper

    def _clocked_iter(segments: Any) -> Iterator[Any]:
        iterator = iter(segments)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                total[0] += time.perf_counter() - start
            yield item

    model_cls = faster_whisper.WhisperModel
    model_cls.__init__ = clocked(model_cls.__init__)  # type: ignore[method-assign]
    model_cls.transcribe = clocked(model_cls.transcribe)  # type: ignore[method-assign]
    batched_cls = faster_whisper.BatchedInferencePipeline
    batched_cls.transcribe = clocked(batched_cls.transcribe)  # type: ignore[method-assign]
    return total


def worker_bare(audio: str) -> dict[str, Any]:
    """Plain sequential faster-whisper: WhisperModel.transcribe with the same model and parameters."""
    from faster_whisper import WhisperModel

    from maie.model_paths import resolve_whisper_model
    from maie.settings import Settings

    path = resolve_whisper_model(MODEL, Settings(_env_file=None))  # type: ignore[call-arg]
    start = time.perf_counter()
    model = WhisperModel(str(path), device="cpu", compute_type=COMPUTE_TYPE, local_files_only=True)
    segments, _ = model.transcribe(
        audio, beam_size=BEAM, vad_filter=True, vad_parameters=VAD, condition_on_previous_text=True
    )
    text = " ".join(s.text.strip() for s in segments)
    return {"wall_s": time.perf_counter() - start, "text": text}


def _spawn(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str, str]:
    """Run a command; (wall seconds, its own peak RSS in MB, stdout, stderr)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {stderr[-1500:]}")
    return wall, usage.ru_maxrss / 1024.0, stdout, stderr


def measure(engine: str, rec: Recording, round_no: int = 0, features: str = "raw_transcript",
            template: str | None = None) -> Run:  # fmt: skip
    try:
        if engine == "wct2":
            return _measure_wct2(rec, round_no)
        args = [
            sys.executable,
            __file__,
            "--worker",
            engine,
            "--audio",
            str(rec.path),
            "--features",
            features,
        ]
        if template:
            args += ["--template", template]
        process_s, rss, stdout, _ = _spawn(args)
        data = json.loads(stdout.strip().splitlines()[-1])
        run = Run(
            engine=engine,
            recording=rec.name,
            duration=rec.duration,
            wall_s=round(data["wall_s"], 3),
            peak_rss_mb=round(rss, 1),
            process_s=round(process_s, 3),
            text=data.get("text", ""),
            stage_seconds=data.get("stage_seconds", {}),
            engine_s=data.get("engine_s"),
            inference=data.get("inference"),
            round=round_no,
            error=data.get("error"),
        )
    except Exception as exc:  # a failed engine is reported, not fatal to the whole benchmark
        return Run(engine, rec.name, rec.duration, 0.0, 0.0, round=round_no, error=str(exc)[:300])
    if rec.reference and rec.language == "en" and not run.error:
        _score(run, rec.reference)
    return run


def _score(run: Run, reference: str) -> None:
    run.wer = round(wer(reference, run.text), 4)
    if has_whisper_normaliser():
        run.wer_whisper_norm = round(wer(reference, run.text, "whisper"), 4)


def _measure_wct2(rec: Recording, round_no: int) -> Run:
    """whisper-ctranslate2 (the CLI a user would pick instead) from its own venv, same model dir."""
    from maie.model_paths import resolve_whisper_model
    from maie.settings import Settings

    exe = WCT2_VENV / "bin" / "whisper-ctranslate2"
    if not exe.is_file():
        raise RuntimeError(f"whisper-ctranslate2 is not installed: {ensure_wct2.__doc__}")
    path = resolve_whisper_model(MODEL, Settings(_env_file=None))  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory(prefix="wct2-") as out_dir:
        cmd = [
            str(exe), str(rec.path), "--model_directory", str(path), "--device", "cpu",
            "--compute_type", COMPUTE_TYPE, "--beam_size", str(BEAM), "--vad_filter", "True",
            "--vad_min_silence_duration_ms", str(VAD["min_silence_duration_ms"]),
            "--condition_on_previous_text", "True",  # no speech_pad flag: faster-whisper's default is 400
            "--output_dir", out_dir, "--output_format", "txt", "--verbose", "False",
        ]  # fmt: skip
        wall, rss, _, _ = _spawn(cmd)
        txt = Path(out_dir) / (rec.path.stem + ".txt")
        text = txt.read_text(encoding="utf-8") if txt.is_file() else ""
    run = Run(
        "wct2", rec.name, rec.duration, round(wall, 3), round(rss, 1), round(wall, 3), text, round=round_no
    )
    if rec.reference and rec.language == "en":
        _score(run, rec.reference)
    return run


def ensure_wct2() -> bool:
    """python3 -m venv benchmarks/work/wct2 && benchmarks/work/wct2/bin/pip install whisper-ctranslate2"""
    exe = WCT2_VENV / "bin" / "whisper-ctranslate2"
    if exe.is_file():
        return True
    try:
        subprocess.run([sys.executable, "-m", "venv", str(WCT2_VENV)], check=True)
        subprocess.run([str(WCT2_VENV / "bin" / "pip"), "install", "-q", "whisper-ctranslate2"], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"whisper-ctranslate2 could not be installed: {exc}", file=sys.stderr)
        return False
    return exe.is_file()


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def v(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from maie.catalog import cuda_available

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": "CUDA device visible" if cuda_available() else "none (CPU only; no GPU figures)",
        "python": platform.python_version(),
        "faster-whisper": v("faster-whisper"),
        "ctranslate2": v("ctranslate2"),
        "llama-cpp-python": v("llama-cpp-python"),
        "loadavg_start": os.getloadavg(),
    }


def compare(rec: Recording, rounds: int, engines: list[str], log: list[Run]) -> list[Run]:
    runs: list[Run] = []
    for r in range(rounds):
        for engine in engines:
            run = measure(engine, rec, r)
            runs.append(run)
            log.append(run)
            _progress(run)
    return runs


def _progress(run: Run) -> None:
    status = f"ERROR {run.error}" if run.error else f"{run.wall_s:7.2f}s  RTF {run.rtf:.3f}  WER {run.wer}"
    status += f" / {run.wer_whisper_norm}" if run.wer_whisper_norm is not None else ""
    print(f"  [{run.engine:5}] {run.recording:48} r{run.round}  {status}  ({os.getloadavg()[0]:.1f} load)",
          flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["maie", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    ap.add_argument("--features", default="raw_transcript", help=argparse.SUPPRESS)
    ap.add_argument("--template", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="hp0 comparison and short clips; no long input")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds on hp0 (default 3)")
    ap.add_argument("--long-minutes", type=float, default=45.0, help="length of the concatenated input")
    ap.add_argument("--no-wct2", action="store_true", help="skip whisper-ctranslate2")
    ap.add_argument("--no-api", action="store_true", help="skip the API benchmark")
    ap.add_argument("--no-llm", action="store_true", help="skip the run with the LLM stages")
    ap.add_argument("--machine", default=None, help="name in the report file (default: cpu<N>)")
    ap.add_argument(
        "--target", default="en_hp0", help="recording (name prefix) of the interleaved comparison"
    )
    ap.add_argument("--recordings", default="", help="only recordings whose name contains this")
    args = ap.parse_args()

    if args.worker:
        if args.worker == "maie":
            result = worker_maie(args.audio, args.features, args.template)
        else:
            result = worker_bare(args.audio)
        print(json.dumps(result))
        return 0

    info = machine_info()
    print(f"MAIE benchmark on {info['cpu']} ({info['cores']} cores), GPU: {info['gpu']}", flush=True)
    engines = ["maie", "bare"] + ([] if args.no_wct2 or not ensure_wct2() else ["wct2"])
    log: list[Run] = []
    recs = recordings()
    hp0 = next(r for r in recs if r.name.startswith(args.target))

    print(
        f"== hp0 ({hp0.duration:.0f} s): {args.rounds} interleaved rounds of {', '.join(engines)}", flush=True
    )
    hp0_runs = compare(hp0, args.rounds, engines, log)

    print("== every recording: maie and bare faster-whisper, one round", flush=True)
    per_recording: list[Run] = []
    for rec in recs:
        if rec is hp0 or args.recordings not in rec.name:
            continue
        per_recording += compare(rec, 1, ["maie", "bare"], log)

    long_runs: list[Run] = []
    long_rec = None
    if not args.quick and args.long_minutes > 0:
        long_rec = build_long_input(args.long_minutes)
        print(f"== long input {long_rec.name} ({long_rec.duration / 60:.1f} min)", flush=True)
        long_runs = compare(long_rec, 1, engines, log)

    llm_run = None
    mm1 = next((r for r in recs if r.name == "en_mm1_micro_machines.wav"), None)
    if not args.no_llm and mm1 is None:
        print(f"== the LLM stages: skipped, {why_missing('audio/en_mm1_micro_machines.wav')}", flush=True)
    elif not args.no_llm:
        print("== the LLM stages (bundled SmolLM2 summary) on en_mm1", flush=True)
        llm_run = measure("maie", mm1, features="raw_transcript,clean_transcript,summary",
                          template="meeting_notes_v1")  # fmt: skip
        _progress(llm_run)

    api: dict[str, Any] | None = None
    if not args.no_api:
        print("== API: submissions/s and status-poll latency", flush=True)
        from api_load import run_api_benchmark

        api = run_api_benchmark()
        print(f"  {api}", flush=True)

    info["loadavg_end"] = os.getloadavg()
    from report import write_report

    machine = args.machine or f"cpu{os.cpu_count()}"
    path = write_report(
        RESULTS, machine, info, hp0, hp0_runs, per_recording, long_rec, long_runs, llm_run, api
    )
    raw = path.with_suffix(".json")
    raw.write_text(json.dumps({"machine": info, "runs": [asdict(r) for r in log],
                               "llm_run": asdict(llm_run) if llm_run else None, "api": api},
                              indent=1, default=str))  # fmt: skip
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
