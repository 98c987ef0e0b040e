"""Triton kernel: per-row-scaled W4A4 products for decode-sized M, on the CUDA cores.

At a few rows a W4A4 product is bound by the weight bytes it streams, not by arithmetic.
The tensor-core kernel (``w4a4_gemm``) pads M to 16-row tiles and stages every unpacked
weight tile through shared memory; at M <= 16 it reached only a fifth of HBM bandwidth on
the H200 (``benchmarks/results/kernels_h200.md``). Here each program streams BLOCK_N weight
rows as 32-bit words (eight codes each) and multiplies them with PTX ``dp4a`` (four int8
products summed into an int32 per instruction): each word becomes two words of four
bytes (INT4 by masking, E2M1 by byte-table lookups with ``prmt``), the activation codes
the same way once per program. Codes are integers in units of 1 (INT4) or 1/2 (E2M1), so
the sums are exact; one reduction per program at the end, the per-row scales in the
epilogue, and no atomics or zeroed buffer (each program owns its outputs). Under the
interpreter the two instructions are computed byte by byte, so the CPU tests check the
byte arithmetic around them.

Decoding each code with shifts and an int32 multiply-add kept the integer units busy
at 1.6 TB/s; with dp4a the H200 run of 2026-12-02 reached 2.13-2.56x cuBLAS bf16 for INT4
and 1.77-2.15x for E2M1 at M = 1 (0.97-1.78 TB/s of weight traffic;
``benchmarks/results/kernel_bench_decode_dp4a_h200.md``). The grid has one program per
BLOCK_N weight rows; rows per program, words per step, warps and stages are autotuned per
shape on a GPU.
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
# Byte tables for prmt (as int32): twice the E2M1 magnitudes 0, 1, 2, 3 | 4, 6, 8, 12, then their negatives.
E2M1_POS_LOW, E2M1_POS_HIGH = tl.constexpr(0x03020100), tl.constexpr(0x0C080604)
E2M1_NEG_LOW, E2M1_NEG_HIGH = tl.constexpr(0xFDFEFF00 - (1 << 32)), tl.constexpr(0xF4F8FAFC - (1 << 32))
NIBBLE_TOP_BITS = tl.constexpr(0x88888888 - (1 << 32))
LOW_NIBBLES = tl.constexpr(0x0F0F0F0F)
# Up to this many rows, a per-row-scaled product on a GPU takes this kernel. On the H200
# (Llama-3-8B shapes), before dp4a, it beat the tensor-core kernel 1.6-3.0x at M = 1, tied it
# in batch-8 decode and lost at M = 16, where the multiply-adds per weight code piled up;
# with dp4a it beat it 1.6-2.1x at M = 4 (kernel_bench_decode_dp4a_h200.md), so batch-8
# decode comes here too.
GEMV_MAX_M = 8
# (BLOCK_N, BLOCK_KW, num_warps, num_stages); BLOCK_KW counts 32-bit words (8 codes each).
# In the H200 run of 2026-12-01 (0.6-1.1 TB/s) a step held at most 8 KiB of weight; the wide
# steps after them (16-32 KiB) are there to keep more loads in flight, and on 2026-12-02 the
# widest won (16 or 32 rows x 256 words), so the last row goes wider still.
GEMV_CONFIGS = [
    (2, 128, 2, 3), (2, 256, 4, 2), (4, 64, 2, 3), (4, 128, 4, 3), (8, 64, 4, 3), (8, 128, 4, 2), (8, 128, 8, 2),
    (16, 64, 4, 2), (16, 64, 8, 3), (16, 128, 8, 2), (32, 32, 4, 3), (32, 64, 8, 2),
    (16, 256, 8, 2), (32, 128, 8, 2), (64, 64, 8, 2), (8, 512, 8, 2), (32, 256, 8, 2),
    (16, 256, 8, 3), (32, 256, 8, 3), (16, 512, 8, 2), (32, 512, 16, 2), (8, 1024, 8, 2),
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
def _dp4a(a, b, acc, A_UNSIGNED: tl.constexpr, USE_ASM: tl.constexpr):
    """acc + the sum over bytes i of a_i * b_i (b's bytes signed, a's unsigned or signed): PTX dp4a."""
    if USE_ASM:
        if A_UNSIGNED:
            out = tl.inline_asm_elementwise("dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, acc],
                                            dtype=tl.int32, is_pure=True, pack=1)
        else:
            out = tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, acc],
                                            dtype=tl.int32, is_pure=True, pack=1)
    else:  # the interpreter runs no PTX: the same sum byte by byte
        out = acc
        for i in tl.static_range(4):
            if A_UNSIGNED:
                a_i = (a >> (8 * i)) & 0xFF
            else:
                a_i = (a << (24 - 8 * i)) >> 24
            out += a_i * ((b << (24 - 8 * i)) >> 24)
    return out


@triton.jit
def _prmt(lo, hi, selector, USE_ASM: tl.constexpr):
    """Byte i of the result is byte (nibble i of selector, 0..7) of the 8 bytes hi:lo: PTX prmt, default mode."""
    if USE_ASM:
        out = tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [lo, hi, selector],
                                        dtype=tl.int32, is_pure=True, pack=1)
    else:
        out = tl.full(selector.shape, 0, tl.int32)
        for i in tl.static_range(4):
            index = (selector >> (4 * i)) & 7
            byte = (tl.where(index < 4, lo, hi) >> ((index & 3) * 8)) & 0xFF
            out |= byte << (8 * i)
    return out


@triton.jit
def _weight_bytes(words, W_INT4: tl.constexpr, USE_ASM: tl.constexpr):
    """A word's 8 codes as two words of 4 bytes each, the operands of dp4a.

    INT4: codes 0, 2, 4, 6 and 1, 3, 5, 7 as unsigned level + 8 (flipping a nibble's top
    bit offsets it; the kernel subtracts 8 * sum(a) once). E2M1: codes 0..3 and 4..7 as
    signed twice-values, from byte tables: prmt looks up the magnitude among the positive
    and the negative values, and a third prmt picks one of the two by the sign bit.
    """
    if W_INT4:
        offset = words ^ NIBBLE_TOP_BITS
        first = offset & LOW_NIBBLES
        second = (offset >> 4) & LOW_NIBBLES
    else:
        first = _e2m1_bytes(words, USE_ASM)
        second = _e2m1_bytes(words >> 16, USE_ASM)
    return first, second


@triton.jit
def _e2m1_bytes(words, USE_ASM: tl.constexpr):
    """Twice the E2M1 values of codes 0..3 (the low 16 bits) of int32 words, as 4 signed bytes."""
    magnitude = words & 0x7777
    pos = _prmt(tl.full(words.shape, E2M1_POS_LOW, tl.int32), tl.full(words.shape, E2M1_POS_HIGH, tl.int32),
                magnitude, USE_ASM)
    neg = _prmt(tl.full(words.shape, E2M1_NEG_LOW, tl.int32), tl.full(words.shape, E2M1_NEG_HIGH, tl.int32),
                magnitude, USE_ASM)
    return _prmt(pos, neg, ((words >> 1) & 0x4444) | 0x3210, USE_ASM)


@triton.jit
def _activation_bytes(words, A_INT4: tl.constexpr, W_INT4: tl.constexpr):
    """A word's 8 activation codes as two words of signed bytes, paired as _weight_bytes pairs the
    weight codes, and the sum of the 8 values (for the INT4 weight offset)."""
    first = tl.full(words.shape, 0, tl.int32)
    second = tl.full(words.shape, 0, tl.int32)
    total = tl.full(words.shape, 0, tl.int32)
    for j in tl.static_range(8):
        values = _code_values(words, j, A_INT4)
        total += values
        if W_INT4:  # interleaved: codes 2i and 2i + 1 go to byte i
            if j % 2 == 0:
                first |= (values & 0xFF) << (8 * (j // 2))
            else:
                second |= (values & 0xFF) << (8 * (j // 2))
        else:  # in halves: codes i and 4 + i go to byte i
            if j < 4:
                first |= (values & 0xFF) << (8 * j)
            else:
                second |= (values & 0xFF) << (8 * (j - 4))
    return first, second, total


@triton.jit
def _w4a4_gemv_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr,
    M, N, KW, M_BUCKET, stride_am, stride_wn, stride_asm, stride_wsn, stride_om, unit,
    A_INT4: tl.constexpr, W_INT4: tl.constexpr, HAS_BIAS: tl.constexpr, USE_ASM: tl.constexpr,
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
        a_sum = tl.full((BLOCK_KW,), 0, tl.int32)
        for start in range(0, KW, BLOCK_KW):
            w_ok = offs_w < KW - start
            a_first, a_second, a_total = _activation_bytes(tl.load(a_ptrs, mask=w_ok, other=0), A_INT4, W_INT4)
            w_first, w_second = _weight_bytes(tl.load(w_ptrs, mask=n_ok[:, None] & w_ok[None, :], other=0),
                                              W_INT4, USE_ASM)
            acc = _dp4a(w_first, a_first[None, :], acc, W_INT4, USE_ASM)
            acc = _dp4a(w_second, a_second[None, :], acc, W_INT4, USE_ASM)
            a_sum += a_total
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc, 1, _sum_combine)[None, :]
        if W_INT4:
            total -= 8 * tl.reduce(a_sum, 0, _sum_combine)
    else:
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_w[None, :]
        acc3 = tl.full((BLOCK_M, BLOCK_N, BLOCK_KW), 0, tl.int32)
        a_sum2 = tl.full((BLOCK_M, BLOCK_KW), 0, tl.int32)
        for start in range(0, KW, BLOCK_KW):
            w_ok = offs_w < KW - start
            a_first, a_second, a_total = _activation_bytes(
                tl.load(a_ptrs, mask=m_ok[:, None] & w_ok[None, :], other=0), A_INT4, W_INT4)
            w_first, w_second = _weight_bytes(tl.load(w_ptrs, mask=n_ok[:, None] & w_ok[None, :], other=0),
                                              W_INT4, USE_ASM)
            acc3 = _dp4a(w_first[None, :, :], a_first[:, None, :], acc3, W_INT4, USE_ASM)
            acc3 = _dp4a(w_second[None, :, :], a_second[:, None, :], acc3, W_INT4, USE_ASM)
            a_sum2 += a_total
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc3, 2, _sum_combine)
        if W_INT4:
            total -= 8 * tl.reduce(a_sum2, 1, _sum_combine)[:, None]
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


def _words(packed: torch.Tensor, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """(rows, bytes) packed bytes as (rows, bytes // size) words of ``dtype`` (little-endian: for 4-bit codes in
    int32, code 8i + j is nibble j of word i); the bytes per row must be a multiple of the word size."""
    packed = packed.contiguous()
    size = torch.empty(0, dtype=dtype).element_size()
    if packed.storage_offset() % size:  # a view that starts mid-word: copy it to a word-aligned tensor
        packed = packed.clone()
    return packed.view(dtype)


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
    flags = dict(A_INT4=a_element == "int4", W_INT4=w_element == "int4", HAS_BIAS=bias is not None,
                 USE_ASM=not INTERPRET, BLOCK_M=block_m)
    if INTERPRET:
        _w4a4_gemv_kernel[(triton.cdiv(n, INTERPRET_CONFIG["BLOCK_N"]),)](*args, **flags, **INTERPRET_CONFIG)
    else:
        _gemv_autotuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **flags)
    return out
