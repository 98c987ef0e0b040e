"""Launch a one-row decode kernel with fixed configs, one row of activations, for Nsight Compute to profile.

``kernel_bench.py`` times the autotuner's pick; ncu needs each config launched on its own,
without the autotuner's trial runs. This driver calls the kernel with each config fixed (its
``config`` argument) for every ``--shapes`` x ``--configs`` pair, ``--launches`` times each, on
random codes: ``--kernel w4a4`` the W4A4 decode kernel (``w4a4_gemv.w4a4_gemv_triton``, INT4 or
E2M1 weights), ``--kernel fpx`` the FPx row kernel (``fpx_gemm.fpx_matmul_triton`` with
``row_kernel=True``, a bfloat16 row; ``PTQ_FPX_MMA=1`` takes its tensor-core form), ``--kernel fpx_tile``
the FPx tensor-core tile kernel at ``--rows`` activation rows of ``--dtype`` (``row_kernel=False``; its configs as
``fpx_row_sweep.py --kernel tile --extra`` writes them), ``--kernel w4a4_tc`` the W4A4 tensor-core decode kernel
(``tensor_cores=True``) at ``--rows`` rows on the codes ``w4a4_linear`` writes for them there (E4M3 planes for
E2M1 weights, dp4a bytes for INT4; ``--packed_codes``: the activations' packed codes, its A_PACKED form). Profile
it with, for example:

    ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \\
        --section SchedulerStats --section MemoryWorkloadAnalysis -k regex:_w4a4_gemv_kernel \\
        python benchmarks/gemv_ncu.py --shapes 4096x4096,14336x4096

(``-k regex:_fpx_row_kernel`` for the FPx row kernel, ``-k regex:_fpx_kernel`` for the tile kernel,
``-k regex:_w4a4_tc_kernel`` for the tensor-core decode kernel; ncu locks
the clocks at base unless given ``--clock-control none``). ``benchmarks/results/kernels_h200.md`` (seventh run)
holds what it showed on the H200 for the W4A4 kernel.
``--cpu_dry_run`` launches under the Triton interpreter on a tiny shape (to exercise the
script without a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import WEIGHT_ONLY_DTYPES, described, parse_shapes, parse_tiles  # noqa: E402

# (BLOCK_N, BLOCK_KW, num_warps, num_stages, PREFETCH[, FOLD[, LOOP_STAGES]]): the configs of the ncu run of
# 2026-12-02, and one software-pipelined config.
DEFAULT_CONFIGS = "16,256,8,2,0;16,256,8,2,0,4;2,128,2,3,0;8,128,4,2,1;8,64,4,3,0,1,3"
# (BLOCK_N, BLOCK_KW, num_warps, num_stages, PREFETCH, SPLIT_K[, LOOP_STAGES]) of the FPx row kernel: the H200's
# picks for FP6 at one row (64 x 64 words split 4 at N = 4096, unsplit at N = 28672; ``kernels_h200.md``, sixteenth
# run), their prefetching twins, the unsplit 32 x 128 pick before split K, and 64 x 64 split 4 capped at 80 registers.
FPX_DEFAULT_CONFIGS = "64,64,8,2,0,4;64,64,8,2,1,4;64,64,8,2,0,1;64,64,8,2,1,1;32,128,8,2,0,1;64,64,8,2,0,4,1,80"
# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, paired, swap_ab, split_k) of the FPx tile kernel: 64 x 64 swapped
# unsplit on 4 stages and 128 x 64 split four ways, FP6's fastest tiles at 64 and 128 rows on the H100
# (``kernels_h200.md``, sixty-second and sixty-third sessions).
FPX_TILE_DEFAULT_CONFIGS = "64,64,128,4,4,1,1,1;128,64,128,4,3,1,1,4"
# (BLOCK_N, BLOCK_KB, SPLIT_K, warps, stages) of the W4A4 tensor-core decode kernel: INT4's pin at 16 rows of 4096 x
# 4096 on the H100, E2M1's, and the split tile two processes' tuners picked there (7.8-8.0 us against 7.1;
# ``tc_sweep_int4_s67_h100.md``).
TC_DEFAULT_CONFIGS = "16,256,1,2,3;64,256,1,4,3;32,256,2,4,3"
DRY_SHAPE = (40, 256)
DRY_ROWS = 20  # (the tile kernel's dry run: a ragged row tile)
FPX_ELEMENTS = ("e3m2", "e2m3", "e2m2", "e3m1", "e2m1", "e3m0")
KERNEL_ELEMENTS = {"w4a4": ("int4", "e2m1"), "fpx": FPX_ELEMENTS, "fpx_tile": FPX_ELEMENTS,
                   "w4a4_tc": ("int4", "e2m1")}
# The activation rows a kernel of ``--rows`` takes unless told.
DEFAULT_ROWS = {"fpx_tile": 128, "w4a4_tc": 16}


def _row_configs(text: str, form: str, required: int, defaults: tuple[int, ...]) -> list[tuple]:
    """``parse_tiles`` of row configs: up to ``len(defaults)`` more fields after the ``required`` ones, filled from
    ``defaults`` when left out, the fifth (prefetch) as a bool."""
    tiles = parse_tiles(text, form, required, required + len(defaults))
    return [(*tile[:4], bool(tile[4]), *tile[5:], *defaults[len(tile) - required:]) for tile in tiles]


def parse_configs(text: str) -> list[tuple[int, int, int, int, bool, int, int]]:
    """'BLOCK_N,BLOCK_KW,warps,stages,prefetch[,fold[,loop_stages]];...' -> tuples (fold and loop_stages 1 when
    left out; loop_stages > 1 software-pipelines the K loop, ``w4a4_gemv.GEMV_PIPELINED_CONFIGS``)."""
    return _row_configs(text, "a config is BLOCK_N,BLOCK_KW,warps,stages,prefetch[,fold[,loop_stages]]", 5, (1, 1))


def parse_fpx_configs(text: str) -> list[tuple[int, int, int, int, bool, int, int, int]]:
    """'BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k[,loop_stages[,maxnreg]];...' -> tuples (loop_stages 1 and
    maxnreg 0, no cap, when left out)."""
    return _row_configs(text, "an FPx row config is BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k"
                        "[,loop_stages[,maxnreg]]", 6, (1, 0))


def parse_tc_configs(text: str) -> list[tuple[int, int, int, int, int]]:
    """'BLOCK_N,BLOCK_KB,split_k,warps,stages;...' -> tuples, each checked: BLOCK_N a power of two of at least
    ``TC_MIN_BLOCK_N`` (the split-K counters' tile), BLOCK_KB one of at least 32 (an int8 dot's K), warps a power of
    two, split_k and stages at least 1; else a ValueError naming the config."""
    from quant_kernels.w4a4_gemv import TC_MIN_BLOCK_N

    configs = parse_tiles(text, "a tensor-core decode config is BLOCK_N,BLOCK_KB,split_k,warps,stages", 5, 5)
    for block_n, block_kb, split, warps, stages in configs:
        if (block_n < TC_MIN_BLOCK_N or block_kb < 32 or any(v & (v - 1) for v in (block_n, block_kb, warps))
                or min(split, warps, stages) < 1):
            raise ValueError(f"{block_n},{block_kb},{split},{warps},{stages}: BLOCK_N must be a power of two of at "
                             f"least {TC_MIN_BLOCK_N}, BLOCK_KB one of at least 32, warps a power of two, split_k "
                             "and stages at least 1")
    return configs


def launch_tc(n: int, k: int, config: tuple[int, int, int, int, int], element: str, launches: int,
              device: torch.device, rows: int, packed: bool = False) -> torch.Tensor:
    """``launches`` calls of the tensor-core decode kernel with ``config`` fixed on ``rows`` random bfloat16 rows'
    codes, in the form ``w4a4_linear`` writes for ``element`` weights there (``decode_codes_form``) or packed
    (``packed``), and random weights of that element; returns the (rows, n) output."""
    import triton

    import quant_kernels
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    block_n, block_kb, split_k, warps, stages = config
    fixed = triton.Config(dict(BLOCK_N=block_n, BLOCK_KB=block_kb, SPLIT_K=split_k), num_warps=warps,
                          num_stages=stages)
    x = torch.randn(rows, k, dtype=torch.bfloat16, device=device)
    dp4a_for, fp8_codes = (None, False) if packed else quant_kernels.decode_codes_form(element, rows,
                                                                                         device.type == "cuda")
    codes = quant_kernels.quantize_activations(x, element, dp4a_for=dp4a_for, fp8_codes=fp8_codes, backend="triton")
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
    w_scale = torch.rand(n, 1, device=device)
    for _ in range(launches):
        out = w4a4_gemv_triton(*codes, w_packed, w_scale, a_element=element, w_element=element,
                               out_dtype=torch.bfloat16, tensor_cores=True, config=fixed)
    return out


def fpx_row_config(config: tuple[int, int, int, int, bool, int, int, int]):
    """A ``parse_fpx_configs`` tuple as the FPx row kernel's fixed ``triton.Config`` (maxnreg 0: uncapped)."""
    import triton

    block_n, block_kw, warps, stages, prefetch, split_k, loop_stages, maxnreg = config
    return triton.Config(dict(BLOCK_N=block_n, BLOCK_KW=block_kw, PREFETCH=prefetch, LOOP_STAGES=loop_stages,
                              SPLIT_K=split_k), num_warps=warps, num_stages=stages, maxnreg=maxnreg or None)


