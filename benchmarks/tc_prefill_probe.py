"""Probe: the tensor-core decode kernel (``w4a4_gemv._w4a4_tc_kernel``) at prefill sizes, tiled over M.

Issue 9's prefill target is the whole W4A4 linear at least as fast as cuBLAS's FP8 GEMM. Our FP8 path widens the
packed weight to E4M3 bytes on every call (a pass of 1.5 bytes a weight) before cuBLAS's row-wise FP8 GEMM; the
tensor-core decode kernel reads the packed weight itself, moves its nibbles to the top of int8 registers as wgmma's
register operand and multiplies the activations' even and odd int8 planes (the bytes the activation kernel writes for
INT4 weights) on the int8 tensor cores, exact in int32. This times it with prefill tiles (fixed configs, each in
turn) against torch bf16, cuBLAS's FP8 GEMM on E4M3 weights given (the issue's peer) and our FP8 path's widening +
GEMM, for INT4 x INT4 per-row scales, every output checked against an exact fp32 product.

    python benchmarks/tc_prefill_probe.py --ms 2048,8192 --out benchmarks/results/tc_prefill_probe_h200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import LLAMA3_8B_SHAPES  # noqa: E402
from benchmarks.result_files import write_result_files  # noqa: E402
from benchmarks.timing import make_timer  # noqa: E402
from pipeline.results import library_versions  # noqa: E402

# (BLOCK_N weight rows, BLOCK_M activation rows, BLOCK_KB packed bytes a step, warps, stages)
CONFIGS = [(128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 128, 8, 3), (128, 256, 64, 8, 3),
           (128, 256, 64, 8, 4), (64, 256, 64, 4, 3), (64, 128, 128, 4, 3), (256, 128, 64, 8, 3)]


def operands(m: int, n: int, k: int, device: torch.device, gen: torch.Generator):
    """Random INT4 activation levels as their even / odd int8 planes (m, k), packed INT4 weights (n, k / 2),
    per-row scales, and the exact fp32 product diag(a_scale) (A W^T) diag(w_scale) (no TF32)."""
    levels_a = torch.randint(-8, 8, (m, k), generator=gen, device=device, dtype=torch.int8)
    levels_w = torch.randint(-8, 8, (n, k), generator=gen, device=device, dtype=torch.int8)
    planes = torch.cat([levels_a[:, 0::2], levels_a[:, 1::2]], dim=1).contiguous()
    nibbles = (levels_w.to(torch.int32) & 0xF).to(torch.uint8)
    packed = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).contiguous()
    a_scale = torch.rand(m, 1, generator=gen, device=device) + 0.5
    w_scale = torch.rand(n, 1, generator=gen, device=device) / 64 + 1e-3
    want = (levels_a.float() @ levels_w.float().t()) * a_scale * w_scale.t()
    return planes, packed, levels_a, levels_w, a_scale, w_scale, want


def launch_tc(planes, packed, a_scale, w_scale, out, config):
    """One prefill-tiled launch of the tensor-core decode kernel on fixed ``config``."""
    import triton

    from quant_kernels.w4a4_gemv import INTERPRET, _tc_kernel_even

    block_n, block_m, block_kb, warps, stages = config
    m, n, kb = planes.shape[0], packed.shape[0], packed.shape[1]
    grid = (triton.cdiv(n, block_n), 1, triton.cdiv(m, block_m))
    _tc_kernel_even[grid](planes, a_scale, packed, w_scale, out, out, out, out, out, m, n, kb, m, planes.stride(0),
                          packed.stride(0), 1, 1, out.stride(0), 0, 1 / 16, HAS_BIAS=False, HAS_RESIDUAL=False,
                          USE_ASM=not INTERPRET, ROUND_BF16=out.dtype == torch.bfloat16, ROUND_F16=False, BLOCK_M=block_m, BLOCK_N=block_n,
                          BLOCK_KB=block_kb, SPLIT_K=1, W_E2M1=False, USE_GDC=False, num_warps=warps,
                          num_stages=stages)
    return out


def markdown(result: dict) -> str:
    lines = ["# The tensor-core decode kernel tiled over M at prefill sizes (probe)", "",
             f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Timing: {result['timing']}.", f"Command: `{result['command']}`", "",
             "INT4 x INT4, per-row scales, bfloat16 out. `fp8 peer`: `torch._scaled_mm` on E4M3 codes given (weights "
             "widened beforehand); `fp8 path`: our widening pass (`unpack_fp8_triton`) then that GEMM, as "
             "`w4a4_linear` runs it (the activation codes excluded everywhere). TFLOP/s counts 2 M N K.", "",
             "| M | N x K | kernel | config | µs | TFLOP/s | × bf16 | × fp8 peer | max error / bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        err = f"{r['error']:.2f}" if r.get("error") is not None else ""
        lines.append(f"| {r['M']} | {r['shape']} | {r['kernel']} | {r.get('config', '')} | {1000 * r['ms']:.1f} | "
                     f"{r['tflops']:.0f} | {r['vs_bf16']:.2f} | {r['vs_fp8']:.2f} | {err} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default="2048,8192")
    p.add_argument("--shapes", default=LLAMA3_8B_SHAPES, help="N x K weight shapes")
    p.add_argument("--configs", help="';'-separated BLOCK_N,BLOCK_M,BLOCK_KB,warps,stages (default: CONFIGS)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this probe times compiled kernels on a GPU")
    configs = ([tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")] if args.configs
               else CONFIGS)
    from quant_kernels.fp8_gemm import FP8, unpack_fp8_triton, w4a4_matmul_fp8

    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    time_ms = make_timer(device, args.warmup, args.reps, True, True)
    gen = torch.Generator(device=device).manual_seed(0)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": torch.cuda.get_device_name(device),
              "versions": library_versions(),
              "timing": f"median of {args.reps} CUDA-graph replays after {args.warmup} warmup calls, L2 flushed",
              "command": "python benchmarks/tc_prefill_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": []}
    for m in (int(v) for v in args.ms.split(",")):
        for shape in args.shapes.split(","):
            n, k = (int(v) for v in shape.split("x"))
            planes, packed, levels_a, levels_w, a_scale, w_scale, want = operands(m, n, k, device, gen)
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
            a_fp8, w_fp8 = levels_a.to(torch.float16).to(FP8), levels_w.to(torch.float16).to(FP8)
            flops = 2 * m * n * k
            bf16_ms = time_ms(lambda: x @ w.t())
            fp8_ms = time_ms(lambda: w4a4_matmul_fp8(a_fp8, a_scale, w_fp8, w_scale))
            bound = want.abs().amax().item() * 2 ** -8  # bfloat16's rounding of the largest output

            def row(kernel, ms, config="", got=None):
                error = None if got is None else (got.float() - want).abs().amax().item() / bound
                result["rows"].append({"M": m, "shape": shape, "kernel": kernel, "config": config, "ms": ms,
                                       "tflops": flops / ms / 1e9, "vs_bf16": bf16_ms / ms, "vs_fp8": fp8_ms / ms,
                                       "error": error})
                print(result["rows"][-1], flush=True)
                write_result_files(args.out, result, markdown(result))

            row("bf16 (torch.matmul)", bf16_ms)
            row("fp8 peer (_scaled_mm)", fp8_ms, got=w4a4_matmul_fp8(a_fp8, a_scale, w_fp8, w_scale))
            path = lambda: w4a4_matmul_fp8(a_fp8, a_scale, unpack_fp8_triton(packed, "int4"), w_scale)  # noqa: E731
            row("fp8 path (widening + GEMM)", time_ms(path), got=path())
            out = torch.empty(m, n, device=device, dtype=torch.bfloat16)
            for config in configs:
                try:
                    run = lambda: launch_tc(planes, packed, a_scale, w_scale, out, config)  # noqa: E731
                    ms = time_ms(run)
                    out.fill_(float("nan"))
                    row("tensor-core kernel, M tiles", ms, ",".join(map(str, config)), run())
                except Exception as err:  # a config that does not compile (shared memory, registers): named, skipped
                    print(f"config {config} at M={m} {shape}: {type(err).__name__}: {str(err)[:200]}", flush=True)
            del planes, packed, levels_a, levels_w, want, x, w, a_fp8, w_fp8, out
            torch.cuda.empty_cache()
    print(markdown(result))
    return 0 if all(r["error"] is None or r["error"] <= 1.0 for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
