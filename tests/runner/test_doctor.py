"""`maie doctor`: real models, real child processes, a real crash.

Each CLI run is `python -m maie.cli doctor` in a fresh directory (no .env), with its own DATA_DIR and
a CACHE_DIR shared by the module (the bundled `base` model is joined there once).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maie.model_paths import resolve_gguf
from maie.runner.doctor import (
    Check,
    check_api_key,
    cpu_flags,
    library_features,
    run_child,
)
from maie.runner.llm.llama_cpp import llama_cpp_build
from maie.settings import Settings

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("doctor-cache")


def doctor(
    tmp_path: Path, cache_dir: Path, *args: str, env: dict[str, str] | None = None, name: str = "run"
) -> subprocess.CompletedProcess[str]:
    """`maie doctor ARGS` as a user runs it, in its own directory and DATA_DIR."""
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k not in ("SECRET_API_KEY", "PYTHONPATH")}
    full.update({"DATA_DIR": str(work / "data"), "CACHE_DIR": str(cache_dir), "COLUMNS": "300"})
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "maie.cli", "doctor", *args],
        cwd=work,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_lines(stdout: str) -> list[str]:
    """The per-check lines (the last line is the summary)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines[-1].startswith("maie doctor: "), stdout
    return lines[:-1]


def line_of(stdout: str, needle: str) -> str:
    found = [ln for ln in check_lines(stdout) if needle in ln]
    assert found, f"no check line mentions {needle!r}:\n{stdout}"
    return found[0]


