"""Probe: W4A4 products of 8 to 64 rows on the int8 tensor cores, from the decode kernel's dp4a bytes.

The weight's packed bytes become two int8 operands with one operation each (the low nibble moved to the
top of its byte, the high nibble masked in place: 16 times the INT4 level), the dot's first operand (on
Hopper, wgmma's register operand), against the activation kernel's two dp4a planes (even and odd codes) as
the narrow second operand. Times configs one at a time against cuBLAS bf16 and the current default path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@triton.jit
def _nibbles_up(w, LOW: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed bytes -> int8: the low (LOW) or high nibble at the top of its byte, 16 times its INT4 level; four
    bytes a 32-bit operation with inline PTX."""
    if USE_ASM:
        if LOW:
            out = tl.inline_asm_elementwise("{ shl.b32 $0, $1, 4; and.b32 $0, $0, 0xF0F0F0F0; }", "=r,r", [w],
                                            dtype=tl.int8, is_pure=True, pack=4)
        else:
            out = tl.inline_asm_elementwise("and.b32 $0, $1, 0xF0F0F0F0;", "=r,r", [w], dtype=tl.int8,
                                            is_pure=True, pack=4)
    elif LOW:
        out = (w << 4).to(tl.int8, bitcast=True)
    else:
        out = (w & 0xF0).to(tl.int8, bitcast=True)
    return out


