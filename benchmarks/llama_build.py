"""Tokens/s of the portable llama.cpp build against a native one (and llama.cpp's runtime CPU dispatch).

MAIE installs llama-cpp-python built by scripts/build_llama_wheel.sh: GGML_NATIVE=OFF and a fixed
x86-64-v3 baseline (AVX2/FMA/F16C/BMI2, no AVX-512, no AMX), because a GGML_NATIVE=ON build crashes
with a general protection fault on another CPU. This measures what the fixed baseline costs here.

    .venv/bin/python benchmarks/llama_build.py                 # build what is missing, then measure
    .venv/bin/python benchmarks/llama_build.py --rounds 7 --threads 1 --only portable,native

Builds (each ~4-5 min on 2 cores, made once, kept in benchmarks/work/, gitignored):
  portable  the wheel bootstrap installs (scripts/build_llama_wheel.sh, its own keyed cache; reused
            when already built, never rebuilt with other flags)
  native    GGML_NATIVE=ON: -march=native, tuned to this CPU. Built for this measurement only, into
            benchmarks/work/wheels/ (never into the cache bootstrap installs from)
  dispatch  GGML_BACKEND_DL=ON + GGML_CPU_ALL_VARIANTS=ON: llama.cpp's runtime CPU dispatch (one
            libggml-cpu-<variant>.so per CPU generation, the best one picked at start). See the
            report: llama-cpp-python 0.3.36's wheel ships none of those libraries and never calls
            ggml_backend_load_all, so this variant adds them from the kept build tree and loads them
            with ctypes (ggml_backend_load_all_from_path) — what it would take to use it.

Each build is installed with `pip install --target` into its own directory and measured in its own
child process (PYTHONPATH points at that directory first; the child prints which llama_cpp it
imported). Same model (the bundled SmolLM2-135M Q4_1), prompt, seed, context and threads; builds
interleaved over rounds; medians per build and the ratio to native. Prompt evaluation and generation
are timed separately by llama.cpp itself (llama_perf_context: t_p_eval_ms / n_p_eval, t_eval_ms /
n_eval), so Python's per-token overhead is not in the figures.

Output: benchmarks/results/<date>-llama-build-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "llama_build"
RESULTS = ROOT / "benchmarks" / "results"

COMMON = "-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
FLAGS = {
    "native": f"-DGGML_NATIVE=ON {COMMON}",
    "dispatch": f"-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON {COMMON}",
}

PROMPT = (
    "The meeting opened with a review of the quarterly budget. The finance team reported that spending "
    "on cloud services rose by twelve percent, mostly because of the new transcription pipeline, while "
    "travel costs fell. The product group asked for two more engineers to finish the mobile release "
    "before the end of the year; the request was deferred until the hiring plan is approved. Support "
    "said that response times improved after the new triage rules, but customers still complain about "
    "the export feature, which fails on files longer than two hours. Action items: finance prepares a "
    "detailed cloud cost breakdown, product writes a staffing proposal, support collects failing files. "
    "Summarize the meeting in three bullet points."
)


def llama_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if '"llama-cpp-python==' in line:
            return line.split("==")[1].split('"')[0]
    raise SystemExit("no llama-cpp-python pin in pyproject.toml")


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _key(flags: str) -> str:
    pytag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    text = "\n".join([llama_version(), pytag, platform.machine(), flags]) + "\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _wheel_in(directory: Path) -> Path | None:
    found = sorted(directory.glob("llama_cpp_python-*.whl"))
    return found[0] if found else None


def build(variant: str) -> Path:
    """The wheel directory of `variant` (built when missing)."""
    if variant == "portable":
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build_llama_wheel.sh"), python()],
            check=True,
            capture_output=True,
            text=True,
        )
        return Path(out.stdout.strip().splitlines()[-1]).parent
    flags = " ".join(FLAGS[variant].split())
    directory = WORK / "wheels" / f"llama-cpp-python-{llama_version()}-{variant}-{_key(flags)}"
    if _wheel_in(directory) is not None and (directory / "build-info.json").is_file():
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"building {variant} ({flags}) into {directory} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "CMAKE_ARGS": flags, "FORCE_CMAKE": "1"}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    started = time.monotonic()
    # Never pip's cache (it does not key on CMAKE_ARGS); keep the build tree: the dispatch
    # variant's per-CPU libraries are built there but not put into the wheel.
    subprocess.run(
        [
            python(),
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            "llama-cpp-python",
            "--wheel-dir",
            str(tmp),
            "-C",
            f"build-dir={tmp / 'build'}",
            f"llama-cpp-python=={llama_version()}",
        ],
        check=True,
        env=env,
    )
    info = {
        "package": "llama-cpp-python",
        "version": llama_version(),
        "cpu_baseline": variant,
        "cmake_args": flags,
        "key": _key(flags),
        "built_on": platform.machine(),
        "build_seconds": round(time.monotonic() - started, 1),
        "benchmark_only": True,
    }
    (tmp / "build-info.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def install(variant: str, wheel_dir: Path) -> Path:
    """A --target directory with this build's llama_cpp (and, for dispatch, its CPU variant libraries)."""
    wheel = _wheel_in(wheel_dir)
    assert wheel is not None, wheel_dir
    target = WORK / "site" / wheel_dir.name
    stamp = target / ".from-wheel"
    if not (stamp.is_file() and stamp.read_text() == str(wheel)):
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [
                python(),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-cache-dir",
                "--target",
                str(target),
                str(wheel),
            ],
            check=True,
        )
        stamp.write_text(str(wheel))
    if variant == "dispatch":
        # Where the wheel puts its CPU backend libraries: llama.cpp's own install rule sends the
        # GGML_BACKEND_DL modules to <platlib>/bin/, not to llama_cpp/lib/ beside libggml.so.
        with zipfile.ZipFile(wheel) as whl:
            shipped = sorted(n for n in whl.namelist() if Path(n).name.startswith("libggml-cpu"))
        (target / ".shipped-cpu-libs.json").write_text(json.dumps(shipped))
        lib = target / "llama_cpp" / "lib"
        for name in shipped:
            if not name.startswith("llama_cpp/"):
                shutil.copy2(target / name, lib / Path(name).name)
    return target


