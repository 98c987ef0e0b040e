#!/usr/bin/env bash
# LLM-FP4-style run of main.py: QBITS="W A KV [Wexp Aexp KVexp]" (exponent bits 0/omitted = INT).
# e.g.  MODEL=models_local/SmolLM2-135M-Instruct QBITS="4 4 4 2 2 2" bash scripts/fpq.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-"../shared/assets/models/tinystories-656k"}
PYTHON=${PYTHON:-python}
QBITS=${QBITS:-"4 4 4 2 2 2"}
QUANT_CONFIG=${QUANT_CONFIG:-"RTN_config_llama"}
PPL_DATASETS=${PPL_DATASETS:-"wikitext2"}
SEQLEN=${SEQLEN:-2048}
DATA_DIR=${DATA_DIR:-"../shared/assets/data"}
DEVICE=${DEVICE:-"auto"}
OUTPUT_DIR=${OUTPUT_DIR:-"results"}

# shellcheck disable=SC2086  # QBITS is a list of numbers
$PYTHON main.py --model "${MODEL}" --quant_config "${QUANT_CONFIG}" --qbits ${QBITS} \
    --ppl_datasets "${PPL_DATASETS}" --seqlen "${SEQLEN}" --data_dir "${DATA_DIR}" \
    --device "${DEVICE}" --output_dir "${OUTPUT_DIR}" "$@"