@triton.jit
def _tc_decode_kernel(a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, out_ptr, M, N, KB, stride_am, stride_wn, stride_om,
                      unit, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
                      SPLIT_K: tl.constexpr, EVEN: tl.constexpr, USE_ASM: tl.constexpr = True):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_b = tl.arange(0, BLOCK_KB)
    m_ok = offs_m < M
    n_ok = offs_n < N
    steps = (KB + BLOCK_KB - 1) // BLOCK_KB
    per = (steps + SPLIT_K - 1) // SPLIT_K
    first = pid_k * per
    last = min(first + per, steps)
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (first * BLOCK_KB + offs_b)[None, :]
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + (first * BLOCK_KB + offs_b)[None, :]
    acc = tl.full((BLOCK_N, BLOCK_M), 0, tl.int32)
    for step in range(first, last):
        if EVEN:
            w = tl.load(w_ptrs)
            a_ok = m_ok[:, None]
        else:
            b_ok = (offs_b < KB - step * BLOCK_KB)[None, :]
            w = tl.load(w_ptrs, mask=n_ok[:, None] & b_ok, other=0)
            a_ok = m_ok[:, None] & b_ok
        x_even = tl.load(a_ptrs, mask=a_ok, other=0)
        x_odd = tl.load(a_ptrs + KB, mask=a_ok, other=0)
        acc = tl.dot(_nibbles_up(w, True, USE_ASM), tl.trans(x_even), acc, out_dtype=tl.int32)
        acc = tl.dot(_nibbles_up(w, False, USE_ASM), tl.trans(x_odd), acc, out_dtype=tl.int32)
        w_ptrs += BLOCK_KB
        a_ptrs += BLOCK_KB
    out = tl.trans(acc).to(tl.float32) * unit
    out *= tl.load(a_scale_ptr + offs_m, mask=m_ok, other=0.0)[:, None]
    out *= tl.load(w_scale_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    if SPLIT_K == 1:
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.atomic_add(ptrs, out, mask=m_ok[:, None] & n_ok[None, :], sem="relaxed")


def tc_decode(a_bytes, a_scale, w_packed, w_scale, out, block_n, block_kb, split_k, warps, stages):
    """a_bytes (M, K) int8 dp4a bytes for INT4 weights, w_packed (N, K/2) uint8; out (M, N) (fp32 zeroed when
    split_k > 1)."""
    m, k = a_bytes.shape
    n, kb = w_packed.shape
    block_m = max(16, triton.next_power_of_2(m))
    even = kb % block_kb == 0 and n % block_n == 0
    _tc_decode_kernel[(triton.cdiv(n, block_n), split_k)](
        a_bytes, a_scale, w_packed, w_scale, out, m, n, kb, a_bytes.stride(0), w_packed.stride(0), out.stride(0),
        1 / 16, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_KB=block_kb, SPLIT_K=split_k, EVEN=even, num_warps=warps,
        num_stages=stages)
    return out


def main() -> int:
    from benchmarks.timing import make_timer
    from kernels import reference
    import kernels

    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,14336x4096,4096x14336,6144x4096")
    p.add_argument("--ms", default="8,16,32,64")
    p.add_argument("--configs", default="16x128x1x4x4,16x256x1x4x3,16x128x2x4x4,16x256x2x4x3,32x128x1x4x4,"
                                        "32x256x1x4x3,32x128x2x4x4,64x128x1x4x4,64x256x1x4x3,64x128x2x4x4,"
                                        "64x256x2x4x3,64x128x4x4x4,128x128x1x8x3,128x128x2x8x3,128x256x2x8x3")
    p.add_argument("--default_shapes", default="4096x4096,14336x4096",
                   help="shapes at which M <= 16 also times the current default path (autotuning takes a while)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = torch.device("cuda")
    time_ms = make_timer(device, warmup=3, reps=20, flush_l2=True, cuda_graph=True, in_stream=20)
    results = []
    for shape in args.shapes.split(","):
        n, k = map(int, shape.split("x"))
        w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
        w_scale = torch.rand(n, 1, device=device) / 100 + 0.001
        w16 = torch.randn(n, k, dtype=torch.bfloat16, device=device)
        for m in map(int, args.ms.split(",")):
            x = torch.randn(m, k, dtype=torch.bfloat16, device=device)
            a_bytes = torch.randint(-8, 8, (m, k), dtype=torch.int8, device=device)
            a_scale = torch.rand(m, 1, device=device) + 0.5
            want = reference.w4a4_gemv_ref(a_bytes.cpu(), a_scale.cpu(), w_packed.cpu(), w_scale.cpu(),
                                           a_element="int4", w_element="int4", out_dtype=torch.float32).to(device)
            row = {"shape": shape, "m": m, "bf16_ms": time_ms(lambda: x @ w16.T), "default_ms": None, "configs": {}}
            if m <= 16 and shape in args.default_shapes.split(","):
                row["default_ms"] = time_ms(lambda: kernels.w4a4_linear(x, w_packed, w_scale, a_element="int4",
                                                                        w_element="int4", out_dtype=torch.bfloat16))
            for config in args.configs.split(","):
                bn, bkb, split, warps, stages = map(int, config.split("x"))
                out = torch.zeros(m, n, dtype=torch.float32 if split > 1 else torch.bfloat16, device=device)

                def call():
                    if split > 1:
                        out.zero_()
                    tc_decode(a_bytes, a_scale, w_packed, w_scale, out, bn, bkb, split, warps, stages)
                try:
                    call()
                    err = ((out.float() - want).abs().max() / want.abs().max()).item()
                    row["configs"][config] = {"ms": time_ms(call), "rel_err": err}
                except Exception as exc:  # a config that does not compile or fit
                    row["configs"][config] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            timed = sorted((v["ms"], c) for c, v in row["configs"].items() if "ms" in v)
            print(json.dumps({"shape": shape, "m": m, "bf16_us": round(row["bf16_ms"] * 1e3, 2),
                              "default_us": row["default_ms"] and round(row["default_ms"] * 1e3, 2),
                              "best": timed[:3] and [[round(t * 1e3, 2), c] for t, c in timed[:3]],
                              "max_rel_err": max(v.get("rel_err", 0) for v in row["configs"].values())}), flush=True)
            results.append(row)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
        del w16
    return 0


if __name__ == "__main__":
    sys.exit(main())
