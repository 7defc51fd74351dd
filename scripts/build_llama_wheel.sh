#!/usr/bin/env bash
# Build (or reuse) a portable llama-cpp-python wheel and print its path.
#
#   bash scripts/build_llama_wheel.sh [PYTHON]        # PYTHON builds it (default: python3)
#
# Why this exists: llama-cpp-python ships only as an sdist, and llama.cpp's default build is
# GGML_NATIVE=ON — tuned to the build host's CPU (AMX kernels included). Such a library crashes with a
# general protection fault on another CPU (an AMX Xeon, a node of another generation, an image built
# elsewhere). So MAIE never compiles for the host: the CPU code targets a fixed baseline.
#
# pip's wheel cache does not key on CMAKE_ARGS, so a native wheel cached earlier could be reused
# silently. This script never uses pip's cache: wheels live in a directory keyed by the llama-cpp-python
# version, the Python tag, the machine architecture and the exact CMake flags, and a changed flag is a
# new directory. The flags are written beside the wheel (build-info.json) and installed into the venv
# by scripts/bootstrap.sh, so every result's versions can say what ran.
#
# Settings (environment):
#   LLAMA_CPU_BASELINE   x86-64-v3 (default: AVX2, FMA, F16C, BMI2; no AVX-512, no AMX) | x86-64-v2
#                        (SSE4.2 only, for CPUs without AVX2) | none (no x86 flags: other architectures)
#   LLAMA_EXTRA_CMAKE_ARGS  appended (e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90")
#   MAIE_WHEEL_CACHE     where keyed wheel directories live (default: ~/.cache/maie/wheels)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-python3}"
VERSION="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
[[ -n "$VERSION" ]] || { echo "error: no llama-cpp-python pin in pyproject.toml" >&2; exit 2; }

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
CMAKE_FLAGS="$COMMON $CPU ${LLAMA_EXTRA_CMAKE_ARGS:-}"
CMAKE_FLAGS="$(echo "$CMAKE_FLAGS" | xargs)"   # one space between flags: the key must not depend on spacing

PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="$(printf '%s\n' "$VERSION" "$PYTAG" "$ARCH" "$CMAKE_FLAGS" | sha256sum | cut -c1-16)"
CACHE="${MAIE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maie/wheels}"
DIR="$CACHE/llama-cpp-python-$VERSION-$KEY"

wheel() { find "$DIR" -maxdepth 1 -name 'llama_cpp_python-*.whl' 2>/dev/null | head -n 1; }

if [[ -z "$(wheel)" || ! -f "$DIR/build-info.json" ]]; then
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
wheel