def launch_fpx(n: int, k: int, fixed, element: str, launches: int, device: torch.device, rows: int = 1,
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """``launches`` calls of an FPx kernel with the fixed ``triton.Config`` ``fixed`` on random bit planes and
    ``rows`` random activation rows of ``dtype``: the row kernel for a row config, the tile kernel for a tile config
    (BLOCK_M in it). Returns the (rows, n) output."""
    from quant_kernels.fpx_gemm import fpx_matmul_triton
    from quant_layers.packing import element_named, pack_planes

    bits = element_named(element).bits
    planes = pack_planes(torch.randint(0, 2**bits, (n, k), dtype=torch.int32, device=device), bits)
    x = torch.randn(rows, k, dtype=dtype, device=device)
    w_scale = torch.rand(n, 1, device=device)
    row_kernel = "BLOCK_M" not in fixed.kwargs
    for _ in range(launches):
        out = fpx_matmul_triton(x, planes, w_scale, element=element, bits=bits, row_kernel=row_kernel, config=fixed)
    return out


def dry_tile_config(config):
    """A tile ``triton.Config`` shrunk for the interpreter's dry run: 16 x 16 tiles, steps of 32 codes (128 where
    paired and unswapped), its form (paired, swapped) and a split of at most 2 kept."""
    import triton

    fields = config.kwargs
    step = 128 if fields["PAIRED"] and not fields["SWAP_AB"] else 32
    return triton.Config(dict(fields, BLOCK_M=16, BLOCK_N=16, BLOCK_K=step, SPLIT_K=min(fields["SPLIT_K"], 2)),
                         num_warps=1, num_stages=1)


def launch(n: int, k: int, config: tuple[int, int, int, int, bool, int, int], w_element: str, launches: int,
           device: torch.device) -> torch.Tensor:
    """``launches`` calls of the decode kernel with ``config`` on one random activation row; returns the (1, n)
    output."""
    import triton

    from quant_kernels.reference import dp4a_bytes
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    a_packed = torch.randint(0, 256, (1, k // 2), dtype=torch.uint8, device=device)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
    a_scale, w_scale = torch.rand(1, 1, device=device), torch.rand(n, 1, device=device)
    block_n, block_kw, warps, stages, prefetch, fold, loop_stages = config
    fixed = triton.Config(dict(BLOCK_N=block_n, BLOCK_KW=block_kw, PREFETCH=prefetch, FOLD=fold,
                               LOOP_STAGES=loop_stages), num_warps=warps, num_stages=stages)
    a_bytes = dp4a_bytes(a_packed, "int4", w_element)
    for _ in range(launches):
        out = w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, a_element="int4", w_element=w_element,
                               out_dtype=torch.bfloat16, config=fixed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="4096x4096,14336x4096",
                   help="N x K weight shapes, comma-separated, or a preset of kernel_bench.py")
    p.add_argument("--kernel", default="w4a4", choices=tuple(KERNEL_ELEMENTS),
                   help="w4a4: the W4A4 decode kernel; fpx: the FPx row kernel; fpx_tile: the FPx tensor-core tile "
                        "kernel; w4a4_tc: the W4A4 tensor-core decode kernel (default: %(default)s)")
    p.add_argument("--configs", default=None,
                   help=f"';'-separated configs: w4a4 BLOCK_N,BLOCK_KW,warps,stages,prefetch[,fold[,loop_stages]] "
                        f"(default {DEFAULT_CONFIGS}); fpx BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k"
                        f"[,loop_stages[,maxnreg]] (default {FPX_DEFAULT_CONFIGS}); fpx_tile BLOCK_M,BLOCK_N,BLOCK_K,"
                        f"warps,stages,paired,swap_ab,split_k[,maxnreg] (default {FPX_TILE_DEFAULT_CONFIGS}); "
                        f"w4a4_tc BLOCK_N,BLOCK_KB,split_k,warps,stages (default {TC_DEFAULT_CONFIGS})")
    p.add_argument("--rows", type=int, default=None,
                   help="fpx_tile, w4a4_tc: activation rows (default: 128 and 16)")
    p.add_argument("--dtype", default="bf16", choices=tuple(WEIGHT_ONLY_DTYPES),
                   help="fpx_tile: the activations' dtype (default: %(default)s)")
    p.add_argument("--w_element", default=None,
                   help="the weight element: int4 or e2m1 (w4a4, w4a4_tc, default int4); an FPx element such as e3m2 "
                        "(fpx, the default), e2m3, e2m2, e3m1, e2m1, e3m0")
    p.add_argument("--packed_codes", action="store_true",
                   help="w4a4_tc: the activations' packed codes (the A_PACKED form) in place of the codes the "
                        "linear writes")
    p.add_argument("--launches", type=int, default=3, help="launches per shape and config")
    p.add_argument("--cpu_dry_run", action="store_true", help="no GPU: the interpreter, a tiny shape")
    args = p.parse_args(argv)
    if args.cpu_dry_run:  # (before the tile configs' parser imports the kernels)
        os.environ["TRITON_INTERPRET"] = "1"
    fpx, tile, tc = args.kernel == "fpx", args.kernel == "fpx_tile", args.kernel == "w4a4_tc"
    w_element = args.w_element or KERNEL_ELEMENTS[args.kernel][0]
    if w_element not in KERNEL_ELEMENTS[args.kernel]:
        p.error(f"--kernel {args.kernel} takes --w_element {', '.join(KERNEL_ELEMENTS[args.kernel])}, got {w_element}")
    try:
        if tile:
            from benchmarks.fpx_row_sweep import parse_tile_configs  # (late: that sweep imports this module)

            configs = parse_tile_configs(args.configs or FPX_TILE_DEFAULT_CONFIGS)
        elif tc:
            configs = parse_tc_configs(args.configs or TC_DEFAULT_CONFIGS)
        else:
            configs = (parse_fpx_configs(args.configs or FPX_DEFAULT_CONFIGS) if fpx
                       else parse_configs(args.configs or DEFAULT_CONFIGS))
    except ValueError as err:
        p.error(str(err))
    if args.launches < 1:
        p.error(f"--launches must be at least 1, got {args.launches}")
    if args.rows is not None and args.rows < 1:
        p.error(f"--rows must be at least 1, got {args.rows}")
    if args.kernel not in DEFAULT_ROWS and args.rows is not None or not tile and args.dtype != p.get_default("dtype"):
        p.error(f"--rows is for --kernel fpx_tile and w4a4_tc, --dtype for fpx_tile (--kernel {args.kernel} takes "
                "one bfloat16 row)")
    if args.packed_codes and not tc:
        p.error(f"--packed_codes is for --kernel w4a4_tc, got --kernel {args.kernel}")
    if tc:
        from quant_kernels.w4a4_gemv import TC_MAX_M

        if not 1 <= (args.rows or DEFAULT_ROWS["w4a4_tc"]) <= TC_MAX_M:
            p.error(f"--kernel w4a4_tc takes 1 to {TC_MAX_M} rows, got --rows {args.rows}")
    args.rows = args.rows or DEFAULT_ROWS.get(args.kernel, 1)
    try:
        shapes = parse_shapes(args.shapes)
    except SystemExit as err:
        p.error(str(err))
    if any(k % 8 for _, k in shapes):
        p.error(f"the decode kernel takes K a multiple of 8, got shapes {args.shapes}")
    if args.cpu_dry_run:
        shapes = [DRY_SHAPE]
        if tile:  # (the interpreter's small tiles; a paired unswapped step takes eight dots of 16)
            configs = [dry_tile_config(c) for c in configs]
            args.rows = min(args.rows, DRY_ROWS)
        elif tc:  # (the interpreter's fixed tile, the split kept up to 2)
            configs = [(16, 32, min(c[2], 2), 1, 1) for c in configs]
        else:
            configs = [(8, 4, 1, 1, c[4], min(c[5], 4), c[6], c[7]) if fpx else (8, 4 * c[5], 1, 1, c[4], c[5], c[6])
                       for c in configs]
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU (under ncu), or pass --cpu_dry_run")
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    torch.manual_seed(0)
    for n, k in shapes:
        for config in configs:
            if tile:
                out = launch_fpx(n, k, config, w_element, args.launches, device, args.rows,
                                 WEIGHT_ONLY_DTYPES[args.dtype])
            elif tc:
                out = launch_tc(n, k, config, w_element, args.launches, device, args.rows, args.packed_codes)
            elif fpx:
                out = launch_fpx(n, k, fpx_row_config(config), w_element, args.launches, device)
            else:
                out = launch(n, k, config, w_element, args.launches, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            shown = (f"{described(config)}, {args.rows} {args.dtype} rows" if tile else
                     f"{config}, {args.rows} rows{' of packed codes' if args.packed_codes else ''}" if tc else config)
            print(f"N={n} K={k} config={shown}: {args.launches} launches, output finite: "
                  f"{bool(out.float().isfinite().all())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
