#!/usr/bin/env bash
# LLM-FP4-style run of main.py: QBITS="W A KV [Wexp Aexp KVexp]" (exponent bits 0/omitted = INT).
# QUANT_CONFIG: FPQ_config_llama (search + pre-shift), FPQ_baseline_config_llama (search),
# MinMax_config_llama (static min-max), RTN_config_llama (no calibration).
# e.g.  MODEL=models_local/SmolLM2-135M-Instruct QBITS="4 4 4 2 2 2" bash scripts/fpq.sh
#       ONLY_EVAL=1 PTQ_PARAM_PATH="results/search_result/.../W4A4KV4_E2E2E2_....safetensors" bash scripts/fpq.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
QBITS=${QBITS:-"4 4 4 2 2 2"}
QUANT_CONFIG=${QUANT_CONFIG:-"FPQ_config_llama"}
# Search params (FPQ / MinMax configs)
SEARCH_ROUND=${SEARCH_ROUND:-3}
SEARCH_INTERVALS=${SEARCH_INTERVALS:-"0.01 1.2 100"}
CALIB_SIZE=${CALIB_SIZE:-32}
SEARCH_TOKENS=${SEARCH_TOKENS:-256}   # tokens each candidate is scored on; 0 = all (slow on CPU)
ONLY_EVAL=${ONLY_EVAL:-0}
PTQ_PARAM_PATH=${PTQ_PARAM_PATH:-""}
ROTATE=${ROTATE:-0}

SCRIPT_ARGS=()
if [[ $ONLY_EVAL == 1 ]]; then
    SCRIPT_ARGS+=("--only_eval" "--ptq_param_path" "${PTQ_PARAM_PATH}")
fi
if [[ $ROTATE == 1 ]]; then
    SCRIPT_ARGS+=("--rotate")
fi

# shellcheck disable=SC2086  # QBITS and SEARCH_INTERVALS are lists of numbers
$PYTHON main.py "${COMMON_ARGS[@]}" --quant_config "${QUANT_CONFIG}" --qbits ${QBITS} \
    --search_round "${SEARCH_ROUND}" --search_intervals ${SEARCH_INTERVALS} --calib_size "${CALIB_SIZE}" \
    --search_tokens "${SEARCH_TOKENS}" \
    --calib_dataset "${CALIB_DATASET}" --calib_batch_size "${CALIB_BATCH_SIZE}" \
    "${SCRIPT_ARGS[@]}" "$@"
