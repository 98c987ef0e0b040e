#!/usr/bin/env bash
# Quantize and evaluate a model with model_quant.py; every knob is an environment variable.
# e.g.  MODEL=models_local/SmolLM2-135M-Instruct FORMAT=nvfp W_BITS=4 A_BITS=4 KV_BITS=4 bash scripts/quantize.sh
#       NPROC=2 GPTQ=1 DISTRIBUTE=1 MODEL=... bash scripts/quantize.sh   (GPTQ over 2 GPUs, evaluation across both)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
# Quantization params (16 = full precision; group -1 = per channel / token / head)
FORMAT=${FORMAT:-"int"}
W_BITS=${W_BITS:-4}
A_BITS=${A_BITS:-4}
KV_BITS=${KV_BITS:-16}
# FP exponent bits (FORMAT=fp; empty = the width's default, formats.DEFAULT_FP_EXP_BITS: E2M1 at 4 bits, E3M2 at 6);
# W_BITS=6 W_EXP_BITS=2 A_BITS=16 is FP6 E2M3 weight-only
W_EXP_BITS=${W_EXP_BITS:-""}
A_EXP_BITS=${A_EXP_BITS:-""}
KV_EXP_BITS=${KV_EXP_BITS:-""}
W_GROUP_SIZE=${W_GROUP_SIZE:--1}
A_GROUP_SIZE=${A_GROUP_SIZE:--1}
KV_GROUP_SIZE=${KV_GROUP_SIZE:--1}
KV_ASYM=${KV_ASYM:-0}
W_OBSERVER=${W_OBSERVER:-"minmax"}
A_STATIC_SCALE=${A_STATIC_SCALE:-0}   # 1: NVFP4 activations' tensor scale calibrated on NSAMPLES windows of CALIB_DATASET
TRANSFORM_CLASS=${TRANSFORM_CLASS:-"identity"}   # identity | hadamard | random_orthogonal | block_hadamard
HADAMARD_GROUP_SIZE=${HADAMARD_GROUP_SIZE:-0}     # block_hadamard block (0 = default 128)
ROTATION_SEED=${ROTATION_SEED:-0}
# Weight algorithm: GPTQ=1 for layer-by-layer GPTQ on NSAMPLES windows of CALIB_DATASET
GPTQ=${GPTQ:-0}
ACT_ORDER=${ACT_ORDER:-0}
PERCDAMP=${PERCDAMP:-0.01}
NSAMPLES=${NSAMPLES:-128}
RESUME=${RESUME:-0}
# Real quantization: SAVE_PATH=dir writes the packed checkpoint (--real_quant --save_path)
SAVE_PATH=${SAVE_PATH:-""}

SCRIPT_ARGS=()
if [[ -n $W_EXP_BITS ]]; then
    SCRIPT_ARGS+=("--w_exp_bits" "${W_EXP_BITS}")
fi
if [[ -n $A_EXP_BITS ]]; then
    SCRIPT_ARGS+=("--a_exp_bits" "${A_EXP_BITS}")
fi
if [[ -n $KV_EXP_BITS ]]; then
    SCRIPT_ARGS+=("--kv_exp_bits" "${KV_EXP_BITS}")
fi
if [[ $KV_ASYM == 1 ]]; then
    SCRIPT_ARGS+=("--k_asym" "--v_asym")
fi
if [[ $HADAMARD_GROUP_SIZE != 0 ]]; then
    SCRIPT_ARGS+=("--hadamard_group_size" "${HADAMARD_GROUP_SIZE}")
fi
if [[ $GPTQ == 1 ]]; then
    SCRIPT_ARGS+=("--gptq" "--percdamp" "${PERCDAMP}" "--nsamples" "${NSAMPLES}"
                  "--calib_dataset" "${CALIB_DATASET}" "--calib_batch_size" "${CALIB_BATCH_SIZE}")
fi
if [[ $A_STATIC_SCALE == 1 ]]; then
    SCRIPT_ARGS+=("--a_static_tensor_scale" "--nsamples" "${NSAMPLES}" "--calib_dataset" "${CALIB_DATASET}")
fi
if [[ $ACT_ORDER == 1 ]]; then
    SCRIPT_ARGS+=("--act_order")
fi
if [[ $RESUME == 1 ]]; then
    SCRIPT_ARGS+=("--resume")
fi
if [[ -n $SAVE_PATH ]]; then
    SCRIPT_ARGS+=("--real_quant" "--save_path" "${SAVE_PATH}")
fi

export WANDB_RUN_GROUP=${WANDB_RUN_GROUP:-"$(basename "${MODEL}")-${FORMAT}"}

"${LAUNCH[@]}" model_quant.py "${COMMON_ARGS[@]}" \
    --format="${FORMAT}" \
    --w_bits="${W_BITS}" \
    --a_bits="${A_BITS}" \
    --k_bits="${KV_BITS}" \
    --v_bits="${KV_BITS}" \
    --w_group_size="${W_GROUP_SIZE}" \
    --a_group_size="${A_GROUP_SIZE}" \
    --k_groupsize="${KV_GROUP_SIZE}" \
    --v_groupsize="${KV_GROUP_SIZE}" \
    --w_observer="${W_OBSERVER}" \
    --transform_class="${TRANSFORM_CLASS}" \
    --rotation_seed="${ROTATION_SEED}" \
    "${SCRIPT_ARGS[@]}" "$@"