# --------------------------------------------------------------------------------------------
# The child: one build, one measurement
# --------------------------------------------------------------------------------------------
def measure_child(args: argparse.Namespace) -> None:
    import ctypes

    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    result: dict[str, Any] = {"llama_cpp": llama_cpp.__file__, "version": llama_cpp.__version__}
    if args.load_cpu_variants:
        # The libggml libllama already loaded (by its soname: lib/libggml.so is a separate copy
        # of the file in the wheel, and a second copy would have a registry of its own).
        ggml = ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOW | os.RTLD_NOLOAD)
        ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
        result["devices_before_load_all"] = ggml.ggml_backend_dev_count()
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
        result["devices_after_load_all"] = ggml.ggml_backend_dev_count()
    result["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()

    from maie.model_paths import resolve_gguf
    from maie.settings import Settings

    model = resolve_gguf(None, Settings())
    llm = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=1024,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        seed=0,
        verbose=False,
    )
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    rounds = []
    for _ in range(args.repeats):
        llm.reset()  # no prefix reuse: the whole prompt is evaluated every time
        llama_cpp.llama_perf_context_reset(llm.ctx)
        # With one thread all the work is on this thread: its CPU time is the work itself, which
        # other processes on a shared machine delay (wall time) but do not add to.
        c0 = time.thread_time()
        llm.eval(tokens)  # one batch: llama.cpp counts it as prompt evaluation
        c1 = time.thread_time()
        for _ in range(args.gen_tokens):  # greedy: every build decodes the same tokens
            llm.eval([llm.sample(top_k=1, temp=0.0)])  # one token: counted as generation
        c2 = time.thread_time()
        perf = llama_cpp.llama_perf_context(llm.ctx)
        rounds.append(
            {
                "prompt_tokens": perf.n_p_eval,
                "prompt_ms": perf.t_p_eval_ms,
                "prompt_cpu_ms": 1000 * (c1 - c0),
                "prompt_cpu_tokens": len(tokens),
                "gen_tokens": perf.n_eval,
                "gen_ms": perf.t_eval_ms,
                "gen_cpu_ms": 1000 * (c2 - c1),
                "gen_cpu_tokens": args.gen_tokens,  # sampled and evaluated on this thread
            }
        )
    result["model"] = model.name
    result["rounds"] = rounds
    print(json.dumps(result))


