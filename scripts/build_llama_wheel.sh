#!/usr/bin/env bash
# Build (or reuse) a portable llama-cpp-python wheel; print its path, or install it.
#
#   bash scripts/build_llama_wheel.sh [PYTHON]             # build once, print the wheel's path
#   bash scripts/build_llama_wheel.sh --install [PYTHON]   # ... and install it into PYTHON's environment
#                                                          # (unless that very build is installed)
#
# PYTHON builds (and, with --install, receives) the wheel; default python3. From a Dockerfile:
#   COPY pyproject.toml scripts/build_llama_wheel.sh ./scripts/ ... then
#   RUN LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=ON" MAIE_WHEEL_CACHE=/tmp/wheels \
#       bash scripts/build_llama_wheel.sh --install /opt/venv/bin/python
# (it needs only pyproject.toml one folder above it, for the version pin, and a C/C++ compiler).
#
# Why this exists: llama-cpp-python ships only as an sdist, and llama.cpp's default build is
# GGML_NATIVE=ON — tuned to the build host's CPU (AMX kernels included). Such a library crashes with a
# general protection fault on another CPU (an AMX Xeon, a node of another generation, an image built
# elsewhere). So MAIE never compiles for the host: the CPU code targets a fixed baseline.
#
# pip's wheel cache does not key on CMAKE_ARGS, so a native wheel cached earlier could be reused
# silently. This script never uses pip's cache: wheels live in a directory keyed by the llama-cpp-python
# version, the Python tag, the machine architecture and the exact CMake flags, and a changed flag is a
# new directory. The flags are written beside the wheel (build-info.json); --install copies them into
# the environment (PREFIX/share/maie/llama-cpp-build.json, with the sha256 of the installed
# libggml-cpu.so), where the LLM's `versions` and `maie doctor` read them.
#
# Settings (environment):
#   LLAMA_CPU_BASELINE   x86-64-v3 (default: AVX2, FMA, F16C, BMI2; no AVX-512, no AMX) | x86-64-v2
#                        (SSE4.2 only, for CPUs without AVX2) | none (no x86 flags: other architectures)
#   LLAMA_EXTRA_CMAKE_ARGS  appended (e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90")
#   MAIE_WHEEL_CACHE     where keyed wheel directories live (default: ~/.cache/maie/wheels)
#   MAIE_WHEEL_REBUILD=1 build again even when the keyed directory holds a wheel
# CMAKE_ARGS is ignored (it would bypass the key): put extra flags in LLAMA_EXTRA_CMAKE_ARGS.
set -euo pipefail

INSTALL=0
if [[ "${1:-}" == "--install" ]]; then
  INSTALL=1
  shift
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-python3}"
VERSION="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
[[ -n "$VERSION" ]] || { echo "error: no llama-cpp-python pin in $ROOT/pyproject.toml" >&2; exit 2; }
if [[ -n "${CMAKE_ARGS:-}" ]]; then
  echo "warning: CMAKE_ARGS is ignored here (set LLAMA_EXTRA_CMAKE_ARGS): '$CMAKE_ARGS'" >&2
fi

BASELINE="${LLAMA_CPU_BASELINE:-x86-64-v3}"
ARCH="$(uname -m)"
# LLAVA_BUILD=OFF: MAIE runs text models only (the multimodal library costs build time).
COMMON="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
NO_X86_EXT="-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
if [[ "$ARCH" != "x86_64" && "$BASELINE" != "none" ]]; then
  BASELINE="none"
fi
case "$BASELINE" in
  x86-64-v3) CPU="-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $NO_X86_EXT" ;;
  x86-64-v2) CPU="-DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF $NO_X86_EXT" ;;
  none) CPU="" ;;
  *) echo "error: LLAMA_CPU_BASELINE must be x86-64-v3, x86-64-v2 or none (got '$BASELINE')" >&2; exit 2 ;;
