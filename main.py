"""LLM-FP4-style driver: ``--quant_config NAME --qbits W A KV [Wexp Aexp KVexp]``.

Exponent bits 0 (or omitted) mean INT for that tensor; e.g. ``--qbits 4 4 4 2 2 2`` is
FP4 E2M1 everywhere and ``--qbits 4 4 4`` INT4. Bits 16 leave a tensor in full
precision. Builds a recipe and hands it to the pipeline; no algorithm lives here.

LLM-FP4 search: ``--quant_config FPQ_config_llama --qbits 4 4 4 2 2 2 --calib_size 32
--search_round 3 --search_intervals 0.01 1.2 100`` searches and saves its parameters under
``--output_dir/search_result/``; ``--only_eval --ptq_param_path PATH`` evaluates them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from configs import QBITS_CONFIGS, RunConfig, qbits_recipe
from pipeline.cli import add_common_args, common_config_kwargs, gptq_recipe_kwargs, run_driver


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    q = p.add_argument_group("quantization")
    q.add_argument("--qbits", type=int, nargs="+", default=[16, 16, 16], metavar="N",
                   help="W A KV bits, optionally followed by W A KV exponent bits")
    q.add_argument("--quant_config", default="RTN_config_llama",
                   help=f"named quantization config: {', '.join(QBITS_CONFIGS)}")
    f = p.add_argument_group("LLM-FP4 search (FPQ_config_llama, FPQ_baseline_config_llama, MinMax_config_llama)")
    f.add_argument("--search_round", type=int, default=3, help="alternations of weight and activation searches")
    f.add_argument("--search_intervals", type=float, nargs=3, default=[0.01, 1.2, 100], metavar=("G1", "G2", "N"),
                   help="candidate max values: N values of γ from G1 to G2, times the min-max value")
    f.add_argument("--calib_size", type=int, default=32, help="calibration windows of --seqlen tokens")
    f.add_argument("--search_tokens", type=int, default=256,
                   help="calibration tokens each candidate is scored on (the largest quarter plus a weighted "
                        "random sample; K/V: a quarter as many query rows); 0 = every token (slow on CPU)")
    f.add_argument("--only_eval", action="store_true", help="evaluate saved search parameters (--ptq_param_path)")
    f.add_argument("--ptq_param_path", help="a .safetensors file written by an earlier search")
    r = p.add_argument_group("rotation (QuaRot)")
    r.add_argument("--rotate", action="store_true", help="fuse a rotation into the model (QuaRot)")
    r.add_argument("--rotate_mode", default="hadamard", choices=("hadamard", "random", "block_hadamard"),
                   help="randomized Hadamard, random orthogonal, or block-diagonal Hadamard")
    r.add_argument("--hadamard_group_size", type=int, help="block size for block_hadamard (default 128)")
    r.add_argument("--rotation_seed", type=int, default=0)
    x = p.add_argument_group("real quantization")
    x.add_argument("--quantized_save", action="store_true",
                   help="save a real-quantized checkpoint (packed 4-bit) to --save_path "
                        "(default --output_dir/quantized/RUN_NAME)")
    return p


ROTATE_MODES = {"hadamard": "hadamard", "random": "random_orthogonal", "block_hadamard": "block_hadamard"}


def build_config(args: argparse.Namespace) -> RunConfig:
    recipe = qbits_recipe(args.quant_config, args.qbits)
    flat = args.cali_trans or args.add_diag or args.lwc or args.lac
    if recipe.method == "fpq":
        if args.gptq or flat:
            raise ValueError(f"--gptq / the FlatQuant flags and --quant_config {args.quant_config} both set the "
                             f"weights: use one (GPTQ or FlatQuant with --quant_config RTN_config_llama)")
        fpq = dataclasses.replace(recipe.fpq, search_round=args.search_round,
                                  search_intervals=tuple(args.search_intervals), calib_size=args.calib_size,
                                  search_tokens=args.search_tokens)
        recipe = dataclasses.replace(recipe, fpq=fpq)
    elif recipe.weight is not None or args.gptq or flat:
        recipe = dataclasses.replace(recipe, **gptq_recipe_kwargs(args))
    if args.rotate:
        recipe = dataclasses.replace(recipe, transform=ROTATE_MODES[args.rotate_mode],
                                     hadamard_group_size=args.hadamard_group_size, rotation_seed=args.rotation_seed)
    elif args.hadamard_group_size is not None:
        raise ValueError("--hadamard_group_size needs --rotate")
    cfg = RunConfig(quant=recipe, only_eval=args.only_eval, ptq_param_path=args.ptq_param_path,
                    **common_config_kwargs(args))
    if args.quantized_save and not args.save_path:
        from pipeline.run import default_run_name

        path = os.path.join(args.output_dir, "quantized", args.run_name or default_run_name(cfg))
        cfg = dataclasses.replace(cfg, save_path=path)
    elif args.save_path and not args.quantized_save:
        raise ValueError("--save_path is where --quantized_save writes: add --quantized_save")
    return cfg


def main(argv: list[str] | None = None) -> int:
    return run_driver(build_parser(), build_config, argv)


if __name__ == "__main__":
    sys.exit(main())
