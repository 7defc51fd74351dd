#!/usr/bin/env bash
# Put production model weights under MODELS_DIR, on a machine with Hugging Face access.
# MAIE never downloads at run time: run this where the network is, then copy MODELS_DIR (or mount the
# volume) to the air-gapped machine or cluster. Idempotent: a model already complete is skipped.
#
#   bash scripts/download_models.sh                     # the production set (see DEFAULT_SET)
#   bash scripts/download_models.sh whisper:large-v3 chunkformer llm:Qwen3-4B-Instruct-2507
#   MODELS_DIR=/mnt/models bash scripts/download_models.sh --list
#
# Names:
#   whisper:<variant>    CTranslate2 Whisper  → $MODELS_DIR/whisper/<variant>/        (model.bin …)
#   chunkformer[:<repo>] ChunkFormer          → $MODELS_DIR/asr/<repo name>/          (config.yaml …)
#   llm:<name|repo>      Hugging Face LLM     → $MODELS_DIR/llm/<name>/               (vLLM, openai server)
#   gguf:<repo>/<file>   one GGUF file        → $MODELS_DIR/llm/<file>                (llama_cpp)
#
# Needs: the Hugging Face CLI (`pip install -U huggingface_hub`, command `hf`, or the older
# `huggingface-cli`); HF_TOKEN for gated models.
set -euo pipefail

MODELS_DIR="${MODELS_DIR:-data/models}"
DEFAULT_SET=(whisper:large-v3-turbo whisper:erax-wow-turbo chunkformer llm:Qwen3-4B-Instruct-2507)

# Whisper variants → CTranslate2 repositories.
whisper_repo() {
  case "$1" in
    large-v3) echo "Systran/faster-whisper-large-v3" ;;
    large-v3-turbo) echo "mobiuslabsgmbh/faster-whisper-large-v3-turbo" ;;
    large-v2) echo "Systran/faster-whisper-large-v2" ;;
    medium|small|base|tiny|medium.en|small.en|base.en|tiny.en) echo "Systran/faster-whisper-$1" ;;
    erax-wow-turbo) echo "erax-ai/EraX-WoW-Turbo-V1.1-CT2" ;;
    */*) echo "$1" ;;
    *) echo "unknown whisper variant '$1' (give a CTranslate2 repo as whisper:owner/name)" >&2; return 1 ;;
  esac
}

llm_repo() {
  case "$1" in
    Qwen3-4B-Instruct-2507) echo "Qwen/Qwen3-4B-Instruct-2507" ;;
    Qwen3-4B) echo "Qwen/Qwen3-4B" ;;
    Qwen2.5-3B-Instruct) echo "Qwen/Qwen2.5-3B-Instruct" ;;
    */*) echo "$1" ;;
    *) echo "unknown LLM '$1' (give a Hugging Face repo as llm:owner/name)" >&2; return 1 ;;
  esac
}

hf_download() {  # repo target [files...]
  local repo="$1" target="$2"; shift 2
  if command -v hf >/dev/null 2>&1; then
    hf download "$repo" "$@" --local-dir "$target"
  elif command -v huggingface-cli >/dev/null 2>&1; then
    huggingface-cli download "$repo" "$@" --local-dir "$target"
  else
    echo "error: the Hugging Face CLI is missing: pip install -U huggingface_hub" >&2
    exit 2
  fi
}

fetch() {  # name
  local spec="$1" kind="${1%%:*}" arg="" repo target marker
  [[ "$spec" == *:* ]] && arg="${spec#*:}"
  case "$kind" in
    whisper)
      repo="$(whisper_repo "$arg")"; target="$MODELS_DIR/whisper/$arg"; marker="model.bin" ;;
    chunkformer)
      repo="${arg:-khanhld/chunkformer-large-vie}"; target="$MODELS_DIR/asr/${repo##*/}"; marker="config.yaml" ;;
    llm)
      repo="$(llm_repo "$arg")"; target="$MODELS_DIR/llm/${arg##*/}"; marker="config.json" ;;
    gguf)
      repo="${arg%/*}"; local file="${arg##*/}"; target="$MODELS_DIR/llm"; marker="$file"
      if [[ -f "$target/$file" ]]; then echo "ok   $target/$file (already there)"; return; fi
      echo "get  $repo/$file → $target/"
      hf_download "$repo" "$target" "$file"
      return ;;
    *) echo "unknown model kind in '$spec' (whisper:, chunkformer, llm:, gguf:)" >&2; return 1 ;;
  esac
  if [[ -f "$target/$marker" ]]; then
    echo "ok   $target (already there)"
    return
  fi
  echo "get  $repo → $target"
  mkdir -p "$target"
  hf_download "$repo" "$target"
  [[ -f "$target/$marker" ]] || { echo "error: $target has no $marker after download" >&2; return 1; }
}

if [[ "${1:-}" == "--list" ]]; then
  for spec in "${DEFAULT_SET[@]}"; do echo "$spec"; done
  exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,20p' "$0"; exit 0
fi
[[ $# -gt 0 ]] && set -- "$@" || set -- "${DEFAULT_SET[@]}"
mkdir -p "$MODELS_DIR"
for spec in "$@"; do fetch "$spec"; done
echo "done: models under $MODELS_DIR (point MODELS_DIR there for MAIE)"