esac
# One space between flags, none around: the key must not depend on spacing (no xargs: it would
# interpret quotes and backslashes in the flags).
read -r -a FLAG_WORDS <<< "$COMMON $CPU ${LLAMA_EXTRA_CMAKE_ARGS:-}"
CMAKE_FLAGS="${FLAG_WORDS[*]}"
case " $CMAKE_FLAGS " in
  *" -DGGML_NATIVE=ON "*|*" -DGGML_NATIVE=on "*|*" -DGGML_NATIVE=1 "*)
    echo "error: GGML_NATIVE=ON builds for this CPU only; MAIE's wheels are portable" >&2; exit 2 ;;
esac

PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="$(printf '%s\n' "$VERSION" "$PYTAG" "$ARCH" "$CMAKE_FLAGS" | sha256sum | cut -c1-16)"
CACHE="${MAIE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maie/wheels}"
DIR="$CACHE/llama-cpp-python-$VERSION-$KEY"
mkdir -p "$CACHE"

wheel() { find "$DIR" -maxdepth 1 -name 'llama_cpp_python-*.whl' 2>/dev/null | head -n 1; }

# One build per key at a time: a second bootstrap waits for the first instead of deleting its work.
exec 9>"$CACHE/.lock-$KEY"
flock 9
if [[ "${MAIE_WHEEL_REBUILD:-0}" == "1" || -z "$(wheel)" || ! -f "$DIR/build-info.json" ]]; then
  echo "Building llama-cpp-python $VERSION, portable ($BASELINE), into $DIR (several minutes)..." >&2
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  # --no-cache-dir: never take (or leave) a wheel in pip's cache, which ignores CMAKE_ARGS.
  # --no-binary: never a prebuilt wheel from an index, whose flags nobody knows.
  CMAKE_ARGS="$CMAKE_FLAGS" FORCE_CMAKE=1 \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PY" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
      --wheel-dir "$DIR.tmp" "llama-cpp-python==$VERSION" >&2
  "$PY" - "$DIR.tmp/build-info.json" "$VERSION" "$BASELINE" "$CMAKE_FLAGS" "$KEY" <<'PY'
import json, platform, sys
path, version, baseline, flags, key = sys.argv[1:]
info = {"package": "llama-cpp-python", "version": version, "cpu_baseline": baseline,
        "cmake_args": flags, "key": key, "built_on": platform.machine()}
with open(path, "w") as f:
    json.dump(info, f, indent=1)
PY
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
fi
WHEEL="$(wheel)"
flock -u 9
echo "$WHEEL"
[[ "$INSTALL" == "1" ]] || exit 0

# --install: replace whatever llama-cpp-python PYTHON has unless it is this very build (same key,
# same version, and its libggml-cpu.so still the file recorded at install), then record the build.
"$PY" - "$WHEEL" "$DIR/build-info.json" <<'PY'
import hashlib, importlib, importlib.metadata, importlib.util, json, subprocess, sys
from pathlib import Path

wheel, info_path = sys.argv[1:]
info = json.loads(Path(info_path).read_text())
record = Path(sys.prefix) / "share" / "maie" / "llama-cpp-build.json"


def cpu_lib():
    # find_spec does not import llama_cpp: loading a library built for another CPU could crash here.
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libggml-cpu.so"
    return lib if lib.is_file() else None


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None


def installed_version():
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


current = json.loads(record.read_text()) if record.is_file() else {}
same = (
    current.get("key") == info["key"]
    and installed_version() == info["version"]
    and current.get("libggml_cpu_sha256") == sha256(cpu_lib())
)
if not same:
    # Another build (other flags, one from before portable builds, a pip-installed native one) is
    # replaced, never kept.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                    "--no-cache-dir", wheel], check=True)
    importlib.invalidate_caches()
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({**info, "libggml_cpu_sha256": sha256(cpu_lib())}, indent=1) + "\n")
    tmp.replace(record)
    print(f"installed {Path(wheel).name} ({info['cpu_baseline']}, key {info['key']}); recorded in {record}",
          file=sys.stderr)
PY
