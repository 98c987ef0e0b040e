"""Probe: the one-row W4A4 decode product with its weight (and activation) words loaded by TMA, pipelined.

Times a TMA-fed variant of ``kernels.w4a4_gemv`` against the autotuned kernel and cuBLAS bf16 at
Llama-3-8B shapes, in a stream of CUDA-graph calls with the L2 flushed before each, and checks
that its outputs equal the kernel's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl
from triton.language.standard import _sum_combine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import make_timer  # noqa: E402
from kernels.w4a4_gemv import _products, w4a4_gemv_triton, _gemv_autotuned  # noqa: E402


@triton.jit
def _gemv_tma(a_desc, a_scale_ptr, w_desc, w_scale_ptr, out_ptr, N, KW, unit,
              W_INT4: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, STAGES: tl.constexpr,
              USE_ASM: tl.constexpr = True):
    n0 = tl.program_id(0) * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    acc = tl.full((BLOCK_N, BLOCK_KW), 0, tl.int32)
    for start in tl.range(0, KW, BLOCK_KW, num_stages=STAGES):
        w = w_desc.load([n0, start])
        acc = _products(acc, w, a_desc.load([0, start]), a_desc.load([0, start + KW]), W_INT4, False, USE_ASM)
    total = tl.reduce(acc, 1, _sum_combine)
    out = total.to(tl.float32) * unit * tl.load(a_scale_ptr)
    out *= tl.load(w_scale_ptr + offs_n, mask=offs_n < N, other=0.0)
    tl.store(out_ptr + offs_n, out.to(out_ptr.dtype.element_ty), mask=offs_n < N)


def main() -> int:
    from triton.tools.tensor_descriptor import TensorDescriptor

    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,14336x4096,4096x14336,6144x4096,28672x4096")
    p.add_argument("--configs", default="8x256x3x4,16x256x3x8,16x256x4x8,32x128x4x8,32x256x3x8,16x128x4x4,"
                                        "8x128x6x4,64x128x3x8,32x64x6x4,16x256x2x8,64x256x2x8,8x256x4x4")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = torch.device("cuda")
    time_ms = make_timer(device, warmup=5, reps=20, flush_l2=True, cuda_graph=True, in_stream=20)
    results = []
    for shape in args.shapes.split(","):
        n, k = map(int, shape.split("x"))
        kw = k // 8
        a_bytes = torch.randint(-8, 8, (1, k), dtype=torch.int8, device=device)
        w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
        a_scale = torch.rand(1, 1, device=device) + 0.5
        w_scale = torch.rand(n, 1, device=device) / 100 + 0.001
        ref = w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, a_element="int4", w_element="int4",
                               out_dtype=torch.bfloat16)
        row = {"shape": shape, "gemv_ms": time_ms(lambda: w4a4_gemv_triton(
            a_bytes, a_scale, w_packed, w_scale, a_element="int4", w_element="int4", out_dtype=torch.bfloat16)),
            "gemv_config": str(_gemv_autotuned.best_config)}
        x = torch.randn(1, k, dtype=torch.bfloat16, device=device)
        w16 = torch.randn(n, k, dtype=torch.bfloat16, device=device)
        row["bf16_ms"] = time_ms(lambda: x @ w16.T)
        del w16
        a_words = a_bytes.view(torch.int32).view(1, 2 * kw)
        w_words = w_packed.view(torch.int32)
        out = torch.empty(1, n, dtype=torch.bfloat16, device=device)
        row["tma"] = {}
        for config in args.configs.split(","):
            bn, bkw, stages, warps = map(int, config.split("x"))
            w_desc = TensorDescriptor(w_words, [n, kw], [kw, 1], [bn, bkw])
            a_desc = TensorDescriptor(a_words, [1, 2 * kw], [2 * kw, 1], [1, bkw])

            def call():
                _gemv_tma[(triton.cdiv(n, bn),)](a_desc, a_scale, w_desc, w_scale, out, n, kw, 1 / 16, W_INT4=True,
                                                  BLOCK_N=bn, BLOCK_KW=bkw, STAGES=stages, num_warps=warps,
                                                  num_stages=stages)
            try:
                out.fill_(float("nan"))
                call()
                same = bool(torch.equal(out, ref))
                ms = time_ms(call)
            except Exception as err:  # a config that does not compile or fit
                row["tma"][config] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                continue
            row["tma"][config] = {"ms": ms, "equal": same, "gbs": n * k / 2 / ms / 1e6}
        best = min((v["ms"], c) for c, v in row["tma"].items() if "ms" in v and v["equal"])
        row["best_tma"] = best[1]
        print(json.dumps({"shape": shape, "bf16_us": row["bf16_ms"] * 1e3, "gemv_us": row["gemv_ms"] * 1e3,
                          "gemv_gbs": n * k / 2 / row["gemv_ms"] / 1e6, "best_tma": best[1], "tma_us": best[0] * 1e3,
                          "tma_gbs": n * k / 2 / best[0] / 1e6}), flush=True)
        results.append(row)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
