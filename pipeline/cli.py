"""Flags both drivers share: model, evaluation, calibration data, output, logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from models.loading import DEVICE_CHOICES, DTYPE_CHOICES


def add_common_args(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("model")
    m.add_argument("--model", "--model_name_or_path", dest="model",
                   help="Hugging Face hub id, local model directory, or a .gguf file")
    m.add_argument("--gguf_file", help="GGUF file (a path, or a name inside --model's directory); dequantized on load")
    m.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="compute dtype; auto = checkpoint half precision on GPU, float32 on CPU")
    m.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")

    e = parser.add_argument_group("evaluation")
    e.add_argument("--ppl_datasets", default="wikitext2",
                   help="comma list of wikitext2, c4, tinystories or text files; 'none' to skip")
    e.add_argument("--seqlen", "--sequence_length", dest="seqlen", type=int, default=2048,
                   help="window length for perplexity and calibration")
    e.add_argument("--eval_limit", type=int, help="score at most this many perplexity windows")
    e.add_argument("--eval_batch_size", type=int, default=1)
    e.add_argument("--distribute", action="store_true",
                   help="evaluate with the model placed across all visible GPUs, whole decoder layers per GPU "
                        "(accelerate's balanced device map); needs CUDA")
    e.add_argument("--max_memory", help="--distribute's memory limits: one size for every GPU (70GiB) or per device "
                                        "(0=70GiB,1=70GiB,cpu=200GiB); default: what is free")
    e.add_argument("--data_dir", default=os.environ.get("PTQ_DATA_DIR"),
                   help="local data folder (layout of ../shared/assets/data; default $PTQ_DATA_DIR); "
                        "unset = Hugging Face hub")

    z = parser.add_argument_group("zero-shot tasks (lm-evaluation-harness)")
    z.add_argument("--tasks", help="comma list of lm-eval tasks scored after perplexity, e.g. "
                                   "piqa,arc_easy,arc_challenge,hellaswag,winogrande,boolq,lambada_openai,openbookqa")
    z.add_argument("--num_fewshot", type=int, default=0, help="examples in each prompt (0 = zero-shot)")
    z.add_argument("--lm_eval_batch_size", type=_int_or_text, default=1,
                   help="documents per forward pass: N, auto or auto:N (lm-eval finds the largest that fits)")
    z.add_argument("--lm_eval_limit", type=_count_or_fraction,
                   help="score at most this many documents per task (a value below 1: that fraction)")
    z.add_argument("--tasks_data_dir", default=os.environ.get("PTQ_TASKS_DIR"),
                   help="local task files (layout of ../shared/assets/data/tasks; default $PTQ_TASKS_DIR, else "
                        "--data_dir/tasks when it exists); unset = the stock tasks from the Hugging Face hub")

    c = parser.add_argument_group("calibration data")
    c.add_argument("--calib_dataset", "--dataset_name_or_path", dest="calib_dataset", default="c4",
                   help="wikitext2, c4, tinystories or a text/jsonl file")
    c.add_argument("--nsamples", type=int, default=128, help="calibration windows")
    c.add_argument("--seed", type=int, default=0)

    g = parser.add_argument_group("GPTQ (layer-by-layer calibration)")
    g.add_argument("--gptq", action="store_true", help="quantize weights with GPTQ instead of round-to-nearest")
    g.add_argument("--percdamp", type=float, default=0.01, help="Hessian damping, fraction of its mean diagonal")
    g.add_argument("--gptq_block_size", type=int, default=128, help="GPTQ lazy-batch block width")
    g.add_argument("--act_order", action="store_true", help="quantize columns by decreasing Hessian diagonal")
    g.add_argument("--static_groups", action="store_true", help="fit group scales before GPTQ updates the weight")
    g.add_argument("--hessian_dtype", default="float32", choices=("float32", "float64"))
    g.add_argument("--calib_batch_size", type=int, default=1, help="calibration windows per forward pass")
    g.add_argument("--offload_activations", action="store_true",
                   help="keep calibration activations on CPU (only the current block on the GPU)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted GPTQ run from its progress under --output_dir")

    f = parser.add_argument_group("FlatQuant (learned Kronecker transforms and clipping, block by block)")
    f.add_argument("--cali_trans", action="store_true", help="learn the Kronecker affine transforms")
    f.add_argument("--add_diag", action="store_true", help="learn a per-channel scaling (SmoothQuant-initialised)")
    f.add_argument("--lwc", action="store_true", help="learnable weight clipping (per output channel)")
    f.add_argument("--lac", action="store_true", help="learnable activation clipping (per tensor)")
    f.add_argument("--epochs", type=int, default=15, help="training epochs per block")
    f.add_argument("--flat_lr", type=float, default=5e-3, help="AdamW learning rate (cosine schedule)")
    f.add_argument("--cali_bsz", type=int, default=4, help="calibration windows per training step")
    f.add_argument("--diag_alpha", type=float, default=0.3, help="SmoothQuant exponent of the initial scaling")
    f.add_argument("--deactive_amp", action="store_true", help="train in float32 on CUDA (default: bf16 autocast)")
    f.add_argument("--save_matrix", action="store_true", help="save each block's learned transforms and clips")
    f.add_argument("--reload_matrix", action="store_true", help="load saved transforms and clips, skip training")
    f.add_argument("--matrix_path", help="their folder (default: OUTPUT_DIR/flat_matrices/RUN_NAME)")

    o = parser.add_argument_group("output")
    o.add_argument("--output_dir", default="results", help="where the run's JSON goes")
    o.add_argument("--run_name", help="file name of the results JSON (default: model and recipe)")
    o.add_argument("--save_path", help="directory for the real-quantized checkpoint (packed 4-bit weights, "
                                       "scales, online transforms, tokenizer); must not exist")
    o.add_argument("--load_quantized", metavar="DIR",
                   help="evaluate a real-quantized checkpoint on the kernels (its own recipe; quantization "
                        "flags are ignored)")
    o.add_argument("--log_wandb", action="store_true", help="log to wandb (WANDB_MODE=offline works)")
    o.add_argument("--wandb_project", default=os.environ.get("WANDB_PROJECT", "ptq-harness"))
    o.add_argument("--wandb_group", default=os.environ.get("WANDB_RUN_GROUP"))


def _int_or_text(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a document count or a fraction, got {text!r}") from None


def _comma_list(text: str | None) -> tuple[str, ...]:
    if text is None or text.strip().lower() == "none":
        return ()
    return tuple(d.strip() for d in text.split(",") if d.strip())


def _tasks_data_dir(args: argparse.Namespace) -> str | None:
    """``--tasks_data_dir``, else the ``tasks`` folder of ``--data_dir`` where it has one."""
    if args.tasks_data_dir:
        return args.tasks_data_dir
    if args.data_dir and os.path.isdir(os.path.join(args.data_dir, "tasks")):
        return os.path.join(args.data_dir, "tasks")
    return None


def common_config_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        model=args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
        ppl_datasets=_comma_list(args.ppl_datasets), seqlen=args.seqlen, eval_limit=args.eval_limit,
        eval_batch_size=args.eval_batch_size, data_dir=args.data_dir, tasks=_comma_list(args.tasks),
        num_fewshot=args.num_fewshot, lm_eval_batch_size=args.lm_eval_batch_size, lm_eval_limit=args.lm_eval_limit,
        tasks_data_dir=_tasks_data_dir(args), calib_dataset=args.calib_dataset,
        nsamples=args.nsamples, calib_batch_size=args.calib_batch_size,
        offload_activations=args.offload_activations, resume=args.resume, save_matrix=args.save_matrix,
        reload_matrix=args.reload_matrix, matrix_path=args.matrix_path, seed=args.seed, output_dir=args.output_dir,
        run_name=args.run_name,
        save_path=args.save_path, load_quantized=args.load_quantized,
        distribute=args.distribute, max_memory=args.max_memory,
        log_wandb=args.log_wandb, wandb_project=args.wandb_project, wandb_group=args.wandb_group,
    )


def gptq_recipe_kwargs(args: argparse.Namespace) -> dict:
    """The recipe fields the GPTQ and FlatQuant flags set (``method``, ``gptq``, ``flatquant``).

    Any of --cali_trans / --add_diag / --lwc / --lac makes the method FlatQuant, whose
    weights are then quantized by GPTQ with --gptq, else at the learned clip (RTN).
    """
    from calib import GPTQConfig
    from calib.flatquant import FlatQuantConfig

    flat = args.cali_trans or args.add_diag or args.lwc or args.lac
    gptq = GPTQConfig(block_size=args.gptq_block_size, percdamp=args.percdamp, act_order=args.act_order,
                      static_groups=args.static_groups, hessian_dtype=args.hessian_dtype)
    if not flat:
        return dict(method="gptq" if args.gptq else "rtn", gptq=gptq)
    return dict(method="flatquant", gptq=gptq, flatquant=FlatQuantConfig(
        epochs=args.epochs, flat_lr=args.flat_lr, cali_bsz=args.cali_bsz, cali_trans=args.cali_trans,
        add_diag=args.add_diag, lwc=args.lwc, lac=args.lac, diag_alpha=args.diag_alpha,
        weight_method="gptq" if args.gptq else "rtn", amp=not args.deactive_amp))


def run_driver(parser: argparse.ArgumentParser, build_config, argv: list[str] | None = None) -> int:
    """Parse, build the RunConfig, run the pipeline, print the Markdown line.

    Bad input (ValueError, missing files, unreachable models) ends with exit code 2 and one
    line on stderr naming the problem, before any heavy work. Under torchrun every rank
    runs this; ranks other than 0 log only warnings and print nothing (rank 0 reports).
    """
    from calib import distributed
    from models import resolve_device
    from pipeline import run

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if rank == 0 else
                        f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    try:
        cfg = build_config(args)
        distributed.init(use_cuda=resolve_device(cfg.device).type == "cuda")
        result = run(cfg)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}" if rank == 0 else f"error (rank {rank}): {err}", file=sys.stderr)
        return 2
    finally:
        distributed.destroy()
    if result is not None:
        print(result.markdown())
    return 0
