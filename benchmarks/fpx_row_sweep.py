"""Every candidate config of the one-row FPx kernel, timed where a decode step runs it: in a stream.

The row kernel's tuner (``fpx_gemm._fpx_row_autotuned``) times each candidate alone, and the decode step keeps the
picks ``fpx_gemm.PINNED_ROW_CONFIGS`` holds. Inside the step's CUDA graph a product runs between other kernels,
where its launch overlaps the one before: kernel_bench's ``--in_stream`` timing. This sweep times one activation row
against each weight shape (``--shapes``; ``--gated`` ones as an MLP's gate/up product with silu(gate) * up in the
epilogue, as the model runs them) for every config the tuner would consider at that shape (``--tuner_configs``),
the pinned one, and any ``--extra`` ones, each in a stream of CUDA-graph calls with the L2 flushed before each
(``benchmarks.timing``), beside bf16 ``torch.matmul``. Each config's output is checked against the torch twin.

    python benchmarks/fpx_row_sweep.py --tuner_configs --extra "32,64,4,2,0,4,1,80;64,32,8,2,0,8,1,80" \\
        --out benchmarks/results/fpx_row_sweep_h100

(``--extra`` takes ``gemv_ncu.py``'s FPx row configs; up to commit 6ac4c4d it took ``BLOCK_NxBLOCK_KWxWARPSx``
``SPLIT_KxMAXNREG`` with a trailing p to prefetch, two stages and no pipelining, as the result files of
2026-12-06 record it.)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.gemv_ncu import fpx_row_config, parse_fpx_configs  # noqa: E402
from benchmarks.kernel_bench import FPX_FORMATS, described, fpx_weight, in_stream_note, parse_shapes  # noqa: E402
from benchmarks.result_files import markdown_header, run_header, write_result_files  # noqa: E402
from benchmarks.timing import gpu_stream_timer  # noqa: E402
from quant_layers.packing import element_named  # noqa: E402

# Llama-3-8B's decode products (N x K): fused q/k/v, o_proj, fused gate/up (gated), down_proj.
DEFAULT_SHAPES = "6144x4096,4096x4096,28672x4096,4096x14336"
DEFAULT_GATED = "28672x4096"


def parse_configs(text: str) -> list:
    """``--extra``: ``gemv_ncu.parse_fpx_configs``' configs, each checked, as fixed ``triton.Config``s
    (``gemv_ncu.fpx_row_config``); a ValueError naming what is wrong otherwise."""
    from quant_kernels.fpx_gemm import ROW_MAX_SPLIT_K, ROW_MIN_BLOCK_N

    powers = [2**i for i in range(10)]
    configs = parse_fpx_configs(text)
    for config in configs:
        block_n, block_kw, warps, _, _, split, _, cap = config
        problems = [f"{what} {value} ({allowed})" for what, value, ok, allowed in (
            ("BLOCK_N", block_n, block_n in powers and block_n >= ROW_MIN_BLOCK_N,
             f"a power of two, at least {ROW_MIN_BLOCK_N}"),
            ("BLOCK_KW", block_kw, block_kw in powers, "a power of two"),
            ("warps", warps, warps in (1, 2, 4, 8, 16), "1, 2, 4, 8 or 16"),
            ("split_k", split, 1 <= split <= ROW_MAX_SPLIT_K, f"1 to {ROW_MAX_SPLIT_K}"),
            ("maxnreg", cap, cap == 0 or 24 <= cap <= 255, "0 for none, or 24 to 255")) if not ok]
        if problems:
            raise ValueError(f"--extra {','.join(str(int(v)) for v in config)}: " + "; ".join(problems))
    return [fpx_row_config(config) for config in configs]


def configs_arg(text: str) -> list:
    """``--extra`` for argparse: ``parse_configs``, its errors argparse's."""
    try:
        return parse_configs(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def pinned_fields(n: int, kw: int, element: str, gated: bool, device: torch.device) -> tuple | None:
    """The row config ``PINNED_ROW_CONFIGS`` holds for one row of ``element`` at this shape on this device
    (``_row_fields``' form), or None."""
    from quant_kernels.fpx_gemm import PINNED_ROW_CONFIGS, ROW_TUNING_KEY, kernel_fields

    if device.type != "cuda":
        return None
    bits = element_named(element).bits
    named = dict(N=n, KW=kw, BITS=bits, MAN_BITS=kernel_fields(element, bits)[1], BLOCK_M=1, MMA=False,
                 INTERLEAVED=False, GATED=gated)
    key = tuple(named[name] for name in ROW_TUNING_KEY)
    return PINNED_ROW_CONFIGS.get(torch.cuda.get_device_name(device), {}).get(key)


def candidates(kw: int, tuner: bool, extra: list, pinned: tuple | None) -> list:
    """The configs to time at ``kw`` words a row, each once: the tuner's that split K into slices of two steps or
    more (``tuner``, else only the pinned one among them), then ``extra``'s that do."""
    from quant_kernels.fpx_gemm import _fpx_row_autotuned, _row_fields, split_fits

    tuner_configs = [c for c in _fpx_row_autotuned.configs if tuner or _row_fields(c) == pinned]
    kept, seen = [], set()
    for config in tuner_configs + extra:
        fields = _row_fields(config)
        if fields not in seen and split_fits(kw, config.kwargs["BLOCK_KW"], config.kwargs["SPLIT_K"]):
            seen.add(fields)
            kept.append(config)
    return kept


def bench_shape(n: int, k: int, gated: bool, element: str, tuner: bool, extra: list, time_ms,
                device: torch.device) -> list[dict]:
    """One row for bf16 ``torch.matmul`` and one per candidate config (fastest first) at one activation row."""
    from quant_kernels import reference
    from quant_kernels.fpx_gemm import _row_fields, fpx_matmul_triton

    x = torch.randn(1, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    planes, scale, _ = fpx_weight(w, element)
    bits = element_named(element).bits
    spec = dict(element=element, bits=bits, gated=gated)
    want = reference.fpx_matmul_ref(x.float(), planes, scale, **spec, out_dtype=torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in planes) + scale.numel() * scale.element_size()
    shape = f"{n}x{k}" + (" gated" if gated else "")
    bf16_ms = time_ms(lambda: torch.matmul(x, w.t()))
    pinned = pinned_fields(n, k // 8, element, gated, device)
    rows = []
    for config in candidates(k // 8, tuner, extra, pinned):
        def call(config=config):
            return fpx_matmul_triton(x, planes, scale, **spec, row_kernel=True, config=config)

        got = call().float()
        rel_err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()
        ms = time_ms(call)
        rows.append(dict(shape=shape, config=described(config), pinned=_row_fields(config) == pinned, us=ms * 1e3,
                         gb_s=weight_bytes / ms / 1e6, x_bf16=bf16_ms / ms, rel_err=rel_err))
    rows.sort(key=lambda r: r["us"])
    return [dict(shape=shape, config="bf16 torch.matmul", pinned=False, us=bf16_ms * 1e3,
                 gb_s=2 * n * k / bf16_ms / 1e6, x_bf16=1.0, rel_err=0.0)] + rows


def markdown(result: dict) -> str:
    lines = markdown_header(f"The one-row FPx kernel's configs in a stream: {result['element']} at one row", result)
    lines += ["Fastest first under each shape's bf16 row; `*` marks the pinned pick (`fpx_gemm.PINNED_ROW_CONFIGS`). "
              "GB/s counts the weight's planes and scales (bf16: its values); the error is the largest against the "
              "largest output of the fp32 twin (the kernel's output is bfloat16).", "",
              "| shape | config | µs | GB/s | x bf16 | error |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['shape']} | {'* ' if r['pinned'] else ''}{r['config']} | {r['us']:.1f} | "
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
    p.add_argument("--tuner_configs", action="store_true",
                   help="time every config the row kernel's tuner would consider (else the pinned one only)")
    p.add_argument("--extra", type=configs_arg, default=[],
                   help="';'-separated FPx row configs to time too, as gemv_ncu.py takes them: "
                        "BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k[,loop_stages[,maxnreg]] (maxnreg 0: uncapped)")
    p.add_argument("--in_stream", type=int, default=20, help="calls per timed CUDA graph")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if args.gated is None:
        args.gated = [shape for shape in parse_shapes(DEFAULT_GATED) if shape in args.shapes]
    unknown = [f"{n}x{k}" for n, k in args.gated if (n, k) not in args.shapes]
    if unknown:
        p.error(f"--gated names shapes that --shapes does not: {', '.join(unknown)}")
    device, time_ms = gpu_stream_timer(p, args.in_stream)
    result = {**run_header("fpx_row_sweep.py", argv, device), "element": args.element,
              "timing": "median of 20" + in_stream_note(args.in_stream), "rows": []}
    for n, k in args.shapes:
        result["rows"] += bench_shape(n, k, (n, k) in args.gated, args.element, args.tuner_configs, args.extra,
                                      time_ms, device)
        write_result_files(args.out, result, markdown(result))
        print(markdown(result).splitlines()[-1], flush=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
