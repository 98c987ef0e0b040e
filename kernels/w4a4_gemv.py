"""Triton kernel: per-row-scaled W4A4 products for decode-sized M, on the CUDA cores.

At a few rows a W4A4 product is bound by the weight bytes it streams, not by arithmetic.
The tensor-core kernel (``w4a4_gemm``) pads M to 16-row tiles and stages every unpacked
weight tile through shared memory; at M <= 16 it reached only a fifth of HBM bandwidth on
the H200 (``benchmarks/results/kernels_h200.md``). Here each program streams BLOCK_N weight
rows as 32-bit words (eight codes each) and decodes each code in registers with two
integer shifts (INT4) or a lookup in a 32-bit constant (E2M1); the activation codes are
decoded the same way, once per program. Codes are integers in units of 1 (INT4) or 1/2
(E2M1), so the int32 multiply-adds are exact; one reduction per program at the end, the
per-row scales in the epilogue, and no atomics or zeroed buffer (each program owns its
outputs).

The grid has one program per BLOCK_N weight rows; rows per program, words per step, warps
and stages are autotuned per shape on a GPU. Measured at M = 1 on the H200 (third run, with
the 2-D one-row path): 0.85-1.63 TB/s of weight traffic, 1.88-2.29x cuBLAS bf16 for INT4
(``benchmarks/results/kernels_h200.md``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.standard import _sum_combine

from .reference import check_matmul_args, check_out

INTERPRET = triton.knobs.runtime.interpret
# Twice the E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (magnitude code c in nibble c), as int32.
E2M1_DOUBLED_TABLE = tl.constexpr(0xC8643210 - (1 << 32))
# Up to this many rows, a per-row-scaled product on a GPU takes this kernel. On the H200
# (Llama-3-8B shapes) it beat the tensor-core kernel 1.6-3.0x at M = 1, tied it in
# batch-8 decode and lost at M = 16, where the multiply-adds per weight code pile up.
GEMV_MAX_M = 4
# (BLOCK_N, BLOCK_KW, num_warps, num_stages); BLOCK_KW counts 32-bit words (8 codes each).
# In the H200 run of 2026-12-01 (0.6-1.1 TB/s) a step held at most 8 KiB of weight; the wide
# steps after them (16-32 KiB) are there to keep more loads in flight.
GEMV_CONFIGS = [
    (2, 128, 2, 3), (2, 256, 4, 2), (4, 64, 2, 3), (4, 128, 4, 3), (8, 64, 4, 3), (8, 128, 4, 2), (8, 128, 8, 2),
    (16, 64, 4, 2), (16, 64, 8, 3), (16, 128, 8, 2), (32, 32, 4, 3), (32, 64, 8, 2),
    (16, 256, 8, 2), (32, 128, 8, 2), (64, 64, 8, 2), (8, 512, 8, 2), (32, 256, 8, 2),
]
INTERPRET_CONFIG = dict(BLOCK_N=8, BLOCK_KW=4)
# Accumulator registers per thread a config may use (BLOCK_M * BLOCK_N * BLOCK_KW int32 over its threads).
MAX_ACC_PER_THREAD = 64


@triton.jit
def _code_values(words, j: tl.constexpr, IS_INT4: tl.constexpr):
    """Code j (bits 4j..4j+3) of int32 words as an int32: the INT4 level, or twice the E2M1 value."""
    # One return: compiled Triton does not stop at a return inside an if.
    if IS_INT4:
        values = (words << (28 - 4 * j)) >> 28  # arithmetic shift: sign-extends the nibble
    else:
        code = (words >> (4 * j)) & 0xF
        table = tl.full(code.shape, E2M1_DOUBLED_TABLE, tl.int32)
        magnitude = (table >> ((code & 7) * 4)) & 0xF
        values = tl.where(code >= 8, -magnitude, magnitude)
    return values


@triton.jit
def _w4a4_gemv_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr,
    M, N, KW, M_BUCKET, stride_am, stride_wn, stride_asm, stride_wsn, stride_om, unit,
    A_INT4: tl.constexpr, W_INT4: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr,
):
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_KW)
    m_ok = offs_m < M
    n_ok = offs_n < N
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :]
    if BLOCK_M == 1:  # one row: a 2-D accumulator in the weight tile's own layout
        a_ptrs = a_ptr + offs_w
        acc = tl.full((BLOCK_N, BLOCK_KW), 0, tl.int32)
        for start in range(0, KW, BLOCK_KW):
            w_ok = offs_w < KW - start
            a_words = tl.load(a_ptrs, mask=w_ok, other=0)
            w_words = tl.load(w_ptrs, mask=n_ok[:, None] & w_ok[None, :], other=0)
            for j in tl.static_range(8):
                acc += _code_values(w_words, j, W_INT4) * _code_values(a_words, j, A_INT4)[None, :]
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc, 1, _sum_combine)[None, :]
    else:
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_w[None, :]
        acc3 = tl.full((BLOCK_M, BLOCK_N, BLOCK_KW), 0, tl.int32)
        for start in range(0, KW, BLOCK_KW):
            w_ok = offs_w < KW - start
            a_words = tl.load(a_ptrs, mask=m_ok[:, None] & w_ok[None, :], other=0)
            w_words = tl.load(w_ptrs, mask=n_ok[:, None] & w_ok[None, :], other=0)
            for j in tl.static_range(8):
                acc3 += _code_values(a_words, j, A_INT4)[:, None, :] * _code_values(w_words, j, W_INT4)[None, :, :]
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc3, 2, _sum_combine)
    out = total.to(tl.float32) * unit
    out *= tl.load(a_scale_ptr + offs_m * stride_asm, mask=m_ok, other=0.0)[:, None]
    out *= tl.load(w_scale_ptr + offs_n * stride_wsn, mask=n_ok, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Configs whose accumulator fits MAX_ACC_PER_THREAD registers a thread (at least the smallest)."""
    block_m = {**named_args, **kwargs}["BLOCK_M"]

    def acc_per_thread(c: triton.Config) -> float:
        return block_m * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_KW"] / (32 * c.num_warps)

    kept = [c for c in configs if acc_per_thread(c) <= MAX_ACC_PER_THREAD]
    return kept or [min(configs, key=acc_per_thread)]


