"""Probe: the FPx tensor-core kernel's PAIRED configs, with and without swapped operands, one at a time.

For FP6 E3M2 weight-only products (bfloat16 activations, per-channel scales) at Llama-3-8B shapes and
batch sizes 8 to 128, times every PAIRED config of ``kernels.fpx_gemm`` (``GPU_PAIRED_CONFIGS`` and
``GPU_PAIRED_SWAP_CONFIGS``) in a stream of CUDA-graph calls with the L2 flushed before each, beside cuBLAS
bf16 and the autotuned default, and checks each config's output against ``reference.fpx_matmul_ref``
(largest error over the largest output).

    python benchmarks/fpx_paired_probe.py --out OUT/fpx_paired_probe_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import make_timer  # noqa: E402
from kernels import reference  # noqa: E402
from quant_layers.packing import element_named, encode, pack_planes  # noqa: E402


def main() -> int:
    from kernels import fpx_gemm
    from kernels.reference import fpx_element

    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,14336x4096,4096x14336")
    p.add_argument("--ms", default="8,16,32,64,128")
    p.add_argument("--element", default="e3m2")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = torch.device("cuda")
    time_ms = make_timer(device, warmup=3, reps=20, flush_l2=True, cuda_graph=True, in_stream=20)
    fmt = element_named(args.element)
    spec = fpx_element(args.element, fmt.bits)
    configs = [(c, False) for c in fpx_gemm.GPU_PAIRED_CONFIGS] + [(c, True) for c in fpx_gemm.GPU_PAIRED_SWAP_CONFIGS]
    results = []
    for shape in args.shapes.split(","):
        n, k = map(int, shape.split("x"))
        w = torch.randn(n, k, device=device) * 0.02
        scale = w.abs().amax(dim=1, keepdim=True) / fmt.max_value
        planes = pack_planes(encode(fmt.round(w / scale), fmt), fmt.bits)
        w16 = w.to(torch.bfloat16)
        low, high = planes[0].contiguous(), planes[1].contiguous()
        low_words = fpx_gemm._words(low)
        high_words = fpx_gemm._words(high, fpx_gemm.HIGH_WORD_DTYPES[fpx_gemm.HIGH_PLANE_WIDTH[fmt.bits]])
        flat_scale = scale.float().reshape(n).contiguous()
        for m in map(int, args.ms.split(",")):
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            want = reference.fpx_matmul_ref(x, planes, scale, element=args.element, bits=fmt.bits,
                                            out_dtype=torch.float32)
            row = {"shape": shape, "m": m, "bf16_ms": time_ms(lambda: x @ w16.T)}
            row["default_ms"] = time_ms(lambda: fpx_gemm.fpx_matmul_triton(x, planes, scale, element=args.element,
                                                                           bits=fmt.bits))
            row["default_config"] = str(getattr(fpx_gemm._fpx_autotuned, "best_config", None))
            out = torch.empty(m, n, dtype=torch.bfloat16, device=device)
            call_args = (x, low, high, low_words, high_words, flat_scale, out, out, m, n, k, fpx_gemm._m_bucket(m),
                         x.stride(0), low.stride(0), high.stride(0), low_words.stride(0), high_words.stride(0),
                         out.stride(0))
            flags = dict(EXP_BITS=spec.exp_bits, MAN_BITS=spec.man_bits, EXP_BIAS=spec.default_bias,
                         HIGH_WIDTH=fpx_gemm.HIGH_PLANE_WIDTH[fmt.bits], HAS_BIAS=False, DOT_F32=False,
                         W_UNIT=2.0 ** (127 - spec.default_bias), PAIRED=True)
            row["configs"] = {}
            for (bm, bn, bk, warps, stages), swap in configs:
                name = f"{'swap ' if swap else ''}{bm}x{bn}x{bk} w{warps} s{stages}"
                if bm > max(16, triton.next_power_of_2(m)):
                    continue

                def call():
                    fpx_gemm._fpx_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn))](
                        *call_args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SWAP_AB=swap, num_warps=warps,
                        num_stages=stages)
                try:
                    out.fill_(float("nan"))
                    call()
                    err = ((out.float() - want).abs().max() / want.abs().max()).item()
                    row["configs"][name] = {"ms": time_ms(call), "rel_err": err}
                except Exception as exc:  # a config that does not compile or fit
                    row["configs"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            timed = [(v["ms"], c) for c, v in row["configs"].items() if "ms" in v]
            best_plain = min((t for t in timed if not t[1].startswith("swap")), default=None)
            best_swap = min((t for t in timed if t[1].startswith("swap")), default=None)
            print(json.dumps({"shape": shape, "m": m, "bf16_us": round(row["bf16_ms"] * 1e3, 2),
                              "default_us": round(row["default_ms"] * 1e3, 2),
                              "best_paired": best_plain and [round(best_plain[0] * 1e3, 2), best_plain[1]],
                              "best_swapped": best_swap and [round(best_swap[0] * 1e3, 2), best_swap[1]],
                              "max_rel_err": max((v.get("rel_err", 0) for v in row["configs"].values()))}),
                  flush=True)
            results.append(row)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
        del w16
    return 0


if __name__ == "__main__":
    sys.exit(main())
