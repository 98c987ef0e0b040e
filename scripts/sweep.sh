#!/usr/bin/env bash
# A grid of model_quant.py runs, one full-precision baseline first, every run logged to wandb in
# one group (WANDB_MODE=offline works), then one report (scripts/report.py) over the sweep's folder.
#
#   FORMATS="int fp nvfp mxfp"      element formats (--format)
#   BITS="4"                        widths, space-separated; each is W[,A[,KV]] with A defaulting to W
#                                   and KV to A: "4" = W4A4KV4, "4,16" = W4A16KV16, "4,4,16" = W4A4,
#                                   "8,8,4" = W8A8KV4 (16 = full precision)
#   TRANSFORMS="identity hadamard"  --transform_class
#   METHODS="rtn gptq"              weight algorithm; gptq calibrates on NSAMPLES windows of CALIB_DATASET
#   TASKS=""                        lm-eval tasks for every run (e.g. piqa,arc_easy,wikitext); LM_EVAL_LIMIT
#                                   caps the documents per task
#   GROUP="sweep-<date>-<time>"     wandb group, and the folder under OUT_DIR the run JSONs go to
#   OUT_DIR="results"               (default $OUTPUT_DIR, else results)
#   LOG_WANDB=1                     0 to skip wandb; offline run folders go to OUT_DIR/GROUP/wandb
#   DRY_RUN=1                       print the commands instead of running them
# and common.sh's knobs (MODEL, PPL_DATASETS, SEQLEN, EVAL_LIMIT, DATA_DIR, DTYPE, DEVICE, PYTHON, ...).
# Arguments go to every run, e.g. --w_group_size 32. A failed run is listed at the end (exit 1);
# the others still run and are reported.
# e.g.  MODEL=models_local/SmolLM2-135M-Instruct FORMATS="int nvfp" BITS="4 4,16" METHODS=rtn \
#           WANDB_MODE=offline bash scripts/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FORMATS=${FORMATS:-"int fp nvfp mxfp"}
BITS=${BITS:-"4"}
TRANSFORMS=${TRANSFORMS:-"identity hadamard"}
METHODS=${METHODS:-"rtn gptq"}
TASKS=${TASKS:-""}
LM_EVAL_LIMIT=${LM_EVAL_LIMIT:-""}
NSAMPLES=${NSAMPLES:-128}
GROUP=${GROUP:-"sweep-$(date +%Y%m%d-%H%M%S)"}
OUT_DIR=${OUT_DIR:-${OUTPUT_DIR:-"results"}}
LOG_WANDB=${LOG_WANDB:-1}
DRY_RUN=${DRY_RUN:-0}
OUTPUT_DIR="${OUT_DIR}/${GROUP}"
source scripts/common.sh

RUN_ARGS=()
if [[ $LOG_WANDB == 1 ]]; then
    RUN_ARGS+=(--wandb_group "${GROUP}")
    export WANDB_DIR=${WANDB_DIR:-${OUTPUT_DIR}}
fi
if [[ -n $TASKS ]]; then
    RUN_ARGS+=(--tasks "${TASKS}")
fi
if [[ -n $LM_EVAL_LIMIT ]]; then
    RUN_ARGS+=(--lm_eval_limit "${LM_EVAL_LIMIT}")
fi

# The flags of one width entry W[,A[,KV]], and its name in run names (w4a4kv4).
bits_flags() {
    local w a kv extra
    IFS=, read -r w a kv extra <<< "$1"
    a=${a:-$w}
    kv=${kv:-$a}
    for b in "$w" "$a" "$kv"; do
        if [[ ! $b =~ ^[0-9]+$ || -n ${extra:-} ]]; then
            echo "error: BITS entry '$1' is not W[,A[,KV]] (e.g. 4, 4,16 or 8,8,4)" >&2
            return 2
        fi
    done
    BITS_ARGS=(--w_bits "$w" --a_bits "$a" --k_bits "$kv" --v_bits "$kv")
    BITS_TAG="w${w}a${a}kv${kv}"
}

method_flags() {
    case $1 in
        rtn) METHOD_ARGS=() ;;
        gptq) METHOD_ARGS=(--gptq --nsamples "${NSAMPLES}" --calib_dataset "${CALIB_DATASET}"
                           --calib_batch_size "${CALIB_BATCH_SIZE}") ;;
        *) echo "error: unknown method '$1' in METHODS: use rtn or gptq" >&2; return 2 ;;
    esac
}

# Check the whole grid before the first run.
for bits in $BITS; do bits_flags "$bits"; done
for method in $METHODS; do method_flags "$method"; done

FAILED=()
run() {
    local name=$1
    shift
    local cmd=("$PYTHON" model_quant.py "${COMMON_ARGS[@]}" --run_name "$name" "${RUN_ARGS[@]}" "$@")
    if [[ $DRY_RUN == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        echo
    elif ! "${cmd[@]}"; then
        FAILED+=("$name")
    fi
}

n_runs=$((1 + $(wc -w <<< "$FORMATS") * $(wc -w <<< "$BITS") * $(wc -w <<< "$TRANSFORMS") * $(wc -w <<< "$METHODS")))
echo "sweep ${GROUP}: ${n_runs} runs of $(basename "${MODEL}") -> ${OUTPUT_DIR}" >&2
if [[ $DRY_RUN != 1 && $LOG_WANDB == 1 ]]; then
    mkdir -p "${WANDB_DIR}"
fi

run baseline "$@"
for format in $FORMATS; do
    for bits in $BITS; do
        bits_flags "$bits"
        for transform in $TRANSFORMS; do
            for method in $METHODS; do
                method_flags "$method"
                run "${format}-${BITS_TAG}-${transform}-${method}" --format "$format" "${BITS_ARGS[@]}" \
                    --transform_class "$transform" "${METHOD_ARGS[@]}" "$@"
            done
        done
    done
done

report=("$PYTHON" scripts/report.py "${OUTPUT_DIR}")
if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "${report[@]}"
    echo
    exit 0
fi
"${report[@]}"
if (( ${#FAILED[@]} )); then
    echo "error: ${#FAILED[@]} of ${n_runs} runs failed: ${FAILED[*]} (their messages are above)" >&2
    exit 1
fi
