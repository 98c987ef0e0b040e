# Knobs every run script shares (sourced, not run): model, evaluation, output, logging.
# Sets COMMON_ARGS, the flags both drivers take for them.
MODEL=${MODEL:-"../shared/assets/models/tinystories-656k"}
PYTHON=${PYTHON:-python}
# Evaluation params
PPL_DATASETS=${PPL_DATASETS:-"wikitext2"}
SEQLEN=${SEQLEN:-2048}
EVAL_LIMIT=${EVAL_LIMIT:-0}
DATA_DIR=${DATA_DIR:-"../shared/assets/data"}
# Calibration data (GPTQ, LLM-FP4 search)
CALIB_DATASET=${CALIB_DATASET:-"c4"}
CALIB_BATCH_SIZE=${CALIB_BATCH_SIZE:-1}
# Misc params
DTYPE=${DTYPE:-"auto"}
DEVICE=${DEVICE:-"auto"}
LOG_WANDB=${LOG_WANDB:-0}
OUTPUT_DIR=${OUTPUT_DIR:-"results"}
# Several GPUs: NPROC>1 splits GPTQ/FlatQuant calibration windows over NPROC torchrun ranks (quantize.sh);
# DISTRIBUTE=1 evaluates with the model placed across all GPUs, within MAX_MEMORY (e.g. "0=70GiB,1=70GiB,cpu=200GiB")
NPROC=${NPROC:-1}
DISTRIBUTE=${DISTRIBUTE:-0}
MAX_MEMORY=${MAX_MEMORY:-""}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}   # NVLink multicast stays off

COMMON_ARGS=(--model "${MODEL}" --ppl_datasets "${PPL_DATASETS}" --seqlen "${SEQLEN}" --dtype "${DTYPE}"
             --device "${DEVICE}" --output_dir "${OUTPUT_DIR}")
if [[ $EVAL_LIMIT != 0 ]]; then
    COMMON_ARGS+=(--eval_limit "${EVAL_LIMIT}")
fi
if [[ -n $DATA_DIR ]]; then
    COMMON_ARGS+=(--data_dir "${DATA_DIR}")
fi
if [[ $LOG_WANDB == 1 ]]; then
    COMMON_ARGS+=(--log_wandb)
fi
if [[ $DISTRIBUTE == 1 ]]; then
    COMMON_ARGS+=(--distribute)
fi
if [[ -n $MAX_MEMORY ]]; then
    COMMON_ARGS+=(--max_memory "${MAX_MEMORY}")
fi
# How a driver is started: one process, or NPROC ranks under torchrun (one per GPU).
LAUNCH=("$PYTHON")
if [[ $NPROC -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "${NPROC}")
fi
