"""Triton kernel: per-row-scaled W4A4 products for decode-sized M, on the CUDA cores.

At a few rows a W4A4 product is bound by the weight bytes it streams, not by arithmetic.
The tensor-core kernel (``w4a4_gemm``) pads M to 16-row tiles and stages every unpacked
weight tile through shared memory; at M <= 16 it reached only a fifth of HBM bandwidth on
the H200 (``benchmarks/results/kernels_h200.md``). Here each program streams BLOCK_N weight
rows as 32-bit words (eight codes each) and multiplies them with PTX ``dp4a`` (four int8
products summed into an int32 per instruction): each word becomes two words of four
bytes (INT4 by two masks, E2M1 by byte-table lookups with ``prmt``). The activation
codes arrive as those bytes already, in the matching order (``reference.dp4a_bytes``,
written by the activation kernel with ``dp4a_for``), and one-row programs load them as a
tile of the weight tile's own layout: until 2026-12-02 the kernel built them from packed
codes in every program and moved them to the weight tile's layout through shared memory,
with a barrier, twice per K step (``benchmarks/kernel_sass.py``). Codes are integers in
units of 1 (INT4 activations), 1/2 (E2M1) or 1/16 (INT4 weights, nibbles at the top of
their bytes), so the sums are exact; one reduction per program at the end, the per-row
scales in the epilogue, and no atomics or zeroed buffer (each program owns its
outputs). Under the interpreter the two instructions are computed byte by byte, so the
CPU tests check the byte arithmetic around them.

Decoding each code with shifts and an int32 multiply-add kept the integer units busy
at 1.6 TB/s; with dp4a the H200 run of 2026-12-02 reached 2.13-2.56x cuBLAS bf16 for INT4
and 1.77-2.15x for E2M1 at M = 1 (0.97-1.78 TB/s of weight traffic;
``benchmarks/results/kernel_bench_decode_dp4a_h200.md``); on dp4a bytes, 2.16x / 2.59x
(INT4) and 1.92x / 2.33x (E2M1) at 4096x4096 / 14336x4096, and the GEMVs of a compiled
W4A4KV4 decode step 1.14-1.19 ms instead of 1.25 ms
(``benchmarks/results/kernel_bench_decode_dp4a_bytes_h200.md``). The grid has one program per
BLOCK_N weight rows; rows per program, words per step, warps and stages are autotuned per
shape on a GPU.

INT4 weights of TC_MIN_M to TC_MAX_M rows take ``_w4a4_tc_kernel`` on the same dp4a bytes instead: the
weight's packed bytes become int8 tensor-core operands with one inline-PTX instruction per four bytes, and the
rows (padded to 16) are the narrow side of the dot, so the work per weight byte does not grow with the rows as
the dp4a multiply-adds do. E2M1 weights take it too (unless ``PTQ_TC_E2M1=0``), as FP8 E4M3 operands on the
FP8 tensor cores: on the H200 it ran 1.7-2.25x cuBLAS bf16 at 16 rows, where ``w4a4_gemm`` ran 0.5x
(``benchmarks/results/decode_rows_e2m1_h200.md``). Where N gives too few programs (4096) its autotuner may split
K: the slices add exact int32 sums atomically into a zeroed buffer (``split_k_buffer``) and the last slice of
each tile to finish runs the epilogue and zeroes the buffer again, so a split product equals the unsplit one
bit for bit.

At prefill sizes (``w4a4_tc_prefill_triton``) the same kernel takes INT4 weights over a third grid axis of
BLOCK_M-row tiles (128 activation rows a tile): the packed weight is read once a tile and never widened in memory,
where the FP8 path (``fp8_gemm``) writes and reads an E4M3 copy of it on every call. On the H200 (Llama-3-8B
shapes) it ran 0.76-0.97x cuBLAS's FP8 GEMM on E4M3 codes at M = 2048, where the FP8 path's widening + GEMM ran
0.80-0.85x, and 0.79-1.03x at 8192 (0.87-1.00x), exact int32 sums (``benchmarks/results/tc_prefill_probe_h200.md``,
``prefill_int8_h200.md``): the int8 path of ``w4a4_linear`` up to ``INT8_MAX_ROWS`` rows.

With a norm tail (``norm_tail``, a decode layer's o_proj) the CUDA-core kernel's last program to finish (a counter
in the same zeroed buffer) runs the next RMSNorm and its per-token quantization on the whole output rows, which
the other programs wrote: the activation kernel's launch for the post-attention norm folded into this one.

On Hopper the kernel is launched as a programmatic dependent launch (``quant_kernels.pdl``): its
programs may start while the kernel before them in the stream (the activation kernel) still
runs, read what no earlier kernel writes (the weight words; the prefetching configs load
their first step) and wait before the first read of the activation bytes and any store.
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl
from triton.language.standard import _sum_combine
from triton.tools.tensor_descriptor import TensorDescriptor

from quant_layers.packing import element_named

from .act_quant import DP4A_FOR_IDS, _code_values, _tail_quantize_rows, clamp_kind, norm_tail_triton
from .autotuning import autotune
from .pdl import launch_dependents, pdl_flags, wait_for_producer
from .reference import (NormTail, check_dp4a_args, check_e4m3_planes, check_norm_tail, check_out,
                        check_packed_activations)
from .rounding import _round_to_dtype, _silu_mul
from .switches import env_choice, env_switch

INTERPRET = triton.knobs.runtime.interpret
# Byte tables for prmt (as int32): twice the E2M1 magnitudes 0, 1, 2, 3 | 4, 6, 8, 12, then their negatives.
E2M1_POS_LOW, E2M1_POS_HIGH = tl.constexpr(0x03020100), tl.constexpr(0x0C080604)
E2M1_NEG_LOW, E2M1_NEG_HIGH = tl.constexpr(0xFDFEFF00 - (1 << 32)), tl.constexpr(0xF4F8FAFC - (1 << 32))
HIGH_NIBBLES = tl.constexpr(0xF0F0F0F0 - (1 << 32))
# ``_e2m1_signed_bytes``' constants: the bias that keeps each byte's signed value within its byte while the word is
# added as one integer, and the prmt selectors (sign-replicate mode, the nibble's msb set) that give codes 0..3 and
# 4..7 their sign bytes from the packed bytes (index 0..3) and the bytes shifted left by four (index 4..7).
BYTE_BIAS = tl.constexpr(0x80808080 - (1 << 32))
SIGNS_LOW, SIGNS_HIGH = tl.constexpr(0x9D8C), tl.constexpr(0xBFAE)
# ``_e2m1_nibbles_doubled``'s PTX for four packed bytes: their low (or high) nibbles gathered into the low 16 bits,
# then the positive and negative doubled values looked up by magnitude and one picked by the sign bit (prmt).
_E2M1_DOUBLED_PTX = ("{ .reg .b32 x, y, c, m, s, p, n, lo, hi; %s shr.b32 y, x, 4; or.b32 y, y, x; "
                     "prmt.b32 c, y, y, 0x20; and.b32 m, c, 0x7777; "
                     "mov.b32 lo, %#010x; mov.b32 hi, %#010x; prmt.b32 p, lo, hi, m; "
                     "mov.b32 lo, %#010x; mov.b32 hi, %#010x; prmt.b32 n, lo, hi, m; "
                     "shr.b32 s, c, 1; and.b32 s, s, 0x4444; or.b32 s, s, 0x3210; prmt.b32 $0, p, n, s; }")
_E2M1_TABLES = tuple(t.value & 0xFFFFFFFF for t in (E2M1_POS_LOW, E2M1_POS_HIGH, E2M1_NEG_LOW, E2M1_NEG_HIGH))
E2M1_DOUBLED_LOW_PTX = tl.constexpr(_E2M1_DOUBLED_PTX % ("and.b32 x, $1, 0x0F0F0F0F;", *_E2M1_TABLES))
E2M1_DOUBLED_HIGH_PTX = tl.constexpr(_E2M1_DOUBLED_PTX % ("shr.b32 x, $1, 4; and.b32 x, x, 0x0F0F0F0F;",
                                                          *_E2M1_TABLES))
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
# One-row configs that load the next K step's words before this step's arithmetic (Triton pipelines no
# load that feeds no dot): (BLOCK_N, BLOCK_KW, num_warps, num_stages), twice the words in registers.
GEMV_PREFETCH_CONFIGS = [(8, 128, 4, 2), (16, 128, 8, 2), (16, 256, 8, 2), (32, 128, 8, 2), (8, 512, 8, 2)]
# One-row configs whose accumulator holds one sum per FOLD = 4 words (``_folded_products``): compiled for sm_90
# (``benchmarks/kernel_sass.py``) the wide steps need 20-35 % fewer registers (16 x 256 words on 8 warps: 66 -> 52,
# so 32 warps an SM instead of 24) for the same instructions.
GEMV_FOLDED_CONFIGS = [(16, 256, 8, 2), (16, 256, 8, 3), (8, 512, 8, 2), (32, 256, 8, 2), (32, 512, 16, 2),
                       (64, 256, 16, 2)]
FOLD = 4
# Configs whose K loop Triton software-pipelines (``tl.range(..., num_stages=LOOP_STAGES)``): each step's words
# copied asynchronously into shared memory LOOP_STAGES - 1 steps ahead, where a plain loop has Triton pipeline
# no load that feeds no dot. ncu found the kernel waiting on its loads (too few in flight); compiled for sm_90
# these hold 12-18 KiB of shared memory at 8 x 64 words. (BLOCK_N, BLOCK_KW, num_warps, LOOP_STAGES).
GEMV_PIPELINED_CONFIGS = [(2, 128, 2, 3), (4, 128, 4, 3), (8, 64, 4, 3), (8, 128, 4, 3), (16, 64, 4, 3),
                          (16, 128, 8, 3), (8, 64, 4, 4), (16, 64, 8, 4)]
INTERPRET_CONFIG = dict(BLOCK_N=8, BLOCK_KW=4, PREFETCH=False, FOLD=1, LOOP_STAGES=1)
# Products with INT4 weights of TC_MIN_M to TC_MAX_M rows take ``_w4a4_tc_kernel`` (int8 tensor cores) on a GPU. On
# the H200 (2026-12-03, ``benchmarks/results/tc_decode_probe_h200.md``) it ran 2.2-2.9x cuBLAS bf16 at 8 and 16 rows
# of the Llama-3-8B shapes, where this file's CUDA-core kernel ran 1.65-2.0x at 8 and the split-K tensor-core kernel
# of ``w4a4_gemm`` 0.85-1.0x at 16; below TC_MIN_M rows a 16-row tile is mostly padding.
TC_MIN_M = 5
TC_MAX_M = 64
# (BLOCK_N, BLOCK_KB, SPLIT_K, num_warps, num_stages) of the tensor-core kernel; BLOCK_KB counts packed weight
# bytes (two codes each). The H200 probe's winners (tc_decode_probe_h200.md): 64 x 256 bytes unsplit where N
# gives enough programs (14336 x 4096), 64 x 128 split four ways at N = 4096 (10 % faster at 4096 x 4096, 44 % at
# 4096 x 14336 than unsplit). On the H100 INT4 at 16 rows of 4096 x 4096 took 32 x 256 unsplit, 128 programs for 132
# SMs, and read its weight at 1.1 TB/s in a stream (``kernel_bench_decode_in_stream_retimed_h100.md``). The last
# three offer it more bytes in flight: 16 x 256 on 2 warps and 32 x 256 split in two make 256 programs, 32 x 128 on
# 2 warps lets an SM hold more of its 128 (INT4 only: below 4 warps Triton has no warpgroup for wgmma and multiplies
# FP8 on mma.sync in fp16, ``tc_config_fits``). The H100's tuner took 16 x 256 on 2 warps at 4096 x 4096 and
# 6144 x 4096: 2.38x and 3.05x bf16 at 16 rows in a stream (2.32x before at 4096 x 4096;
# ``kernel_bench_decode_in_stream_retimed_narrow_h100.md``). The last three, 512 bytes a step, are narrow tiles whose
# warps split each step's K (``tc_warp_slices``; E2M1 runs the 4-warp ones only so): the fastest at 16 rows of every
# Llama-3-8B shape the H100 swept, INT4 and E2M1 (``tc_warp_split_{int4,e2m1}_s70_h100.md``).
TC_CONFIGS = [(32, 256, 1, 4, 3), (64, 128, 1, 4, 4), (64, 256, 1, 4, 3), (64, 128, 2, 4, 4), (64, 256, 2, 4, 3),
              (64, 128, 4, 4, 4), (128, 128, 1, 8, 3), (128, 128, 2, 8, 3), (16, 256, 1, 2, 3), (32, 128, 1, 2, 4),
              (32, 256, 2, 4, 3), (16, 512, 1, 2, 3), (16, 512, 1, 4, 3), (32, 512, 1, 4, 3)]
INTERPRET_TC_CONFIG = dict(BLOCK_N=16, BLOCK_KB=32, SPLIT_K=2)
# The narrowest BLOCK_N of any tensor-core config: the split-K tile counters are sized for it.
TC_MIN_BLOCK_N = 16
# A launch's warps where neither it nor its config names them.
TRITON_DEFAULT_WARPS = 4
# Prefill tiles of the tensor-core kernel (``w4a4_tc_prefill_triton``): (BLOCK_N weight rows, BLOCK_M activation
# rows, BLOCK_KB packed bytes a step, warps, stages, GROUP_M), K unsplit. The probe's fastest, 128 x 128 x 64 on 8
# warps (3 or 4 stages), neighbours it did not time (256-row and 128-byte tiles ran 25-35 % slower there), and the
# fastest grouped 8 row tiles at a time (688 against 765 us at 8192 x 4096 x 14336, ``prefill_int8_grouped_h200.md``).
TC_PREFILL_CONFIGS = [(128, 128, 64, 8, 3, 1), (128, 128, 64, 8, 4, 1), (128, 128, 32, 8, 4, 1),
                      (128, 128, 32, 8, 6, 1), (128, 64, 64, 4, 4, 1), (64, 128, 64, 4, 4, 1), (64, 128, 128, 4, 3, 1),
                      (128, 128, 64, 8, 3, 8), (128, 128, 64, 8, 4, 8)]
# The one-dot FP8 form's own candidates (its wgmmas stay in flight, so a CTA an SM can keep the tensor cores busy):
# 256 activation rows a tile decode each weight tile for twice the wgmma work (205 registers, one CTA of 8 warps an
# SM; sm_90 SASS, Triton 3.6). The int8 and step-sum forms skip them (``prune_prefill_configs``). On the H100 E2M1 on
# this form ran 0.93-0.97x cuBLAS's FP8 GEMM at 8192 rows on the ungrouped tiles, codes given
# (``targets_h100.md``), where the int8 form's grouped tiles won at 14336 x 4096: the same tiles 8 row tiles a
# group (untimed; ``kernel_sass_w4a4_tc_prefill_e4m3xe2m1_grouped.md``: 206 registers, no spills) join them.
TC_PREFILL_ONE_DOT_CONFIGS = [(128, 256, 64, 8, 3, 1), (128, 256, 64, 8, 4, 1), (128, 256, 64, 8, 3, 8),
                              (128, 256, 64, 8, 4, 8)]
INTERPRET_TC_PREFILL_CONFIG = dict(BLOCK_N=16, BLOCK_M=16, BLOCK_KB=32, SPLIT_K=1, GROUP_M=2)
TC_PREFILL_TUNING_KEY = ("M_BUCKET", "N", "KB", "HAS_BIAS", "HAS_RESIDUAL", "W_E2M1_INT8", "A_E4M3", "FP8_STEP_SUMS",
                         "A_E4M3_W_INT4")
# Accumulator registers per thread a decode config may use (BLOCK_M * BLOCK_N * BLOCK_KW / FOLD over its threads).
MAX_ACC_PER_THREAD = 64
# The CUDA-core decode kernel's autotune key.
GEMV_TUNING_KEY = ("M_BUCKET", "N", "KW", "W_INT4", "W_INT8", "BLOCK_M", "GATED", "NORM_TAIL")
# Picks the CUDA-core decode kernel keeps instead of tuning, per device name and GEMV_TUNING_KEY values:
# (BLOCK_N, BLOCK_KW, PREFETCH, FOLD, LOOP_STAGES, warps, stages). The tuner times each candidate alone, and its
# draws differ between processes: on the H200 one draw's picks for a Llama-3-8B W4A4KV4 batch-1 decode step (q/k/v,
# o_proj with its norm tail, gated gate/up, down) gave a 2130 us step, another's 2331 us
# (``benchmarks/results/end_to_end_h200.md``, run 21); these are the faster draw's. down_proj with the next layer's
# input-norm tail (run 22 on) keeps untailed down_proj's pick (the tail is the last program's work only).
# PTQ_PINNED_CONFIGS=0 tunes them too.
PINNED_GEMV_CONFIGS = {
    "NVIDIA H200": {
        (1, 6144, 512, True, False, 1, False, False): (16, 128, True, 1, 1, 8, 2),
        (1, 4096, 512, True, False, 1, False, True): (16, 512, False, 1, 1, 8, 2),
        (1, 28672, 512, True, False, 1, True, False): (8, 128, True, 1, 1, 4, 2),
        (1, 4096, 1792, True, False, 1, False, False): (16, 256, True, 1, 1, 8, 2),
        (1, 4096, 1792, True, False, 1, False, True): (16, 256, True, 1, 1, 8, 2),
    },
    # One row at the Llama-3-8B shapes, INT4 and E2M1: each key's fastest candidate in a sweep of every one the
    # pruning keeps, fixed, timed by a read in a stream (``gemv_sweep_{int4,e2m1}{,_rest}_s68_h100.md``). This process's
    # tuner had picked 16 x 256 on 8 warps for INT4 at 4096 x 4096 (5.2 against 4.9 us) and 8 x 128 on 8 warps at
    # 6144 x 4096 (6.6 against 6.0 us), and 8 x 128 prefetching for E2M1 at 14336 x 4096 (13.3 against 13.1 us).
    "NVIDIA H100 80GB HBM3": {
        (1, 4096, 512, True, False, 1, False, False): (8, 128, True, 1, 1, 4, 2),
        (1, 6144, 512, True, False, 1, False, False): (8, 128, True, 1, 1, 4, 2),
        (1, 4096, 1792, True, False, 1, False, False): (16, 256, True, 1, 1, 8, 2),
        (1, 14336, 512, True, False, 1, False, False): (8, 64, False, 1, 1, 4, 3),
        (1, 4096, 512, False, False, 1, False, False): (8, 512, False, 4, 1, 8, 2),
        (1, 6144, 512, False, False, 1, False, False): (8, 128, True, 1, 1, 4, 2),
        (1, 4096, 1792, False, False, 1, False, False): (16, 256, True, 1, 1, 8, 2),
        (1, 14336, 512, False, False, 1, False, False): (8, 64, False, 1, 1, 4, 3),
    },
}
# The tensor-core decode kernel's autotune key.
TC_TUNING_KEY = ("M_BUCKET", "N", "KB", "HAS_BIAS", "HAS_RESIDUAL", "BLOCK_M", "W_E2M1", "A_E4M3", "A_E4M3_W_INT4",
                 "A_PACKED")
# Its picks kept instead of tuning, as PINNED_GEMV_CONFIGS: (BLOCK_N, BLOCK_KB, SPLIT_K, warps, stages). On the H200
# the batch-8 Llama-3-8B W4A4KV4 decode step (q/k/v, o_proj, gate/up, down on INT4 weights) ran 3.97 ms with one
# process's draws (run 16), 4.77 and 5.96 ms with two others' (runs 24, 23) and 3.89 ms with these (run 26); pinned,
# bench_model's batch 8 went from 0.99x bf16 (run 23) to 1.36x (run 28, ``benchmarks/results/end_to_end_h200.md``).
PINNED_TC_CONFIGS = {
    "NVIDIA H200": {
        (8, 6144, 2048, False, False, 16, False, False, False, False): (64, 256, 2, 4, 3),
        (8, 4096, 2048, False, True, 16, False, False, False, False): (32, 256, 1, 4, 3),
        (8, 28672, 2048, False, False, 16, False, False, False, False): (128, 128, 1, 8, 3),
        (8, 4096, 7168, False, True, 16, False, False, False, False): (64, 128, 4, 4, 4),
    },
    # 16 rows at the Llama-3-8B shapes, INT4 on dp4a bytes and E2M1 on E4M3 planes (A_E4M3), with and without the
    # residual: each key's fastest config of a sweep timed by a read in a stream, or the config that won the same
    # shape's other key where that was within 1 % (``tc_sweep_{int4,e2m1}_s67_h100.md``). One process's tuner had
    # picked 16 x 256 on 2 warps for INT4 at 4096 x 4096 (7.1 us), two others 32 x 256 split in two (7.8-8.0 us).
    # At 4096 x 4096 and 4096 x 14336 the narrow tiles whose warps split K (``tc_warp_slices``) won since, without
    # the residual (``tc_warp_split_{int4,e2m1}_s70_h100.md``: INT4 16 x 512 on 2 warps, 6.5 and 13.7 us against the
    # pins' 6.9 and 15.1; E2M1 32 x 512 and 16 x 512 on 4, 6.9 and 14.5 against 7.6 and 15.1); the residual's keys
    # take the same tiles (the residual adds the same epilogue to every unsplit tile).
    "NVIDIA H100 80GB HBM3": {
        (16, 4096, 2048, False, False, 16, False, False, False, False): (16, 512, 1, 2, 3),
        (16, 4096, 2048, False, True, 16, False, False, False, False): (16, 512, 1, 2, 3),
        (16, 4096, 7168, False, False, 16, False, False, False, False): (16, 512, 1, 2, 3),
        (16, 4096, 7168, False, True, 16, False, False, False, False): (16, 512, 1, 2, 3),
        (16, 14336, 2048, False, False, 16, False, False, False, False): (64, 256, 1, 4, 3),
        (16, 14336, 2048, False, True, 16, False, False, False, False): (64, 256, 1, 4, 3),
        (16, 6144, 2048, False, False, 16, False, False, False, False): (16, 256, 1, 2, 3),
        (16, 6144, 2048, False, True, 16, False, False, False, False): (16, 256, 1, 2, 3),
        (16, 4096, 2048, False, False, 16, False, True, False, False): (32, 512, 1, 4, 3),
        (16, 4096, 2048, False, True, 16, False, True, False, False): (32, 512, 1, 4, 3),
        (16, 4096, 7168, False, False, 16, False, True, False, False): (16, 512, 1, 4, 3),
        (16, 4096, 7168, False, True, 16, False, True, False, False): (16, 512, 1, 4, 3),
        (16, 14336, 2048, False, False, 16, False, True, False, False): (64, 256, 1, 4, 3),
        (16, 14336, 2048, False, True, 16, False, True, False, False): (64, 256, 1, 4, 3),
        (16, 6144, 2048, False, False, 16, False, True, False, False): (64, 256, 1, 4, 3),
        (16, 6144, 2048, False, True, 16, False, True, False, False): (64, 256, 1, 4, 3),
    },
}


@triton.jit
def _dp4a(a, b, acc, USE_ASM: tl.constexpr):
    """acc + the sum over bytes i of a_i * b_i (signed bytes): PTX dp4a."""
    if USE_ASM:
        out = tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, acc],
                                        dtype=tl.int32, is_pure=True, pack=1)
    else:  # the interpreter runs no PTX: the same sum byte by byte
        out = acc
        for i in tl.static_range(4):
            out += ((a << (24 - 8 * i)) >> 24) * ((b << (24 - 8 * i)) >> 24)
    return out


@triton.jit
def _prmt(lo, hi, selector, USE_ASM: tl.constexpr):
    """Byte i of the result is byte (bits 0..2 of nibble i of selector, 0..7) of the 8 bytes hi:lo, or, where the
    nibble's msb is set, that byte's sign (bit 7) replicated over the byte: PTX prmt, default mode."""
    if USE_ASM:
        out = tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [lo, hi, selector],
                                        dtype=tl.int32, is_pure=True, pack=1)
    else:
        out = tl.full(selector.shape, 0, tl.int32)
        for i in tl.static_range(4):
            index = (selector >> (4 * i)) & 7
            byte = (tl.where(index < 4, lo, hi) >> ((index & 3) * 8)) & 0xFF
            byte = tl.where(((selector >> (4 * i + 3)) & 1) == 1, tl.where(byte >= 0x80, 0xFF, 0), byte)
            out |= byte << (8 * i)
    return out


@triton.jit
def _weight_bytes(words, W_INT4: tl.constexpr, W_INT8: tl.constexpr, USE_ASM: tl.constexpr,
                  E2M1_SIGN_BYTES: tl.constexpr = False):
    """A word's 8 codes as two words of 4 signed bytes each, the weight operands of dp4a.

    INT4: codes 0, 2, 4, 6 and 1, 3, 5, 7, each nibble moved to the top of its byte, so 16
    times the level (two instructions a word; the kernel's ``unit`` divides by 16). E2M1:
    codes 0..3 and 4..7 as twice their values, from byte tables: prmt looks up the
    magnitude among the positive and the negative values, and a third prmt picks one of the
    two by the sign bit; or (E2M1_SIGN_BYTES) ``_e2m1_signed_bytes``. INT8 (64-bit words): codes 0..3 and 4..7 are
    the word's halves already.
    """
    if W_INT8:
        first = words.to(tl.int32)
        second = (words >> 32).to(tl.int32)
    elif W_INT4:
        first = (words << 4) & HIGH_NIBBLES
        second = words & HIGH_NIBBLES
    elif E2M1_SIGN_BYTES:
        shifted = words << 4
        first = _e2m1_signed_bytes(words & 0x7777, words, shifted, SIGNS_LOW, USE_ASM)
        second = _e2m1_signed_bytes((words >> 16) & 0x7777, words, shifted, SIGNS_HIGH, USE_ASM)
    else:
        first = _e2m1_bytes(words, USE_ASM)
        second = _e2m1_bytes(words >> 16, USE_ASM)
    return first, second


@triton.jit
def _e2m1_signed_bytes(magnitudes, words, shifted, signs: tl.constexpr, USE_ASM: tl.constexpr):
    """Twice the E2M1 values of four codes of int32 words, as 4 signed bytes, from their magnitude codes (the low 16
    bits' nibbles), one table lookup (prmt) and their signs: prmt's sign-replicate mode copies each code's sign bit,
    bit 7 of a packed byte (odd codes) or of the byte shifted left by four (``shifted``: even codes), over its byte,
    s = 0 or -1 (selector ``signs``). Then v = (m ^ s) - s for each byte, done on the whole word as one integer,
    ``BYTE_BIAS`` + sum v_i 256^i, whose bytes are v_i + 128 (|v_i| <= 12: no carry), their top bits flipped back:
    four instructions for the sign where the three-lookup form takes five and a second table."""
    doubled = _prmt(tl.full(words.shape, E2M1_POS_LOW, tl.int32), tl.full(words.shape, E2M1_POS_HIGH, tl.int32),
                    magnitudes, USE_ASM)
    sign = _prmt(words, shifted, tl.full(words.shape, signs, tl.int32), USE_ASM)
    return (BYTE_BIAS + (doubled ^ sign) - sign) ^ BYTE_BIAS


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
def _products(acc, w_words, a_first, a_second, W_INT4: tl.constexpr, W_INT8: tl.constexpr, USE_ASM: tl.constexpr,
              E2M1_SIGN_BYTES: tl.constexpr = False):
    """acc plus the products of weight words (8 codes each) and their activation words, summed per word."""
    w_first, w_second = _weight_bytes(w_words, W_INT4, W_INT8, USE_ASM, E2M1_SIGN_BYTES)
    return _dp4a(w_second, a_second, _dp4a(w_first, a_first, acc, USE_ASM), USE_ASM)


@triton.jit
def _folded_products(acc, w_words, a_first, a_second, W_INT4: tl.constexpr, W_INT8: tl.constexpr,
                     USE_ASM: tl.constexpr, FOLD: tl.constexpr, E2M1_SIGN_BYTES: tl.constexpr = False):
    """``_products`` into an accumulator of 1/FOLD the words: each step's sums over FOLD neighbouring words
    (held by one thread) are added together first."""
    if FOLD == 1:
        out = _products(acc, w_words, a_first, a_second, W_INT4, W_INT8, USE_ASM, E2M1_SIGN_BYTES)
    else:
        step = _products(tl.full(w_words.shape, 0, tl.int32), w_words, a_first, a_second, W_INT4, W_INT8, USE_ASM,
                         E2M1_SIGN_BYTES)
        out = acc + tl.reduce(tl.reshape(step, (acc.shape[0], acc.shape[1], FOLD)), 2, _sum_combine)
    return out


@triton.jit
def _w4a4_gemv_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, residual_ptr, out_ptr, norm_ptr, codes_ptr, codes_scale_ptr,
    count_ptr, M, N, KW, M_BUCKET, stride_am, stride_wn, stride_asm, stride_wsn, stride_om, stride_rm, unit,
    stride_cm, eps, tail_clip, tail_max,
    W_INT4: tl.constexpr, W_INT8: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    USE_ASM: tl.constexpr, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, PREFETCH: tl.constexpr,
    FOLD: tl.constexpr, USE_GDC: tl.constexpr, LOOP_STAGES: tl.constexpr, GATED: tl.constexpr,
    NORM_TAIL: tl.constexpr, TAIL_NORM: tl.constexpr, TAIL_INT4: tl.constexpr, TAIL_CLAMP: tl.constexpr,
    TAIL_DP4A_FOR: tl.constexpr, TAIL_BLOCK: tl.constexpr, E2M1_SIGN_BYTES: tl.constexpr,
):
    """a: the activation rows' dp4a bytes as int32 words (row r: KW words of the first plane, then KW of the
    second); w: the packed weight rows as int32 words (8 codes each), or INT8 weight bytes as int64 words (8
    each). HAS_RESIDUAL: the product, rounded to the output dtype, plus the residual rows, rounded again (an HF
    layer's ``residual + linear(x)``). GATED: the weight rows are gate's N / 2 then up's, and the output is
    silu(gate) * up (``_store_products``): the tile's first BLOCK_N / 2 rows are gate's, the rest up's same rows.
    NORM_TAIL: the last program to finish (a counter at ``count_ptr``, zero between products, as the tensor-core
    kernel's split-K counts its slices) runs the next RMSNorm (TAIL_NORM; else none) on the whole output rows and
    writes their per-token codes (``act_quant._tail_quantize_rows``: TAIL_INT4 INT4 else E2M1, TAIL_CLAMP, dp4a
    bytes for TAIL_DP4A_FOR weights, K = N padded to TAIL_BLOCK) and scales, one launch instead of two at
    decode."""
    launch_dependents(USE_GDC)
    offs_m = tl.arange(0, BLOCK_M)
    if GATED:
        offs_n, n_ok = _gated_rows(N, BLOCK_N)
    else:
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    m_ok = offs_m < M
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :]
    if BLOCK_M == 1:
        # The activation words are loaded as a whole (BLOCK_N, BLOCK_KW) tile of repeated addresses, so that
        # they arrive in the weight tile's own layout (a (BLOCK_KW,) vector would go through shared memory,
        # with a barrier, every step); the repeats are L1 hits. The accumulator is 2-D in that layout too.
        a_ptrs = a_ptr + offs_w[None, :] + 0 * offs_n[:, None]
        acc = tl.full((BLOCK_N, BLOCK_KW // FOLD), 0, tl.int32)
        if PREFETCH:  # the next step's words are in flight during this step's arithmetic
            all_ok = (offs_w < KW)[None, :]
            w_words = tl.load(w_ptrs, mask=n_ok[:, None] & all_ok, other=0)
            wait_for_producer(USE_GDC)  # the weights need no waiting: nothing in this stream writes them
            a_first = tl.load(a_ptrs, mask=all_ok, other=0)
            a_second = tl.load(a_ptrs + KW, mask=all_ok, other=0)
        else:
            wait_for_producer(USE_GDC)
        for start in tl.range(0, KW, BLOCK_KW, num_stages=LOOP_STAGES):
            if PREFETCH:
                next_ok = (offs_w < KW - start - BLOCK_KW)[None, :]
                w_next = tl.load(w_ptrs + BLOCK_KW, mask=n_ok[:, None] & next_ok, other=0)
                a_first_next = tl.load(a_ptrs + BLOCK_KW, mask=next_ok, other=0)
                a_second_next = tl.load(a_ptrs + BLOCK_KW + KW, mask=next_ok, other=0)
                acc = _folded_products(acc, w_words, a_first, a_second, W_INT4, W_INT8, USE_ASM, FOLD,
                                       E2M1_SIGN_BYTES)
                w_words, a_first, a_second = w_next, a_first_next, a_second_next
            else:
                w_ok = (offs_w < KW - start)[None, :]
                acc = _folded_products(acc, tl.load(w_ptrs, mask=n_ok[:, None] & w_ok, other=0),
                                       tl.load(a_ptrs, mask=w_ok, other=0), tl.load(a_ptrs + KW, mask=w_ok, other=0),
                                       W_INT4, W_INT8, USE_ASM, FOLD, E2M1_SIGN_BYTES)
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc, 1, _sum_combine)[None, :]
    else:
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_w[None, :]
        acc3 = tl.full((BLOCK_M, BLOCK_N, BLOCK_KW), 0, tl.int32)
        wait_for_producer(USE_GDC)
        for start in tl.range(0, KW, BLOCK_KW, num_stages=LOOP_STAGES):
            w_ok = offs_w < KW - start
            a_mask = m_ok[:, None] & w_ok[None, :]
            w_words = tl.load(w_ptrs, mask=n_ok[:, None] & w_ok[None, :], other=0)
            acc3 = _products(acc3, w_words[None, :, :], tl.load(a_ptrs, mask=a_mask, other=0)[:, None, :],
                             tl.load(a_ptrs + KW, mask=a_mask, other=0)[:, None, :], W_INT4, W_INT8, USE_ASM,
                             E2M1_SIGN_BYTES)
            a_ptrs += BLOCK_KW
            w_ptrs += BLOCK_KW
        total = tl.reduce(acc3, 2, _sum_combine)
    _store_products(total, offs_m, offs_n, m_ok, n_ok, a_scale_ptr, w_scale_ptr, bias_ptr, residual_ptr, out_ptr,
                    stride_asm, stride_wsn, stride_om, stride_rm, unit, HAS_BIAS, HAS_RESIDUAL, ROUND_BF16, ROUND_F16,
                    GATED)
    if NORM_TAIL:
        _tail_quantize_rows(count_ptr, out_ptr, stride_om, norm_ptr, codes_ptr, codes_scale_ptr, M, N, stride_cm, eps,
                            tail_clip, tail_max, TAIL_NORM, TAIL_INT4, TAIL_CLAMP, TAIL_DP4A_FOR, ROUND_BF16,
                            ROUND_F16, TAIL_BLOCK)


@triton.jit
def _gated_rows(N, BLOCK_N: tl.constexpr):
    """A gated program's BLOCK_N weight rows (the decode kernels' GATED: gate's rows are the first N / 2, up's the
    rest): BLOCK_N / 2 of gate's and the same outputs' of up's, and which of them exist."""
    half = tl.arange(0, BLOCK_N) % (BLOCK_N // 2)
    cols = tl.program_id(0) * (BLOCK_N // 2) + half
    return cols + tl.arange(0, BLOCK_N) // (BLOCK_N // 2) * (N // 2), cols < N // 2


@triton.jit
def _gated_products(out, offs_n, n_ok, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """A gated tile's (BLOCK_M, BLOCK_N) products on ``_gated_rows``' rows, each rounded to the output dtype, as
    silu(gate) * up rounded as eager torch rounds an HF MLP's ``act_fn(gate) * up`` (``rounding._silu_mul``), with
    its output columns (gate's rows) and which of them exist."""
    block_m: tl.constexpr = out.shape[0]
    half: tl.constexpr = out.shape[1] // 2
    out = _round_to_dtype(out, ROUND_BF16, ROUND_F16)
    gate, up = tl.split(tl.permute(tl.reshape(out, (block_m, 2, half)), (0, 2, 1)))
    offs_n, _ = tl.split(tl.permute(tl.reshape(offs_n, (2, half)), (1, 0)))  # gate's rows: the output columns
    n_ok, _ = tl.split(tl.permute(tl.reshape(n_ok.to(tl.int32), (2, half)), (1, 0)))
    return _silu_mul(gate, up, ROUND_BF16, ROUND_F16), offs_n, n_ok != 0


@triton.jit
def _store_products(total, offs_m, offs_n, m_ok, n_ok, a_scale_ptr, w_scale_ptr, bias_ptr, residual_ptr, out_ptr,
                    stride_asm, stride_wsn, stride_om, stride_rm, unit, HAS_BIAS: tl.constexpr,
                    HAS_RESIDUAL: tl.constexpr, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr,
                    GATED: tl.constexpr = False):
    """The decode kernels' epilogue: exact integer sums (BLOCK_M, BLOCK_N) times the unit and the per-row scales,
    plus the bias, then (HAS_RESIDUAL) rounded to the output dtype and added to the residual rows, rounded again.
    GATED (``_w4a4_gemv_kernel``): the tile's halves are gate's and up's products of the same outputs, rounded to
    the output dtype; silu(gate) * up is written, rounded as eager torch rounds it."""
    out = total.to(tl.float32) * unit
    out *= tl.load(a_scale_ptr + offs_m * stride_asm, mask=m_ok, other=0.0)[:, None]
    out *= tl.load(w_scale_ptr + offs_n * stride_wsn, mask=n_ok, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RESIDUAL:  # rounded by hand: the interpreter's bfloat16 cast truncates
        out = _round_to_dtype(out, ROUND_BF16, ROUND_F16)
        out = _round_to_dtype(out + tl.load(residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :],
                                            mask=m_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32),
                              ROUND_BF16, ROUND_F16)
    if GATED:
        out, offs_n, n_ok = _gated_products(out, offs_n, n_ok, ROUND_BF16, ROUND_F16)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _nibbles_up(w, LOW: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed weight bytes -> int8: the low (LOW) or the high nibble at the top of its byte, 16 times its INT4
    level. With inline PTX one 32-bit operation takes four bytes (Triton otherwise works byte by byte and
    repacks them, three times the instructions for sm_90)."""
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
def _e2m1_nibbles_doubled(w, LOW: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed E2M1 weight bytes -> int8: twice the low (LOW) or the high nibble's value (0, +-1, +-2, +-3, +-4, +-6,
    +-8, +-12), exact int8 tensor-core operands. With inline PTX four bytes at a time: their nibbles gathered into
    the low 16 bits (byte j's in nibble j), then ``_e2m1_bytes``' three byte-table lookups (prmt); the interpreter
    decodes each nibble as the activation kernel does (``_code_values``)."""
    if USE_ASM:
        out = tl.inline_asm_elementwise(E2M1_DOUBLED_LOW_PTX if LOW else E2M1_DOUBLED_HIGH_PTX, "=r,r", [w],
                                        dtype=tl.int8, is_pure=True, pack=4)
    else:
        out = _code_values(w.to(tl.int32), 0 if LOW else 1, False).to(tl.int8)
    return out


@triton.jit
def _int8_nibbles(w, LOW: tl.constexpr, W_E2M1: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed weight bytes -> the int8 dots' operand of their low (LOW) or high nibbles: E2M1 weights' doubled
    values (W_E2M1, ``_e2m1_nibbles_doubled``), INT4 ones' levels at the top of their bytes (``_nibbles_up``)."""
    if W_E2M1:
        out = _e2m1_nibbles_doubled(w, LOW, USE_ASM)
    else:
        out = _nibbles_up(w, LOW, USE_ASM)
    return out


@triton.jit
def _e2m1_nibbles_e4m3(w, LOW: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed E2M1 weight bytes -> float8 E4M3: the low (LOW) or the high nibble's value times 2^-6. The three
    magnitude bits moved to bits 2..4 are the E4M3 encoding of the E2M1 magnitude scaled by 2^-6 (1..3 as
    exponents 7..9 with the mantissa bit on top, the subnormal 0.5 as 2^-7), the sign goes to bit 7: per byte,
    so inline PTX takes four bytes an instruction pair whatever the register layout."""
    if USE_ASM:
        if LOW:
            out = tl.inline_asm_elementwise(
                "{ .reg .b32 t; shl.b32 t, $1, 2; and.b32 t, t, 0x1C1C1C1C; shl.b32 $0, $1, 4; "
                "and.b32 $0, $0, 0x80808080; or.b32 $0, $0, t; }", "=r,r", [w], dtype=tl.int8, is_pure=True, pack=4)
        else:
            out = tl.inline_asm_elementwise(
                "{ .reg .b32 t; shr.b32 t, $1, 2; and.b32 t, t, 0x1C1C1C1C; and.b32 $0, $1, 0x80808080; "
                "or.b32 $0, $0, t; }", "=r,r", [w], dtype=tl.int8, is_pure=True, pack=4)
    elif LOW:
        out = (((w << 2) & 0x1C) | ((w << 4) & 0x80)).to(tl.int8, bitcast=True)
    else:
        out = (((w >> 2) & 0x1C) | (w & 0x80)).to(tl.int8, bitcast=True)
    return out.to(tl.float8e4nv, bitcast=True)


@triton.jit
def _int4_nibbles_e4m3(w, LOW: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed INT4 weight bytes -> float8 E4M3: the low (LOW) or the high nibble's level v times 2^-9. E4M3's bytes
    0..8 are the values 0..8 times 2^-9 (the subnormals and the least normal), so the byte is v's sign at bit 7 and
    |v| below: the nibble x itself for x < 8, 0x90 - x (= 0x80 | (16 - x)) for x >= 8, which is (x ^ 0x8F) + 1. With
    inline PTX four bytes an operation: the sign bits t (0 or 1 a byte), then (x ^ 0x8F t) + t."""
    if USE_ASM:
        if LOW:
            out = tl.inline_asm_elementwise(
                "{ .reg .b32 t, y; shr.b32 t, $1, 3; and.b32 t, t, 0x01010101; mul.lo.u32 y, t, 0x8F; "
                "and.b32 $0, $1, 0x0F0F0F0F; xor.b32 $0, $0, y; add.u32 $0, $0, t; }",
                "=r,r", [w], dtype=tl.int8, is_pure=True, pack=4)
        else:
            out = tl.inline_asm_elementwise(
                "{ .reg .b32 t, y; shr.b32 t, $1, 7; and.b32 t, t, 0x01010101; mul.lo.u32 y, t, 0x8F; "
                "shr.b32 $0, $1, 4; and.b32 $0, $0, 0x0F0F0F0F; xor.b32 $0, $0, y; add.u32 $0, $0, t; }",
                "=r,r", [w], dtype=tl.int8, is_pure=True, pack=4)
    else:
        x = w & 0x0F if LOW else w >> 4
        out = tl.where(x >= 8, 0x90 - x, x).to(tl.uint8).to(tl.int8, bitcast=True)
    return out.to(tl.float8e4nv, bitcast=True)


@triton.jit
def _even_odd_planes(first, second, BLOCK_M: tl.constexpr, BLOCK_KB: tl.constexpr):
    """E2M1 weights' dp4a planes (``first``: codes 8i..8i+3 at bytes 4i..4i+3, ``second``: codes 8i+4..8i+7) ->
    INT4 weights' planes (codes 8i+2j and 8i+2j+1 at byte 4i+j), the order of a packed byte's two nibbles."""
    even_first, odd_first = tl.split(tl.reshape(first, (BLOCK_M, BLOCK_KB // 4, 2, 2)))
    even_second, odd_second = tl.split(tl.reshape(second, (BLOCK_M, BLOCK_KB // 4, 2, 2)))
    even = tl.reshape(tl.permute(tl.join(even_first, even_second), (0, 1, 3, 2)), (BLOCK_M, BLOCK_KB))
    odd = tl.reshape(tl.permute(tl.join(odd_first, odd_second), (0, 1, 3, 2)), (BLOCK_M, BLOCK_KB))
    return even, odd


@triton.jit
def _side_by_side(low, high, ROWS: tl.constexpr, BLOCK_KB: tl.constexpr):
    """A step's (ROWS, BLOCK_KB) operands of the low nibbles (codes 2j) and the high ones (2j + 1) as one (ROWS,
    2 BLOCK_KB) operand, the low nibbles' columns first: the one-dot form's K order, weights and packed activations
    alike."""
    return tl.reshape(tl.permute(tl.join(low, high), (0, 2, 1)), (ROWS, 2 * BLOCK_KB))


@triton.jit
def _warp_slices(x, ROWS: tl.constexpr, BLOCK_KB: tl.constexpr, WARP_K: tl.constexpr, TRANSPOSE: tl.constexpr):
    """A step's (ROWS, BLOCK_KB) int8 dot operand as WARP_K > 1 slices of K, (WARP_K, ROWS, BLOCK_KB / WARP_K)
    (TRANSPOSE: (WARP_K, BLOCK_KB / WARP_K, ROWS), the second operand): a batched dot, which Triton lays one batch a
    warp (mma warpsPerCTA [warps, 1, 1] in Triton 3.6's TTGIR). WARP_K = 1: the operand (transposed) as it is."""
    if WARP_K == 1:
        out = tl.trans(x) if TRANSPOSE else x
    else:
        sliced = tl.reshape(x, (ROWS, WARP_K, BLOCK_KB // WARP_K))
        out = tl.permute(sliced, (1, 2, 0) if TRANSPOSE else (1, 0, 2))
    return out


@triton.jit
def _diagonal_sum(x, SLICES: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """The sum of the SLICES diagonal (ROWS, COLS) blocks of x (SLICES ROWS, SLICES COLS): each K slice's rows
    against its own activation rows, the off-diagonal blocks (slice against another's columns) dropped."""
    blocks = tl.reshape(x, (SLICES, ROWS, SLICES, COLS))
    s = tl.arange(0, SLICES)
    own = s[:, None, None, None] == s[None, None, :, None]
    return tl.reduce(tl.reduce(tl.where(own, blocks, 0), 2, _sum_combine), 0, _sum_combine)


@triton.jit
def _w4a4_tc_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, residual_ptr, out_ptr, partial_ptr, count_ptr,
    M, N, KB, M_BUCKET, stride_am, stride_wn, stride_asm, stride_wsn, stride_om, stride_rm, unit,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, USE_ASM: tl.constexpr, ROUND_BF16: tl.constexpr,
    ROUND_F16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
    SPLIT_K: tl.constexpr, W_E2M1: tl.constexpr, EVEN: tl.constexpr, USE_GDC: tl.constexpr,
    GROUP_M: tl.constexpr = 1, W_E2M1_INT8: tl.constexpr = False, A_E4M3: tl.constexpr = False,
    FP8_STEP_SUMS: tl.constexpr = True, A_E4M3_W_INT4: tl.constexpr = False, A_PACKED: tl.constexpr = False,
    TWO_ACC: tl.constexpr = False, WARP_K: tl.constexpr = 1, TMA: tl.constexpr = 0, w_desc=None, a_desc=None,
):
    """INT4 weights on the int8 tensor cores, for TC_MIN_M..TC_MAX_M rows of dp4a bytes (INT4 weights' order:
    a row's K / 2 bytes of even codes, then K / 2 of odd codes). A step's packed weight bytes (BLOCK_N, BLOCK_KB)
    become two int8 operands, the low nibbles (codes 2j) and the high ones (2j + 1) each at the top of its byte,
    and each multiplies its activation plane: acc^T += W_even A_even^T + W_odd A_odd^T, the weight the dot's
    first operand (Hopper's wgmma reads it from registers: no shared-memory staging), the BLOCK_M >= 16 rows the
    narrow second one. Exact int32 sums. SPLIT_K > 1: program (n, s) takes the s-th of SPLIT_K slices of K and
    adds its int32 sums atomically into ``partial_ptr`` (M, N); the slice's counter for tile n tells the last
    program to arrive that the sums are whole: it takes them (leaving zeros for the next product) and runs the
    epilogue, so integer addition's order does not matter, the result is the unsplit one bit for bit and the
    bias and residual are added once. W_E2M1: E2M1 weights (bytes in the same place) as FP8 E4M3 operands,
    ``_e2m1_nibbles_e4m3``, against the activation bytes of E2M1 weights' order moved to the nibbles' order and
    widened to E4M3; each step's FP8 sums join an fp32 accumulator, which ends as exact int32 in units of 2^-7.
    W_E2M1_INT8: E2M1 weights as int8 operands of twice their values (``_e2m1_nibbles_doubled``) against the
    activation bytes of INT4 weights' order, on the int8 tensor cores, exact int32 sums (the prefill launch).
    A_E4M3 (either launch, W_E2M1 off): ``a_ptr`` points at E4M3 activation bytes in INT4 weights' order, typed
    so (a bitcast of int8 bytes made Triton 3.6 copy each plane through registers into another shared buffer every
    step), the weight's nibbles E4M3 operands; FP8_STEP_SUMS: each step's FP8 sums join the fp32 accumulator (exact),
    else the sums accumulate in wgmma (no add a step, at FP8 wgmma's reduced accumulation precision) and a step is one
    dot over both planes (the low nibbles' operand beside the high ones', the even activation plane's columns beside
    the odd one's, one tile load): Triton 3.6 leaves such a dot's wgmmas in flight while the next step's weight is
    decoded (wgmma waits for 3 groups in sm_90 SASS), where a dot whose sums are used in the loop, or whose
    accumulator is int32, waits for its wgmmas before anything else runs. A_E4M3_W_INT4: INT4 weights there, E4M3
    operands of their levels times 2^-9 (``_int4_nibbles_e4m3``), in place of E2M1's.
    A_PACKED: ``a_ptr`` points at the activations' packed codes, two a byte, whose nibbles become the two planes as
    the weight's do: INT4 x INT4 on the int8 dots (16 times their levels), E2M1 x E2M1 on the one-dot FP8 form
    (A_E4M3: E4M3 of their values times 2^-6, ``_e2m1_nibbles_e4m3``). Half the activation bytes a step, at the cost
    of the weight's decode instructions for them too.
    TWO_ACC (INT4 weights on the int8 dots): the odd nibbles' sums go to an accumulator of their own, added at the
    end, so that a step's IMMAs form twice the chains, each half as long (``tc_two_accumulators_on``).
    WARP_K > 1 (``tc_warp_slices``): a step's K in WARP_K slices. On the int8 dots (WARP_K the program's warps) each
    warp takes its own slice into an accumulator of its own (``_warp_slices``), the slices' sums added once at the
    end; without it Triton lays a tile of BLOCK_N < 16 x warps weight rows over the warps so that each runs the
    whole step. On the one-dot FP8 form (SLICED) the slices are stacked as the wgmma's WARP_K x BLOCK_N rows (a
    warpgroup's 64, 16 a warp) against the activation rows' slices stacked as its columns, and the product's diagonal
    blocks are summed at the end (the off-diagonal ones, WARP_K - 1 of WARP_K of the tensor cores' work, dropped):
    the narrow tile fits wgmma, each warp decoding its own slice.
    TMA (the decode launch's int8 dots on dp4a bytes, ``tc_tma_loads``): a step's weight tile and activation planes
    arrive by the Hopper tensor memory accelerator, rows and bytes past the operands read as zeros, instead of
    16-byte copies whose addresses every thread computes and advances each step; through descriptors this program
    makes (TMA_DEVICE) or the launch's ``w_desc`` and ``a_desc``, built on the host (TMA_HOST, ``tc_host_descriptor``).
    EVEN: K / 2 is a multiple of SPLIT_K steps and N of BLOCK_N (no masks). A third grid axis walks tiles of BLOCK_M
    rows (unsplit only: the split-K counters are per N tile); GROUP_M > 1 hands the programs out GROUP_M row tiles
    at a time for each weight tile, in launch order (the tiles in flight share weight and activation tiles in L2)."""
    launch_dependents(USE_GDC)
    tile = tl.program_id(0)
    row_tile = tl.program_id(2)
    if GROUP_M > 1:
        n_tiles, m_tiles = tl.num_programs(0), tl.num_programs(2)
        launched = row_tile * n_tiles + tile
        first_row_tile = launched // (GROUP_M * n_tiles) * GROUP_M
        rows_in_group = tl.minimum(m_tiles - first_row_tile, GROUP_M)
        row_tile = first_row_tile + launched % (GROUP_M * n_tiles) % rows_in_group
        tile = launched % (GROUP_M * n_tiles) // rows_in_group
    offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = row_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_b = tl.arange(0, BLOCK_KB)
    m_ok = offs_m < M
    n_ok = offs_n < N
    # By hand, not tl.cdiv: the interpreter may not call the standard library's jit functions (act_quant's docstring)
    slice_kb = (KB + SPLIT_K * BLOCK_KB - 1) // (SPLIT_K * BLOCK_KB) * BLOCK_KB
    first = tl.program_id(1) * slice_kb
    stop = tl.minimum(first + slice_kb, KB)
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + first + offs_b[None, :]
    ONE_DOT: tl.constexpr = A_E4M3 and not FP8_STEP_SUMS
    if ONE_DOT and SPLIT_K == 1:  # K > 0: else ptxas sees a path around the loop that sets the accumulators, and
        tl.assume(stop > first)   # serializes the wgmmas (its C7515 note)
    # The one-dot form's K in WARP_K slices stacked as the dot's rows (``tc_warp_slices``): row s BLOCK_N + i of the
    # weight operand is weight row i's s-th slice of a step's bytes, row s BLOCK_M + r of the activation operand is
    # activation row r's; the product's diagonal blocks hold the slices' sums (``_diagonal_sum``)
    SLICED: tl.constexpr = ONE_DOT and WARP_K > 1
    tl.static_assert(not (SLICED and A_PACKED), "sliced K takes E4M3 planes, not packed codes")
    SLICE: tl.constexpr = BLOCK_KB // WARP_K
    if SLICED:
        rows_w, rows_a, offs_j = tl.arange(0, WARP_K * BLOCK_N), tl.arange(0, WARP_K * BLOCK_M), tl.arange(0, 2 * SLICE)
        w_cols = (rows_w // BLOCK_N * SLICE)[:, None] + tl.arange(0, SLICE)[None, :]
        a_cols = (rows_a // BLOCK_M * SLICE)[:, None] + (offs_j % SLICE)[None, :]
        w_rows, a_rows = tile * BLOCK_N + rows_w % BLOCK_N, row_tile * BLOCK_M + rows_a % BLOCK_M
        w_ptrs = w_ptr + w_rows[:, None] * stride_wn + first + w_cols
        a_ptrs = a_ptr + a_rows[:, None] * stride_am + first + a_cols + (offs_j // SLICE * KB)[None, :]
        w_rows_ok, a_rows_ok = (w_rows < N)[:, None], (a_rows < M)[:, None]
    elif ONE_DOT and not A_PACKED:  # columns [start, start + BLOCK_KB) of the even plane, then the same of the odd one
        offs_j = tl.arange(0, 2 * BLOCK_KB)
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + first + (offs_j % BLOCK_KB + offs_j // BLOCK_KB * KB)[None, :]
    else:
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + first + offs_b[None, :]
    if W_E2M1 or A_E4M3:
        acc = tl.full((WARP_K * BLOCK_N, WARP_K * BLOCK_M), 0, tl.float32)
    elif WARP_K > 1:
        acc = tl.full((WARP_K, BLOCK_N, BLOCK_M), 0, tl.int32)
    else:
        acc = tl.full((BLOCK_N, BLOCK_M), 0, tl.int32)
    if TWO_ACC:  # the odd plane's int8 sums apart, their IMMA chains independent of the even plane's
        acc_odd = tl.full(acc.shape, 0, tl.int32)
    if TMA == 1:  # TMA_DEVICE; the planes as a (M, 2, KB) tensor, as on the host: one plane's box reads zeros past KB
        w_desc = tl.make_tensor_descriptor(w_ptr, shape=[N, KB], strides=[stride_wn, 1],
                                           block_shape=[BLOCK_N, BLOCK_KB])
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, 2, KB], strides=[stride_am, KB, 1],
                                           block_shape=[BLOCK_M, 1, BLOCK_KB])
    wait_for_producer(USE_GDC)
    for start in range(first, stop, BLOCK_KB):
        if TMA:
            w = w_desc.load([tile * BLOCK_N, start])
        elif EVEN:
            w = tl.load(w_ptrs)
            a_ok = a_rows_ok if SLICED else m_ok[:, None]
        elif SLICED:
            w = tl.load(w_ptrs, mask=w_rows_ok & (w_cols < stop - start), other=0)
            a_ok = a_rows_ok & (a_cols < stop - start)
        else:
            b_ok = (offs_b < stop - start)[None, :]
            w = tl.load(w_ptrs, mask=n_ok[:, None] & b_ok, other=0)
            a_ok = m_ok[:, None] & (b_ok if A_PACKED or not ONE_DOT else (offs_j % BLOCK_KB < stop - start)[None, :])
        if A_PACKED:
            a_codes = tl.load(a_ptrs, mask=a_ok, other=0)
            if ONE_DOT:  # the even codes' E4M3 columns, then the odd ones', as the weight's below
                a_both = _side_by_side(_e2m1_nibbles_e4m3(a_codes, True, USE_ASM),
                                       _e2m1_nibbles_e4m3(a_codes, False, USE_ASM), BLOCK_M, BLOCK_KB)
            else:
                a_even, a_odd = _nibbles_up(a_codes, True, USE_ASM), _nibbles_up(a_codes, False, USE_ASM)
        elif ONE_DOT:
            a_both = tl.load(a_ptrs, mask=a_ok, other=0.0)
        elif TMA:
            a_even = tl.reshape(a_desc.load([row_tile * BLOCK_M, 0, start]), (BLOCK_M, BLOCK_KB))
            a_odd = tl.reshape(a_desc.load([row_tile * BLOCK_M, 1, start]), (BLOCK_M, BLOCK_KB))
        else:
            a_even = tl.load(a_ptrs, mask=a_ok, other=0.0 if A_E4M3 else 0)
            a_odd = tl.load(a_ptrs + KB, mask=a_ok, other=0.0 if A_E4M3 else 0)
        if W_E2M1:
            a_even, a_odd = _even_odd_planes(a_even, a_odd, BLOCK_M, BLOCK_KB)
            a_even = a_even.to(tl.float16).to(tl.float8e4nv)  # exact: INT4 levels, twice the E2M1 values
            a_odd = a_odd.to(tl.float16).to(tl.float8e4nv)
        if A_E4M3_W_INT4:  # the FP8 forms' weight operands
            low, high = _int4_nibbles_e4m3(w, True, USE_ASM), _int4_nibbles_e4m3(w, False, USE_ASM)
        elif W_E2M1 or A_E4M3:
            low, high = _e2m1_nibbles_e4m3(w, True, USE_ASM), _e2m1_nibbles_e4m3(w, False, USE_ASM)
        if (W_E2M1 or A_E4M3) and FP8_STEP_SUMS:
            # Each step's sums start from zero and join acc on the CUDA cores (FP8 wgmma adds at reduced precision)
            step = tl.dot(low, tl.trans(a_even), out_dtype=tl.float32)
            acc += tl.dot(high, tl.trans(a_odd), step, out_dtype=tl.float32)
        elif ONE_DOT:
            acc = tl.dot(_side_by_side(low, high, WARP_K * BLOCK_N, SLICE), tl.trans(a_both), acc,
                         out_dtype=tl.float32)
        else:  # the int8 dots
            acc = tl.dot(_warp_slices(_int8_nibbles(w, True, W_E2M1_INT8, USE_ASM), BLOCK_N, BLOCK_KB, WARP_K, False),
                         _warp_slices(a_even, BLOCK_M, BLOCK_KB, WARP_K, True), acc, out_dtype=tl.int32)
            high = _warp_slices(_int8_nibbles(w, False, W_E2M1_INT8, USE_ASM), BLOCK_N, BLOCK_KB, WARP_K, False)
            if TWO_ACC:
                acc_odd = tl.dot(high, _warp_slices(a_odd, BLOCK_M, BLOCK_KB, WARP_K, True), acc_odd,
                                 out_dtype=tl.int32)
            else:
                acc = tl.dot(high, _warp_slices(a_odd, BLOCK_M, BLOCK_KB, WARP_K, True), acc, out_dtype=tl.int32)
        w_ptrs += BLOCK_KB
        a_ptrs += BLOCK_KB
    # In the int8 path's units: E2M1 weights' sums are multiples of 2^-7 (E2M1 times 2^-6, integer activation
    # bytes; 2^-14 against packed activations, E2M1 times 2^-6 too), INT4 ones' of 2^-9, which the int8 path counts
    # 16 times (nibbles at the top of their bytes)
    E4M3_UNIT: tl.constexpr = 8192.0 if A_E4M3_W_INT4 else 16384.0 if A_PACKED and A_E4M3 else 128.0
    if W_E2M1 or A_E4M3:  # whole numbers in those units (wgmma's reduced precision drops low bits only)
        units = (acc * E4M3_UNIT).to(tl.int32)
        if SLICED:
            units = _diagonal_sum(units, WARP_K, BLOCK_N, BLOCK_M)
        total = tl.trans(units)
    else:
        if TWO_ACC:
            acc += acc_odd
        if WARP_K > 1:
            acc = tl.reduce(acc, 0, _sum_combine)
        total = tl.trans(acc)
    if SPLIT_K > 1:
        partial_ptrs = partial_ptr + offs_m[:, None] * N + offs_n[None, :]
        mn_ok = m_ok[:, None] & n_ok[None, :]
        tl.atomic_add(partial_ptrs, total, mask=mn_ok, sem="relaxed")
        tl.debug_barrier()  # every thread's sums are in before the counter says so
        if tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == SPLIT_K - 1:
            total = tl.atomic_xchg(partial_ptrs, 0, mask=mn_ok, sem="relaxed")
            tl.atomic_xchg(count_ptr + tile, 0, sem="relaxed")
            _store_products(total, offs_m, offs_n, m_ok, n_ok, a_scale_ptr, w_scale_ptr, bias_ptr, residual_ptr,
                            out_ptr, stride_asm, stride_wsn, stride_om, stride_rm, unit, HAS_BIAS, HAS_RESIDUAL,
                            ROUND_BF16, ROUND_F16)
    else:
        _store_products(total, offs_m, offs_n, m_ok, n_ok, a_scale_ptr, w_scale_ptr, bias_ptr, residual_ptr,
                        out_ptr, stride_asm, stride_wsn, stride_om, stride_rm, unit, HAS_BIAS, HAS_RESIDUAL,
                        ROUND_BF16, ROUND_F16)


def in_kernel_tail(norm_tail: NormTail | None) -> NormTail | None:
    """The norm tail a kernel's last program runs itself: ``norm_tail``, unless it writes E4M3 planes
    (``fp8_codes``), which the activation kernel writes after the launch instead (``with_tail_outputs``)."""
    return None if norm_tail is None or norm_tail.fp8_codes else norm_tail


def norm_tail_flags(norm_tail: NormTail | None, n: int) -> dict:
    """The CUDA-core kernel's constexprs for this norm tail (None: without one) of N-wide output rows."""
    norm_tail = in_kernel_tail(norm_tail)
    if norm_tail is None:
        return dict(NORM_TAIL=False, TAIL_NORM=False, TAIL_INT4=False, TAIL_CLAMP=0, TAIL_DP4A_FOR=0, TAIL_BLOCK=1)
    return dict(NORM_TAIL=True, TAIL_NORM=norm_tail.weight is not None, TAIL_INT4=norm_tail.element == "int4",
                TAIL_CLAMP=clamp_kind(norm_tail.element, "float", norm_tail.clip_ratio),
                TAIL_DP4A_FOR=DP4A_FOR_IDS[norm_tail.dp4a_for], TAIL_BLOCK=triton.next_power_of_2(n))


def norm_tail_operands(norm_tail: NormTail | None, out: torch.Tensor, m: int, n: int) -> tuple[tuple, tuple]:
    """A kernel's tail arguments for its (M, N) output ``out``: (the norm weight, the codes as int32 words, their
    scales, a counter that is zero between launches), then (the codes' row stride in words, eps, the clip ratio,
    the element's largest value); without a tail (or with one the kernel leaves, ``in_kernel_tail``) ``out`` stands
    in for the pointers, never read."""
    norm_tail = in_kernel_tail(norm_tail)
    if norm_tail is None:
        return (out, out, out, out), (0, 0.0, 1.0, 1.0)
    codes = torch.empty((m, n), dtype=torch.int8, device=out.device)
    scales = torch.empty((m, 1), dtype=torch.float32, device=out.device)
    norm = out if norm_tail.weight is None else norm_tail.weight.contiguous()
    return ((norm, codes.view(torch.int32), scales, split_k_buffer(out.device, m, n)[1]),
            (n // 4, norm_tail.eps, norm_tail.clip_ratio, element_named(norm_tail.element).max_value))


def with_tail_outputs(out: torch.Tensor, norm_tail: NormTail | None, tail_tensors: tuple):
    """A kernel's result after its launch with ``norm_tail_operands``' tensors: ``out``, or with a tail (out, the
    tail's codes, their per-token scales): the kernel's dp4a bytes, or the E4M3 planes the activation kernel writes
    now of ``out``'s rows (flattened to (M, N))."""
    if norm_tail is None:
        return out
    if in_kernel_tail(norm_tail) is None:
        return (out, *norm_tail_triton(out.reshape(out.shape[0], -1), norm_tail))
    return (out, tail_tensors[1].view(torch.int8), tail_tensors[2])


def prune_decode_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Decode configs (BLOCK_N, BLOCK_KW, PREFETCH, optionally FOLD; this kernel's and the FPx row kernel's)
    whose BLOCK_M x BLOCK_N x BLOCK_KW / FOLD accumulators fit MAX_ACC_PER_THREAD registers a thread (at least the
    smallest); the prefetching and folding ones for one row only."""
    block_m = {**named_args, **kwargs}["BLOCK_M"]

    def acc_per_thread(c: triton.Config) -> float:
        return block_m * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_KW"] / (32 * c.num_warps * c.kwargs.get("FOLD", 1))

    configs = [c for c in configs if block_m == 1 or not (c.kwargs["PREFETCH"] or c.kwargs.get("FOLD", 1) > 1)]
    kept = [c for c in configs if acc_per_thread(c) <= MAX_ACC_PER_THREAD]
    return kept or [min(configs, key=acc_per_thread)]


def e2m1_sign_bytes_on() -> bool:
    """Whether the CUDA-core decode kernel decodes E2M1 weights by ``_e2m1_signed_bytes``, one table lookup and the
    signs from the packed bytes (``PTQ_E2M1_SIGN_BYTES``, 1 by default), instead of three lookups (0). For sm_90
    (Triton 3.6) the three-lookup K step runs 12.0-16.8 SASS instructions a dp4a, INT4's 2.5-8.6
    (``benchmarks/results/kernel_sass_w4a4_gemv_{e2m1,int4}_s66_sm90.md``), the one-lookup step 10-14 % fewer; on
    the H100 one row took 13.5 against 14.4 us at 4096 x 14336, 13.1 against 13.8 at 14336 x 4096, the same at
    4096 x 4096 and 6144 x 4096 (``kernel_bench_e2m1_sign_bytes_{0,1}_s67_h100.md``)."""
    return env_switch("PTQ_E2M1_SIGN_BYTES", True, {
        "1": "one lookup and the signs by prmt's sign-replicate mode, the default",
        "0": "three byte-table lookups a four E2M1 codes"})


def tc_two_accumulators_on() -> bool:
    """Whether the tensor-core decode kernel sums INT4 weights' odd nibbles in an accumulator of their own
    (``PTQ_TC_TWO_ACC=1``; 0, the default, adds both planes' dots into one). In sm_90 SASS (Triton 3.6) the 16 x 256
    tile on 2 warps then runs four chains of 8 dependent IMMA a step instead of two of 16, at 225 instructions a step
    against 229 and 87 registers against 96; untimed. Not in ``TC_TUNING_KEY``: the disk cache hands one setting's
    picks to the other."""
    return env_switch("PTQ_TC_TWO_ACC", False, {
        "0": "one accumulator for both planes' int8 dots, the default",
        "1": "the odd plane's int8 dots summed apart (untimed)"})


def tc_warp_split_on() -> bool:
    """Whether the tensor-core decode kernel splits a step's K over the warps of a tile narrower than 16 weight rows a
    warp (``PTQ_TC_WARP_SPLIT=1``, the default, ``tc_warp_slices``; 0 leaves Triton to lay the tile over the warps,
    which for 16 x 256 on 2 warps has both run the whole step, 32 IMMA each in sm_90 SASS, and keeps the FP8 dots to
    whole warpgroup tiles). On the H100 at 16 rows the fastest tile of each Llama-3-8B shape ran 1-9 % faster with it,
    INT4 and E2M1 (``tc_warp_split_{int4,e2m1}_s70_h100.md``). Not in ``TC_TUNING_KEY``: the disk cache hands one
    setting's picks to the other."""
    return env_switch("PTQ_TC_WARP_SPLIT", True, {
        "1": "the warps of a narrow tile each their slice of a step's K, the default",
        "0": "each warp of a tile its share of the weight rows"})


def tc_warp_slices(args: dict) -> int:
    """WARP_K of a tensor-core kernel launch, from its arguments and config as ``triton.heuristics`` sees them, where
    ``tc_warp_split_on`` and the tile's BLOCK_N weight rows are fewer than 16 a warp: on the int8 dots (neither W_E2M1
    nor A_E4M3) the launch's warps, where each warp's slice of a step's BLOCK_KB bytes is at least 32 (an int8 mma's
    K); on the one-dot FP8 form (A_E4M3 without FP8_STEP_SUMS, E4M3 planes given) on whole warpgroups, the slices
    that stack BLOCK_N rows into 16 a warp, where each slice is at least 16 bytes (a wgmma's K of 32 codes). 1
    otherwise (the FP8 step-sums forms and packed codes keep whole warpgroup tiles)."""
    warps = args.get("num_warps", TRITON_DEFAULT_WARPS)
    block_n, block_kb = args["BLOCK_N"], args["BLOCK_KB"]
    if not tc_warp_split_on() or block_n >= 16 * warps:
        return 1
    if not (args["W_E2M1"] or args["A_E4M3"]):
        return warps if block_kb % (32 * warps) == 0 else 1
    slices = 16 * warps // block_n
    one_dot = args["A_E4M3"] and not args["FP8_STEP_SUMS"] and not args.get("A_PACKED", False)
    return slices if one_dot and warps % 4 == 0 and block_kb % (16 * slices) == 0 else 1


# The tensor-core kernel's TMA: its int8 dots' operands by 16-byte copies, or by the tensor memory accelerator
# through descriptors each program makes or the launch builds on the host
TMA_COPIES, TMA_DEVICE, TMA_HOST = 0, 1, 2


def tc_tma_mode() -> int:
    """How the tensor-core kernel's int8 dots load their operands (``tc_tma_loads``): PTQ_TC_TMA=0, the default, by
    16-byte copies (TMA_COPIES); 1 by the tensor memory accelerator through descriptors each program makes
    (TMA_DEVICE); host through descriptors the launch builds (TMA_HOST), passed as kernel parameters. In sm_90 SASS
    (Triton 3.6) the copies cost the 16 x 512 INT4 tile on 2 warps 24 LDGSTS a warp's step and the 48 IADD3 that
    advance their addresses, of 284 instructions; untimed. Not in ``TC_TUNING_KEY``: the disk cache hands one
    setting's picks to the others."""
    return {"0": TMA_COPIES, "1": TMA_DEVICE, "host": TMA_HOST}[env_choice("PTQ_TC_TMA", "0", {
        "0": "16-byte copies, each thread's addresses advanced every step, the default",
        "1": "the int8 dots' operands by the tensor memory accelerator, each program making its descriptors (untimed)",
        "host": "the same through descriptors built on the host (untimed)"})]


TMA_ALIGNMENT = 16  # bytes: a tensor descriptor's base address and strides
# The tensor descriptors' global memory: a ring of buffers a device, each launch the next (``_tma_scratch``).
TMA_SCRATCH_SLOTS = 4
_tma_slots: dict[int, list[torch.Tensor | None]] = {}
_tma_launches = itertools.count()


def tc_tma_form(flags: dict) -> int:
    """The TMA mode a tensor-core launch of these form flags takes wherever its operands are aligned:
    ``tc_tma_mode`` for the int8 dots on dp4a bytes, TMA_COPIES for FP8 operands and packed activation codes."""
    fp8_or_packed = flags["W_E2M1"] or flags.get("A_E4M3", False) or flags.get("A_PACKED", False)
    return TMA_COPIES if fp8_or_packed else tc_tma_mode()


def tc_tma_loads(flags: dict, a_bytes: torch.Tensor, w_bytes: torch.Tensor, kb: int) -> int:
    """The TMA mode of a tensor-core decode launch of these form flags on the activation planes ``a_bytes`` (a row's
    two planes of ``kb`` bytes) and the weight bytes ``w_bytes``: its form's (``tc_tma_form``) where both operands'
    base addresses and row strides, and kb, are multiples of TMA_ALIGNMENT bytes, else TMA_COPIES. Under TMA_DEVICE
    the launch also readies Triton's allocator (``_tma_scratch``) on a GPU. The prefill launch keeps its copies."""
    sizes = (a_bytes.data_ptr(), w_bytes.data_ptr(), a_bytes.stride(0), w_bytes.stride(0), kb)
    tma = tc_tma_form(flags) if all(size % TMA_ALIGNMENT == 0 for size in sizes) else TMA_COPIES
    if tma == TMA_DEVICE and not INTERPRET:
        triton.set_allocator(_tma_scratch)
    return tma


def tc_host_descriptor(args: dict, operand: str) -> TensorDescriptor | None:
    """The TMA_HOST launch's descriptor of ``operand`` ('w': the (N, KB) weight bytes in boxes of BLOCK_N x
    BLOCK_KB; 'a': the activation planes as an (M, 2, KB) tensor in boxes of one plane's BLOCK_M x BLOCK_KB, zeros
    past KB and M) from the launch's arguments and config as ``triton.heuristics`` sees them (the prefill launch's
    leave TMA unset); None otherwise."""
    if args.get("TMA", TMA_COPIES) != TMA_HOST:
        return None
    if operand == "w":
        return TensorDescriptor(args["w_ptr"], [args["N"], args["KB"]], [args["stride_wn"], 1],
                                [args["BLOCK_N"], args["BLOCK_KB"]])
    return TensorDescriptor(args["a_ptr"], [args["M"], 2, args["KB"]], [args["stride_am"], args["KB"], 1],
                            [args["BLOCK_M"], 1, args["BLOCK_KB"]])


def _tma_scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    """Global memory for the tensor descriptors a kernel makes (``triton.set_allocator``), the next buffer of the
    current device's ring, kept between launches: a programmatic dependent launch makes its descriptors while the
    kernel before it may still read its own (``quant_kernels.pdl``), so launches in a row must not share one, as
    blocks freed back to torch's allocator would be."""
    device = torch.cuda.current_device()
    slots = _tma_slots.setdefault(device, [None] * TMA_SCRATCH_SLOTS)
    turn = next(_tma_launches) % TMA_SCRATCH_SLOTS
    if slots[turn] is None or slots[turn].numel() < size:
        slots[turn] = torch.empty(max(size, alignment), dtype=torch.int8, device=device)
    return slots[turn][:size]


def tc_decode_flags(w_element: str, a_e4m3: bool, a_nibbles: bool) -> dict:
    """The tensor-core decode launch's form flags for ``w_element`` weights against E4M3 activation planes
    (``a_e4m3``), packed activation codes (``a_nibbles``) or dp4a bytes: E4M3 planes, and E2M1's packed codes, take
    the one-dot FP8 form (A_E4M3, no FP8_STEP_SUMS); E2M1 weights on dp4a bytes the FP8 step-sums form (W_E2M1)."""
    fp8_operands = a_e4m3 or (a_nibbles and w_element == "e2m1")
    return dict(W_E2M1=w_element == "e2m1" and not fp8_operands, A_E4M3=fp8_operands, FP8_STEP_SUMS=not fp8_operands,
                A_E4M3_W_INT4=a_e4m3 and w_element == "int4", A_PACKED=a_nibbles)


def tc_config_takes(args: dict) -> bool:
    """Whether a tensor-core decode config (its fields, with num_warps, beside the launch's flags) multiplies as it
    should: it ``tc_config_fits``, or its FP8 dots' K slices stack it into a warpgroup's rows (``tc_warp_slices``)."""
    return (tc_config_fits(args["BLOCK_N"], args.get("num_warps", TRITON_DEFAULT_WARPS),
                           args["W_E2M1"] or args["A_E4M3"]) or tc_warp_slices(args) > 1)


def pinned_configs_on() -> bool:
    """Whether ``PINNED_GEMV_CONFIGS``, ``PINNED_TC_CONFIGS`` and ``fpx_gemm.PINNED_ROW_CONFIGS`` replace tuning
    (``PTQ_PINNED_CONFIGS``, 1 by default)."""
    return env_switch("PTQ_PINNED_CONFIGS", True, {"1": "the pinned decode configs, the default",
                                                   "0": "tune every shape"})


def keep_pinned(kept: list[triton.Config], pins: dict, key_names: tuple[str, ...], args: dict, fields,
                pointer: str = "a_ptr") -> list:
    """The one config of ``kept`` that ``pins`` (device name -> key values -> ``fields(config)``) holds for this
    CUDA device (of the tensor ``args[pointer]``) and key, when pins are on and it is there; otherwise ``kept``."""
    device = args[pointer].device
    if not pinned_configs_on() or device.type != "cuda":
        return kept
    key = tuple(args[name] for name in key_names)
    pinned = pins.get(torch.cuda.get_device_name(device), {}).get(key)
    if pinned is None:
        return kept
    return [c for c in kept if fields(c) == pinned] or kept


def prune_gemv_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """``prune_decode_configs``, or the one config ``PINNED_GEMV_CONFIGS`` holds for this device and key when it is
    among them."""
    def fields(c: triton.Config) -> tuple:
        return (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_KW"], c.kwargs["PREFETCH"], c.kwargs["FOLD"],
                c.kwargs["LOOP_STAGES"], c.num_warps, c.num_stages)

    return keep_pinned(prune_decode_configs(configs, named_args, **kwargs), PINNED_GEMV_CONFIGS, GEMV_TUNING_KEY,
                       {**named_args, **kwargs}, fields)


_gemv_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=prefetch, FOLD=fold, LOOP_STAGES=1), num_warps=w,
                           num_stages=s)
             for prefetch, fold, configs in ((False, 1, GEMV_CONFIGS), (True, 1, GEMV_PREFETCH_CONFIGS),
                                             (False, FOLD, GEMV_FOLDED_CONFIGS))
             for bn, bkw, w, s in configs]
    + [triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=False, FOLD=1, LOOP_STAGES=stages), num_warps=w,
                     num_stages=stages) for bn, bkw, w, stages in GEMV_PIPELINED_CONFIGS],
    key=list(GEMV_TUNING_KEY),
    prune_configs_by=dict(early_config_prune=prune_gemv_configs),
)(_w4a4_gemv_kernel)


def tc_config_fits(block_n: int, num_warps: int, w_e2m1: bool) -> bool:
    """Whether a tensor-core decode config multiplies on wgmma: FP8 dots (E2M1 weights) need whole warpgroups
    (warps a multiple of 4) and 16 weight rows a warp (a 64-row warpgroup tile), else Triton 3.6 and 3.9 widen both
    operands to fp16 for mma.sync (1,840 SASS instructions at 32 x 256 on 4 warps against 728 at 64 x 128,
    ``benchmarks/kernel_sass.py``; on 2 warps too); int8 dots (INT4 weights) run on IMMA there, at about the speed of
    the wider tiles (``kernel_sass_w4a4_tc_int4_narrow.md``: 496-648 SASS instructions on 2 warps)."""
    return not w_e2m1 or num_warps % 4 == 0 and block_n >= 16 * num_warps


def prune_tc_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The tensor-core decode configs the launch takes (``tc_config_takes``), or the one ``PINNED_TC_CONFIGS`` holds
    for this device and key when it is among them."""
    args = {**named_args, **kwargs}
    kept = [c for c in configs if tc_config_takes({**args, **c.kwargs, "num_warps": c.num_warps})]
    return keep_pinned(kept, PINNED_TC_CONFIGS, TC_TUNING_KEY, args, lambda c: (
        c.kwargs["BLOCK_N"], c.kwargs["BLOCK_KB"], c.kwargs["SPLIT_K"], c.num_warps, c.num_stages))


# EVEN from the step and the sizes, WARP_K from the config, TMA_HOST's descriptors from both, for the interpreter's
# fixed config and every autotuned one alike.
_tc_kernel_even = triton.heuristics(
    dict(EVEN=lambda args: args["KB"] % (args["BLOCK_KB"] * args["SPLIT_K"]) == 0
         and args["N"] % args["BLOCK_N"] == 0, WARP_K=tc_warp_slices,
         w_desc=lambda args: tc_host_descriptor(args, "w"), a_desc=lambda args: tc_host_descriptor(args, "a")))(
    _w4a4_tc_kernel)
_tc_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_KB=bkb, SPLIT_K=split), num_warps=w, num_stages=s)
             for bn, bkb, split, w, s in TC_CONFIGS],
    key=list(TC_TUNING_KEY),
    prune_configs_by=dict(early_config_prune=prune_tc_configs),
)(_tc_kernel_even)
def prune_prefill_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The prefill tiles for this launch: TC_PREFILL_ONE_DOT_CONFIGS only for the one-dot FP8 form (E4M3 planes,
    sums in wgmma)."""
    args = {**named_args, **kwargs}
    if args["A_E4M3"] and not args["FP8_STEP_SUMS"]:
        return configs
    one_dot = {(bn, bm, bkb, w, s) for bn, bm, bkb, w, s, _ in TC_PREFILL_ONE_DOT_CONFIGS}
    return [c for c in configs if (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"], c.kwargs["BLOCK_KB"], c.num_warps,
                                   c.num_stages) not in one_dot]


_tc_prefill_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_M=bm, BLOCK_KB=bkb, SPLIT_K=1, GROUP_M=g), num_warps=w,
                           num_stages=s) for bn, bm, bkb, w, s, g in TC_PREFILL_CONFIGS + TC_PREFILL_ONE_DOT_CONFIGS],
    key=list(TC_PREFILL_TUNING_KEY),
    prune_configs_by=dict(early_config_prune=prune_prefill_configs),
)(_tc_kernel_even)


def tensor_core_weights() -> tuple[str, ...]:
    """The weight elements that take the tensor-core decode kernel: INT4, and E2M1 (FP8 dots) unless
    ``PTQ_TC_E2M1=0``, which keeps E2M1 weights on the CUDA-core decode kernel (up to GEMV_MAX_M rows) and
    ``w4a4_gemm`` above, the path to compare against. Read at each product and when a fused decode layer plans
    its rows: set it before loading the model."""
    on = env_switch("PTQ_TC_E2M1", True, {"0": f"E2M1 weights on the CUDA-core decode kernel, up to {GEMV_MAX_M} rows",
                                          "1": f"on the tensor-core one, up to {TC_MAX_M}"})
    return ("int4", "e2m1") if on else ("int4",)


def takes_tensor_cores(m: int, w_element: str | None) -> bool:
    """Whether ``w4a4_gemv_triton(..., tensor_cores=None)`` runs these rows on the tensor-core kernel: weights of
    ``tensor_core_weights()`` and TC_MIN_M..TC_MAX_M rows on a GPU; under the interpreter only the rows the
    CUDA-core kernel does not take (above GEMV_MAX_M)."""
    low = GEMV_MAX_M + 1 if INTERPRET else TC_MIN_M
    return w_element in tensor_core_weights() and low <= m <= TC_MAX_M


def takes_gated(m: int, w_element: str | None) -> bool:
    """Whether ``w4a4_gemv_triton(..., gated=True)`` takes these rows: the CUDA-core kernel's (1..GEMV_MAX_M, not
    ``takes_tensor_cores``)."""
    return 1 <= m <= GEMV_MAX_M and not takes_tensor_cores(m, w_element)


def max_rows(w_element: str | None) -> int:
    """The most activation rows the decode kernels take: TC_MAX_M with weights of ``tensor_core_weights()``, else
    GEMV_MAX_M."""
    return TC_MAX_M if w_element in tensor_core_weights() else GEMV_MAX_M


def gemv_fits(m: int, k: int, a_group: int, w_group: int, w_element: str | None = None) -> bool:
    """Whether the decode kernels take the product: 1..``max_rows(w_element)`` rows, per-row scales, K a multiple
    of 8."""
    return 1 <= m <= max_rows(w_element) and a_group == 0 and w_group == 0 and k % 8 == 0


def check_gemv_fits(m: int, k: int, a_group: int, w_group: int, w_element: str | None = None) -> None:
    """Raise ValueError unless ``gemv_fits``."""
    if not gemv_fits(m, k, a_group, w_group, w_element):
        rows = max_rows(w_element)
        named = f" ({w_element.upper()} weights)" if rows == TC_MAX_M else ""
        raise ValueError(f"the decode kernels take 1 to {rows} rows{named}, per-row scales (groups 0) and K a "
                         f"multiple of 8, got M={m}, K={k}, groups {a_group} and {w_group}")


def check_tensor_cores_take(m: int, k: int, a_element: str, w_element: str) -> None:
    """Raise ValueError unless the tensor-core decode kernel takes the product: 1..TC_MAX_M rows, K a multiple of
    8, INT4 weights (int8 tensor cores) or E2M1 weights (FP8 E4M3 ones) with INT4 or E2M1 activations, whose
    levels E4M3 holds exactly (INT8 levels it does not: ``check_dp4a_args`` refuses that pair before this)."""
    if w_element not in ("int4", "e2m1"):
        raise ValueError(f"the tensor-core decode kernel takes INT4 weights, or E2M1 weights with INT4 or E2M1 "
                         f"activations, got {w_element} weights with {a_element} activations")
    if not 1 <= m <= TC_MAX_M or k % 8:
        raise ValueError(f"the tensor-core decode kernel takes 1 to {TC_MAX_M} rows and K a multiple of 8, got "
                         f"M={m}, K={k}")


def _words(packed: torch.Tensor, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """(rows, bytes) packed bytes as (rows, bytes // size) words of ``dtype`` (little-endian: for 4-bit codes in
    int32, code 8i + j is nibble j of word i); the bytes per row must be a multiple of the word size."""
    packed = packed.contiguous()
    size = torch.empty(0, dtype=dtype).element_size()
    if packed.storage_offset() % size:  # a view that starts mid-word: copy it to a word-aligned tensor
        packed = packed.clone()
    return packed.view(dtype)


_split_k_buffers: dict[tuple[torch.device, int], torch.Tensor] = {}


def split_k_buffer(device: torch.device, m: int, n: int, min_block_n: int = TC_MIN_BLOCK_N
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed int32 partial sums (m * n) and tile counters (one per ``min_block_n`` output columns) for the
    tensor-core kernel's split-K (the first counter also the CUDA-core kernel's norm tail's, the counters the FPx
    row kernel's split-K's), one buffer per device and stream, grown on demand: each product leaves it zeroed for
    the next, and products on one stream run one after another (two streams would race on a shared one)."""
    tiles = triton.cdiv(n, min_block_n)
    key = (device, torch.cuda.current_stream(device).stream_id if device.type == "cuda" else 0)
    buffer = _split_k_buffers.get(key)
    if buffer is None or buffer.numel() < m * n + tiles:
        buffer = _split_k_buffers[key] = torch.zeros(max(m * n + tiles, 1 << 16), dtype=torch.int32, device=device)
    return buffer, buffer[m * n:]


def _launch_operands(a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                     a_element: str, w_element: str, bias: torch.Tensor | None, residual: torch.Tensor | None,
                     out: torch.Tensor, out_dtype: torch.dtype, pdl_kernel: str | None):
    """What the decode kernels and the prefill launch share: the operands as words (INT8 weights as 64-bit words of
    8 codes, as the 4-bit elements' 32-bit ones), fp32 scales, (bias, residual, out) pointers, the trailing strides
    and unit, and the flags; ``pdl_kernel`` names the launch for ``pdl_flags`` (None: a plain launch)."""
    a_words, w_words = _words(a_bytes), _words(w_packed, torch.int64 if w_element == "int8" else torch.int32)
    a_scale, w_scale = a_scale.float().contiguous(), w_scale.float().contiguous()
    # Activation bytes count units of 1 (INT4, INT8), 1/2 (E2M1; packed E2M1 codes too: the kernel counts their
    # sums so) or 1/16 (packed INT4 codes, each nibble moved to its byte's top); weight bytes 1/16 (INT4 nibbles at a
    # byte's top), 1/2 (E2M1) or 1 (INT8).
    packed_int4 = a_bytes.dtype == torch.uint8 and a_element == "int4"
    unit = ((0.5 if a_element == "e2m1" else 1.0) / (16 if packed_int4 else 1)
            * {"int4": 1 / 16, "e2m1": 0.5, "int8": 1.0}[w_element])
    if residual is not None and residual.stride(1) != 1:
        residual = residual.contiguous()
    # The kernels share their arguments but for the operands' units: words (CUDA cores) or bytes (tensor cores).
    # An absent bias or residual is never read: ``out`` stands in for its pointer.
    outputs = (bias if bias is not None else out, residual if residual is not None else out, out)
    trailing = (a_scale.stride(0), w_scale.stride(0), out.stride(0), 0 if residual is None else residual.stride(0),
                unit)
    flags = dict(HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, USE_ASM=not INTERPRET,
                 ROUND_BF16=out_dtype == torch.bfloat16, ROUND_F16=out_dtype == torch.float16,
                 **(pdl_flags(a_bytes.device, pdl_kernel) if pdl_kernel else {"USE_GDC": False}))
    return a_words, w_words, a_scale, w_scale, outputs, trailing, flags


def w4a4_tc_prefill_triton(
    a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str = "int4", bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
    residual: torch.Tensor | None = None, out: torch.Tensor | None = None, config: triton.Config | None = None,
    fp8_step_sums: bool = True,
) -> torch.Tensor:
    """``reference.w4a4_gemv_ref`` for packed INT4 weights and any number of rows of their dp4a activation bytes
    (INT4, E2M1 or INT8 activations; ``quantize_activations(..., dp4a_for="int4")``), per-row scales: the
    tensor-core kernel over tiles of BLOCK_M rows (a third grid axis), K unsplit, exact int32 sums, the weight
    read packed. ``w_element="e2m1"``: packed E2M1 weights, as int8 operands of twice their values, with INT4 or
    E2M1 activation bytes in INT4 weights' order (``dp4a_for="int4"``, not E2M1 weights' order of the decode
    kernels); those bytes given as float8_e4m3fn values take the FP8 tensor cores instead, the weight's nibbles as
    E4M3 operands, each step's sums joining an fp32 accumulator (exact) or, ``fp8_step_sums=False``, accumulating in
    wgmma (one dot a step, its wgmmas left in flight); INT4 weights take E4M3 planes so too (their levels times
    2^-9 as E4M3 operands). ``config`` (BLOCK_N, BLOCK_M, BLOCK_KB, SPLIT_K=1 and GROUP_M, warps, stages) replaces the
    autotuner's pick of TC_PREFILL_CONFIGS (or the interpreter's fixed tile)."""
    if w_element not in ("int4", "e2m1") or (w_element == "e2m1" and a_element not in ("int4", "e2m1")):
        raise ValueError(f"the int8 prefill kernel takes INT4 weights, or E2M1 weights with INT4 or E2M1 activations, "
                         f"got {w_element} weights with {a_element} activations")
    a_e4m3 = a_bytes.dtype == torch.float8_e4m3fn
    if a_e4m3:
        check_e4m3_planes(a_element)
    check_dp4a_args(a_bytes.view(torch.int8), a_scale, w_packed, w_scale, a_element, "int4", bias, out_dtype, residual)
    m, n, k = a_bytes.shape[0], w_packed.shape[0], a_bytes.shape[1]
    if k % 8:
        raise ValueError(f"the tensor-core kernel takes K a multiple of 8, got K={k}")
    if config is not None and (set(config.kwargs) != {"BLOCK_N", "BLOCK_M", "BLOCK_KB", "SPLIT_K", "GROUP_M"}
                               or config.kwargs["SPLIT_K"] != 1):
        raise ValueError(f"a prefill tile sets BLOCK_N, BLOCK_M, BLOCK_KB, SPLIT_K=1 and GROUP_M, got {config.kwargs}")
    check_out(out, m, n, out_dtype)
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a_bytes.device)
    a_words, w_words, a_scale, w_scale, outputs, trailing, flags = _launch_operands(
        a_bytes, a_scale, w_packed, w_scale, a_element, w_element, bias, residual, out, out_dtype, None)
    a_b, w_b = a_words.view(a_bytes.dtype), w_words.view(torch.uint8)
    # Unsplit: the split-K buffer and counters are never read, ``out`` stands in for their pointers.
    args = (a_b, a_scale, w_b, w_scale, *outputs, out, out, m, n, k // 2, triton.next_power_of_2(m), a_b.stride(0),
            w_b.stride(0), *trailing)
    flags.update(W_E2M1=False, W_E2M1_INT8=w_element == "e2m1" and not a_e4m3, A_E4M3=a_e4m3,
                 FP8_STEP_SUMS=fp8_step_sums, A_E4M3_W_INT4=a_e4m3 and w_element == "int4")

    def grid(meta: dict) -> tuple[int, int, int]:
        return triton.cdiv(n, meta["BLOCK_N"]), 1, triton.cdiv(m, meta["BLOCK_M"])

    if config is not None or INTERPRET:
        fixed, launch = (config.kwargs, dict(num_warps=config.num_warps, num_stages=config.num_stages)) \
            if config is not None else (INTERPRET_TC_PREFILL_CONFIG, {})
        _tc_kernel_even[grid(fixed)](*args, **flags, **fixed, **launch)
    else:
        _tc_prefill_autotuned[grid](*args, **flags)
    return out


def w4a4_gemv_triton(
    a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
    out: torch.Tensor | None = None, config: triton.Config | None = None, residual: torch.Tensor | None = None,
    tensor_cores: bool | None = None, gated: bool = False, norm_tail: NormTail | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reference.w4a4_matmul_ref`` for 1..GEMV_MAX_M rows (TC_MAX_M on the tensor cores) with per-row scales,
    the activation codes given as their dp4a bytes for ``w_element`` weights (``reference.dp4a_bytes``, or
    ``quantize_activations`` with ``dp4a_for``); writes into ``out`` when given. ``residual`` (M, N): added to
    the product rounded to ``out_dtype``, as ``reference.w4a4_gemv_ref`` adds it. INT8 activation levels
    (``a_element="int8"``) go with packed INT4 weights (W4A8) or INT8 weights given as (N, K) two's complement
    bytes (W8A8). ``tensor_cores``: whether the product runs on ``_w4a4_tc_kernel`` (None: ``takes_tensor_cores``),
    which takes INT4 weights, and E2M1 weights with INT4 or E2M1 activations; the CUDA-core kernel takes up to
    GEMV_MAX_M rows, the tensor-core one up to TC_MAX_M. ``config`` replaces the
    autotuner's pick, or the interpreter's fixed one (``benchmarks/gemv_ncu.py`` profiles configs one at a time):
    BLOCK_N, BLOCK_KW, PREFETCH, FOLD, warps and stages for the CUDA-core kernel; BLOCK_N, BLOCK_KB, SPLIT_K,
    warps and stages for the tensor-core one (with ``tensor_cores=True``). ``gated``: the weight rows are an MLP's
    gate rows then its up rows, and the (M, N / 2) output is silu(gate) * up (``reference.w4a4_gemv_ref``), on the
    CUDA-core kernel only (``takes_gated``). ``norm_tail``: returns (the product, the next RMSNorm's dp4a bytes
    and per-token scales of it), ``reference.w4a4_gemv_ref``'s; the CUDA-core kernel's last program computes them
    (NORM_TAIL), the tensor-core one leaves them to the activation kernel. E4M3 activation planes in INT4 weights'
    order (``quantize_activations(..., dp4a_for="int4", fp8_codes=True)``) take the tensor-core kernel's one-dot FP8
    form, INT4 or E2M1 weights as E4M3 operands, the sums accumulating in wgmma (``w4a4_tc_prefill_triton``'s).
    Packed activation codes (uint8, two a byte: ``quantize_activations`` without ``dp4a_for``), INT4 against INT4
    weights or E2M1 against E2M1 ones (on the one-dot FP8 form), take the tensor-core kernel's packed form
    (A_PACKED: half the activation bytes; no default path writes them: at 16 rows on the H100 INT4's ran 1-4 %
    slower than on dp4a bytes, E2M1's level with the planes, ``tc_packed_ab_{int4,e2m1}_s68_h100.md``)."""
    a_e4m3, a_nibbles = a_bytes.dtype == torch.float8_e4m3fn, a_bytes.dtype == torch.uint8
    if a_e4m3:
        check_e4m3_planes(a_element)
    stand_in = check_packed_activations(a_bytes, a_element, w_element) if a_nibbles else a_bytes
    if (a_e4m3 or a_nibbles) and (tensor_cores is False or gated):
        raise ValueError(f"{'E4M3 activation planes' if a_e4m3 else 'packed activation codes'} take the tensor-core "
                         "decode kernel: leave tensor_cores unset (or True) and gated False, or pass the dp4a bytes "
                         "of quantize_activations(..., dp4a_for=w_element)")
    check_dp4a_args(a_bytes.view(torch.int8) if a_e4m3 else stand_in, a_scale, w_packed, w_scale, a_element,
                    "int4" if a_e4m3 else w_element, bias, out_dtype, residual, gated)
    m, n, k = a_bytes.shape[0], w_packed.shape[0], stand_in.shape[1]
    if norm_tail is not None:
        check_norm_tail(norm_tail, m, n, out_dtype, gated)
    tc = a_e4m3 or a_nibbles or (takes_tensor_cores(m, w_element) if tensor_cores is None and config is None
                                 else bool(tensor_cores))
    if gated and tc:
        raise ValueError(f"a gated product (silu(gate) * up in the epilogue) runs on the CUDA-core decode kernel, "
                         f"up to {GEMV_MAX_M} rows and not on the tensor cores: got M={m} ({w_element} weights), "
                         f"tensor_cores={tensor_cores}; quantize silu(gate) * up of the plain product instead")
    if tc:
        check_tensor_cores_take(m, k, a_element, w_element)
    else:
        check_gemv_fits(m, k, 0, 0, w_element)
    if not tc and m > GEMV_MAX_M:
        raise ValueError(f"the CUDA-core decode kernel takes 1 to {GEMV_MAX_M} rows, got M={m}: leave "
                         f"tensor_cores unset (or True) for INT4 or E2M1 weights")
    if tc and config is not None and (set(config.kwargs) != {"BLOCK_N", "BLOCK_KB", "SPLIT_K"}
                                      or config.kwargs["BLOCK_N"] < TC_MIN_BLOCK_N):
        raise ValueError(f"a tensor-core decode config sets BLOCK_N (at least {TC_MIN_BLOCK_N}), BLOCK_KB and "
                         f"SPLIT_K, got {config.kwargs}")
    width = n // 2 if gated else n
    check_out(out, m, width, out_dtype)
    if out is None:
        out = torch.empty((m, width), dtype=out_dtype, device=a_bytes.device)
    a_words, w_words, a_scale, w_scale, outputs, trailing, flags = _launch_operands(
        a_bytes, a_scale, w_packed, w_scale, a_element, w_element, bias, residual, out, out_dtype, "gemv")
    block_m = triton.next_power_of_2(m)
    if tc:
        a_b, w_b = a_words.view(a_bytes.dtype), w_words.view(torch.uint8)  # the same bytes, strides in bytes
        tc_args = (a_b, a_scale, w_b, w_scale, *outputs, *split_k_buffer(a_b.device, m, n), m, n, k // 2,
                   block_m, a_b.stride(0), w_b.stride(0), *trailing)
        flags.update(BLOCK_M=max(16, block_m), **tc_decode_flags(w_element, a_e4m3, a_nibbles),
                     TWO_ACC=w_element == "int4" and not a_e4m3 and tc_two_accumulators_on())
        flags.update(TMA=tc_tma_loads(flags, a_b, w_b, k // 2))
        if config is not None or INTERPRET:
            fixed, launch = (config.kwargs, dict(num_warps=config.num_warps, num_stages=config.num_stages)) \
                if config is not None else (INTERPRET_TC_CONFIG, {})
            _tc_kernel_even[(triton.cdiv(n, fixed["BLOCK_N"]), fixed["SPLIT_K"])](*tc_args, **flags, **fixed, **launch)
        else:
            _tc_autotuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])](*tc_args, **flags)
        if norm_tail is None:
            return out
        return (out, *norm_tail_triton(out, norm_tail))
    tail_tensors, tail_args = norm_tail_operands(norm_tail, out, m, n)
    args = (a_words, a_scale, w_words, w_scale, *outputs, *tail_tensors, m, n, k // 8, block_m, a_words.stride(0),
            w_words.stride(0), *trailing, *tail_args)
    flags.update(W_INT4=w_element == "int4", W_INT8=w_element == "int8", BLOCK_M=block_m, GATED=gated,
                 E2M1_SIGN_BYTES=w_element == "e2m1" and e2m1_sign_bytes_on(), **norm_tail_flags(norm_tail, n))

    def programs(block_n: int) -> int:  # a gated program takes BLOCK_N / 2 output columns: as many rows of each
        return triton.cdiv(width, block_n // 2) if gated else triton.cdiv(n, block_n)

    if config is not None:
        fixed = {"FOLD": 1, "LOOP_STAGES": 1, **config.kwargs}
        if fixed["FOLD"] > 1 and block_m > 1:
            raise ValueError(f"a folded accumulator (FOLD={fixed['FOLD']}) is for one row, got M={m}")
        _w4a4_gemv_kernel[(programs(fixed["BLOCK_N"]),)](
            *args, **flags, **fixed, num_warps=config.num_warps, num_stages=config.num_stages)
    elif INTERPRET:
        _w4a4_gemv_kernel[(programs(INTERPRET_CONFIG["BLOCK_N"]),)](*args, **flags, **INTERPRET_CONFIG)
    else:
        _gemv_autotuned[lambda meta: (programs(meta["BLOCK_N"]),)](*args, **flags)
    return with_tail_outputs(out, norm_tail, tail_tensors)
