"""Every candidate config of the one-row FPx kernel, or of its tensor-core tile kernel, timed where a model runs it:
in a stream.

The row kernel's tuner (``fpx_gemm._fpx_row_autotuned``) times each candidate alone, and the decode step keeps the
picks ``fpx_gemm.PINNED_ROW_CONFIGS`` holds. Inside the step's CUDA graph a product runs between other kernels,
where its launch overlaps the one before: kernel_bench's ``--in_stream`` timing. This sweep times one activation row
against each weight shape (``--shapes``; ``--gated`` ones as an MLP's gate/up product with silu(gate) * up in the
epilogue, as the model runs them) for every config the tuner would consider at that shape (``--tuner_configs``),
the pinned one, and any ``--extra`` ones, each in a stream of CUDA-graph calls with the L2 flushed before each
(``benchmarks.timing``), beside ``torch.matmul`` in the activations' dtype (``--dtype``: bf16, or fp16). Each
config's output is checked against the torch twin.

    python benchmarks/fpx_row_sweep.py --tuner_configs --extra "32,64,4,2,0,4,1,80;64,32,8,2,0,8,1,80" \\
        --out benchmarks/results/fpx_row_sweep_h100

``--kernel tile`` sweeps the tensor-core kernel (``fpx_gemm._fpx_kernel``) at ``--rows`` activation rows instead
(the decode batches and short prompts of 5 to 1023 rows run on it): every config its autotuner would consider at
those rows and K (``--tuner_configs``; else only the autotuner's own pick, which the table marks) and ``--extra``
ones, written as ``fpx_gemm.GPU_SPLIT_CONFIGS`` holds them. ``--in_stream 0`` times lone CUDA-graph replays, as
``kernel_bench.py --cuda_graph`` does:

    python benchmarks/fpx_row_sweep.py --kernel tile --rows 128 --shapes 4096x4096,6144x4096 --tuner_configs \\
        --extra "128,64,128,4,3,1,1,4" --out benchmarks/results/fpx_tile_sweep_128_h100

(``--extra`` of the row kernel takes ``gemv_ncu.py``'s FPx row configs; up to commit 6ac4c4d it took
``BLOCK_NxBLOCK_KWxWARPSxSPLIT_KxMAXNREG`` with a trailing p to prefetch, two stages and no pipelining, as the
result files of 2026-12-06 record it.)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.gemv_ncu import fpx_row_config, parse_fpx_configs  # noqa: E402
from benchmarks.kernel_bench import (  # noqa: E402
    FPX_FORMATS, WEIGHT_ONLY_DTYPES, described, fpx_weight, parse_shapes, parse_tiles,
)
from benchmarks.result_files import markdown_header, run_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, gpu_stream_timer, stream_timer_note  # noqa: E402
from quant_layers.packing import element_named  # noqa: E402

# Llama-3-8B's decode products (N x K): fused q/k/v, o_proj, fused gate/up (gated), down_proj.
DEFAULT_SHAPES = "6144x4096,4096x4096,28672x4096,4096x14336"
DEFAULT_GATED = "28672x4096"
KERNELS = ("row", "tile")
TILE_FORM = "a tile config is BLOCK_M,BLOCK_N,BLOCK_K,warps,stages,paired,swap_ab,split_k[,maxnreg]"
POWERS_OF_TWO = [2**i for i in range(10)]


def _checked(config: tuple, fields: tuple) -> None:
    """A ValueError naming each of ``fields`` ((what, value, ok, allowed)) that is not ok in ``config``."""
    problems = [f"{what} {value} ({allowed})" for what, value, ok, allowed in fields if not ok]
    if problems:
        raise ValueError(f"config {','.join(str(int(v)) for v in config)}: " + "; ".join(problems))


def _common_fields(warps: int, cap: int) -> tuple:
    """The checks both kernels' configs share: warps and the register cap."""
    return (("warps", warps, warps in (1, 2, 4, 8, 16), "1, 2, 4, 8 or 16"),
            ("maxnreg", cap, cap == 0 or 24 <= cap <= 255, "0 for none, or 24 to 255"))


