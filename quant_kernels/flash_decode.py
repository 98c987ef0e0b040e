"""Triton kernel: attention of single-token queries over a (static) KV cache, split along the keys.

A decode step's attention reads every cached K and V once and does little arithmetic per
byte. SDPA's kernels tile the queries: with one token per sequence (the ``g`` query heads
of a K/V head as ``g`` rows, ``models.attention``) cuDNN ran 8 programs per layer for
Llama-3-8B at batch 1 and took 47 us a layer after 2048 tokens on the H200, a quarter of
the step (``benchmarks/results/decode_profile_llama3_8b_h200.md``). Here (flash-decoding)
each program takes one K/V head of one sequence and one slice of the keys, keeps a running
max and sum (online softmax) over its slice, and writes its unnormalised partial output; a
second kernel weighs the slices' partials into the output (one program per query row, all
its slices at once: 3.3 us a layer on the H200, ``end_to_end_h200.md`` run 4). Keys the
boolean mask hides (the static cache's unwritten slots, padding) are not counted, and not read but in the factored
form (below), which reads a slice's codes whatever the mask says. Like the other
kernels it calls no ``triton.jit`` function of Triton's standard library (``tl.max``,
``tl.sum``, ``tl.zeros``), which the interpreter cannot run (``act_quant``'s docstring).

A packed KV4 cache (``quant_layers.packed_kv_cache``) is read as it is stored (``PACKED``):
4-bit codes two per byte, fp32 scales (and zero points) per token and group along the head
dim. Dequantizing the whole static cache to bf16 before every step cost a tenth of a
Llama-3-8B W4A4KV4 decode step on the H200 (0.37 ms); here each key tile is unpacked,
decoded and scaled in registers, exactly as ``_PackedTensor.dequantized`` does it (fp32
``(level - zero) * scale``, then rounded to the query's dtype), so the result is that of
dequantize-then-attention and only the loop's loads differ. On the H200 the packed kernel
took the bf16 one's time (194 us a step) and the dequantization is gone
(``end_to_end_h200.md`` run 4).

On the H100 the packed kernel read its cache at 0.86 TB/s at batch 64 where the bf16 one read at 2.7
(``attention_bench_programs_per_sm_h100.md``): its time goes to converting codes, not to bytes (compiled for sm_90, a
key tile takes 1264 SASS instructions, 129 of them I2F, which runs at a fraction of the float pipe's rate, against
the bf16 kernel's 616). So for INT4 / UINT4 codes with a scale per token the kernel by default (``factored``;
``PTQ_KV4_FACTORED=0`` turns it off) has the dots take the codes themselves as half values and moves the scales to
the scores and probabilities, where there is one per key rather than one per element: 0.97 TB/s at batch 64. Its
codes' and scales' loads (pipelined through shared memory) are masked by the slice alone, so that they wait for no
load of the mask (an i8 load, which Triton does not pipeline); the mask and V's zero points are loaded a tile
ahead (offline: 796 instructions a key tile, 852 before). Every form keeps its softmax sums per key until the loop
ends (``_online_softmax``), sparing each tile a sum across warps: 764 instructions a tile in the factored form,
601 over bf16 (616 before); on the H100 the factored form then took 9.8 / 27.8 / 156.0 us at batch 1 / 8 / 64
(``attention_bench_tiles_llama3_8b_h100.md``) against 9.8 / 29.0 / 161.6. The partial kernel's tile
(``partial_tile``) depends on the cache's form and on how many (sequence, K/V head) pairs there are.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.standard import _elementwise_max, _sum_combine

from .act_quant import _tail_quantize_rows
from .fpx_placement import _decode
from .pdl import launch_dependents, pdl_flags, wait_for_producer
from .reference import PACKED_KV_ELEMENTS, NormTail, PackedOperand, check_norm_tail
from .rounding import _round_to_bf16, _round_to_dtype
from .switches import env_count, env_switch
from .w4a4_gemm import _unpack, code_operand
from .w4a4_gemv import norm_tail_flags, norm_tail_operands, with_tail_outputs

INTERPRET = triton.knobs.runtime.interpret
MAX_SPLITS = 64  # the combining program holds (splits, head dim) partials in registers
# Below this score a key is hidden (finite, so that a slice with no visible key gives exp(...) = 0, not NaN).
HIDDEN = tl.constexpr(-1e30)
# The kernel's ids of the packed elements (``reference.PACKED_KV_ELEMENTS``): int4 two's complement, uint4 (the
# code is the level, under a zero point), e2m1.
ELEMENT_IDS = {name: i for i, name in enumerate(PACKED_KV_ELEMENTS)}
INTEGER_ELEMENTS = (ELEMENT_IDS["int4"], ELEMENT_IDS["uint4"])  # what the factored form reads (``factored``)


@triton.jit
def _per_group(ptr, rows, visible, D: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr):
    """fp32 parameters (scales or zero points) of ``rows``, one per GROUP along D, spread over their groups."""
    if GROUP == D:  # one per token: a column, broadcast where it is used
        out = tl.load(ptr + rows, mask=visible, other=0.0)[:, None]
    else:
        groups = tl.arange(0, D // GROUP)
        part = tl.load(ptr + rows[:, None] * (D // GROUP) + groups[None, :], mask=visible[:, None], other=0.0)
        out = tl.broadcast_to(part[:, :, None], (BLOCK_N, D // GROUP, GROUP)).reshape(BLOCK_N, D)
    return out


@triton.jit
def _cache_rows(ptr, n, visible, stride_l, WIDTH: tl.constexpr):
    """Rows ``n`` (WIDTH elements each, ``stride_l`` apart) of one head's K or V as stored: values, or packed bytes;
    hidden rows read as zeros."""
    return tl.load(ptr + n[:, None] * stride_l + tl.arange(0, WIDTH)[None, :], mask=visible[:, None], other=0)


@triton.jit
def _tile(ptr, scale_ptr, zero_ptr, n, visible, stride_l, first_row, PACKED: tl.constexpr, ELEMENT: tl.constexpr,
          GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys or values ``n`` (BLOCK_N, D) of one head: as stored, or (PACKED) unpacked from their codes and
    dequantized in fp32 as ``_PackedTensor.dequantized`` does; ``first_row`` is the head's first row of the
    contiguous (B, H, L, D // GROUP) scales."""
    if PACKED:
        packed = _cache_rows(ptr, n, visible, stride_l, D // 2)
        codes = _unpack(packed, BLOCK_N, D)
        if ELEMENT == 0:  # int4: the two's complement nibble sign-extended
            levels = code_operand(codes, True, 0).to(tl.float32)
        elif ELEMENT == 1:  # uint4
            levels = codes.to(tl.float32)
        else:  # e2m1
            levels = _decode(codes.to(tl.int32), 2, 1, 1)
        rows = first_row + n
        if HAS_ZERO:
            levels = levels - _per_group(zero_ptr, rows, visible, D, GROUP, BLOCK_N)
        out = levels * _per_group(scale_ptr, rows, visible, D, GROUP, BLOCK_N)
    else:
        out = _cache_rows(ptr, n, visible, stride_l, D)
    return out


@functools.cache
def pair_words_asm(magic: int, signed: bool) -> str:
    """PTX for ``_offset_codes``' words, four bytes (one register, ``$4``) at a time: each byte's low nibble and its
    high one (the register shifted right by 4) gathered into the two halves of an output word (``prmt``), then in one
    ``lop3`` (``mask ? x ^ bits : bits``, LUT 0x6A) the nibbles kept, their sign bits flipped when ``signed`` and
    ``magic`` set above them. Compiled for sm_90: a PRMT and a LOP3 a byte, against a byte extraction, an IMAD and
    two LOP3s for the integer ops."""
    bits = hex((magic << 16 | magic) ^ (0x00080008 if signed else 0))
    return ("{\n.reg .b32 hi;\nshr.b32 hi, $4, 4;\n"
            + "".join(f"prmt.b32 ${i}, $4, hi, 0x0{4 + i}0{i};\n" for i in range(4))
            + "".join(f"lop3.b32 ${i}, ${i}, 0x000F000F, {bits}, 0x6A;\n" for i in range(4)) + "}")


@triton.jit
def _offset_codes(ptr, n, visible, stride_l, SIGNED: tl.constexpr, MAGIC: tl.constexpr, ASM: tl.constexpr,
                  D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The int16 bits (BLOCK_N, D) of rows ``n`` of INT4 (SIGNED: two's complement) or UINT4 codes as half values
    ``2^e + level (+ 8 when SIGNED)``: each code, its sign bit flipped when SIGNED, placed in the low mantissa bits
    of MAGIC, the bits of 2^7 in bfloat16 or of 2^10 in float16. Exact, and no integer-to-float conversion (I2F,
    a fraction of the float pipe's rate) runs: each byte's two codes become one int32 word of two halves
    (its low nibble in bits 0-3, its high one moved to bits 16-19), split into the halves in column order. ASM
    (``pair_words_asm``, compiled only; "" under the interpreter): the words by inline PTX, else by integer ops."""
    packed = _cache_rows(ptr, n, visible, stride_l, D // 2)
    if ASM != "":
        words = tl.inline_asm_elementwise(ASM, "=r,=r,=r,=r,r", [packed], dtype=tl.int32, is_pure=True, pack=4)
    else:
        byte = packed.to(tl.int32)
        flip = 0x00080008 if SIGNED else 0
        words = ((byte | (byte << 12)) & 0x000F000F) ^ (flip | (MAGIC << 16) | MAGIC)
    return tl.join(words.to(tl.int16), (words >> 16).to(tl.int16)).reshape(BLOCK_N, D)


@triton.jit
def _code_offsets(zero_ptr, rows, visible, SIGNED: tl.constexpr, HAS_ZERO: tl.constexpr, BASE: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """Per key of ``rows``: what its ``_offset_codes`` values exceed the dequantized level by, in fp32: BASE (2^7 or
    2^10), + 8 when SIGNED, + its zero point (HAS_ZERO)."""
    offset = tl.full((BLOCK_N,), BASE + 8.0 if SIGNED else BASE, tl.float32)
    if HAS_ZERO:
        offset = offset + tl.load(zero_ptr + rows, mask=visible, other=0.0)
    return offset


@triton.jit
def _visible(mask_row, n, end, HAS_MASK: tl.constexpr):
    """Which keys ``n`` of the slice ending at ``end`` the attention sees: those the mask's row (HAS_MASK) shows."""
    visible = n < end
    if HAS_MASK:
        visible = visible & (tl.load(mask_row + n, mask=visible, other=0) != 0)
    return visible


@triton.jit
def _online_softmax(s, visible, m_i, l_i):
    """One key tile's step of the online softmax: (its unnormalised probabilities, the factor the running output is
    rescaled by, the new running max, the new running sums). The sums stay one per row and key of the tile, summed
    over the keys once after the loop (``l_i``: (BLOCK_G, BLOCK_N)): a row's keys lie across the warps, and a sum
    over them a tile would cross warps through shared memory behind a barrier."""
    s = tl.where(visible[None, :], s, HIDDEN)
    m_new = tl.maximum(m_i, tl.reduce(s, 1, _elementwise_max))
    alpha = tl.exp(m_i - m_new)
    p = tl.where(visible[None, :], tl.exp(s - m_new[:, None]), 0.0)
    return p, alpha, m_new, l_i * alpha[:, None] + p


@triton.jit
def _partial_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, ml_ptr, k_scale_ptr, k_zero_ptr, v_scale_ptr, v_zero_ptr,
    L, H_KV, G, scale, split_len, n_splits,
    stride_qb, stride_qh, stride_qg, stride_kb, stride_kh, stride_kl, stride_vb, stride_vh, stride_vl, stride_mb,
    D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, HAS_MASK: tl.constexpr, DOT_F32: tl.constexpr,
    PACKED: tl.constexpr, K_ELEMENT: tl.constexpr, V_ELEMENT: tl.constexpr, K_GROUP: tl.constexpr,
    V_GROUP: tl.constexpr, K_ZERO: tl.constexpr, V_ZERO: tl.constexpr, ROUND_BF16: tl.constexpr,
    USE_GDC: tl.constexpr, FACTORED: tl.constexpr = False, MAGIC: tl.constexpr = 0, BASE: tl.constexpr = 0.0,
    K_ASM: tl.constexpr = "", V_ASM: tl.constexpr = "",
):
    """K and V (PACKED) as codes, their scales and zero points under ``*_scale_ptr``, ``*_zero_ptr``.
    USE_GDC: a programmatic dependent launch (``quant_kernels.pdl``). FACTORED (INT4 or UINT4 codes, a scale and
    zero point per token): the dots take the codes as half values ``_offset_codes`` (MAGIC, BASE; K_ASM and V_ASM
    their inline PTX, ``pair_words_asm``), and each key's
    scale and offset apply to its scores, ``scale_n * (q . x_n - offset_n * sum(q))``, and to its probabilities,
    ``p_n * scale_n`` (rounded to the query's dtype for the dot) less their offsets' share."""
    launch_dependents(USE_GDC)
    wait_for_producer(USE_GDC)
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid_bh // H_KV).to(tl.int64)  # a bf16 cache of 64 sequences of 32k tokens is past 2^31 elements
    h = pid_bh % H_KV
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + g[:, None] * stride_qg + d[None, :], mask=(g < G)[:, None],
                other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    if FACTORED:
        q_sum = tl.reduce(q.to(tl.float32), 1, _sum_combine)
    m_i = tl.full((BLOCK_G,), HIDDEN, tl.float32)
    l_i = tl.full((BLOCK_G, BLOCK_N), 0, tl.float32)
    acc = tl.full((BLOCK_G, D), 0, tl.float32)
    start = split * split_len
    end = tl.minimum(start + split_len, L)
    mask_row = mask_ptr + b * stride_mb
    if FACTORED:  # the first tile's mask and V offsets; the loop loads each next tile's while it works on this one
        following = start + tl.arange(0, BLOCK_N)
        next_visible = _visible(mask_row, following, end, HAS_MASK)
        next_v_offset = _code_offsets(v_zero_ptr, pid_bh * L + following, following < end, V_ELEMENT == 0, V_ZERO,
                                      BASE, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        if FACTORED:
            # The codes and scales of the slice's keys are read whether the mask hides them or not: their loads
            # (pipelined) then wait for no load of the mask (an i8 load, not pipelined), and the hidden keys' scores
            # and probabilities are dropped below. The mask and the V offsets (no dot's operand, so not pipelined
            # either) are loaded a tile ahead.
            in_slice = n < end
            visible = next_visible
            v_offset = tl.where(visible, next_v_offset, 0.0)
            following = n + BLOCK_N
            next_visible = _visible(mask_row, following, end, HAS_MASK)
            next_v_offset = _code_offsets(v_zero_ptr, pid_bh * L + following, following < end, V_ELEMENT == 0,
                                          V_ZERO, BASE, BLOCK_N)
            rows = pid_bh * L + n
            xk = _offset_codes(k_ptr + b * stride_kb + h * stride_kh, n, in_slice, stride_kl, K_ELEMENT == 0, MAGIC,
                               K_ASM, D, BLOCK_N).to(q_ptr.dtype.element_ty, bitcast=True)
            xv = _offset_codes(v_ptr + b * stride_vb + h * stride_vh, n, in_slice, stride_vl, V_ELEMENT == 0, MAGIC,
                               V_ASM, D, BLOCK_N).to(q_ptr.dtype.element_ty, bitcast=True)
            if DOT_F32:
                s = tl.dot(q, tl.trans(xk.to(tl.float32)), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(xk))
            k_offset = _code_offsets(k_zero_ptr, rows, in_slice, K_ELEMENT == 0, K_ZERO, BASE, BLOCK_N)
            s = (s - q_sum[:, None] * k_offset[None, :]) * (tl.load(k_scale_ptr + rows, mask=in_slice, other=0.0)
                                                             * scale)[None, :]
            p, alpha, m_new, l_i = _online_softmax(s, visible, m_i, l_i)
            v_scale = tl.load(v_scale_ptr + rows, mask=in_slice, other=0.0)
            pv = p * tl.where(visible, v_scale, 0.0)[None, :]  # a hidden key's scale may be anything, even NaN
            if DOT_F32:
                product = tl.dot(pv, xv.to(tl.float32), input_precision="ieee")
            else:
                pv = pv.to(xv.dtype)
                product = tl.dot(pv, xv)
            offsets = tl.reduce(pv.to(tl.float32) * v_offset[None, :], 1, _sum_combine)
            acc = acc * alpha[:, None] + product - offsets[:, None]
        else:
            visible = _visible(mask_row, n, end, HAS_MASK)
            k = _tile(k_ptr + b * stride_kb + h * stride_kh, k_scale_ptr, k_zero_ptr, n, visible, stride_kl,
                      pid_bh * L, PACKED, K_ELEMENT, K_GROUP, K_ZERO, D, BLOCK_N)
            v = _tile(v_ptr + b * stride_vb + h * stride_vh, v_scale_ptr, v_zero_ptr, n, visible, stride_vl,
                      pid_bh * L, PACKED, V_ELEMENT, V_GROUP, V_ZERO, D, BLOCK_N)
            if ROUND_BF16:  # the interpreter casts fp32 to bfloat16 by truncation: round to nearest (even) first
                k = _round_to_bf16(k)
                v = _round_to_bf16(v)
            # In the query's dtype, as attention reads the dequantized cache (a no-op unless PACKED).
            k = k.to(q_ptr.dtype.element_ty)
            v = v.to(q_ptr.dtype.element_ty)
            if DOT_F32:  # fp32 operands: full fp32 products (a GPU's default for them is TF32)
                k = k.to(tl.float32)
                v = v.to(tl.float32)
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            else:
                s = tl.dot(q, tl.trans(k)) * scale
            p, alpha, m_new, l_i = _online_softmax(s, visible, m_i, l_i)
            if DOT_F32:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    # Only the G query rows: the combining kernel reads no padding row of the dots' BLOCK_G.
    row = (pid_bh * n_splits + split) * BLOCK_G + g
    tl.store(acc_ptr + row[:, None] * D + d[None, :], acc, mask=(g < G)[:, None])
    tl.store(ml_ptr + row * 2, m_i, mask=g < G)
    tl.store(ml_ptr + row * 2 + 1, tl.reduce(l_i, 1, _sum_combine), mask=g < G)


@triton.jit
def _combine_kernel(acc_ptr, ml_ptr, out_ptr, norm_ptr, codes_ptr, codes_scale_ptr, count_ptr, G, n_splits, rows_out,
                    width, stride_cm, eps, tail_clip, tail_max, D: tl.constexpr, BLOCK_G: tl.constexpr,
                    BLOCK_S: tl.constexpr, USE_GDC: tl.constexpr, NORM_TAIL: tl.constexpr, TAIL_NORM: tl.constexpr,
                    TAIL_INT4: tl.constexpr, TAIL_CLAMP: tl.constexpr, TAIL_DP4A_FOR: tl.constexpr,
                    TAIL_BLOCK: tl.constexpr, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """One program per query row: all its slices' partials loaded at once and weighed in one pass. NORM_TAIL: the
    last program to finish (a counter at ``count_ptr``, zero between launches) quantizes the whole output, rows_out
    rows of ``width`` (every head of a sequence), per token into dp4a bytes and scales for the next linear
    (``act_quant._tail_quantize_rows``, the decode kernel's norm tail): o_proj's input without a launch of its
    own."""
    launch_dependents(USE_GDC)
    wait_for_producer(USE_GDC)
    pid = tl.program_id(0)  # (sequence, K/V head) * G + query row: also the row of the (B, Hkv, G, D) output
    g = pid % G
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, D)
    present = s < n_splits
    rows = ((pid // G) * n_splits + s) * BLOCK_G + g
    m = tl.load(ml_ptr + rows * 2, mask=present, other=HIDDEN)
    l_s = tl.load(ml_ptr + rows * 2 + 1, mask=present, other=0.0)
    w = tl.where(present, tl.exp(m - tl.reduce(m, 0, _elementwise_max)), 0.0)
    parts = tl.load(acc_ptr + rows[:, None] * D + d[None, :], mask=present[:, None], other=0.0)
    out = tl.reduce(parts * w[:, None], 0, _sum_combine) / tl.reduce(w * l_s, 0, _sum_combine)
    tl.store(out_ptr + pid * D + d, _round_to_dtype(out, ROUND_BF16, ROUND_F16).to(out_ptr.dtype.element_ty))
    if NORM_TAIL:
        _tail_quantize_rows(count_ptr, out_ptr, width, norm_ptr, codes_ptr, codes_scale_ptr, rows_out, width,
                            stride_cm, eps, tail_clip, tail_max, TAIL_NORM, TAIL_INT4, TAIL_CLAMP, TAIL_DP4A_FOR,
                            ROUND_BF16, ROUND_F16, TAIL_BLOCK)


def programs_per_sm(packed: bool) -> int:
    """The programs the partial kernel aims to give each SM (``PTQ_ATTENTION_PROGRAMS_PER_SM``; by default 4 over a
    packed KV4 cache, 2 over a bf16 one): the keys are split so far. On the H100, over 2176 written keys of 2306 slots
    with Llama-3-8B's heads (``attention_bench_programs_per_sm_h100.md``), the KV4 kernel took 10.3 / 30.7 / 180.9 us
    at batch 1 / 8 / 64 with 4 against 11.2 / 32.6 / 183.6 with 2; the bf16 one was fastest with 2 at batch 1 and 8
    (10.5 and 36.6 us; 44.9 at batch 8 with 4), with 4 at batch 64 (211 against 230 us)."""
    return env_count("PTQ_ATTENTION_PROGRAMS_PER_SM", 4 if packed else 2,
                     "the decode attention's programs an SM is given")


# FACTORED's half values ``2^e + code``: (the bits of 2^e, 2^e) for each query dtype whose dots take them exactly.
OFFSET_CODES = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0)}


def factored(q_dtype: torch.dtype, dim: int, key_parameters: tuple, value_parameters: tuple) -> bool:
    """Whether the partial kernel applies a packed cache's scales to the scores and probabilities (FACTORED) rather
    than dequantizing each K and V tile: by default (``PTQ_KV4_FACTORED=0`` turns it off), for INT4 or UINT4 K and V
    with a scale (and zero point) per token and a half query. Its result is not dequantize-then-attention's bit for
    bit: no K or V value is rounded to the query's dtype, each probability times its value's scale is instead, so it
    lies closer to attention over the cache dequantized in fp32. Compiled for sm_90 (Triton 3.6;
    ``benchmarks/results/kernel_sass_attention_int4xuint4*.md``) a key tile of INT4 K and UINT4 V then takes 764
    instructions instead of 1261 (796 before its softmax sums were deferred, 852 before its loads stopped waiting on
    the mask's, 957 without the inline PTX), one I2F instead of 129. On the H100, at 796 instructions, it took
    161.6 us at batch 64 where dequantized tiles took 180.9, 29.0 at batch 8 against 30.7, 9.8 at batch 1 against
    10.3 (``attention_bench_factored_prefetch_h100.md``); W4A4KV4 decoded 7671 tok/s at batch 64 against 7253, 2018
    at batch 8 against 1974 (``bench_model_llama3_8b_s52_kv4_prefetch_h100.md``)."""
    wanted = env_switch("PTQ_KV4_FACTORED", True, {
        "0": "dequantize each K and V tile as the cache does (dequantize-then-attention)",
        "1": "apply per-token scales to the scores and probabilities, the codes the dots' operands, the default"})
    return (wanted and q_dtype in OFFSET_CODES
            and all(element in INTEGER_ELEMENTS and group == dim
                    for _, _, element, group, _ in (key_parameters, value_parameters)))


TILE_ENV = "PTQ_ATTENTION_TILE"


@dataclasses.dataclass(frozen=True)
class PartialTile:
    """The partial kernel's launch: keys a step (BLOCK_N), warps, software-pipeline stages, and a cap on a thread's
    registers (0: none)."""

    keys: int = 64
    warps: int = 4
    stages: int = 3
    maxnreg: int = 0

    def __str__(self) -> str:
        return f"{self.keys}x{self.warps}x{self.stages}" + (f"x{self.maxnreg}" if self.maxnreg else "")

    def launch_options(self) -> dict:
        """The launch's keyword arguments."""
        return dict(BLOCK_N=self.keys, num_warps=self.warps, num_stages=self.stages,
                    **({"maxnreg": self.maxnreg} if self.maxnreg else {}))


def parse_tile(text: str) -> PartialTile:
    """A PartialTile from ``KEYSxWARPSxSTAGES`` or ``KEYSxWARPSxSTAGESxMAXNREG`` (``64x4x3x128``); a ValueError
    naming what is wrong otherwise."""
    fields = text.split("x")
    if not 3 <= len(fields) <= 4 or not all(field.isdigit() for field in fields):
        raise ValueError(f"{TILE_ENV}={text!r}: set KEYSxWARPSxSTAGES or KEYSxWARPSxSTAGESxMAXNREG, e.g. 64x4x3x128")
    tile = PartialTile(*map(int, fields))
    powers = (1, 2, 4, 8, 16)
    problems = [f"{what} {value} (allowed: {allowed})" for what, value, ok, allowed in (
        ("keys", tile.keys, tile.keys in (16, 32, 64, 128, 256), "16, 32, 64, 128 or 256: the dots take 16 or more"),
        ("warps", tile.warps, tile.warps in powers, "1, 2, 4, 8 or 16"),
        ("stages", tile.stages, 1 <= tile.stages <= 8, "1 to 8"),
        ("maxnreg", tile.maxnreg, tile.maxnreg == 0 or 24 <= tile.maxnreg <= 255, "0 for none, or 24 to 255"))
        if not ok]
    if problems:
        raise ValueError(f"{TILE_ENV}={text!r}: " + "; ".join(problems))
    return tile


# The partial kernel's tiles (``partial_tile`` says when each is taken).
BF16_TILE = PartialTile(keys=32)
PACKED_TILE = PartialTile(maxnreg=128)
ONE_WARP_TILE = PartialTile(keys=32, warps=1, stages=3)
ONE_WARP_PROGRAMS_PER_SM = 3


def partial_tile(packed: bool, factored_form: bool, pairs: int, length: int, device: torch.device) -> PartialTile:
    """The partial kernel's tile for ``pairs`` (sequence, K/V head) pairs over ``length`` cache slots:
    ``PTQ_ATTENTION_TILE`` (``parse_tile``; attention_bench's ``--tiles`` sweeps it), else by the cache's form.

    - bf16: ``BF16_TILE``, 32 keys a step, 4 warps, 3 stages.
    - packed, the factored form (``factored``): ``ONE_WARP_TILE`` (32 keys, one warp, 3 stages) where its slices
      give every SM at least ``ONE_WARP_PROGRAMS_PER_SM`` programs, else as dequantized tiles.
    - packed, dequantized tiles: ``PACKED_TILE``, 64 keys a step, 4 warps, 3 stages, capped at 128 registers a
      thread (uncapped on sm_90 with Triton 3.6 they take 157: three programs an SM; capped, four fit, unspilled).

    On the H100 (``attention_bench_tiles_*_h100.md``: 2176 written keys of 2306, Llama-3-8B's heads and
    Qwen2.5-7B's) the one-warp tile, 36.5 instructions a key against 47.8 offline, took the factored form from 27.8 to
    25.5 us at 64 pairs (Llama-3-8B at batch 8), 52.5 to 47.3 at 128, 89.2 to 74.4 at 256 and 156.0 to 116.4 at
    512; at 8 pairs, its 296 programs left the SMs short of warps (10.3 us against 9.8), and at 32 (Qwen2.5-7B at
    batch 8) 16.7 against 17.4. Dequantized tiles gained from it at 512 pairs alone. The bf16 cache's 32-key tile
    took 110.7 us against 121.1 at 256 pairs and 209.7 against 227.2 at 512, 10.0 against 10.6 at 8, and lost
    0.3-0.5 us at 4 and 64. W4A4KV4 then decoded 9087 tok/s at batch 64, 1.88x bf16's 4832 (7671, 1.65x, before;
    ``model_table_llama3_8b_s53_h100.md``)."""
    text = os.environ.get(TILE_ENV)
    if text is not None:
        return parse_tile(text)
    if factored_form:
        slices = _splits(length, pairs, device, packed, ONE_WARP_TILE.keys)[1]
        if pairs * slices >= ONE_WARP_PROGRAMS_PER_SM * _sm_count(device):
            return ONE_WARP_TILE
    return PACKED_TILE if packed else BF16_TILE


def _sm_count(device: torch.device) -> int:
    """The device's SMs; 4 stand in for the CPU's (the interpreter's launches)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _splits(length: int, programs_per_split: int, device: torch.device, packed: bool, keys: int) -> tuple[int, int]:
    """(split_len, n_splits): about ``programs_per_sm(packed)`` programs per SM, each slice a whole number of
    ``keys`` (the tile's keys a step), at most MAX_SPLITS slices."""
    wanted = max(1, min(triton.cdiv(programs_per_sm(packed) * _sm_count(device), programs_per_split),
                        triton.cdiv(length, keys), MAX_SPLITS))
    split_len = triton.cdiv(triton.cdiv(length, wanted), keys) * keys
    return split_len, triton.cdiv(length, split_len)


def decode_attention_triton(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                            scale: float, norm_tail: NormTail | None = None):
    """The Triton twin of ``reference.decode_attention_ref`` (same arguments, same result); with ``norm_tail``,
    (the result, the tail's dp4a bytes and scales of its (B, heads * D) rows), computed by the combining kernel's
    last program."""
    as_stored = (q, q, 0, q.shape[-1], False)  # no scales: the kernel reads K and V as they are
    return _decode_attention(q, key, value, mask, scale, as_stored, as_stored, False, norm_tail)


def decode_attention_packed_triton(q: torch.Tensor, key: PackedOperand, value: PackedOperand,
                                   mask: torch.Tensor | None, scale: float, key_element: str,
                                   value_element: str, norm_tail: NormTail | None = None):
    """The Triton twin of ``reference.decode_attention_packed_ref`` (same arguments, same result); ``norm_tail`` as
    in ``decode_attention_triton``."""

    def parameters(operand: PackedOperand, element: str) -> tuple:
        _, scales, zero = operand  # the kernel indexes them as contiguous (B, Hkv, L, D // group)
        zero_or_any = scales if zero is None else zero
        return (scales.contiguous(), zero_or_any.contiguous(), ELEMENT_IDS[element], q.shape[-1] // scales.shape[-1],
                zero is not None)

    return _decode_attention(q, key[0], value[0], mask, scale, parameters(key, key_element),
                             parameters(value, value_element), True, norm_tail)


def _decode_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float,
                      key_parameters: tuple, value_parameters: tuple, packed: bool, norm_tail: NormTail | None):
    """Both kernels' launch. ``key``, ``value``: (B, Hkv, L, D) values, or (``packed``) (B, Hkv, L, D // 2) codes;
    ``*_parameters``: (scales, zero points, element id, group, whether there are zero points)."""
    batch, heads_kv, groups, dim = q.shape
    length = key.shape[2]
    width = heads_kv * groups * dim  # a sequence's output row: every query head
    if norm_tail is not None:
        check_norm_tail(norm_tail, batch, width, q.dtype)
    q, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, key, value))
    if mask is not None:
        mask = mask.reshape(mask.shape[0], length)
        mask = (mask if mask.stride(-1) == 1 else mask.contiguous()).view(torch.uint8)
    block_g = max(16, triton.next_power_of_2(groups))
    factored_form = packed and factored(q.dtype, dim, key_parameters, value_parameters)
    tile = partial_tile(packed, factored_form, batch * heads_kv, length, q.device)
    split_len, n_splits = _splits(length, batch * heads_kv, q.device, packed, tile.keys)
    acc = torch.empty((batch * heads_kv * n_splits * block_g, dim), dtype=torch.float32, device=q.device)
    ml = torch.empty((batch * heads_kv * n_splits * block_g, 2), dtype=torch.float32, device=q.device)
    out = torch.empty((batch, heads_kv, groups, dim), dtype=q.dtype, device=q.device)
    dot_f32 = q.dtype == torch.float32 or INTERPRET
    offset_codes = {}
    if factored_form:
        magic, base = OFFSET_CODES[q.dtype]
        offset_codes = dict(FACTORED=True, MAGIC=magic, BASE=base, **{
            f"{name}_ASM": "" if INTERPRET else pair_words_asm(magic, element == ELEMENT_IDS["int4"])
            for name, element in (("K", key_parameters[2]), ("V", value_parameters[2]))})
    pdl = pdl_flags(q.device, "attention")
    k_scale, k_zero, k_element, k_group, k_has_zero = key_parameters
    v_scale, v_zero, v_element, v_group, v_has_zero = value_parameters
    _partial_kernel[(batch * heads_kv, n_splits)](
        q, key, value, mask if mask is not None else q, acc, ml, k_scale, k_zero, v_scale, v_zero,
        length, heads_kv, groups, scale, split_len, n_splits,
        q.stride(0), q.stride(1), q.stride(2), key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2), 0 if mask is None or mask.shape[0] == 1 else mask.stride(0),
        D=dim, BLOCK_G=block_g, HAS_MASK=mask is not None, DOT_F32=dot_f32, PACKED=packed,
        K_ELEMENT=k_element, V_ELEMENT=v_element, K_GROUP=k_group, V_GROUP=v_group, K_ZERO=k_has_zero,
        V_ZERO=v_has_zero, ROUND_BF16=packed and q.dtype == torch.bfloat16 and INTERPRET, **tile.launch_options(),
        **pdl, **offset_codes,
    )
    tail_tensors, tail_args = norm_tail_operands(norm_tail, out, batch, width)
    _combine_kernel[(batch * heads_kv * groups,)](
        acc, ml, out, *tail_tensors, groups, n_splits, batch, width, *tail_args, D=dim, BLOCK_G=block_g,
        BLOCK_S=triton.next_power_of_2(n_splits), ROUND_BF16=q.dtype == torch.bfloat16,
        ROUND_F16=q.dtype == torch.float16, num_warps=4, **norm_tail_flags(norm_tail, width), **pdl)
    return with_tail_outputs(out, norm_tail, tail_tensors)
