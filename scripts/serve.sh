#!/usr/bin/env bash
# The main job: set up (first time only) and start the embedded service on this machine.
# Arguments go to `maie serve` (e.g. --port 9000 --data-dir /srv/maie).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/maie serve "$@"