def parse_configs(text: str) -> list:
    """The row kernel's ``--extra``: ``gemv_ncu.parse_fpx_configs``' configs, each checked, as fixed
    ``triton.Config``s (``gemv_ncu.fpx_row_config``); a ValueError naming what is wrong otherwise."""
    from quant_kernels.fpx_gemm import ROW_MAX_SPLIT_K, ROW_MIN_BLOCK_N

    configs = parse_fpx_configs(text)
    for config in configs:
        block_n, block_kw, warps, _, _, split, _, cap = config
        _checked(config, (
            ("BLOCK_N", block_n, block_n in POWERS_OF_TWO and block_n >= ROW_MIN_BLOCK_N,
             f"a power of two, at least {ROW_MIN_BLOCK_N}"),
            ("BLOCK_KW", block_kw, block_kw in POWERS_OF_TWO, "a power of two"),
            ("split_k", split, 1 <= split <= ROW_MAX_SPLIT_K, f"1 to {ROW_MAX_SPLIT_K}"), *_common_fields(warps, cap)))
    return [fpx_row_config(config) for config in configs]


def parse_tile_configs(text: str) -> list:
    """The tile kernel's ``--extra``: ';'-separated ``TILE_FORM`` configs (``GPU_SPLIT_CONFIGS``' order, maxnreg 0
    when left out: uncapped), each checked, as fixed ``triton.Config``s; a ValueError naming what is wrong
    otherwise."""
    import triton

    from quant_kernels.fpx_gemm import TILE_MAX_SPLIT_K

    configs = []
    for config in parse_tiles(text, TILE_FORM, 8, 9):
        block_m, block_n, block_k, warps, stages, paired, swap, split, cap = (*config, 0)[:9]
        _checked(config, (
            ("BLOCK_M", block_m, block_m in POWERS_OF_TWO and block_m >= 16, "a power of two, at least 16"),
            ("BLOCK_N", block_n, block_n in POWERS_OF_TWO and block_n >= 16, "a power of two, at least 16"),
            ("BLOCK_K", block_k, block_k in POWERS_OF_TWO and block_k >= 16 * (8 if paired and not swap else 1),
             "a power of two, at least 16; 128 when paired and not swapped (eight dots of 16 a step)"),
            ("paired", paired, paired in (0, 1), "0 or 1"),
            ("swap_ab", swap, swap in (0, paired), "0, or 1 when paired"),
            ("split_k", split, 1 <= split <= TILE_MAX_SPLIT_K, f"1 to {TILE_MAX_SPLIT_K}"),
            *_common_fields(warps, cap)))
        configs.append(triton.Config(dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PAIRED=bool(paired),
                                          SWAP_AB=bool(swap), SPLIT_K=split),
                                     num_warps=warps, num_stages=stages, maxnreg=cap or None))
    return configs


def config_fields(config) -> tuple:
    """A config's identity: its fields, warps, stages and register cap."""
    return tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages, config.maxnreg


def pinned_fields(n: int, kw: int, element: str, gated: bool, device: torch.device, rows: int = 1) -> tuple | None:
    """The row config ``PINNED_ROW_CONFIGS`` holds for ``rows`` rows of ``element`` at this shape on this device
    (``_row_fields``' form), or None."""
    import triton

    from quant_kernels.fpx_gemm import PINNED_ROW_CONFIGS, ROW_TUNING_KEY, kernel_fields

    if device.type != "cuda":
        return None
    bits = element_named(element).bits
    named = dict(N=n, KW=kw, BITS=bits, MAN_BITS=kernel_fields(element, bits)[1],
                 BLOCK_M=triton.next_power_of_2(rows), MMA=False, INTERLEAVED=False, GATED=gated)
    key = tuple(named[name] for name in ROW_TUNING_KEY)
    return PINNED_ROW_CONFIGS.get(torch.cuda.get_device_name(device), {}).get(key)


def _distinct_fitting(configs: list, length: int, step: str) -> list:
    """``configs`` each once, those that split ``length`` (K, or the row kernel's words) into slices of two
    ``step``-wide steps or more."""
    from quant_kernels.fpx_gemm import split_fits

    kept, seen = [], set()
    for config in configs:
        fields = config_fields(config)
        if fields not in seen and split_fits(length, config.kwargs[step], config.kwargs["SPLIT_K"]):
            seen.add(fields)
            kept.append(config)
    return kept


