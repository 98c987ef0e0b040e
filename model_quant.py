"""FP-Quant-style driver: ``--format --w_bits --a_bits --w_group_size ...``.

Builds a recipe from the flags and hands it to the pipeline; no algorithm lives here.
Bits 16 leave a tensor in full precision. Group sizes: -1 = per channel (weights) /
per token (activations) / per head (K, V); 0 = per tensor; N > 0 = groups of N.
"""

from __future__ import annotations

import argparse
import sys

from configs import TRANSFORMS, QuantRecipe, RunConfig
from pipeline.cli import add_common_args, common_config_kwargs, gptq_recipe_kwargs, run_driver
from quant_layers import FORMATS, QuantSpec


def spec_from_flags(fmt: str, bits: int, exp_bits: int | None, group_size: int, row_granularity: str,
                    asym: bool = False, observer: str = "minmax", clip_ratio: float = 1.0,
                    static_tensor_scale: bool = False) -> QuantSpec | None:
    if bits == 16:
        return None
    if group_size > 0:
        granularity = "group"
    else:
        granularity = "tensor" if group_size == 0 else row_granularity
    return QuantSpec(fmt, bits, exp_bits=exp_bits, granularity=granularity,
                     group_size=group_size if group_size > 0 else None, symmetric=not asym,
                     observer=observer, clip_ratio=clip_ratio, static_tensor_scale=static_tensor_scale)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    q = p.add_argument_group("quantization")
    q.add_argument("--format", default="int", help=f"element format: {', '.join(FORMATS)}")
    q.add_argument("--w_bits", type=int, default=16)
    q.add_argument("--a_bits", type=int, default=16)
    q.add_argument("--k_bits", type=int, default=16)
    q.add_argument("--v_bits", type=int, default=16)
    q.add_argument("--w_exp_bits", type=int, help="FP/MXFP exponent bits of weights (default by width)")
    q.add_argument("--a_exp_bits", type=int, help="FP/MXFP exponent bits of activations")
    q.add_argument("--kv_exp_bits", type=int, help="FP/MXFP exponent bits of K and V")
    q.add_argument("--kv_format", help="K/V element format (default: --format)")
    q.add_argument("--w_group_size", type=int, default=-1)
    q.add_argument("--a_group_size", type=int, default=-1)
    q.add_argument("--k_groupsize", type=int, default=-1)
    q.add_argument("--v_groupsize", type=int, default=-1)
    q.add_argument("--w_asym", action="store_true")
    q.add_argument("--a_asym", action="store_true")
    q.add_argument("--k_asym", action="store_true")
    q.add_argument("--v_asym", action="store_true")
    q.add_argument("--w_observer", default="minmax", help="minmax or mse")
    q.add_argument("--a_clip_ratio", type=float, default=1.0)
    q.add_argument("--a_static_tensor_scale", action="store_true",
                   help="NVFP4 activations: the fp32 tensor scale from each linear input's absmax over the calibration "
                        "windows (--calib_dataset, --nsamples), not from each input as it comes")
    q.add_argument("--k_clip_ratio", type=float, default=1.0)
    q.add_argument("--v_clip_ratio", type=float, default=1.0)
    q.add_argument("--quantize_lm_head", action="store_true", help="also quantize lm_head (kept FP by default)")
    q.add_argument("--lm_head_a_bits", type=int,
                   help="bits of lm_head's input with --quantize_lm_head (default: --a_bits); 8 with INT4 weights "
                        "runs W4A8 on the decode kernel")
    q.add_argument("--lm_head_w_bits", type=int,
                   help="bits of lm_head's weights with --quantize_lm_head (default: --w_bits); 8 with "
                        "--lm_head_a_bits 8 runs W8A8 on the decode kernel")
    t = p.add_argument_group("transform")
    t.add_argument("--transform_class", default="identity", choices=TRANSFORMS,
                   help="rotation fused into the model before quantization")
    t.add_argument("--hadamard_group_size", type=int,
                   help="block size of block_hadamard (default 128); for hadamard, the block used "
                        "where no full Hadamard exists (default: largest power of two)")
    t.add_argument("--rotation_seed", type=int, default=0, help="seed of random signs / random orthogonal")
    x = p.add_argument_group("real quantization")
    x.add_argument("--real_quant", action="store_true",
                   help="after quantizing, save a real-quantized checkpoint (packed 4-bit) to --save_path")
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    kv_format = args.kv_format or args.format
    if args.a_static_tensor_scale and args.a_bits == 16:
        raise ValueError("--a_static_tensor_scale calibrates NVFP4 activations' tensor scale: add --format nvfp "
                         "--a_bits 4, or drop it")
    recipe = QuantRecipe(
        weight=spec_from_flags(args.format, args.w_bits, args.w_exp_bits, args.w_group_size, "channel",
                               args.w_asym, args.w_observer),
        activation=spec_from_flags(args.format, args.a_bits, args.a_exp_bits, args.a_group_size, "token",
                                   args.a_asym, clip_ratio=args.a_clip_ratio,
                                   static_tensor_scale=args.a_static_tensor_scale),
        key=spec_from_flags(kv_format, args.k_bits, args.kv_exp_bits, args.k_groupsize, "head",
                            args.k_asym, clip_ratio=args.k_clip_ratio),
        value=spec_from_flags(kv_format, args.v_bits, args.kv_exp_bits, args.v_groupsize, "head",
                              args.v_asym, clip_ratio=args.v_clip_ratio),
        **gptq_recipe_kwargs(args),
        transform=args.transform_class,
        hadamard_group_size=args.hadamard_group_size,
        rotation_seed=args.rotation_seed,
        quantize_lm_head=args.quantize_lm_head,
        lm_head_a_bits=args.lm_head_a_bits,
        lm_head_w_bits=args.lm_head_w_bits,
    )
    if args.real_quant != bool(args.save_path):
        raise ValueError("--real_quant and --save_path go together: --real_quant --save_path DIR writes the "
                         "real-quantized checkpoint")
    return RunConfig(quant=recipe, **common_config_kwargs(args))


def main(argv: list[str] | None = None) -> int:
    return run_driver(build_parser(), build_config, argv)


if __name__ == "__main__":
    sys.exit(main())
