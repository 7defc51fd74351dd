#!/usr/bin/env bash
# Install the `chunkformer` ASR package into a venv on a CPU-only machine, through pip only.
#
# Why not `pip install .[chunkformer]`: chunkformer pins torch/torchaudio releases whose wheels are CUDA
# builds of several GB. On a CPU box we want: torch 2.13.0 (CPU build), torchaudio 2.11.0 with its
# native libraries removed (they are CUDA builds that fail to load beside a CPU torch; chunkformer's
# inference only needs the pure-Python torchaudio.compliance.kaldi.fbank, and torchaudio skips its C
# extension when the .so files are absent), chunkformer itself without its dependencies, and the
# modules it imports at load time. About a minute and 1.3 GB. Idempotent: a second run changes nothing.
#
# Usage: bash scripts/install_chunkformer_cpu.sh [PYTHON]   (default: .venv/bin/python of this checkout)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$ROOT/.venv/bin/python}"
TORCH_VERSION="${MAIE_TORCH_VERSION:-2.13.0}"
TORCHAUDIO_VERSION="${MAIE_TORCHAUDIO_VERSION:-2.11.0}"
CHUNKFORMER_VERSION="1.2.2"

if [ ! -x "$PY" ]; then
  echo "error: no Python at $PY (create the venv first: python3.11 -m venv .venv && .venv/bin/pip install -e '.[dev]')" >&2
  exit 2
fi

check() {
  "$PY" - <<'PY' 2>/dev/null
import chunkformer  # noqa: F401
from chunkformer import ChunkFormerModel  # noqa: F401
import torchaudio.compliance.kaldi  # noqa: F401
print("chunkformer-import-ok")
PY
}

if check | grep -qx chunkformer-import-ok; then
  echo "chunkformer is already importable in $PY"
  exit 0
fi

pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch, CPU build. pip takes the local CPU file where one exists (find-links); elsewhere, the
#    PyTorch CPU index would be the route, but only PyPI is reachable here.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  pip_install "torch==$TORCH_VERSION"
fi

# 2. torchaudio without dependencies (it would otherwise replace torch), then drop its native libraries.
if ! "$PY" -c "import importlib.metadata as m; assert m.version('torchaudio') == '$TORCHAUDIO_VERSION'" 2>/dev/null; then
  pip_install --no-deps "torchaudio==$TORCHAUDIO_VERSION"
fi
TA_DIR="$("$PY" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torchaudio').origin))")"
if [ -d "$TA_DIR/lib" ]; then
  find "$TA_DIR/lib" -maxdepth 1 -name '*.so*' -delete
fi
find "$TA_DIR" -maxdepth 1 -name '_torchaudio*.so' -delete 2>/dev/null || true

# 3. chunkformer itself, without its (CUDA, training) dependencies, and what it imports at load time.
pip_install --no-deps "chunkformer==$CHUNKFORMER_VERSION"
# Versions verified with chunkformer 1.2.2 on torch 2.13.0 (CPU); numpy, pyyaml and jiwer come from MAIE.
pip_install "transformers==5.24.0" "huggingface_hub==2.4.0" "pandas==3.1.1" "tqdm==4.70.1" \
  "colorama==0.4.6" "pydub==0.25.1" jiwer pyyaml numpy

if ! check | grep -qx chunkformer-import-ok; then
  echo "error: chunkformer still does not import in $PY:" >&2
  "$PY" -c "import chunkformer" >&2 || true
  exit 1
fi
echo "chunkformer $CHUNKFORMER_VERSION is importable in $PY (torch $TORCH_VERSION CPU, torchaudio $TORCHAUDIO_VERSION without native libs)"