def candidates(kw: int, tuner: bool, extra: list, pinned: tuple | None) -> list:
    """The row kernel's configs to time at ``kw`` words a row, each once: the tuner's that split K into slices of
    two steps or more (``tuner``, else only the pinned one among them), then ``extra``'s that do."""
    from quant_kernels.fpx_gemm import _fpx_row_autotuned, _row_fields

    tuner_configs = [c for c in _fpx_row_autotuned.configs if tuner or _row_fields(c) == pinned]
    return _distinct_fitting(tuner_configs + extra, kw, "BLOCK_KW")


def tile_candidates(m: int, k: int, tuner: bool, extra: list, pick) -> list:
    """The tile kernel's configs to time at ``m`` rows and K = ``k``, each once: those its autotuner keeps there
    (``tuner``, else only its ``pick``), then ``extra``'s whose K slices have two steps or more."""
    from quant_kernels.fpx_gemm import _fpx_autotuned, _m_bucket, _prune_configs

    tuned = _prune_configs(_fpx_autotuned.configs, dict(M_BUCKET=_m_bucket(m), K=k)) if tuner else [pick]
    return _distinct_fitting([c for c in tuned if c is not None] + extra, k, "BLOCK_K")


def tuned_pick(call):
    """The tile kernel's autotuned config after ``call`` (its autotuned launch) ran; None under the interpreter,
    which runs a fixed config."""
    from quant_kernels.fpx_gemm import INTERPRET, _fpx_autotuned

    call()
    return None if INTERPRET else _fpx_autotuned.best_config