_gemv_autotuned = triton.autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw), num_warps=w, num_stages=s)
             for bn, bkw, w, s in GEMV_CONFIGS],
    key=["M_BUCKET", "N", "KW", "A_INT4", "W_INT4", "BLOCK_M"],
    prune_configs_by=dict(early_config_prune=_prune_configs),
)(_w4a4_gemv_kernel)


def gemv_fits(m: int, k: int, a_group: int, w_group: int) -> bool:
    """Whether this kernel takes the product: 1..GEMV_MAX_M rows, per-row scales, K a multiple of 8."""
    return 1 <= m <= GEMV_MAX_M and a_group == 0 and w_group == 0 and k % 8 == 0


def _words(packed: torch.Tensor) -> torch.Tensor:
    """(rows, K // 2) packed bytes as (rows, K // 8) int32 words (little-endian: code 8i + j in nibble j)."""
    packed = packed.contiguous()
    if packed.storage_offset() % 4:  # a view that starts mid-word: copy it to a word-aligned tensor
        packed = packed.clone()
    return packed.view(torch.int32)


def w4a4_gemv_triton(
    a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, a_group: int = 0, w_group: int = 0,
    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``reference.w4a4_matmul_ref`` for 1..GEMV_MAX_M rows with per-row scales; writes into ``out`` when given."""
    check_matmul_args(a_packed, a_scale, w_packed, w_scale, a_element, w_element, a_group, w_group, bias, out_dtype)
    m, n, k = a_packed.shape[0], w_packed.shape[0], 2 * a_packed.shape[1]
    if not gemv_fits(m, k, a_group, w_group):
        raise ValueError(f"the decode kernel takes 1 to {GEMV_MAX_M} rows, per-row scales (groups 0) and K a "
                         f"multiple of 8, got M={m}, K={k}, groups {a_group} and {w_group}")
    check_out(out, m, n, out_dtype)
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a_packed.device)
    a_words, w_words = _words(a_packed), _words(w_packed)
    a_scale, w_scale = a_scale.float().contiguous(), w_scale.float().contiguous()
    block_m = triton.next_power_of_2(m)
    args = (a_words, a_scale, w_words, w_scale, bias if bias is not None else out, out,  # (no bias: never read)
            m, n, k // 8, block_m, a_words.stride(0), w_words.stride(0), a_scale.stride(0), w_scale.stride(0),
            out.stride(0), (1.0 if a_element == "int4" else 0.5) * (1.0 if w_element == "int4" else 0.5))
    flags = dict(A_INT4=a_element == "int4", W_INT4=w_element == "int4", HAS_BIAS=bias is not None, BLOCK_M=block_m)
    if INTERPRET:
        _w4a4_gemv_kernel[(triton.cdiv(n, INTERPRET_CONFIG["BLOCK_N"]),)](*args, **flags, **INTERPRET_CONFIG)
    else:
        _gemv_autotuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **flags)
    return out