# --------------------------------------------------------------------------------------------
# The good install
# --------------------------------------------------------------------------------------------
def test_good_install_every_line_ok(tmp_path: Path, cache_dir: Path) -> None:
    proc = doctor(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = check_lines(proc.stdout)
    assert all(ln.startswith("ok ") for ln in lines), proc.stdout
    names = [ln.split(":", 1)[0].split(None, 1)[1] for ln in lines]
    for expected in ("python", "packages", "llama.cpp build vs CPU", "DATA_DIR", "API key"):
        assert expected in names
    # Every bundled model was loaded and run in a child process.
    assert (
        "tiny.en" in line_of(proc.stdout, "asr whisper tiny.en") and "transcribed 1 s of audio" in proc.stdout
    )
    assert "transcribed 1 s of audio" in line_of(proc.stdout, "asr whisper base")
    assert "generated one token" in line_of(proc.stdout, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert proc.stdout.splitlines()[-1].startswith(f"maie doctor: all {len(lines)} checks ok")


def test_good_install_json(tmp_path: Path, cache_dir: Path) -> None:
    proc = doctor(tmp_path, cache_dir, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["checks"] and all(c["status"] == "ok" and c["ok"] for c in report["checks"])
    cpu = next(c for c in report["checks"] if c["name"] == "llama.cpp build vs CPU")
    build = llama_cpp_build()
    if build["cpu_baseline"] != "unknown":  # installed by bootstrap: the record is named
        assert build["cpu_baseline"] in cpu["detail"]


# --------------------------------------------------------------------------------------------
# Broken models
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def truncated_gguf(tmp_path: Path) -> Path:
    source = resolve_gguf(None, Settings())
    target = tmp_path / "models" / "SmolLM2-truncated.Q4_1.gguf"
    target.parent.mkdir(parents=True)
    with source.open("rb") as src, target.open("wb") as dst:
        dst.write(src.read(source.stat().st_size // 2))
    return target


def test_truncated_gguf_is_a_problem_named_with_its_fix(
    tmp_path: Path, cache_dir: Path, truncated_gguf: Path
) -> None:
    env = {"LLM_SUMMARY_MODEL": str(truncated_gguf)}
    proc = doctor(tmp_path, cache_dir, env=env, name="text")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = line_of(proc.stdout, "SmolLM2-truncated")
    assert line.startswith("PROBLEM ")
    assert str(truncated_gguf) in line and "summary" in line
    assert "damaged or incomplete" in line and "fix: " in line and "scripts/download_models.sh" in line
    # The bundled model itself is still fine, and so is everything else.
    bundled = line_of(proc.stdout, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert bundled.startswith("ok ") and "bundled" in bundled
    assert sum(ln.startswith("PROBLEM") for ln in check_lines(proc.stdout)) == 1
    assert proc.stdout.splitlines()[-1].startswith("maie doctor: 1 problem(s)")

    # --json carries the same verdicts, check for check.
    as_json = doctor(tmp_path, cache_dir, "--json", env=env, name="json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    text_verdicts = [
        (ln.split(None, 1)[0].lower(), ln.split(None, 1)[1].split(":", 1)[0])
        for ln in check_lines(proc.stdout)
    ]
    json_verdicts = [(c["status"], c["name"]) for c in report["checks"]]
    assert json_verdicts == text_verdicts
    bad = next(c for c in report["checks"] if c["status"] == "problem")
    assert str(truncated_gguf) in bad["detail"] and "download_models.sh" in bad["fix"]
    assert bad["crash"] is None  # a clean error, not a crash


def test_missing_whisper_model_is_a_problem_named_with_its_fix(tmp_path: Path, cache_dir: Path) -> None:
    proc = doctor(tmp_path, cache_dir, env={"WHISPER_MODEL_VARIANT": "no-such-whisper-model"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = line_of(proc.stdout, "no-such-whisper-model")
    assert line.startswith("PROBLEM ") and "configured" in line and "not found" in line
    assert "fix: bash scripts/download_models.sh whisper:no-such-whisper-model" in line
    # The bundled tiny.en is no longer the configured one, but still checked (and fine).
    assert line_of(proc.stdout, "asr whisper tiny.en (bundled)").startswith("ok ")


def test_whisper_on_cuda_without_a_gpu_is_not_called_a_damaged_model(tmp_path: Path, cache_dir: Path) -> None:
    """The GPU image run where no driver is: the fix names the GPU or the CPU settings, not a reinstall."""
    proc = doctor(tmp_path, cache_dir, "--only-configured", env={"WHISPER_DEVICE": "cuda"})
    line = line_of(proc.stdout, "asr whisper tiny.en")
    if line.startswith("ok "):
        pytest.skip("this machine has a usable CUDA GPU")
    assert proc.returncode == 1 and line.startswith("PROBLEM "), proc.stdout
    assert "WHISPER_DEVICE=cpu" in line and "damaged" not in line and "reinstall" not in line


# --------------------------------------------------------------------------------------------
# Crashes
# --------------------------------------------------------------------------------------------
def test_a_crashing_native_library_is_named_with_signal_and_stage(tmp_path: Path, cache_dir: Path) -> None:
    """A llama_cpp whose import dies of SIGSEGV (as a library built for another CPU does): the
    probes die, the doctor does not, and it says which signal, in which stage, and the fix."""
    shadow = tmp_path / "shadow" / "llama_cpp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        textwrap.dedent(
            """
            import ctypes
            ctypes.string_at(0)  # a real segmentation fault, in native code, at import
            """
        )
    )
    proc = doctor(tmp_path, cache_dir, env={"PYTHONPATH": str(shadow.parent)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cpu = line_of(proc.stdout, "llama.cpp build vs CPU")
    assert cpu.startswith("PROBLEM ")
    assert "SIGSEGV" in cpu and "stage 'import llama_cpp" in cpu
    assert "Fatal Python error: Segmentation fault" in cpu and "llama_cpp/__init__.py" in cpu
    assert "fix: rebuild it portable: bash scripts/bootstrap.sh" in cpu
    llm = line_of(proc.stdout, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert llm.startswith("PROBLEM ") and "SIGSEGV" in llm and "import llama_cpp" in llm
    assert "the llama.cpp library crashed: rebuild it portable" in llm
    # ASR does not use llama.cpp: still fine.
    assert line_of(proc.stdout, "asr whisper tiny.en").startswith("ok ")


def test_crash_descriptions_of_real_signals() -> None:
    code = (
        "import os, signal, sys\n"
        "print('stage: warm up', flush=True)\n"
        "print('stage: run the kernel', flush=True)\n"
        "sys.stderr.write('last words\\n'); sys.stderr.flush()\n"
        "os.kill(os.getpid(), getattr(signal, sys.argv[1]))\n"
    )
    ill = run_child([sys.executable, "-X", "faulthandler", "-c", code, "SIGILL"], timeout=60)
    assert ill.signal_name == "SIGILL" and ill.stage == "run the kernel"
    text = ill.describe_failure("the probe")
    assert "crashed with SIGILL (Illegal instruction) during stage 'run the kernel'" in text
    assert "Fatal Python error: Illegal instruction" in text
    assert ill.crash_record() is not None and "last words" in ill.crash_record()["stderr_tail"]  # type: ignore[index]

    killed = run_child([sys.executable, "-c", code, "SIGKILL"], timeout=60)
    assert killed.signal_name == "SIGKILL"
    assert "out-of-memory killer" in killed.describe_failure("the probe")

    slow = run_child(
        [sys.executable, "-c", "import time; print('stage: wait', flush=True); time.sleep(60)"], 1
    )
    assert slow.timed_out and slow.signal_name is None
    assert "did not finish in 1 s (stage: wait)" in slow.describe_failure("the probe")


# --------------------------------------------------------------------------------------------
# Files and the CPU
# --------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_world_readable_api_key_file_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_API_KEY", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert check_api_key(settings).ok  # no file yet: serve creates it 0600
    key = tmp_path / "api-key"
    key.write_text("k" * 43 + "\n")
    key.chmod(0o644)
    check = check_api_key(settings)
    assert not check.ok and "0644" in check.detail and check.fix == f"chmod 600 {key}"
    key.chmod(0o600)
    assert check_api_key(settings).ok
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_world_readable_api_key_through_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    (data / "api-key").write_text("secret\n")
    (data / "api-key").chmod(0o644)
    proc = doctor(tmp_path, cache_dir, "--json")
    assert proc.returncode == 1
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["API key"]["status"] == "problem" and "chmod 600" in checks["API key"]["fix"]
    assert [n for n, c in checks.items() if c["status"] == "problem"] == ["API key"]


@pytest.mark.unit
def test_unwritable_data_dir_is_a_problem(tmp_path: Path) -> None:
    from maie.runner.doctor import check_writable_dir

    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("a file where DATA_DIR should be")  # unwritable as a directory, even for root
    check = check_writable_dir("DATA_DIR", not_a_dir, Settings(data_dir=not_a_dir))
    assert not check.ok and f"cannot write in DATA_DIR={not_a_dir}" in check.detail
    assert check.fix is not None and "set DATA_DIR to a writable directory" in check.fix
    fine = check_writable_dir("DATA_DIR", tmp_path / "new", Settings(data_dir=tmp_path / "new"))
    assert fine.ok and "GiB free" in fine.detail and not list((tmp_path / "new").iterdir())


@pytest.mark.unit
def test_cpu_features_against_the_library(tmp_path: Path) -> None:
    info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AMX_INT8 = 1 | "
    info += "OPENMP = 1 |"
    assert library_features(info) == [
        "SSE3",
        "SSSE3",
        "AVX",
        "AVX2",
        "F16C",
        "FMA",
        "BMI2",
        "AMX_INT8",
        "OPENMP",
    ]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Old Xeon\nflags\t\t: fpu sse sse2 pni ssse3 sse4_2 avx\n"
    )
    parsed = cpu_flags(cpuinfo)
    assert parsed is not None and parsed[0] == "Old Xeon" and "avx2" not in parsed[1]
    assert cpu_flags(tmp_path / "absent") is None


@pytest.mark.unit
def test_model_targets_bundled_and_configured(tmp_path: Path) -> None:
    from maie.runner.doctor import model_targets

    default = model_targets(Settings())
    labels = [t.label for t in default]
    assert labels == [
        "asr whisper tiny.en (configured, bundled)",
        "asr whisper base (bundled)",
        "llm llama_cpp SmolLM2-135M-Instruct.Q4_1.gguf (summary, enhancement, bundled)",
    ]
    configured = Settings(whisper_model_variant="base", llm_summary_model="/m/x.gguf")
    assert [t.label for t in model_targets(configured, bundled=False)] == [
        "asr whisper base (configured, bundled)",
        "llm llama_cpp /m/x.gguf (summary)",
        "llm llama_cpp SmolLM2-135M-Instruct.Q4_1.gguf (enhancement, bundled)",
    ]
    vllm = Settings(llm_backend="vllm", asr_backend="chunkformer")
    assert [t.label for t in model_targets(vllm, bundled=False)] == [
        "asr chunkformer khanhld/chunkformer-large-vie (configured)",
        "llm vllm (no model set) (summary)",
    ]


@pytest.mark.unit
def test_library_features_missing_from_the_cpu_are_a_problem(tmp_path: Path) -> None:
    """The real library (AVX2, FMA …) against a CPU that has no AVX2: SIGILL ahead, rebuild for v2."""
    from maie.runner.doctor import check_llama_cpu

    old_cpu = tmp_path / "cpuinfo"
    old_cpu.write_text(
        "model name\t: Old Xeon E5-2670\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx\n"
    )
    check = check_llama_cpu(60, old_cpu)
    info = check_llama_cpu(60)  # this machine: fine
    assert info.ok, info.line()
    if "AVX2" not in info.detail:
        pytest.skip("the installed llama.cpp library does not use AVX2")
    assert not check.ok and "AVX2" in check.detail and "Old Xeon E5-2670" in check.detail
    assert "SIGILL" in check.detail
    assert check.fix is not None and "LLAMA_CPU_BASELINE=x86-64-v2 bash scripts/bootstrap.sh" in check.fix


@pytest.mark.unit
def test_amx_kernels_in_the_library_are_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library compiled with AMX (what GGML_NATIVE=ON gives on an AMX Xeon), even on a CPU with AMX."""
    from maie.runner.doctor import check_llama_cpu

    fake = tmp_path / "shadow" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "__version__ = '0.3.36'\n"
        "def llama_print_system_info():\n"
        "    return b'CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 |'\n"
    )
    amx_cpu = tmp_path / "cpuinfo"
    amx_cpu.write_text(
        "model name\t: Xeon Sapphire Rapids\n"
        "flags\t\t: pni ssse3 sse4_2 avx avx2 fma f16c bmi2 avx512f amx_tile amx_int8\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    check = check_llama_cpu(60, amx_cpu)
    assert not check.ok and "AMX_INT8" in check.detail and "general protection fault" in check.detail
    assert check.fix is not None and "bash scripts/bootstrap.sh" in check.fix


@pytest.mark.unit
def test_a_cuda_build_without_its_cuda_backend_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU image once shipped a CPU-only llama.cpp under a record that said GGML_CUDA=ON (pip had
    built the library from the sdist): the record and the files must agree."""
    import maie.runner.llm.llama_cpp as llama_module
    from maie.runner.doctor import check_llama_cpu

    real = llama_module.llama_cpp_build()
    cuda_record = {
        **real,
        "cpu_baseline": "x86-64-v3",
        "build_key": "k",
        "cmake_args": "-DGGML_NATIVE=OFF -DGGML_CUDA=ON",
    }
    monkeypatch.setattr(llama_module, "llama_cpp_build", lambda *a, **k: cuda_record)
    check = check_llama_cpu(60)
    if check.ok:  # this machine's llama.cpp has a CUDA backend after all
        pytest.skip("the installed llama-cpp-python has libggml-cuda.so")
    assert "no CUDA backend" in check.detail and "libggml-cuda.so" in check.detail
    assert check.fix is not None and "--no-deps --force-reinstall" in check.fix
    monkeypatch.setattr(
        llama_module, "llama_cpp_build", lambda *a, **k: {**cuda_record, "cmake_args": "-DGGML_NATIVE=OFF"}
    )
    assert check_llama_cpu(60).ok


@pytest.mark.unit
def test_wheel_script_is_keyed_on_its_own_flags_only() -> None:
    """CMAKE_ARGS from the environment cannot change (or poison) the portable wheel; native is refused."""
    repo = Path(__file__).resolve().parents[2]
    script = repo / "scripts" / "build_llama_wheel.sh"
    cache = Path(os.environ.get("MAIE_WHEEL_CACHE", Path.home() / ".cache" / "maie" / "wheels"))
    if not list(cache.glob("llama-cpp-python-*/build-info.json")):
        pytest.skip("no portable wheel built here yet (bash scripts/bootstrap.sh builds it)")
    run = lambda **env: subprocess.run(  # noqa: E731
        ["bash", str(script), sys.executable], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
    )  # fmt: skip
    plain = run(CMAKE_ARGS=None, LLAMA_EXTRA_CMAKE_ARGS=None, LLAMA_CPU_BASELINE=None)
    if plain.returncode != 0 or not plain.stdout.strip():
        pytest.skip(f"the portable wheel for this Python is not built: {plain.stderr[-300:]}")
    poisoned = run(CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_AMX_INT8=ON")
    assert poisoned.returncode == 0 and poisoned.stdout == plain.stdout
    assert "CMAKE_ARGS is ignored" in poisoned.stderr
    info = json.loads((Path(plain.stdout.strip()).parent / "build-info.json").read_text())
    assert "-DGGML_NATIVE=OFF" in info["cmake_args"] and "-DGGML_AMX_INT8=OFF" in info["cmake_args"]
    native = run(LLAMA_EXTRA_CMAKE_ARGS="-DGGML_NATIVE=ON")
    assert native.returncode == 2 and "portable" in native.stderr


@pytest.mark.unit
def test_check_lines_are_one_line_each() -> None:
    check = Check("x", False, "it broke", "do this")
    assert check.line() == "PROBLEM x: it broke — fix: do this" and "\n" not in check.line()
    assert Check("y", True, "fine").line() == "ok      y: fine"


def test_invalid_settings_are_one_problem_line(tmp_path: Path, cache_dir: Path) -> None:
    proc = doctor(tmp_path, cache_dir, env={"WHISPER_BEAM_SIZE": "0"})
    assert proc.returncode == 1
    line = line_of(proc.stdout, "settings")
    assert (
        line.startswith("PROBLEM settings: WHISPER_BEAM_SIZE: ") and "fix: correct WHISPER_BEAM_SIZE" in line
    )
    assert "Traceback" not in proc.stdout + proc.stderr


def test_llm_versions_record_the_build(tmp_path: Path) -> None:
    """runtime_build: the record when it describes the installed library, else 'unknown'."""
    none = llama_cpp_build(tmp_path / "absent.json")
    assert none["cpu_baseline"] == "unknown" and none["cmake_args"] == "unknown"
    assert "not installed by scripts/build_llama_wheel.sh" in none["note"]
    stale = tmp_path / "stale.json"
    stale.write_text(
        json.dumps({"version": "0.0.1", "cpu_baseline": "x86-64-v3", "cmake_args": "-DX=1", "key": "k"})
    )
    assert llama_cpp_build(stale)["cpu_baseline"] == "unknown"
    installed = Path(sys.prefix) / "share" / "maie" / "llama-cpp-build.json"
    if not installed.is_file():
        pytest.skip("llama-cpp-python was not installed by scripts/build_llama_wheel.sh here")
    build = llama_cpp_build()
    record = json.loads(installed.read_text())
    assert build["cpu_baseline"] == record["cpu_baseline"] and build["cmake_args"] == record["cmake_args"]
    assert "-DGGML_NATIVE=OFF" in build["cmake_args"]
    shutil.copy(installed, tmp_path / "copy.json")
    assert llama_cpp_build(tmp_path / "copy.json")["build_key"] == record["key"]


def test_llm_version_carries_runtime_build() -> None:
    from maie.runner.llm.base import GenerationParams
    from maie.runner.llm.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(Settings(llm_n_ctx=512), model=None)
    backend.load()
    try:
        version = backend.version("summarization", GenerationParams(max_tokens=1), None)
    finally:
        backend.unload()
    build = version.runtime_build
    assert build is not None and build["package"].startswith("llama-cpp-python ")
    assert "cpu_baseline" in build and "cmake_args" in build
    assert "CPU :" in build["system_info"]  # llama_print_system_info: what the library was compiled with
    assert version.model_dump(mode="json")["runtime_build"] == build