def bench_shape(n: int, k: int, gated: bool, element: str, tuner: bool, extra: list, time_ms,
                device: torch.device, rows: int = 1, tile: bool = False, dtype: str = "bf16") -> list[dict]:
    """One row for ``torch.matmul`` and one per candidate config (fastest first) at ``rows`` activation rows of
    ``dtype`` (``WEIGHT_ONLY_DTYPES``' names): the row kernel's configs, or the tile kernel's (``tile``); ``pick``
    marks the pinned one, or the autotuner's. ``x_bf16`` is the ratio over ``torch.matmul`` in ``dtype`` (the key
    ``kernel_bench.py`` writes for either dtype)."""
    from quant_kernels import reference
    from quant_kernels.fpx_gemm import _row_fields, fpx_matmul_triton

    x = torch.randn(rows, k, device=device, dtype=WEIGHT_ONLY_DTYPES[dtype])
    w = torch.randn(n, k, device=device, dtype=x.dtype) * 0.02
    planes, scale, _ = fpx_weight(w, element)
    bits = element_named(element).bits
    spec = dict(element=element, bits=bits, gated=gated)
    want = reference.fpx_matmul_ref(x.float(), planes, scale, **spec, out_dtype=torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in planes) + scale.numel() * scale.element_size()
    shape = f"{n}x{k}" + (" gated" if gated else "")
    matmul_ms = time_ms(lambda: torch.matmul(x, w.t()))
    if tile:  # a config's fields as the pick names it, the pick, the configs
        pick = tuned_pick(lambda: fpx_matmul_triton(x, planes, scale, **spec, row_kernel=False))
        fields, picked = config_fields, None if pick is None else config_fields(pick)
        configs = tile_candidates(rows, k, tuner, extra, pick)
    else:
        fields, picked = _row_fields, pinned_fields(n, k // 8, element, gated, device, rows)
        configs = candidates(k // 8, tuner, extra, picked)
    timed = []
    for config in configs:
        def call(config=config):
            return fpx_matmul_triton(x, planes, scale, **spec, row_kernel=not tile, config=config)

        got = call().float()
        rel_err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()
        ms = time_ms(call)
        timed.append(dict(shape=shape, config=described(config), pick=fields(config) == picked, us=ms * 1e3,
                          gb_s=weight_bytes / ms / 1e6, x_bf16=matmul_ms / ms, rel_err=rel_err))
    timed.sort(key=lambda r: r["us"])
    return [dict(shape=shape, config=f"{dtype} torch.matmul", pick=False, us=matmul_ms * 1e3,
                 gb_s=2 * n * k / matmul_ms / 1e6, x_bf16=1.0, rel_err=0.0)] + timed


def markdown(result: dict) -> str:
    tile, rows = result.get("kernel") == "tile", result.get("rows_m", 1)
    dtype = result.get("dtype", "bf16")  # (bf16 in the files written before the option)
    kernel = "tensor-core tile kernel" if tile else "one-row FPx kernel"
    where = "in a stream" if "in a stream" in result["timing"] else "as lone CUDA-graph replays"
    lines = markdown_header(f"The {kernel}'s configs {where}: {result['element']} at {rows} "
                            f"row{'s' if rows > 1 else ''}", result)
    marked = "the autotuner's pick" if tile else "the pinned pick (`fpx_gemm.PINNED_ROW_CONFIGS`)"
    lines += [f"{dtype} activations. Fastest first under each shape's {dtype} row; `*` marks {marked}. "
              f"GB/s counts the weight's planes and scales ({dtype}: its values); the error is the largest against "
              f"the largest output of the fp32 twin (the kernel's output is {dtype}).", "",
              f"| shape | config | µs | GB/s | x {dtype} | error |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['shape']} | {'* ' if r['pick'] else ''}{r['config']} | {r['us']:.1f} | "
                     f"{r['gb_s']:.0f} | {r['x_bf16']:.2f} | {r['rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES), help="N x K weight shapes")
    p.add_argument("--gated", type=parse_shapes, default=None,
                   help="those of --shapes timed as a gated gate/up product (silu(gate) * up in the epilogue; "
                        f"by default those of {DEFAULT_GATED})")
    p.add_argument("--element", default="e3m2", choices=FPX_FORMATS,
                   help="the weight-only element (default FP6 E3M2)")
    p.add_argument("--kernel", default="row", choices=KERNELS,
                   help="the one-row kernel's configs (default), or the tensor-core tile kernel's")
    p.add_argument("--rows", type=int, default=1,
                   help="activation rows (default 1; the row kernel takes up to fpx_gemm.ROW_MAX_M)")
    p.add_argument("--tuner_configs", action="store_true",
                   help="time every config the kernel's tuner would consider (else the pinned one, or the tile "
                        "kernel's autotuned pick, only)")
    p.add_argument("--extra", default="",
                   help="';'-separated configs to time too: the row kernel's as gemv_ncu.py takes them, "
                        "BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k[,loop_stages[,maxnreg]]; the tile kernel's "
                        "BLOCK_M,BLOCK_N,BLOCK_K,warps,stages,paired,swap_ab,split_k[,maxnreg] (maxnreg 0: uncapped)")
    p.add_argument("--dtype", default="bf16", choices=sorted(WEIGHT_ONLY_DTYPES),
                   help="the activations' dtype, and torch.matmul's that the configs are timed against (default bf16)")
    p.add_argument("--in_stream", type=int, default=20,
                   help="calls per timed CUDA graph (0: lone CUDA-graph replays, the L2 flushed before each)")
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    tile = args.kernel == "tile"
    from quant_kernels.fpx_gemm import ROW_MAX_M, check_fixed_config

    if args.rows < 1 or not tile and args.rows > ROW_MAX_M:
        p.error(f"--rows takes 1 to {ROW_MAX_M} for the row kernel, at least 1 for the tile kernel; got {args.rows}")
    if args.in_stream < 0:
        p.error(f"--in_stream takes 0 (lone replays) or more calls a graph, got {args.in_stream}")
    if tile and args.gated:
        p.error("--gated: the tile kernel does not gate in its epilogue (the row kernel's GATED); leave it out")
    try:
        extra = parse_tile_configs(args.extra) if tile else parse_configs(args.extra)
        for config in extra:
            for _, k in args.shapes:
                check_fixed_config(config, not tile, k)
    except ValueError as error:
        p.error(f"--extra: {error}")
    if args.gated is None:
        args.gated = [] if tile else [shape for shape in parse_shapes(DEFAULT_GATED) if shape in args.shapes]
    unknown = [f"{n}x{k}" for n, k in args.gated if (n, k) not in args.shapes]
    if unknown:
        p.error(f"--gated names shapes that --shapes does not: {', '.join(unknown)}")
    device, time_ms = gpu_stream_timer(p, args.in_stream, args.l2_flush)
    result = {**run_header("fpx_row_sweep.py", argv, device), "element": args.element, "kernel": args.kernel,
              "rows_m": args.rows, "dtype": args.dtype,
              "timing": stream_timer_note(args.in_stream, args.l2_flush),
              "rows": []}
    for n, k in args.shapes:
        result["rows"] += bench_shape(n, k, (n, k) in args.gated, args.element, args.tuner_configs, extra,
                                      time_ms, device, args.rows, tile, args.dtype)
        write_result_files(args.out, result, markdown(result))
        print(markdown(result).splitlines()[-1], flush=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
