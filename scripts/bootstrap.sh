#!/usr/bin/env bash
# Create .venv and install MAIE into it (idempotent; re-installs only when something changed).
#
#   bash scripts/bootstrap.sh          # the service and CLI
#   bash scripts/bootstrap.sh --dev    # plus test, lint and benchmark tools
#
# Needs only Python 3.11+ with venv and a C/C++ compiler: llama-cpp-python builds from source the
# first time (~5 minutes on 2 cores), *portable* (-DGGML_NATIVE=OFF, a fixed x86-64-v3 baseline) —
# never tuned to this machine's CPU — into a wheel directory keyed by its exact build flags
# (scripts/build_llama_wheel.sh), so a wheel built with other flags, or a native one in pip's cache,
# is never reused. No apt step, no model download: the
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

# The portable llama.cpp wheel (built once per set of flags), installed with the record of how it was
# built (.venv/share/maie/llama-cpp-build.json). Checked on every call (a fraction of a second): a
# llama-cpp-python installed since by other means, e.g. a native `pip install`, is replaced.
WHEEL="$(bash scripts/build_llama_wheel.sh --install .venv/bin/python)"
BUILD_INFO="$(dirname "$WHEEL")/build-info.json"
INSTALLED_INFO=".venv/share/maie/llama-cpp-build.json"

STAMP=".venv/.maie-installed${EXTRA}"
WANT="$(sha256sum pyproject.toml | cut -c1-64) $(find api runner operator maie -name '*.py' | sort | sha256sum | cut -c1-64) $(sha256sum "$BUILD_INFO" | cut -c1-64)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "Installing MAIE${EXTRA} into .venv..."
  # editable_mode=strict: the top-level api/, operator/ and runner/ folders install as maie.api,
  # maie.operator and maie.runner through a link tree (re-run this script after adding a module).
  # The llama-cpp-python requirement is already met by the portable wheel installed above.
  .venv/bin/python -m pip install -q -e ".${EXTRA}" --config-settings editable_mode=strict
  echo "$WANT" > "$STAMP"
fi

# After an install (or a failed check), `maie doctor` says whether this machine can do the work: every
# bundled and configured model loaded and run once in a child process, CPU features against the
# build, DATA_DIR, the API key file. A no-op call (nothing changed since it passed) skips it.
DOCTOR_STAMP=".venv/.maie-doctor-ok"
DOCTOR_WANT="$WANT $(sha256sum "$INSTALLED_INFO" | cut -c1-64) $({ cat .env 2>/dev/null || true; } | sha256sum | cut -c1-64)"
if [[ -f "$DOCTOR_STAMP" && "$(cat "$DOCTOR_STAMP")" == "$DOCTOR_WANT" ]]; then
  exit 0
fi
rm -f "$DOCTOR_STAMP"
echo "Checking this machine (maie doctor)..."
if ! .venv/bin/maie doctor; then
  echo >&2
  echo "error: maie doctor found problems (the lines marked PROBLEM above, each with its fix): MAIE is" >&2
  echo "installed in .venv but cannot do the work on this machine as it is. Fix them, then run" >&2
  echo "'bash scripts/bootstrap.sh' again (or '.venv/bin/maie doctor' to check). See docs/troubleshooting.md." >&2
  exit 1
fi
echo "$DOCTOR_WANT" > "$DOCTOR_STAMP"