def run_child(variant: str, target: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    cmd = [
        python(),
        __file__,
        "--child",
        "--threads",
        str(args.threads),
        "--gen-tokens",
        str(args.gen_tokens),
        "--repeats",
        str(args.repeats),
    ]
    if variant == "dispatch":
        cmd.append("--load-cpu-variants")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = [ln.split("loaded CPU backend from", 1)[1].strip() for ln in proc.stderr.splitlines()
              if "loaded CPU backend from" in ln]  # fmt: skip
    if loaded:
        out["cpu_backend_loaded"] = Path(loaded[-1]).name
    if not out["llama_cpp"].startswith(str(target)):
        raise SystemExit(f"{variant}: the child imported {out['llama_cpp']}, not the build in {target}")
    return out


def dispatch_without_loading(target: Path, keep_variant_libs: bool) -> dict[str, Any]:
    """The dispatch build used as llama-cpp-python uses it (nothing calls ggml_backend_load_all_from_path):
    as pip installs it (no CPU libraries), or with the variant libraries put beside libggml.so."""
    plain = target.with_name(target.name + ("-with-variants" if keep_variant_libs else "-as-shipped"))
    shutil.rmtree(plain, ignore_errors=True)
    shutil.copytree(target, plain, symlinks=True)
    if not keep_variant_libs:
        for so in (plain / "llama_cpp" / "lib").glob("libggml-cpu-*.so"):
            so.unlink()
    code = (
        "import llama_cpp\n"
        "from maie.model_paths import resolve_gguf\nfrom maie.settings import Settings\n"
        "print('system_info:', llama_cpp.llama_print_system_info().decode().strip(), flush=True)\n"
        "llm = llama_cpp.Llama(model_path=str(resolve_gguf(None, Settings())), n_ctx=256, verbose=True)\n"
        "print('loaded; one token:', llm('Hi', max_tokens=1)['choices'][0]['text'], flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plain), str(ROOT)])}
    proc = subprocess.run(
        [python(), "-X", "faulthandler", "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    shutil.rmtree(plain, ignore_errors=True)
    errors = [ln for ln in proc.stderr.splitlines() if "backend" in ln.lower() or "Error" in ln]
    return {
        "variant_libs_beside_libggml": keep_variant_libs,
        "returncode": proc.returncode,
        "stdout": proc.stdout[-1500:],
        "stderr_backend_lines": errors[-6:],
        "stderr_tail": proc.stderr.strip().splitlines()[-4:],
    }


METRICS = {
    "prompt_tps_wall": ("prompt", "ms"),
    "prompt_tps_cpu": ("prompt", "cpu_ms"),
    "gen_tps_wall": ("gen", "ms"),
    "gen_tps_cpu": ("gen", "cpu_ms"),
}


def tps(measurement: dict[str, float], phase: str, clock: str) -> float:
    """Tokens per second of wall time (llama.cpp's own timer) or of this thread's CPU time."""
    tokens = measurement[f"{phase}_cpu_tokens" if clock == "cpu_ms" else f"{phase}_tokens"]
    return 1000 * tokens / measurement[f"{phase}_{clock}"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            wanted = ("avx", "fma", "f16c", "bmi", "amx", "sse4", "avx512")
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(wanted))
    return []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load-cpu-variants", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="portable,native,dispatch", help="Builds to measure.")
    parser.add_argument("--build-only", action="store_true", help="Build (and install) and stop.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (child processes).")
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per child (median taken).")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (batch and generation).")
    parser.add_argument("--gen-tokens", type=int, default=64, help="Generated tokens per measurement.")
    args = parser.parse_args()
    if args.child:
        measure_child(args)
        return

    variants = [v.strip() for v in args.only.split(",") if v.strip()]
    builds = {v: build(v) for v in variants}
    targets = {v: install(v, d) for v, d in builds.items()}
    if args.build_only:
        for v in variants:
            print(v, builds[v], targets[v])
        return

    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            out = run_child(v, targets[v], args)
            runs[v].append(out)
            if "error" in out:
                print(f"round {r + 1} {v}: {out['error']}\n{out['stderr']}", file=sys.stderr)
                continue
            last = out["rounds"][-1]
            print(
                f"round {r + 1} {v:9s} prompt {tps(last, 'prompt', 'ms'):7.1f} tok/s "
                f"({tps(last, 'prompt', 'cpu_ms'):7.1f} per CPU s)  gen {tps(last, 'gen', 'ms'):6.1f} tok/s "
                f"({tps(last, 'gen', 'cpu_ms'):6.1f} per CPU s)",
                file=sys.stderr,
                flush=True,
            )

    summary: dict[str, dict[str, Any]] = {}
    for v in variants:
        good = [out for out in runs[v] if "error" not in out]
        if not good:
            summary[v] = {"error": runs[v][0].get("stderr", "")[-500:]}
            continue
        figures: dict[str, Any] = {}
        for metric, (phase, clock) in METRICS.items():
            # Per child: the median of its repeats; then the median (and best) over rounds.
            per_round = [statistics.median(tps(m, phase, clock) for m in out["rounds"]) for out in good]
            figures[metric] = {
                "median": round(statistics.median(per_round), 1),
                "best": round(max(per_round), 1),
                "rounds": [round(x, 1) for x in per_round],
            }
        summary[v] = {
            **figures,
            "prompt_tokens": good[0]["rounds"][0]["prompt_tokens"],
            "gen_tokens": good[0]["rounds"][0]["gen_tokens"],
            "system_info": good[0]["system_info"],
            "build": json.loads((builds[v] / "build-info.json").read_text()),
            **{
                k: good[0][k]
                for k in ("devices_before_load_all", "devices_after_load_all", "cpu_backend_loaded")
                if k in good[0]
            },
        }
    if "native" in summary and "error" not in summary["native"]:
        base = summary["native"]
        for figures in summary.values():
            if "error" in figures:
                continue
            for metric in METRICS:
                # Paired: this build's round r against native's round r (adjacent in time).
                pairs = [
                    a / b for a, b in zip(figures[metric]["rounds"], base[metric]["rounds"], strict=False)
                ]
                figures[metric]["vs_native_paired_median"] = round(statistics.median(pairs), 3)
                figures[metric]["vs_native_best"] = round(figures[metric]["best"] / base[metric]["best"], 3)

    as_shipped = (
        [dispatch_without_loading(targets["dispatch"], keep) for keep in (False, True)]
        if "dispatch" in targets
        else None
    )
    shipped_libs = (
        json.loads((targets["dispatch"] / ".shipped-cpu-libs.json").read_text())
        if "dispatch" in targets
        else None
    )
    report = {
        "date": date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags()},
        "settings": {
            "threads": args.threads,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "gen_tokens": args.gen_tokens,
            "n_ctx": 1024,
            "n_batch": 512,
            "seed": 0,
            "sampling": "greedy (temp 0, top_k 1)",
        },
        "summary": summary,
        "dispatch_wheel_cpu_libs": shipped_libs,
        "dispatch_as_shipped": as_shipped,
        "runs": runs,
    }
    report["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{report['date']}-llama-build-cpu{os.cpu_count()}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(json.dumps({"summary": summary, "dispatch_as_shipped": as_shipped}, indent=1))
    print(f"written: {stem.with_suffix('.json')} and .md", file=sys.stderr)


def markdown(report: dict[str, Any]) -> str:
    """The tables of the report (the reading of them is in benchmarks/README.md)."""
    m, st = report["machine"], report["settings"]
    lines = [
        f"# llama.cpp builds: portable vs native ({report['date']})",
        "",
        "Produced by `.venv/bin/python benchmarks/llama_build.py` (see `benchmarks/README.md` for what it",
        "decides). Raw figures: the `.json` file beside this one.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; CPU flags of interest: {' '.join(m['flags'])}",
        f"- Load average (1/5/15 min) at start {report['load_average']['start']}, "
        f"at end {report['load_average']['end']} (a shared machine: builds interleaved per round)",
        f"- SmolLM2-135M-Instruct Q4_1, {st['threads']} thread(s), n_ctx {st['n_ctx']}, "
        f"n_batch {st['n_batch']}, seed {st['seed']}, {st['sampling']}; {st['rounds']} rounds × "
        f"{st['repeats']} measurements per child process; {st['gen_tokens']} generated tokens",
        "",
        "Tokens per second: wall = llama.cpp's timer (what a user waits; other processes on the",
        "machine slow it down), CPU = per second of this thread's CPU time (the work itself; robust to",
        "the load). Each cell: median over rounds (range); ratio = median of the per-round ratios to",
        "native (each round's builds ran back to back), and in brackets the ratio of the best rounds.",
        "",
        "| build | prompt, wall | prompt, CPU | generation, wall | generation, CPU |",
        "|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        if "error" in s:
            lines.append(f"| {name} | failed: {s['error'][:200]!r} | | | |")
            continue
        cells = []
        for metric in METRICS:
            f = s[metric]
            cell = f"{f['median']} ({min(f['rounds'])}–{max(f['rounds'])})"
            if "vs_native_paired_median" in f:
                cell += f"; **{f['vs_native_paired_median']}** [{f['vs_native_best']}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "CMake flags:", ""]
    for name, s in report["summary"].items():
        if "build" in s:
            lines.append(f"- {name}: `{s['build']['cmake_args']}`")
    lines += ["", "What each library was compiled with (`llama_print_system_info`):", ""]
    for name, s in report["summary"].items():
        if "system_info" in s:
            extra = ""
            if "devices_after_load_all" in s:
                extra = (
                    f" — backend devices before `ggml_backend_load_all_from_path`: "
                    f"{s['devices_before_load_all']}, after: {s['devices_after_load_all']}; "
                    f"variant it chose: {s.get('cpu_backend_loaded', '?')}"
                )
            lines.append(f"- {name}: `{s['system_info']}`{extra}")
    if report.get("dispatch_as_shipped") is not None:
        lines += [
            "",
            "## The runtime-dispatch build used as llama-cpp-python uses it",
            "",
            "CPU backend libraries in the wheel pip builds (paths inside the wheel, i.e. under "
            f"site-packages): {', '.join(report['dispatch_wheel_cpu_libs']) or 'none'}.",
            "Loading SmolLM2 without a `ggml_backend_load_all_from_path` call of our own:",
        ]
        for run in report["dispatch_as_shipped"]:
            where = (
                "with the variant libraries copied beside libggml.so"
                if run["variant_libs_beside_libggml"]
                else "as pip installs it"
            )
            lines += [
                "",
                f"- {where}: exit {run['returncode']}",
                "",
                "```",
                *run["stdout"].strip().splitlines()[-3:],
                *run["stderr_backend_lines"],
                *run["stderr_tail"],
                "```",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
