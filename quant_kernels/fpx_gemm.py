"""Triton kernel: FPx weight-only GEMM (FP6-LLM style) on bit-plane packed weights.

out (M, N) = x @ (decode(w) * w_scale[:, None]).T (+ bias), with x in float16, bfloat16 or
float32 and the weight as 4-, 5- or 6-bit FP codes (``quant_layers.packing.pack_planes``):
a 4-bit plane with the low four bits of every code, plus a 1-bit (FP5) or 2-bit (FP6)
plane with the rest. Every load is of whole bytes, rows of the planes are contiguous
along K. INT4 weights per channel (W4A16) run too, as 4-bit codes whose placement is their level
(``INT4_LEVELS``: a nibble placed as a bfloat16 128 + (u ^ 8), less 136), and INT4 or E2M1 weights with scales in
groups along K (GPTQ's, NVFP4, MXFP4): the row kernel scales each word's sums by its group's scale, the tensor-core
kernel each word's placed codes before its dot (``_word_units``).

Per (BLOCK_N, BLOCK_K) weight tile the kernel loads the planes, spreads the bit fields
to one code per element with shifts and masks, rebuilds the codes and decodes them
arithmetically in fp32 (significand times a power of two; subnormal when the exponent
field is 0). Every value of these formats is exact in float16 and bfloat16, so the
tile is cast to x's dtype and fed to ``tl.dot`` with fp32 accumulation; the per-channel
scale multiplies the accumulator once, in the epilogue. Under the interpreter and for
float32 activations the dot is an IEEE fp32 one (the interpreter's bf16 dot is wrong,
and TF32 would not match the twin); products of half-precision x and these weights are
exact in fp32 either way. With K a multiple of 8 the autotuner may pick the PAIRED path instead:
the weight streams as 32-bit words of eight codes, two codes at a time are placed into
float32s with shifts and masks as in the row kernel below (no spreading, no arithmetic
decode), and each of a word's eight code positions takes its own dot against the
activation columns it multiplies. For sm_90 that halves the instructions of a 16 x 64 x 256
FP6 tile (2,960 to 1,480 in SASS, Triton 3.9) and its registers (255 to 139). At decode
batches the PAIRED tiles may swap operands (SWAP_AB: the weight is wgmma's register operand)
and split K among programs (SPLIT_K, as the row kernel below): on the H200 FP6 at 8 and 16
rows went from 0.50-0.94x bf16 to 0.96-1.08x, and batch-8 FP6 decode from 0.76x to 1.03x
(``benchmarks/results/kernels_h200.md``, seventeenth run).

One activation row (batch-1 decode, K a multiple of 8) takes ``_fpx_row_kernel`` on a GPU
instead: fp32 multiply-adds on the CUDA cores and one reduction per program, because the
tensor-core kernel's 16-row tile is 1/16 used there and stages every decoded tile
through shared memory. Its first form decoded like the tile kernel and ran FP6 at 0.63x
bf16 in the compiled model; streaming 32-bit words with fields placed into a float16
took that to about 1.13x (a profiled step), and placing them into a float32 (no
conversion instruction) gave 1.14x, while E2M1 went from 1.40-1.44x to 1.45-1.66x in isolation
(``benchmarks/results/end_to_end_h200.md``, run 5). It now places two codes at a time
(30 % fewer integer instructions for FP6 in sm_90 SASS; ``benchmarks/kernel_sass.py``) and
loads both planes in one layout, so that no config moves tiles through shared memory
inside its loop: on the H200 FP6 E3M2 went from 1.28x / 1.21x bf16 to 1.21x / 1.38x at
4096x4096 / 14336x4096 and a profiled compiled FP6 decode step took 4519 us (221 tok/s,
against 211 tok/s before; ``benchmarks/results/kernels_h200.md``, sixth run). The
tuner picked 32 x 128 and 64 x 64 words on 8 warps, with and without prefetching.
With ``PTQ_FPX_MMA=1`` one bfloat16 row runs the row kernel's tensor-core form instead: rows in pairs, each placed
pair of codes scaled to its values in bfloat16 (``_valued_pairs``) and multiplied by an mma.sync whose diagonal
holds each lane quad's row sums (``_quad_mma``); 17 % fewer instructions than the fp32 form for FP6 in sm_90 SASS
(840 against 1,008 at 32 x 128 words on 8 warps), correct on the H200 and no faster there (1.01-1.41x bf16 against
1.08-1.42x; ``benchmarks/results/kernels_h200.md``, sixteenth run).
Where a weight's rows give few tiles the row kernel may split K among SPLIT_K programs a tile (``ROW_SPLIT_CONFIGS``,
the last program of a tile adds the slices' sums in a fixed order): on the H200 FP6 at 4096 x 4096 and 4096 x 14336
went from 1.16x / 1.08x bf16 to 1.33x / 1.54x, and the compiled FP6 decode step from 1.19x to 1.42x (same run).
One FP5 row reads the high plane interleaved four rows a word (``interleave_high``, derived on first use and kept
beside the plane): no 8-bit words to unpack, 1.23x / 1.46x to 1.51x / 1.68x bf16 at 4096 x 4096 / 28672 x 4096 on the
H200; FP6 rows (two a word) ran slower that way and keep the plane's own words (eighteenth run).
The row kernel also runs 2 to ``ROW_MAX_M`` rows, each decoded pair multiplying every row. On
the H200 (2026-12-02, tenth session) it took M = 4 from 0.45-0.72x bf16 on the tensor-core kernel
to 0.82-1.02x, and tied it at M = 8 (0.48-0.70x), so by default a GPU gives it up to
``ROW_DEFAULT_MAX_M`` rows; ``row_kernel=True`` takes it to ``ROW_MAX_M``.

From ``DEQUANT_MIN_M`` rows of half-precision activations (prefill) neither kernel runs: ``dequant.dequantize_triton``
writes the weight in x's dtype once and cuBLAS multiplies it (``takes_dequantized``).

Like ``act_quant`` and ``w4a4_gemm`` it calls only Triton builtins and its own and ``fpx_placement``'s
``triton.jit`` helpers (no ``tl.zeros`` / ``tl.cdiv``), so that it runs under the
interpreter even when triton was imported in compiled mode first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.utils.weak import WeakIdKeyDictionary
from triton.language.standard import _sum_combine

from .autotuning import autotune
from .fpx_placement import (INT4_LEVELS, _bf16_halves, _decode, _half_pairs, _halves_of, _lane_tile, _placed_bits,
                            _placed_pair, _placed_tile, _plane_codes, _spread_high, _unit_pairs, _valued_pairs,
                            _valued_tile)
from .reference import check_fpx_args, check_out, fpx_element, silu_mul_ref
from .rounding import _round_to_dtype
from .switches import env_switch
from .tile_loads import _group_scales, _row_globals, _tile_load, group_scale_args
from .w4a4_gemv import _gated_products, _gated_rows, _words, keep_pinned, prune_decode_configs, split_k_buffer

# Whether the kernels below were built for the interpreter (decided when triton.jit ran).
INTERPRET = triton.knobs.runtime.interpret
# One small config under the interpreter: tests run many shapes on a CPU.
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, PAIRED=False, SWAP_AB=False, SPLIT_K=1)
INTERPRET_ROW_CONFIG = dict(BLOCK_N=16, BLOCK_KW=4, PREFETCH=True, LOOP_STAGES=1, SPLIT_K=1)
# Width of the high plane's fields by code width: FP4 has none.
HIGH_PLANE_WIDTH = {4: 0, 5: 1, 6: 2}
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for Hopper. Decode (M <= 16) is
# bound by reading the weight: narrow N tiles give enough programs for N = 576 (SmolLM2)
# .. 18944 (Qwen2.5-7B), wide K tiles keep loads in flight; M up to 128 takes taller tiles.
GPU_CONFIGS = [
    (16, 32, 128, 4, 4), (16, 32, 256, 4, 3), (16, 64, 128, 4, 4), (16, 64, 256, 4, 3), (16, 128, 128, 4, 4),
    (32, 64, 128, 4, 4), (32, 128, 128, 4, 3), (64, 64, 128, 4, 3), (64, 128, 64, 4, 4), (64, 128, 128, 8, 3),
    (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
]
# The same for the kernel's PAIRED path (K a multiple of 8): each K step makes 8 dots of BLOCK_K / 8 (at least
# 16, the tensor cores' K) activation columns each.
GPU_PAIRED_CONFIGS = [
    (16, 64, 128, 4, 3), (16, 64, 256, 4, 3), (16, 128, 256, 4, 3), (32, 64, 256, 4, 3), (32, 128, 128, 4, 3),
    (64, 64, 256, 4, 3), (64, 128, 128, 8, 3), (128, 128, 128, 8, 3),
]
# The PAIRED path with the operands swapped (SWAP_AB: acc^T = W X^T, one dot a step) for decode batches (M_BUCKET <=
# SWAP_MAX_M): the placed weight tile is the dot's 64-row side, which Hopper's wgmma takes from registers; unswapped,
# the 16-row tiles run eight mma.sync dots a step with the weight staged through shared memory (sm_90 SASS, Triton
# 3.9: ``benchmarks/kernel_sass.py --kernel fpx_tile``). Checked on the H200 and picked there where N is large
# (2026-12-04); PTQ_FPX_SWAP=0 leaves them out (``tile_swap_on``). 64 rows a warpgroup. At 128 rows, without them,
# the tuner's unswapped pick ran FP6 at 0.20-0.29x bf16 where the swapped 64-row tile ran 0.69-1.05x at 64 rows
# (2026-12-05, ``kernel_bench_fpx_tile_rows_h200.md``): they run up to 128 rows, with a 128-row tile of their own
# (0.55-0.81x with the split ones below, ``kernel_bench_fpx_tile_128_h200.md``; its picks held 64-128 programs on
# 132 SMs, one CTA an SM at 178 registers, so a 128 x 64 tile, two CTAs an SM at 186 registers, and a split of 4
# joined the candidates, untimed).
GPU_SWAP_CONFIGS = [(16, 64, 128, 4, 3), (16, 64, 256, 4, 3), (16, 128, 128, 8, 3), (16, 128, 256, 8, 3),
                    (32, 64, 256, 4, 3), (64, 64, 128, 4, 3), (64, 64, 128, 4, 4), (64, 128, 128, 8, 3),
                    (128, 64, 128, 4, 3), (128, 128, 128, 8, 3)]
SWAP_MAX_M = 128
# Decode-batch tiles (M_BUCKET <= SWAP_MAX_M) that split K among SPLIT_K programs a tile, every slice at least two
# steps: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, PAIRED, SWAP_AB, SPLIT_K). Unsplit, the tuner's picks at
# 8 and 16 rows on the H200 were 128 programs of 16 x 32 (N = 4096) and 224 swapped ones of 16 x 64 (N = 14336),
# and FP6 streamed 0.43-1.0 TB/s (2026-12-04, ``benchmarks/results/kernels_h200.md``, seventeenth run): the
# splits are the row kernel's remedy (``ROW_SPLIT_CONFIGS``) for those tiles. At 64 rows the pick was 32 unsplit
# programs of 64 x 128 for N = 4096 on 132 SMs (FP6 0.69-0.78x bf16 at N = 4096 and 6144, 1.05x at 28672;
# 2026-12-05, ``kernel_bench_fpx_tile_rows_h200.md``): the 64- and 128-row tiles split K too (0.84-0.98x at 64 rows
# then, the tuner taking a split at three of four shapes, ``kernel_bench_fpx_tile_128_h200.md``). Swept on an H100
# (2026-12-06, ``benchmarks/results/fpx_tile_sweep_{64,128}_h100.md``), 64 x 64 tiles split four ways ran FP6 at 64
# rows 1.12x bf16 at 4096 x 4096 and 1.29x at 6144 x 4096 against the tuner's picks' 1.00x and 1.13x, and the 128-row
# 128 x 64 tile split four ways 0.86x at 4096 x 4096 against 0.82x: both joined the candidates. With the codes
# placed in the dot's register pairs (``_lane_tile``), four stages of the 64 x 64 x 128 tile, split two ways or
# not, ran 128 rows of 4096 x 4096 in 23.7 us against the tuner's pick's 24.6 (bf16: 22.7; 2026-12-06,
# ``fpx_tile_lane1_128_stages_h100.md``): both joined too. Splits of eight ran 0.59-0.66x there (the same at 64
# rows: ``fpx_tile_lane0_128_h100.md``, ``fpx_tile_lane0_64_h100.md``), so TILE_MAX_SPLIT_K stays 4.
GPU_SPLIT_CONFIGS = [
    (16, 32, 128, 4, 4, False, False, 2), (16, 32, 128, 4, 4, False, False, 4),
    (16, 64, 128, 4, 3, True, True, 2), (16, 64, 128, 4, 3, True, True, 4),
    (16, 64, 256, 4, 3, True, True, 2), (16, 64, 256, 4, 3, True, True, 4),
    (16, 128, 128, 8, 3, True, True, 2), (32, 64, 256, 4, 3, True, True, 2),
    (64, 64, 128, 4, 3, True, True, 2), (64, 64, 128, 4, 3, True, True, 4), (64, 64, 128, 4, 4, True, True, 2),
    (64, 128, 128, 8, 3, True, True, 2), (64, 128, 128, 8, 3, True, True, 4), (128, 64, 128, 4, 3, True, True, 2),
    (128, 64, 128, 4, 3, True, True, 4), (128, 128, 128, 8, 3, True, True, 2), (128, 128, 128, 8, 3, True, True, 4),
]
TILE_MAX_SPLIT_K = 4

# (BLOCK_N, BLOCK_KW, num_warps, num_stages, PREFETCH) of the one-row kernel; BLOCK_KW counts low-plane words
# (8 codes each): BLOCK_N x BLOCK_KW fp32 accumulators over the program's threads, 4 to 16 a thread. Every one
# compiles for sm_90 with its layout conversion outside the loop (benchmarks/kernel_sass.py, Triton 3.9); the
# ones dropped (4 x 64 / 2 warps, 4 x 128 / 4, 8 x 128 / 4, 16 x 256 / 8) moved tiles through shared memory
# with barriers for every code pair. The W4A4 decode kernel won with 16 rows x 256 words on the H200. The
# prefetching configs hold two steps' words a thread. Each config compiles once per weight shape when a model
# warms up: the list stays short.
ROW_CONFIGS = [
    (8, 64, 4, 3, False), (16, 64, 8, 3, False), (32, 64, 16, 3, False), (16, 128, 16, 3, False),
    (16, 64, 4, 2, False), (16, 128, 8, 2, False), (32, 64, 8, 2, False), (32, 128, 8, 2, False),
    (64, 64, 8, 2, False), (32, 128, 16, 2, False), (16, 256, 16, 2, False),
    (16, 128, 8, 2, True), (32, 128, 8, 2, True), (32, 64, 16, 2, True), (32, 128, 16, 2, True),
    (64, 64, 8, 2, True),
]
# Row-kernel configs whose K loop Triton software-pipelines (``tl.range(..., num_stages=LOOP_STAGES)``, as
# ``w4a4_gemv.GEMV_PIPELINED_CONFIGS``): (BLOCK_N, BLOCK_KW, num_warps, LOOP_STAGES).
ROW_PIPELINED_CONFIGS = [(16, 64, 4, 3), (32, 64, 8, 3), (16, 128, 8, 3), (32, 128, 8, 3), (16, 64, 4, 4)]
# Row-kernel configs that split K among SPLIT_K programs a tile (BLOCK_N, BLOCK_KW, num_warps, num_stages, PREFETCH,
# SPLIT_K), where every slice has at least two steps. Unsplit, at N = 4096 the tuner's 32-row tiles were 128
# programs of 8 warps, one an SM of the H200's 132, and FP6 streamed 0.78-1.12 TB/s there against 1.5 TB/s at
# N = 14336; split four ways (64 x 64 words), 0.89-1.64 TB/s, and the FP6 decode step went from 1.19x to 1.42x bf16
# (2026-12-03, ``benchmarks/results/kernels_h200.md``, sixteenth run). At N = 28672 (gate/up) 448 tiles of 64 rows
# are 1.1 waves of three programs an SM: the splits fill the last one.
ROW_SPLIT_CONFIGS = [
    (32, 128, 8, 2, True, 2), (32, 128, 8, 2, False, 2), (32, 64, 8, 2, True, 2), (32, 64, 8, 2, True, 4),
    (64, 64, 8, 2, True, 2), (64, 64, 8, 2, False, 4), (16, 128, 8, 2, True, 2), (16, 64, 4, 2, False, 4),
    (64, 64, 8, 2, True, 4), (64, 64, 8, 2, False, 8),
]
ROW_MAX_SPLIT_K = 8
# Row-kernel configs whose registers a thread ptxas caps (``maxnreg``): (BLOCK_N, BLOCK_KW, num_warps, num_stages,
# SPLIT_K, MAXNREG). Under ncu on the H200 (Triton 3.6, FP6 E3M2, one row) the picked 64 x 64 and 32 x 128-word
# configs held 95-97 registers, two 8-warp programs an SM (25 % occupancy), and each scheduler issued an instruction
# every other cycle with about one warp eligible (2026-12-04, ``benchmarks/results/kernels_h200.md``, eighteenth
# run). At 80, three fit, and in sm_90 SASS (Triton 3.9) none of these spills.
ROW_CAPPED_CONFIGS = [(64, 64, 8, 2, 4, 80), (64, 64, 8, 2, 2, 80), (64, 64, 8, 2, 1, 80), (32, 128, 8, 2, 2, 80),
                      (32, 128, 8, 2, 1, 80)]
# The narrowest BLOCK_N of any row config (the split-K tile counters are sized for it).
ROW_MIN_BLOCK_N = 8
# The row kernel takes up to ROW_MAX_M activation rows (``row_kernel=True``); by default a GPU gives it up to
# ROW_DEFAULT_MAX_M, where it beat the tensor-core kernel 1.4-1.9x on the H200 (at 8 rows they tied).
ROW_MAX_M = 8
ROW_DEFAULT_MAX_M = 4
# From this many rows (prefill) the weight is dequantized once into x's dtype (``dequant.dequantize_triton``, one pass:
# 0.75 bytes a weight read and 2 written for FP6) and multiplied by cuBLAS, where the tile kernel would place each
# weight again for every tile of rows (16 times at 2048 rows): on the H200 its FP6 prefill ran 0.26x bf16
# (``benchmarks/results/end_to_end_h200.md``, run 1), while the pass costs about what reading a bf16 weight does.
DEQUANT_MIN_M = 1024
# The one-row kernel multiplies the activations by 2^ROW_X_SCALE_EXP: a product of a subnormal placement
# (>= 2^-130) and an activation is then normal, so exact, for |x| >= 2^-28, and x overflows only past 2^96.
ROW_X_SCALE_EXP = 32
# Scales in groups take the placements' power of two 2^(127 - bias) (E2M1's lie 2^-126 below their values) less
# 2^GROUP_UNIT_SHIFT, which the sums get back (the row kernel's ``unit``, the tile kernel's epilogue scales): an E2M1
# group scale times 2^126 overflows fp32 from 4 on (a group's |w| >= 24), times 2^94 only past 2^34. fp16 tiles lift
# their scaled codes back to the weights before the dot (the tile kernel's LIFTED): 2^-32 below them most would be
# fp16 subnormals.
GROUP_UNIT_SHIFT = 32
# The high plane's word per low word (8 codes): 8 2-bit fields (FP6) or 8 1-bit fields (FP5).
HIGH_WORD_DTYPES = {2: torch.int16, 1: torch.uint8}
# Code widths whose one-row products read the high plane interleaved across rows (``interleave_high``; the row
# kernel's INTERLEAVED form takes FP5's four rows a word): 15 % fewer instructions in sm_90 SASS, and on the H200 FP5
# went from 1.23x / 1.46x to 1.51x / 1.68x bf16 at 4096 x 4096 / 28672 x 4096 (2026-12-04,
# ``benchmarks/results/kernels_h200.md``, eighteenth run). FP6 keeps its own words: interleaved two rows a word it
# ran 4-14 % slower one row tile a pass (spilling at the 80-register cap), and 0-6 % faster both tiles a pass, which
# left its decode step where it was (280.3 against 278.2 tok/s) for 1.6 GiB more GPU memory (nineteenth run).
INTERLEAVED_BITS = (5,)
# Row-kernel configs for scales in groups along K (BLOCK_N, BLOCK_KW, num_warps, num_stages, SPLIT_K). Each word's sums
# are scaled by its group's scale (``_word_units``): steps of 8 and 16 words lie in one group of 64 or 128 codes (one
# scale load a row a step), and more rows a program and split K make up the programs and the work a step that the
# per-channel configs' 64- and 128-word steps hold; NVFP4's and MXFP4's groups load a scale for every 2 or 4 words.
# The last four take the per-channel picks' wide steps (four rows a thread, four 16-byte loads of words in flight
# where 32 x 16 on 4 warps has one): in sm_90 SASS NVFP4's step costs 45 instructions a word at 64 x 64 on 8 warps
# against 68 at 32 x 16 on 4 warps (the tuner's pick at one row before them, 0.99-1.35x bf16 on the H200).
ROW_GROUP_CONFIGS = [(64, 8, 4, 2, 1), (128, 8, 8, 2, 1), (64, 8, 4, 2, 4), (128, 16, 8, 2, 1), (64, 16, 4, 2, 2),
                     (64, 16, 4, 2, 4), (256, 16, 8, 2, 1), (32, 16, 4, 2, 4), (64, 32, 4, 2, 4), (64, 64, 8, 2, 4),
                     (64, 64, 8, 2, 2), (64, 64, 8, 2, 1)]
# The one-row kernel's autotune key.
ROW_TUNING_KEY = ("N", "KW", "BITS", "MAN_BITS", "BLOCK_M", "MMA", "INTERLEAVED", "GATED")
# Picks the one-row kernel keeps instead of tuning (``w4a4_gemv.keep_pinned``, ``PTQ_PINNED_CONFIGS=0`` tunes them
# too), per device name and ROW_TUNING_KEY values: (BLOCK_N, BLOCK_KW, PREFETCH, LOOP_STAGES, SPLIT_K, warps, stages,
# maxnreg). The tuner's draws differ between processes: on the H200 one process picked 16 x 64 words unsplit for FP6
# E3M2's fused q/k/v (20.4 us against 15.8-16.4 us for these in four others; ``benchmarks/results/kernels_h200.md``,
# nineteenth run). These are Llama-3-8B's decode shapes (N, KW) at their fastest FP6 E3M2 picks: on the H200 q/k/v,
# o_proj and down_proj split four ways, gate/up two ways, 14336 x 4096 unsplit, on which the FP6 batch-1 step ran 1.50x
# bf16 (``end_to_end_h200.md``, run 36; 1.47x on the tuner's picks, run 31); on the H100 the tuner's picks of
# 2026-12-05 are the same but gate/up's, unsplit and uncapped (51.2 us against 51.7 split four ways and capped; its
# autotune cache, ``kernel_bench_fpx_retimed_1_h100.md`` for 14336 x 4096). FP6 E2M3 reads the same
# words through the same loop, its K step 0.7-2.5 % shorter in sm_90 SASS (``benchmarks/results/kernel_sass_fpx_row_``
# ``e2m3_triton36_sm90.md``), and keeps E3M2's picks rather than tuning some 35 configs a shape cold. A gated gate/up
# product (GATED: silu(gate) * up in the epilogue) keeps the ungated pick: the same programs' tiles and words.
_FP6_ROW_PICKS = {
    "NVIDIA H200": {
        (6144, 512): (64, 64, False, 1, 4, 8, 2, 80),
        (4096, 512): (64, 64, False, 1, 4, 8, 2, 80),
        (28672, 512): (64, 64, False, 1, 2, 8, 2, 80),
        (4096, 1792): (64, 64, False, 1, 4, 8, 2, 80),
        (14336, 512): (64, 64, False, 1, 1, 8, 2, None),
    },
    "NVIDIA H100 80GB HBM3": {
        (6144, 512): (64, 64, False, 1, 4, 8, 2, 80),
        (4096, 512): (64, 64, False, 1, 4, 8, 2, 80),
        (28672, 512): (64, 64, False, 1, 1, 8, 2, None),
        (4096, 1792): (64, 64, False, 1, 4, 8, 2, 80),
        (14336, 512): (64, 64, False, 1, 1, 8, 2, None),
    },
}
PINNED_ROW_CONFIGS = {
    device: {(n, kw, 6, man_bits, 1, False, False, gated): pick for (n, kw), pick in picks.items()
             for man_bits in (2, 3) for gated in (False, True)}
    for device, picks in _FP6_ROW_PICKS.items()
}


@triton.jit
def _fpx_kernel(
    x_ptr, low_ptr, high_ptr, low_words_ptr, high_words_ptr, scale_ptr, bias_ptr, out_ptr,
    M, N, K, M_BUCKET, stride_xm, stride_low, stride_high, stride_low_words, stride_high_words, stride_om,
    EXP_BITS: tl.constexpr, MAN_BITS: tl.constexpr, EXP_BIAS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, W_UNIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PAIRED: tl.constexpr,
    SWAP_AB: tl.constexpr = False, partial_ptr=None, count_ptr=None, SPLIT_K: tl.constexpr = 1,
    VALUED_BF16: tl.constexpr = False, UNIT_EXP: tl.constexpr = 0, USE_ASM: tl.constexpr = False,
    EVEN: tl.constexpr = False, gscale_ptr=None, stride_gs=0, GROUP: tl.constexpr = 0, G_UNIT: tl.constexpr = 1.0,
    ROUND_BF16: tl.constexpr = False, ROUND_F16: tl.constexpr = False, gglobal_ptr=None,
    SCALE_CODE: tl.constexpr = 0, LANE_PAIRS: tl.constexpr = True, HIGH_WORD_PAIRS: tl.constexpr = False,
):
    """PAIRED (K a multiple of 8): the weight streams as the row kernel's words (``low_words_ptr``,
    ``high_words_ptr``), two codes at a time are placed into float32s with shifts and masks
    (``_placed_pair``), times W_UNIT = 2^(127 - bias) to their values, and each of a word's eight
    code positions j takes its own dot against the activation columns 8w + j: no spreading of bit
    fields into a tile and no arithmetic decode; SWAP_AB (PAIRED only): the placed codes joined back into K order
    (``_placed_tile``) are one dot's first, wide operand a step (acc^T = W X^T), which Hopper's wgmma takes from
    registers; with half values (LANE_PAIRS, ``tile_lane_on``) each thread places the code pairs its part of that
    operand holds instead (``_lane_tile``), no tile going through shared memory, FP6's 16-bit high words two an int32
    load where HIGH_WORD_PAIRS (K a multiple of 16, the plane 4-byte aligned). VALUED_BF16 (bfloat16 x, both PAIRED
    forms): the codes become bfloat16 values (``_valued_pairs``, one
    pair multiply for two codes where the float32 placement takes two multiplies and a conversion; ``_valued_tile``
    when swapped); fp16 x likewise fp16 values (``_placed_bits``' F16), where the placement itself is the value
    times 2^(bias - 15) and the sums take the power back (F16_PLACED). Otherwise the planes are spread and
    decoded. SPLIT_K > 1: program (m, n, s) takes the s-th of SPLIT_K slices of K (whole steps) and
    ``_finish_products`` adds the slices' sums, as in the row kernel. GROUP > 0 (INT4 or
    E2M1 codes, PAIRED): the scales come per GROUP codes along K, (N, K / GROUP) at ``gscale_ptr``. Where a step lies
    in one group (GROUP a multiple of BLOCK_K) its sums, exact products as per channel, are multiplied by the group's
    scales; otherwise each word's placed codes are multiplied by its group's scale times G_UNIT (``_word_units``) in
    fp32 before the dot rounds them to x's dtype, the weight ``dequant.dequantize_triton`` writes (ROUND_BF16 /
    ROUND_F16: rounded by hand where the dot is an fp32 one, under the interpreter). ``scale_ptr`` holds ones. The
    group scales are fp32 (SCALE_CODE 0), or NVFP4's E4M3 bytes (1) times their rows' global scales at ``gglobal_ptr``,
    or MXFP4's E8M0 bytes (2), decoded as they load (``_group_scales``). With bfloat16 x those, exact in bfloat16,
    scale the codes' bfloat16 values a word at a time (``_valued_pairs``, SCALED): each weight exact, its E4M3
    scale's global one applied to the sums after the loop (one rounding less than the dequantized weight's); with
    fp16 x the E4M3 ones do so in fp16 (E8M0's may leave fp16's range: fp16 takes those, and fp32 scales, in fp32)."""
    # Axis 0 runs fastest: the row tiles that share a weight tile are launched together.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    HIGH_PER_BYTE: tl.constexpr = 8 // HIGH_WIDTH if HIGH_WIDTH > 0 else 8
    k_first, k_stop = _k_slice(K, BLOCK_K, SPLIT_K, 2)
    if SPLIT_K == 1:  # K > 0: ptxas then sees no path around the loop that sets the wgmma accumulators (C7515)
        tl.assume(k_stop > k_first)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_low = tl.arange(0, BLOCK_K // 2)
    offs_high = tl.arange(0, BLOCK_K // HIGH_PER_BYTE)
    m_ok = offs_m < M
    n_ok = offs_n < N
    x_ptrs = x_ptr + k_first + offs_m[:, None] * stride_xm + offs_k[None, :]
    low_ptrs = low_ptr + k_first // 2 + offs_n[:, None] * stride_low + offs_low[None, :]
    high_ptrs = high_ptr + k_first // HIGH_PER_BYTE + offs_n[:, None] * stride_high + offs_high[None, :]  # (FP4: unread)
    if SWAP_AB:
        acc = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    if PAIRED:
        BITS: tl.constexpr = 4 + HIGH_WIDTH
        offs_w = tl.arange(0, BLOCK_K // 8)
        low_word_ptrs = low_words_ptr + k_first // 8 + offs_n[:, None] * stride_low_words + offs_w[None, :]
        high_word_ptrs = high_words_ptr + k_first // 8 + offs_n[:, None] * stride_high_words + offs_w[None, :]
        xw_ptrs = x_ptr + k_first + offs_m[:, None] * stride_xm + 8 * offs_w[None, :]
        # Scales in groups: a step inside one group scales the step's sums once (STEP_SCALES, exact products as per
        # channel); otherwise each word's placed codes are scaled before the dot (WORD_SCALES: the float32 placement,
        # the weights rounded to x's dtype), and the codes' power of two goes with the scales (G_UNIT).
        STEP_SCALES: tl.constexpr = GROUP > 0 and GROUP % BLOCK_K == 0
        WORD_SCALES: tl.constexpr = GROUP > 0 and GROUP % BLOCK_K != 0
        # fp16 x: the codes' values in fp16 pairs, as bfloat16 x takes them in bfloat16 pairs (F16, ``_placed_bits``).
        F16: tl.constexpr = x_ptr.dtype.element_ty == tl.float16
        # bfloat16 x with E4M3 / E8M0 scales, fp16 x with E4M3 ones (E8M0's powers of two may leave fp16's range): the
        # codes times their word's scale in half pairs, exact (SCALED_VALUES; E4M3 scales' row global scales multiply
        # the sums after the loop).
        SCALED_VALUES: tl.constexpr = WORD_SCALES and (VALUED_BF16 and SCALE_CODE != 0 or F16 and SCALE_CODE == 1)
        VALUED: tl.constexpr = (VALUED_BF16 or F16) and (SCALED_VALUES or not WORD_SCALES)
        # fp16 x otherwise: the codes times their scales, 2^-GROUP_UNIT_SHIFT below the weights in fp32, are lifted to
        # the weights (UNIT) before the dot rounds them to fp16. Both fp16 forms hold the weights' own values, and the
        # sums are taken down by 2^-GROUP_UNIT_SHIFT after the loop, which the epilogue's scales undo (TAKEN_DOWN).
        LIFTED: tl.constexpr = WORD_SCALES and not VALUED and F16
        TAKEN_DOWN: tl.constexpr = LIFTED or SCALED_VALUES and F16
        # fp16 values of codes neither INT4 nor scaled in the tile are their placements (``_valued_f16_pairs``):
        # 2^(bias - 15) times the values, exact; the sums take 2^(15 - bias) = 2^(UNIT_EXP - 112) back after the loop.
        F16_PLACED: tl.constexpr = VALUED and F16 and not SCALED_VALUES and MAN_BITS != INT4_LEVELS
        # Swapped half values in the dot's register pairs (``_lane_tile``), where LANE_PAIRS allows; FP6's 16-bit
        # high words two an int32 load there (HIGH_WORD_PAIRS: K a multiple of 16, the plane 4-byte aligned).
        LANE: tl.constexpr = LANE_PAIRS and SWAP_AB and VALUED
        PAIRED_HIGH: tl.constexpr = LANE and HIGH_WORD_PAIRS
        if PAIRED_HIGH:
            offs_w2 = tl.arange(0, BLOCK_K // 16)
            high_pair_ptrs = (high_words_ptr.to(tl.pointer_type(tl.int32)) + k_first // 16
                              + offs_n[:, None] * (stride_high_words // 2) + offs_w2[None, :])
        UNIT: tl.constexpr = (W_UNIT / G_UNIT if LIFTED else 1.0) if WORD_SCALES else W_UNIT
        # A step's scales take 2^-GROUP_UNIT_SHIFT as the words' do (G_UNIT's part of W_UNIT; 1 for INT4), which the
        # epilogue's scales undo.
        STEP_UNIT: tl.constexpr = G_UNIT / W_UNIT
        row_global = _row_globals(gglobal_ptr, offs_n, n_ok, SCALE_CODE == 1)
        for k0 in range(k_first, k_stop, BLOCK_K):
            w_ok = offs_w < (k_stop - k0) // 8
            if PAIRED_HIGH:  # (the high words two a word)
                low = _tile_load(low_word_ptrs, n_ok[:, None] & w_ok[None, :], EVEN)
                high = _tile_load(high_pair_ptrs, n_ok[:, None] & (offs_w2 < (k_stop - k0) // 16)[None, :], EVEN)
            else:  # (the register-pair tiles take the high words as loaded)
                low, high = _plane_words(low_word_ptrs, high_word_ptrs, n_ok[:, None] & w_ok[None, :], HIGH_WIDTH,
                                         USE_ASM, EVEN, SPREAD=not LANE)
            if WORD_SCALES:
                # (fp16 values: the scales alone, G_UNIT's power of two held by the placement and TAKEN_DOWN)
                units = _word_units(gscale_ptr, offs_n, n_ok, stride_gs, k0, (k_stop - k0) // 8, GROUP,
                                    1.0 if SCALED_VALUES and F16 else G_UNIT, BLOCK_K, EVEN, row_global, SCALE_CODE,
                                    SCALE_CODE == 1 and not SCALED_VALUES)
            else:
                units = UNIT  # (unread)
            unit_pairs = _unit_pairs(units, F16) if SCALED_VALUES else 0
            sums = acc
            if STEP_SCALES:  # the step's own sums, scaled below
                sums = tl.full(acc.shape, 0.0, tl.float32)
            if SWAP_AB:  # one dot a step: the placed codes joined back into K order, x's columns as they lie
                x_ok = m_ok[:, None] if EVEN else m_ok[:, None] & (offs_k < k_stop - k0)[None, :]
                x = tl.load(x_ptrs, mask=x_ok, other=0.0)
                if LANE:
                    tile = _lane_tile(low, high, BITS, MAN_BITS, HIGH_WIDTH, BLOCK_N, BLOCK_K, UNIT_EXP, USE_ASM,
                                      SCALED_VALUES, unit_pairs[:, :, None] if SCALED_VALUES else 0, PAIRED_HIGH,
                                      F16)
                elif VALUED:
                    tile = _valued_tile(low, high, BITS, MAN_BITS, HIGH_WIDTH, BLOCK_N, BLOCK_K, UNIT_EXP, USE_ASM,
                                        SCALED_VALUES, unit_pairs, F16)
                else:
                    tile = _placed_tile(low, high, BITS, MAN_BITS, HIGH_WIDTH, BLOCK_N, BLOCK_K, USE_ASM, units,
                                        WORD_SCALES)
                sums = _dot_placed(x, tile, sums, UNIT, DOT_F32, SWAP_AB, VALUED, ROUND_BF16, ROUND_F16)
                x_ptrs += BLOCK_K
            else:
                x_ok = m_ok[:, None] if EVEN else m_ok[:, None] & w_ok[None, :]
                for j in tl.static_range(4):
                    if VALUED:
                        first, second = _halves_of(_valued_pairs(
                            _placed_bits(low, high, j, BITS, MAN_BITS, HIGH_WIDTH, F16), MAN_BITS, UNIT_EXP, USE_ASM,
                            SCALED_VALUES, unit_pairs, F16), F16)
                    else:
                        first, second = _placed_pair(low, high, j, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
                        if WORD_SCALES:
                            first, second = first * units, second * units
                    sums = _dot_placed(tl.load(xw_ptrs + j, mask=x_ok, other=0.0), first, sums, UNIT, DOT_F32,
                                       VALUED=VALUED, ROUND_BF16=ROUND_BF16, ROUND_F16=ROUND_F16)
                    sums = _dot_placed(tl.load(xw_ptrs + j + 4, mask=x_ok, other=0.0), second, sums, UNIT, DOT_F32,
                                       VALUED=VALUED, ROUND_BF16=ROUND_BF16, ROUND_F16=ROUND_F16)
            if STEP_SCALES:
                scales = _group_scales(gscale_ptr, offs_n, k0 // GROUP, n_ok, stride_gs, EVEN, SCALE_CODE)
                if SCALE_CODE == 1:
                    scales *= row_global
                if STEP_UNIT != 1.0:
                    scales *= STEP_UNIT
                acc += sums * (scales[:, None] if SWAP_AB else scales[None, :])
            else:
                acc = sums
            low_word_ptrs += BLOCK_K // 8
            high_word_ptrs += BLOCK_K // 8
            if PAIRED_HIGH:
                high_pair_ptrs += BLOCK_K // 16
            xw_ptrs += BLOCK_K
        if SCALED_VALUES and SCALE_CODE == 1:
            acc *= row_global[:, None] if SWAP_AB else row_global[None, :]
        if TAKEN_DOWN and STEP_UNIT != 1.0:
            acc *= STEP_UNIT
        if F16_PLACED:
            acc *= 1 << (UNIT_EXP - 112)
    else:
        for k0 in range(k_first, k_stop, BLOCK_K):
            rest = k_stop - k0
            x = tl.load(x_ptrs, mask=m_ok[:, None] & (offs_k[None, :] < rest), other=0.0)
            codes = _plane_codes(low_ptrs, high_ptrs, n_ok, rest, BLOCK_N, BLOCK_K, HIGH_WIDTH)
            w = _decode(codes, EXP_BITS, MAN_BITS, EXP_BIAS)
            if DOT_F32:
                acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
            else:
                acc = tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)), acc)
            x_ptrs += BLOCK_K
            low_ptrs += BLOCK_K // 2
            high_ptrs += BLOCK_K // HIGH_PER_BYTE

    if SWAP_AB:
        acc = tl.trans(acc)
    _finish_products(acc, offs_m, offs_n, offs_n < N, M, N, scale_ptr, bias_ptr, out_ptr, stride_om, partial_ptr,
                     count_ptr, pid_m * tl.num_programs(1) + pid_n, tl.program_id(2), HAS_BIAS, SPLIT_K)


@triton.jit
def _k_slice(K, STEP: tl.constexpr, SPLIT_K: tl.constexpr, AXIS: tl.constexpr):
    """The [first, stop) of K (or of the words) that program s = program_id(AXIS) takes: everything unsplit; split,
    the s-th of SPLIT_K slices of whole steps (by hand, not tl.cdiv: the module docstring)."""
    if SPLIT_K > 1:
        size = (K + SPLIT_K * STEP - 1) // (SPLIT_K * STEP) * STEP
        first = tl.program_id(AXIS) * size
        stop = tl.minimum(first + size, K)
    else:
        first = 0
        stop = K
    return first, stop


@triton.jit
def _finish_products(out, rows, offs_n, n_ok, M, N, scale_ptr, bias_ptr, out_ptr, stride_om, partial_ptr, count_ptr,
                     tile, part, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, GATED: tl.constexpr = False,
                     ROUND_BF16: tl.constexpr = False, ROUND_F16: tl.constexpr = False):
    """Both kernels' epilogue for the unscaled (rows, offs_n) sums ``out`` of slice ``part`` of output tile ``tile``
    (``n_ok``: which of the weight rows ``offs_n`` exist): unsplit, ``_store_products``. Split, the sums go to slot
    ``part`` of ``partial_ptr`` (SPLIT_K, M, N fp32); the tile's counter at ``count_ptr`` (zero between launches,
    which the last resets) tells the last program to arrive, which adds the slots in slot order (the same sum
    whichever arrives last) and stores the result."""
    m_ok = rows < M
    if SPLIT_K > 1:
        mn_ok = m_ok[:, None] & n_ok[None, :]
        slots = partial_ptr + rows[:, None] * N + offs_n[None, :]
        tl.store(slots + part * M * N, out, mask=mn_ok)
        tl.debug_barrier()  # every thread's sums are stored before the counter says so
        if tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == SPLIT_K - 1:
            tl.atomic_xchg(count_ptr + tile, 0, sem="relaxed")
            total = tl.load(slots, mask=mn_ok, other=0.0, cache_modifier=".cg")  # (from L2: other SMs' stores)
            for s in tl.static_range(1, SPLIT_K):
                total += tl.load(slots + s * M * N, mask=mn_ok, other=0.0, cache_modifier=".cg")
            _store_products(total, rows, offs_n, m_ok, n_ok, scale_ptr, bias_ptr, out_ptr, stride_om, HAS_BIAS,
                            GATED, ROUND_BF16, ROUND_F16)
    else:
        _store_products(out, rows, offs_n, m_ok, n_ok, scale_ptr, bias_ptr, out_ptr, stride_om, HAS_BIAS, GATED,
                        ROUND_BF16, ROUND_F16)


@triton.jit
def _store_products(out, rows, offs_n, m_ok, n_ok, scale_ptr, bias_ptr, out_ptr, stride_om, HAS_BIAS: tl.constexpr,
                    GATED: tl.constexpr, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """The (rows, offs_n) sums times the per-channel scales, plus the bias, stored in the output's dtype. GATED (the
    row kernel's, ``w4a4_gemv._gated_rows``): silu(gate) * up of the products rounded to the output's dtype (by
    hand: ROUND_BF16, ROUND_F16) is stored at gate's columns (``w4a4_gemv._gated_products``)."""
    out *= tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if GATED:
        out, offs_n, n_ok = _gated_products(out, offs_n, n_ok, ROUND_BF16, ROUND_F16)
    tl.store(out_ptr + rows[:, None] * stride_om + offs_n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _quad_mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, USE_ASM: tl.constexpr):
    """One m16n8k16 bfloat16 mma.sync with fp32 accumulators c0..c3, per element of same-shaped int32 tensors of
    bfloat16 pairs: a0 and a2 are pairs of one weight row, a1 and a3 of another at the same K, b0 and b1 the
    activation pairs they multiply.

    The mma reads each lane's registers as a fragment: lane l holds A rows l // 4 (a0, a2) and l // 4 + 8 (a1,
    a3) and B column l // 4 (b0, b1), at the K pairs of its position l % 4 in its quad. So D[r][r] (r < 8) pairs
    only the A and B registers of quad r's own lanes: it is the quad's four elements' row-a products summed, and
    D[r + 8][r] their row-b products; ``_quad_rows`` picks them out. Every other entry multiplies one quad's
    weights by another's activations and is never read. This needs the lanes of a quad to hold elements of one
    weight row: for sm_90 Triton lays the row kernel's word tiles out K-fastest with 16 or 32 lanes along K in
    every config (TTGIR, Triton 3.9). Without the PTX (the interpreter) c0 and c2 take the element's own row-a
    and row-b sums instead, which ``_quad_rows`` reads there."""
    if USE_ASM:
        c0, c1, c2, c3 = tl.inline_asm_elementwise(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, "
            "{$10, $11, $12, $13};", "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", [a0, a1, a2, a3, b0, b1, c0, c1, c2, c3],
            dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
    else:
        a0_low, a0_high = _bf16_halves(a0)
        a1_low, a1_high = _bf16_halves(a1)
        a2_low, a2_high = _bf16_halves(a2)
        a3_low, a3_high = _bf16_halves(a3)
        b0_low, b0_high = _bf16_halves(b0)
        b1_low, b1_high = _bf16_halves(b1)
        c0 += a0_low * b0_low + a0_high * b0_high + a2_low * b1_low + a2_high * b1_high
        c2 += a1_low * b0_low + a1_high * b0_high + a3_low * b1_low + a3_high * b1_high
    return c0, c1, c2, c3


@triton.jit
def _quad_rows(c0, c1, c2, c3, USE_ASM: tl.constexpr):
    """``_quad_mma``'s sums of row a and row b: on a GPU D[r][r] and D[r + 8][r], held by lane 4r + r // 2 (c0
    and c2 for even r, c1 and c3 for odd), zero in the quad's other lanes; c0 and c2 without the PTX."""
    if USE_ASM:
        lane = tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [c0.to(tl.int32, bitcast=True)],
                                         dtype=tl.int32, is_pure=True, pack=1)
        quad = lane // 4
        mine = (lane % 4) == quad // 2
        even = (quad % 2) == 0
        row_a = tl.where(mine, tl.where(even, c0, c1), 0.0)
        row_b = tl.where(mine, tl.where(even, c2, c3), 0.0)
    else:
        row_a, row_b = c0, c2
    return row_a, row_b


@triton.jit
def _plane_words(low_ptrs, high_ptrs, mask, HIGH_WIDTH: tl.constexpr, USE_ASM: tl.constexpr,
                 EVEN: tl.constexpr = False, SPREAD: tl.constexpr = True):
    """One step's low-plane words and their ``_spread_high`` high-plane words (as loaded without SPREAD; the low
    words again for FP4); unmasked when EVEN."""
    low = _tile_load(low_ptrs, mask, EVEN)
    high = low
    if HIGH_WIDTH > 0:
        high = _tile_load(high_ptrs, mask, EVEN)
        if SPREAD:
            high = _spread_high(high, HIGH_WIDTH, USE_ASM)
    return low, high


@triton.jit
def _dot_placed(x, placed, acc, W_UNIT: tl.constexpr, DOT_F32: tl.constexpr, SWAP_AB: tl.constexpr = False,
                VALUED: tl.constexpr = False, ROUND_BF16: tl.constexpr = False, ROUND_F16: tl.constexpr = False):
    """acc + x @ (placed * W_UNIT).T (SWAP_AB: acc + (placed * W_UNIT) @ x.T): placed codes (``_placed_pair``)
    scaled to their values, which are exact in x's half dtype (and fp32), or (W_UNIT 1) times their group scales,
    which the dot's operand rounds to x's dtype; VALUED: ``placed`` already holds the values (bfloat16 or fp16,
    ``_valued_pairs``). An IEEE fp32 dot for fp32 x and under the interpreter, where ROUND_BF16 / ROUND_F16 round
    the weights to x's half dtype first."""
    w = placed if VALUED else placed * W_UNIT
    if DOT_F32:
        w = _round_to_dtype(w.to(tl.float32), ROUND_BF16, ROUND_F16)
        if SWAP_AB:
            out = tl.dot(w, tl.trans(x.to(tl.float32)), acc, input_precision="ieee")
        else:
            out = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
    elif SWAP_AB:
        out = tl.dot(w.to(x.dtype), tl.trans(x), acc)
    else:
        out = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    return out


@triton.jit
def _fpx_row_kernel(
    x_ptr, low_ptr, high_ptr, scale_ptr, bias_ptr, out_ptr, partial_ptr, count_ptr,
    M, N, KW, stride_xm, stride_om, stride_low, stride_high, unit,
    BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr,
    X_SCALE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr,
    PREFETCH: tl.constexpr, LOOP_STAGES: tl.constexpr, MMA: tl.constexpr = False, UNIT_EXP: tl.constexpr = 0,
    USE_ASM: tl.constexpr = False, SPLIT_K: tl.constexpr = 1, INTERLEAVED: tl.constexpr = False,
    EVEN: tl.constexpr = False, gscale_ptr=None, stride_gs=0, GROUP: tl.constexpr = 0, G_UNIT: tl.constexpr = 1.0,
    gglobal_ptr=None, SCALE_CODE: tl.constexpr = 0, GATED: tl.constexpr = False, ROUND_BF16: tl.constexpr = False,
    ROUND_F16: tl.constexpr = False,
):
    """Up to ROW_MAX_M activation rows (decode) on the CUDA cores: fp32 multiply-adds, one reduction at the end.

    The low plane streams as int32 words of 8 codes and the high plane as one 8- or 16-bit
    word per low word (the high bits of the same 8 codes), so every field is a shift and a
    mask in registers: no unpacking into a wider tile, no byte loads. ``_placed_pair``
    turns two codes at a time into float32s with shifts and masks and no conversion, once
    per program for all its rows; the activations are scaled by ``X_SCALE`` (a power of
    two) so that the products of subnormal placements stay normal, and ``unit`` undoes both
    powers of two on the sum. Products of a half-precision activation and these weights are
    exact in fp32, as in the dot. A 16-row tensor-core tile would be mostly empty here and
    would stage every decoded tile through shared memory. One row keeps a 2-D accumulator in
    the weight tile's own layout; ``PREFETCH`` (one row only) loads each step's words one
    step ahead, before the arithmetic of the step before (Triton does not pipeline loads
    that feed no dot); without it a step loads its own words first. SPLIT_K > 1: program (n, s) takes the s-th of
    SPLIT_K slices of the words, and ``_finish_products`` adds the slices' sums. INTERLEAVED (one row of 5-bit codes):
    ``high_ptr`` is ``interleave_high``'s plane, whose words hold the high fields of 4 rows; the tile's rows go in
    four row tiles, each with its own accumulator. EVEN: every tile whole, the loop's loads unmasked (one row).
    GROUP > 0 (INT4 or E2M1 codes, not MMA or INTERLEAVED): the scales come per GROUP codes along K, (N, K / GROUP)
    at ``gscale_ptr``, GROUP a multiple of 8, so that a word's codes lie in one group: one row's step sums (one a
    word), several rows' placed codes, are multiplied by their words' group scales times G_UNIT = 2^(127 - bias)
    less GROUP_UNIT_SHIFT's power (the placement's power of two folded in, ``unit`` taking the rest back;
    ``_word_units``; encoded as the tensor-core kernel takes them, SCALE_CODE); ``scale_ptr`` holds ones.
    GATED (not MMA or INTERLEAVED): the weight rows are an MLP's gate rows (the first N / 2) then its up rows, and
    the output (M, N / 2) is silu(gate) * up: a program takes BLOCK_N / 2 rows of each, the same outputs'
    (``_store_products``), so that HF's ``act_fn(gate) * up`` needs no launch of its own at decode.
    """
    if GATED:
        tl.static_assert(not MMA and not INTERLEAVED, "a gated product takes the row kernel's fp32 forms")
        offs_n, n_ok = _gated_rows(N, BLOCK_N)
    else:
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    w_first, w_stop = _k_slice(KW, BLOCK_KW, SPLIT_K, 1)
    x_ptr += 8 * w_first
    low_ptr += w_first
    high_ptr += w_first
    low_ptrs = low_ptr + offs_n[:, None] * stride_low + offs_w[None, :]
    # Loaded four words a thread like the low plane (its 16-byte vectors), not eight or sixteen: one layout for
    # both tiles and the accumulator, so no tile goes through shared memory to change layout.
    offs_high = tl.max_contiguous(offs_w, 4)
    high_ptrs = high_ptr + offs_n[:, None] * stride_high + offs_high[None, :]  # (FP4: never read)
    if GROUP > 0:
        tl.static_assert(not MMA and not INTERLEAVED, "scales in groups take the fp32 forms of the row kernel")
        tl.static_assert(GROUP % 8 == 0, "a word's eight codes lie in one group of scales")
    row_global = _row_globals(gglobal_ptr, offs_n, n_ok, SCALE_CODE == 1)
    if MMA:  # one bfloat16 row on the tensor cores: rows 2i (a) and 2i + 1 (b) of the tile side by side
        half = tl.arange(0, BLOCK_N // 2)
        rows = tl.program_id(0) * BLOCK_N + 2 * half
        a_ok, b_ok = (rows < N)[:, None], (rows + 1 < N)[:, None]
        low_ptrs = low_ptr + rows[:, None] * stride_low + offs_w[None, :]
        high_ptrs = high_ptr + rows[:, None] * stride_high + offs_high[None, :]
        x_ptrs = x_ptr + offs_w * 8
        c0 = tl.full((BLOCK_N // 2, BLOCK_KW), 0.0, tl.float32)
        c1, c2, c3 = c0, c0, c0
        for w0 in tl.range(w_first, w_stop, BLOCK_KW, num_stages=LOOP_STAGES):
            w_ok = offs_w < w_stop - w0
            low_a, high_a = _plane_words(low_ptrs, high_ptrs, a_ok & w_ok[None, :], HIGH_WIDTH, USE_ASM)
            low_b, high_b = _plane_words(low_ptrs + stride_low, high_ptrs + stride_high, b_ok & w_ok[None, :],
                                         HIGH_WIDTH, USE_ASM)
            for j in tl.static_range(2):  # codes j, j + 4 and j + 2, j + 6 of every word
                x_first = _half_pairs(tl.load(x_ptrs + j, mask=w_ok, other=0.0),
                                      tl.load(x_ptrs + j + 4, mask=w_ok, other=0.0))
                x_second = _half_pairs(tl.load(x_ptrs + j + 2, mask=w_ok, other=0.0),
                                       tl.load(x_ptrs + j + 6, mask=w_ok, other=0.0))
                c0, c1, c2, c3 = _quad_mma(
                    _valued_pairs(_placed_bits(low_a, high_a, j, BITS, MAN_BITS, HIGH_WIDTH), MAN_BITS, UNIT_EXP,
                                  USE_ASM),
                    _valued_pairs(_placed_bits(low_b, high_b, j, BITS, MAN_BITS, HIGH_WIDTH), MAN_BITS, UNIT_EXP,
                                  USE_ASM),
                    _valued_pairs(_placed_bits(low_a, high_a, j + 2, BITS, MAN_BITS, HIGH_WIDTH), MAN_BITS, UNIT_EXP,
                                  USE_ASM),
                    _valued_pairs(_placed_bits(low_b, high_b, j + 2, BITS, MAN_BITS, HIGH_WIDTH), MAN_BITS, UNIT_EXP,
                                  USE_ASM),
                    x_first[None, :], x_second[None, :], c0, c1, c2, c3, USE_ASM)
            x_ptrs += 8 * BLOCK_KW
            low_ptrs += BLOCK_KW
            high_ptrs += BLOCK_KW
        row_a, row_b = _quad_rows(c0, c1, c2, c3, USE_ASM)
        out = tl.join(tl.reduce(row_a, 1, _sum_combine), tl.reduce(row_b, 1, _sum_combine)).reshape(BLOCK_N)[None, :]
    elif INTERLEAVED:  # one row of 5-bit codes, the high plane's words shared by 4 rows (``interleave_high``)
        tl.static_assert(HIGH_WIDTH == 1, "the interleaved high plane is FP5's (INTERLEAVED_BITS)")
        ROWS: tl.constexpr = 4
        HALF: tl.constexpr = 4 * HIGH_WIDTH
        offs_p = tl.program_id(0) * (BLOCK_N // ROWS) + tl.arange(0, BLOCK_N // ROWS)
        p_ok = (offs_p < N // ROWS)[:, None]
        x_ptrs = x_ptr + offs_w * 8
        fields_ptrs = high_ptr + offs_p[:, None] * stride_high + offs_high[None, :]
        low_ptrs = low_ptr + offs_p[:, None] * (ROWS * stride_low) + offs_w[None, :]
        acc0 = tl.full((BLOCK_N // ROWS, BLOCK_KW), 0.0, tl.float32)
        acc1, acc2, acc3 = acc0, acc0, acc0
        for w0 in tl.range(w_first, w_stop, BLOCK_KW, num_stages=LOOP_STAGES):
            w_ok = offs_w < w_stop - w0
            tile_ok = p_ok & w_ok[None, :]
            fields = _tile_load(fields_ptrs, tile_ok, EVEN)
            acc0 = _row_products(acc0, _tile_load(low_ptrs, tile_ok, EVEN), fields, x_ptrs, w_ok, BITS, MAN_BITS,
                                 HIGH_WIDTH, X_SCALE, EVEN)
            acc1 = _row_products(acc1, _tile_load(low_ptrs + stride_low, tile_ok, EVEN), fields >> HALF, x_ptrs, w_ok,
                                 BITS, MAN_BITS, HIGH_WIDTH, X_SCALE, EVEN)
            acc2 = _row_products(acc2, _tile_load(low_ptrs + 2 * stride_low, tile_ok, EVEN), fields >> 2 * HALF,
                                 x_ptrs, w_ok, BITS, MAN_BITS, HIGH_WIDTH, X_SCALE, EVEN)
            acc3 = _row_products(acc3, _tile_load(low_ptrs + 3 * stride_low, tile_ok, EVEN), fields >> 3 * HALF,
                                 x_ptrs, w_ok, BITS, MAN_BITS, HIGH_WIDTH, X_SCALE, EVEN)
            x_ptrs += 8 * BLOCK_KW
            fields_ptrs += BLOCK_KW
            low_ptrs += BLOCK_KW
        sum0, sum1 = tl.reduce(acc0, 1, _sum_combine) * unit, tl.reduce(acc1, 1, _sum_combine) * unit
        sum2, sum3 = tl.reduce(acc2, 1, _sum_combine) * unit, tl.reduce(acc3, 1, _sum_combine) * unit
        # rows 4p + r: the first join innermost (as ``_placed_tile``)
        out = tl.join(tl.join(sum0, sum2), tl.join(sum1, sum3)).reshape(BLOCK_N)[None, :]
    elif BLOCK_M == 1:
        x_ptrs = x_ptr + offs_w * 8
        acc = tl.full((BLOCK_N, BLOCK_KW), 0.0, tl.float32)
        if PREFETCH:
            low, high = _plane_words(low_ptrs, high_ptrs, n_ok[:, None] & (offs_w < w_stop - w_first)[None, :],
                                     HIGH_WIDTH, USE_ASM)
        for w0 in tl.range(w_first, w_stop, BLOCK_KW, num_stages=LOOP_STAGES):
            w_ok = offs_w < w_stop - w0
            if PREFETCH:  # the next step's words are in flight during this step's arithmetic
                next_ok = n_ok[:, None] & (offs_w < w_stop - w0 - BLOCK_KW)[None, :]
                low_next, high_next = _plane_words(low_ptrs + BLOCK_KW, high_ptrs + BLOCK_KW, next_ok, HIGH_WIDTH,
                                                   USE_ASM)
            else:
                low, high = _plane_words(low_ptrs, high_ptrs, n_ok[:, None] & w_ok[None, :], HIGH_WIDTH, USE_ASM)
            if GROUP > 0:  # the step's sums, one a word, scaled by their groups' scales
                part = _row_products(tl.full((BLOCK_N, BLOCK_KW), 0.0, tl.float32), low, high, x_ptrs, w_ok, BITS,
                                     MAN_BITS, HIGH_WIDTH, X_SCALE, EVEN, USE_ASM)
                acc += part * _word_units(gscale_ptr, offs_n, n_ok, stride_gs, 8 * w0, w_stop - w0, GROUP, G_UNIT,
                                          8 * BLOCK_KW, EVEN, row_global, SCALE_CODE, SCALE_CODE == 1)
            else:
                acc = _row_products(acc, low, high, x_ptrs, w_ok, BITS, MAN_BITS, HIGH_WIDTH, X_SCALE, EVEN, USE_ASM)
            if PREFETCH:
                low, high = low_next, high_next
            x_ptrs += 8 * BLOCK_KW
            low_ptrs += BLOCK_KW
            high_ptrs += BLOCK_KW
        out = (tl.reduce(acc, 1, _sum_combine) * unit)[None, :]
    else:  # every decoded pair multiplies BLOCK_M rows: (BLOCK_M, BLOCK_N, BLOCK_KW) accumulators
        # The words are loaded as (1, BLOCK_N, BLOCK_KW) tiles, in the accumulator's layout; the activations as 2-D
        # tiles, which go to it through shared memory. In sm_90 SASS at 8 rows and 16 x 64 words that is 872
        # instructions and 34 barriers a kernel; expanding the decoded 2-D weight tiles instead took 1,160 and 50,
        # and activations loaded as 3-D tiles 1,208 and 22 (benchmarks/kernel_sass.py's compiler, Triton 3.9).
        offs_m = tl.arange(0, BLOCK_M)
        m_ok = offs_m < M
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_w[None, :] * 8
        low_ptrs3 = low_ptr + offs_n[None, :, None] * stride_low + offs_w[None, None, :]
        high_ptrs3 = high_ptr + offs_n[None, :, None] * stride_high + offs_high[None, None, :]
        acc3 = tl.full((BLOCK_M, BLOCK_N, BLOCK_KW), 0.0, tl.float32)
        for w0 in tl.range(w_first, w_stop, BLOCK_KW, num_stages=LOOP_STAGES):
            w_ok = offs_w < w_stop - w0
            x_ok = m_ok[:, None] & w_ok[None, :]
            low, high = _plane_words(low_ptrs3, high_ptrs3, n_ok[None, :, None] & w_ok[None, None, :], HIGH_WIDTH,
                                     USE_ASM)
            if GROUP > 0:
                scales = _word_units(gscale_ptr, offs_n, n_ok, stride_gs, 8 * w0, w_stop - w0, GROUP, G_UNIT,
                                     8 * BLOCK_KW, False, row_global, SCALE_CODE, SCALE_CODE == 1)[None, :, :]
            for j in tl.static_range(4):
                first, second = _placed_pair(low, high, j, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
                if GROUP > 0:  # each placed code times its word's group scale, shared by the rows
                    first, second = first * scales, second * scales
                x_first = tl.load(x_ptrs + j, mask=x_ok, other=0.0).to(tl.float32) * X_SCALE
                x_second = tl.load(x_ptrs + j + 4, mask=x_ok, other=0.0).to(tl.float32) * X_SCALE
                acc3 += first * x_first[:, None, :]
                acc3 += second * x_second[:, None, :]
            x_ptrs += 8 * BLOCK_KW
            low_ptrs3 += BLOCK_KW
            high_ptrs3 += BLOCK_KW
        out = tl.reduce(acc3, 2, _sum_combine) * unit
    _finish_products(out, tl.arange(0, BLOCK_M), offs_n, n_ok, M, N, scale_ptr, bias_ptr, out_ptr, stride_om,
                     partial_ptr, count_ptr, tl.program_id(0), tl.program_id(1), HAS_BIAS, SPLIT_K, GATED, ROUND_BF16,
                     ROUND_F16)


@triton.jit
def _word_units(gscale_ptr, offs_n, n_ok, stride_gs, k0, words_left, GROUP: tl.constexpr, G_UNIT: tl.constexpr,
                BLOCK_K: tl.constexpr, EVEN: tl.constexpr, row_global, SCALE_CODE: tl.constexpr,
                GLOBAL: tl.constexpr):
    """The scales of the groups that hold the words of the step from code ``k0`` on (``_group_scales``; GLOBAL: E4M3
    ones times their rows' ``row_global``), times G_UNIT, a word's eight codes lying in one group (GROUP a multiple of
    8): a (BLOCK_N, BLOCK_K / 8) tile, or (BLOCK_N, 1) where the step lies in one group; zero past ``words_left`` and
    off ``n_ok`` (unmasked when EVEN). A step of whole groups loads and decodes each group's scale once and spreads
    it over the group's words (sm_90 SASS: fewer instructions a step than a scale loaded for each word, which a
    step of part groups takes: ``benchmarks/results/kernels_h200.md``, fortieth session)."""
    if GROUP % BLOCK_K == 0:
        units = _group_scales(gscale_ptr, offs_n, k0 // GROUP, n_ok, stride_gs, EVEN, SCALE_CODE)[:, None]
    elif BLOCK_K % GROUP == 0:
        GROUPS: tl.constexpr = BLOCK_K // GROUP
        offs_g = tl.arange(0, GROUPS)
        g_ok = (offs_g * (GROUP // 8) < words_left)[None, :]
        scales = _group_scales(gscale_ptr, offs_n[:, None], (k0 // GROUP + offs_g)[None, :], n_ok[:, None] & g_ok,
                               stride_gs, EVEN, SCALE_CODE)
        units = tl.broadcast_to(scales[:, :, None], (offs_n.shape[0], GROUPS, GROUP // 8)).reshape(
            offs_n.shape[0], BLOCK_K // 8)
    else:
        offs_w = tl.arange(0, BLOCK_K // 8)
        units = _group_scales(gscale_ptr, offs_n[:, None], ((k0 + 8 * offs_w) // GROUP)[None, :],
                              n_ok[:, None] & (offs_w < words_left)[None, :], stride_gs, EVEN, SCALE_CODE)
    if GLOBAL:
        units *= row_global[:, None]
    return units * G_UNIT


@triton.jit
def _row_products(acc, low, high, x_ptrs, w_ok, BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
                  X_SCALE: tl.constexpr, EVEN: tl.constexpr, USE_ASM: tl.constexpr = False):
    """acc + each (row, word) tile element's eight placed codes (``_placed_pair`` of ``low`` and the high fields
    ``high``, spread or interleaved) times the activations at ``x_ptrs`` + 0..7, scaled by X_SCALE."""
    for j in tl.static_range(4):
        x_first = _tile_load(x_ptrs + j, w_ok, EVEN).to(tl.float32) * X_SCALE
        x_second = _tile_load(x_ptrs + j + 4, w_ok, EVEN).to(tl.float32) * X_SCALE
        first, second = _placed_pair(low, high, j, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
        acc += first * x_first[None, :]
        acc += second * x_second[None, :]
    return acc


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop row tiles taller than the M bucket (decode batches take BLOCK_M = 16), the PAIRED configs when K is
    not a multiple of 8 (no whole words), the swapped ones without ``tile_swap_on``, and the swapped and split ones
    above SWAP_MAX_M rows or (split) where a slice would have fewer than two steps."""
    args = {**named_args, **kwargs}
    decode = args["M_BUCKET"] <= SWAP_MAX_M
    swap = tile_swap_on() and decode
    return [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, args["M_BUCKET"])
            and (args["K"] % 8 == 0 or not c.kwargs["PAIRED"]) and (swap or not c.kwargs["SWAP_AB"])
            and (c.kwargs["SPLIT_K"] == 1 or decode and split_fits(args["K"], c.kwargs["BLOCK_K"],
                                                                       c.kwargs["SPLIT_K"]))]


def _tile_even(args: dict) -> bool:
    """Whether every tile of the tensor-core kernel is whole along N and K (EVEN: its PAIRED loop loads the weight
    words unmasked, x's only by row): the config's rows divide N and its steps times SPLIT_K divide K."""
    return args["N"] % args["BLOCK_N"] == 0 and args["K"] % (args["BLOCK_K"] * args["SPLIT_K"]) == 0


_fpx_autotuned = autotune(
    configs=[
        triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PAIRED=paired, SWAP_AB=swap, SPLIT_K=1), num_warps=w,
                      num_stages=s)
        for paired, swap, configs in ((False, False, GPU_CONFIGS), (True, False, GPU_PAIRED_CONFIGS),
                                      (True, True, GPU_SWAP_CONFIGS)) for bm, bn, bk, w, s in configs
    ] + [
        triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PAIRED=paired, SWAP_AB=swap, SPLIT_K=split),
                      num_warps=w, num_stages=s) for bm, bn, bk, w, s, paired, swap, split in GPU_SPLIT_CONFIGS
    ],
    key=["M_BUCKET", "N", "K", "EXP_BITS", "MAN_BITS", "DOT_F32", "VALUED_BF16"],
    prune_configs_by=dict(early_config_prune=_prune_configs),
)(triton.heuristics(dict(EVEN=_tile_even))(_fpx_kernel))
# The tensor-core kernel with scales in groups, tuned on the PAIRED configs (a step's sums scaled where it lies in one
# group, else the words' codes a word at a time).
_fpx_group_autotuned = autotune(
    configs=[c for c in _fpx_autotuned.configs if c.kwargs["PAIRED"]],
    key=["M_BUCKET", "N", "K", "MAN_BITS", "DOT_F32", "VALUED_BF16", "GROUP", "SCALE_CODE"],
    prune_configs_by=dict(early_config_prune=_prune_configs),
)(triton.heuristics(dict(EVEN=_tile_even))(_fpx_kernel))


def split_fits(length: int, step: int, split_k: int) -> bool:
    """Whether a config may split ``length`` (K; the row kernel: its words) into ``split_k`` slices of ``step``-wide
    steps: unsplit always; split, where every slice has at least two steps."""
    return split_k == 1 or length >= 2 * split_k * step


def _prune_row_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """``prune_decode_configs`` of the configs that ``split_fits``, less the prefetching configs for the tensor-core
    form and the interleaved high plane (which have no prefetching path: they would time as their twins), or the one
    config ``PINNED_ROW_CONFIGS`` holds for this device and key. Every BLOCK_N (a power of two, at least
    ROW_MIN_BLOCK_N) holds whole interleaved words' rows."""
    args = {**named_args, **kwargs}
    configs = [c for c in configs if split_fits(args["KW"], c.kwargs["BLOCK_KW"], c.kwargs["SPLIT_K"])]
    kept = prune_decode_configs(configs, named_args, **kwargs)
    if args["MMA"] or args["INTERLEAVED"]:
        kept = [c for c in kept if not c.kwargs["PREFETCH"]] or kept
    return keep_pinned(kept, PINNED_ROW_CONFIGS, ROW_TUNING_KEY, args, _row_fields, "x_ptr")


def _prune_row_group_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The group configs whose K slices ``split_fits``, as ``prune_decode_configs`` keeps them."""
    args = {**named_args, **kwargs}
    configs = [c for c in configs if split_fits(args["KW"], c.kwargs["BLOCK_KW"], c.kwargs["SPLIT_K"])]
    return prune_decode_configs(configs, named_args, **kwargs)


def _row_fields(config: triton.Config) -> tuple:
    """A row-kernel config as ``PINNED_ROW_CONFIGS`` names it."""
    k = config.kwargs
    return (k["BLOCK_N"], k["BLOCK_KW"], k["PREFETCH"], k["LOOP_STAGES"], k["SPLIT_K"], config.num_warps,
            config.num_stages, config.maxnreg)


def _row_even(args: dict) -> bool:
    """Whether every row kernel tile is whole (EVEN: no masks in its loop): the config's rows divide N and its steps
    times SPLIT_K divide the words of a row."""
    return args["N"] % args["BLOCK_N"] == 0 and args["KW"] % (args["BLOCK_KW"] * args["SPLIT_K"]) == 0


def high_rows(bits: int) -> int:
    """How many weight rows' high fields one interleaved 32-bit word holds (``interleave_high``): 2 for FP6, 4 for
    FP5."""
    return 4 // HIGH_PLANE_WIDTH[bits]


def interleave_high(high_words: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, KW) high-plane words of a 5- or 6-bit weight (one per low word: 8 fields of 1 or 2 bits) -> the row kernel's
    (N / R, KW) int32 layout, R = ``high_rows(bits)``: word (p, w) holds the fields of word w of rows R p + r for
    r < R, those of codes 0-3 of row R p + r at bit r * 4 * width and those of codes 4-7 at bit 16 + r * 4 * width.
    ``_placed_bits`` masks the fields of one code pair in both halves, so row R p + r's fields are the word shifted
    right by r * 4 * width: no unpacking of 16-bit words and no ``_spread_high``, and each thread keeps the rows it
    multiplies by the same activations."""
    width = HIGH_PLANE_WIDTH[bits]
    rows_per_word, half = 4 // width, 4 * width
    rows, kw = high_words.shape
    if rows % rows_per_word:
        raise ValueError(f"interleaving the high plane of {bits}-bit codes takes a multiple of {rows_per_word} rows, "
                         f"got {rows}")
    parts = (high_words.to(torch.int64) & ((1 << 2 * half) - 1)).reshape(rows // rows_per_word, rows_per_word, kw)
    shifts = (torch.arange(rows_per_word, device=high_words.device) * half)[:, None]
    word = (((parts & ((1 << half) - 1)) << shifts) | ((parts >> half) << (16 + shifts))).sum(1)
    return (word - ((word >> 31) << 32)).to(torch.int32)  # the top bit as the sign of an int32


_interleaved_planes = WeakIdKeyDictionary()


def interleaved_high(high: torch.Tensor, bits: int) -> torch.Tensor:
    """``interleave_high`` of the high plane ``high``'s words, computed once per plane and kept while the plane lives
    (again after the plane is written in place, which moves its version counter)."""
    cached = _interleaved_planes.get(high)
    if cached is None or cached[0] != high._version:
        cached = (high._version, interleave_high(_words(high, HIGH_WORD_DTYPES[HIGH_PLANE_WIDTH[bits]]), bits))
        _interleaved_planes[high] = cached
    return cached[1]


_fpx_row_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=prefetch, LOOP_STAGES=1, SPLIT_K=1), num_warps=w,
                           num_stages=st) for bn, bkw, w, st, prefetch in ROW_CONFIGS]
    + [triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=False, LOOP_STAGES=stages, SPLIT_K=1), num_warps=w,
                     num_stages=stages) for bn, bkw, w, stages in ROW_PIPELINED_CONFIGS]
    + [triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=prefetch, LOOP_STAGES=1, SPLIT_K=split), num_warps=w,
                     num_stages=st) for bn, bkw, w, st, prefetch, split in ROW_SPLIT_CONFIGS]
    + [triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=False, LOOP_STAGES=1, SPLIT_K=split), num_warps=w,
                     num_stages=st, maxnreg=cap) for bn, bkw, w, st, split, cap in ROW_CAPPED_CONFIGS],
    key=list(ROW_TUNING_KEY),
    prune_configs_by=dict(early_config_prune=_prune_row_configs),
)(triton.heuristics(dict(EVEN=_row_even))(_fpx_row_kernel))
# The row kernel with scales in groups, tuned on ROW_GROUP_CONFIGS.
_fpx_row_group_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_N=bn, BLOCK_KW=bkw, PREFETCH=False, LOOP_STAGES=1, SPLIT_K=split), num_warps=w,
                           num_stages=st) for bn, bkw, w, st, split in ROW_GROUP_CONFIGS],
    key=[*ROW_TUNING_KEY, "GROUP", "SCALE_CODE"],
    prune_configs_by=dict(early_config_prune=_prune_row_group_configs),
)(triton.heuristics(dict(EVEN=_row_even))(_fpx_row_kernel))


def tile_swap_on() -> bool:
    """Whether the tensor-core kernel's tuner takes the swapped tiles (``GPU_SWAP_CONFIGS``) among its candidates
    for decode batches (``PTQ_FPX_SWAP``: 1 by default; 0 leaves the unswapped ones only)."""
    return env_switch("PTQ_FPX_SWAP", True, {"0": "the unswapped tiles only",
                                             "1": f"the swapped ones among the tuner's candidates up to {SWAP_MAX_M} "
                                                  f"rows, the default"})


def tile_lane_on() -> bool:
    """Whether the swapped tiles place half values in the dot's register pairs (``_lane_tile``; ``PTQ_FPX_LANE``:
    1 by default; 0 K-ordered tiles, ``_valued_tile``)."""
    return env_switch("PTQ_FPX_LANE", True, {"1": "codes in the dot's register pairs, the default",
                                             "0": "K-ordered tiles"})


def row_interleave_on(bits: int) -> bool:
    """Whether one row of ``bits``-bit codes on the fp32 form reads the interleaved high plane (``interleave_high``):
    for INTERLEAVED_BITS (``PTQ_FPX_INTERLEAVE``: 1 by default; 0 the 16- and 8-bit high words of the plane)."""
    return bits in INTERLEAVED_BITS and env_switch(
        "PTQ_FPX_INTERLEAVE", True, {"1": f"the interleaved high plane for {', '.join(map(str, INTERLEAVED_BITS))}"
                                          f"-bit codes, the default", "0": "the high plane's own words"})


def row_mma_on() -> bool:
    """Whether one bfloat16 activation row takes the row kernel's tensor-core form (``_quad_mma``;
    ``PTQ_FPX_MMA``: 0 by default, the fp32 form, which was as fast on the H200; 1 takes it)."""
    return env_switch("PTQ_FPX_MMA", False, {"0": "the row kernel's fp32 multiply-adds, the default",
                                             "1": "its tensor-core form for one bfloat16 row"})


def _m_bucket(m: int) -> int:
    """Autotuning key for M: powers of two from 16 to 4096 (decode batches share one)."""
    return min(max(triton.next_power_of_2(m), 16), 4096)


def takes_row_kernel(m: int, k: int) -> bool:
    """Whether ``fpx_matmul_triton(..., row_kernel=None)`` runs these rows on the CUDA-core row kernel: up to
    ROW_DEFAULT_MAX_M rows with K a multiple of 8, on a GPU (the interpreter keeps the tensor-core kernel)."""
    return m <= ROW_DEFAULT_MAX_M and k % 8 == 0 and not INTERPRET


def _row_mma(m: int, dtype: torch.dtype, group: int) -> bool:
    """Whether the row kernel takes these rows in its tensor-core form (MMA): one bfloat16 row, scales per channel,
    ``row_mma_on``."""
    return m == 1 and dtype == torch.bfloat16 and row_mma_on() and not group


def _row_interleaves(m: int, n: int, bits: int) -> bool:
    """Whether one row on the row kernel's fp32 form is to read the high plane interleaved (``interleave_high``):
    ``row_interleave_on`` for these bits, and N whole words of rows (the plane must also count its in-place writes:
    ``fpx_matmul_triton``)."""
    return m == 1 and row_interleave_on(bits) and n % high_rows(bits) == 0


def _row_gates(m: int, n: int, dtype: torch.dtype, bits: int, group: int) -> bool:
    """Whether the row kernel writes a gated product's silu(gate) * up itself (GATED): in its fp32 forms; where it
    takes the tensor-core or the interleaved form (FP5's one row, 23 % faster than without), gating follows the
    product. (No tensor is asked anything: a compiled caller traces this.)"""
    return not _row_mma(m, dtype, group) and not _row_interleaves(m, n, bits)


def gates_in_kernel(m: int, n: int, k: int, dtype: torch.dtype, bits: int, group: int) -> bool:
    """Whether ``fpx_matmul_triton(..., gated=True)`` with its defaults writes silu(gate) * up in the row kernel's
    epilogue for these rows of N weight rows."""
    return takes_row_kernel(m, k) and _row_gates(m, n, dtype, bits, group)


def check_fixed_config(config: triton.Config, row_kernel: bool, k: int) -> None:
    """A clear error for a fixed config that names too little for its kernel, splits K too far or places words
    that K does not hold."""
    needed = ("BLOCK_N", "BLOCK_KW", "PREFETCH", "LOOP_STAGES", "SPLIT_K") if row_kernel \
        else ("BLOCK_M", "BLOCK_N", "BLOCK_K", "PAIRED", "SWAP_AB", "SPLIT_K")
    if any(name not in config.kwargs for name in needed):
        raise ValueError(f"config fixes the {'row' if row_kernel else 'tensor-core'} kernel's config: it names "
                         f"{needed}, got {config.kwargs}")
    if row_kernel and not (config.kwargs["BLOCK_N"] >= ROW_MIN_BLOCK_N
                           and 1 <= config.kwargs["SPLIT_K"] <= ROW_MAX_SPLIT_K):
        raise ValueError(f"config: the row kernel's BLOCK_N at least {ROW_MIN_BLOCK_N} and SPLIT_K 1 to "
                         f"{ROW_MAX_SPLIT_K}, got {config.kwargs}")
    if not row_kernel and (config.kwargs["SWAP_AB"] and not config.kwargs["PAIRED"]
                           or config.kwargs["PAIRED"] and k % 8):
        raise ValueError(f"config: SWAP_AB takes the PAIRED path, and PAIRED takes K a multiple of 8; got K={k} and "
                         f"{config.kwargs}")
    if not row_kernel and not 1 <= config.kwargs["SPLIT_K"] <= TILE_MAX_SPLIT_K:
        raise ValueError(f"config: the tensor-core kernel's SPLIT_K 1 to {TILE_MAX_SPLIT_K}, got {config.kwargs}")


def launch_options(config: triton.Config) -> dict:
    """A fixed config's launch options: warps, stages and, where it caps them, registers a thread (``maxnreg``)."""
    options = dict(num_warps=config.num_warps, num_stages=config.num_stages)
    if config.maxnreg is not None:
        options["maxnreg"] = config.maxnreg
    return options


def kernel_fields(element: str, bits: int) -> tuple[int, int, int]:
    """The kernels' EXP_BITS, MAN_BITS and EXP_BIAS of a weight-only element (``reference.fpx_element``): an FP
    element's fields; INT4's (0, INT4_LEVELS, 127), whose bias makes each power of two 2^(127 - bias) the kernels
    scale placed codes by 1, the INT4 placement being the level itself."""
    fmt = fpx_element(element, bits)
    if element == "int4":
        return 0, INT4_LEVELS.value, 127
    return fmt.exp_bits, fmt.man_bits, fmt.default_bias


def takes_dequantized(m: int, x_dtype: torch.dtype, out_dtype: torch.dtype, bias: torch.Tensor | None) -> bool:
    """Whether ``fpx_matmul_triton(..., dequantize=None)`` multiplies a dequantized weight by cuBLAS: from
    DEQUANT_MIN_M rows, half-precision x, its dtype out and a bias of it (cuBLAS rounds once, in x's dtype)."""
    return (m >= DEQUANT_MIN_M and x_dtype in (torch.float16, torch.bfloat16) and out_dtype == x_dtype
            and (bias is None or bias.dtype == x_dtype))


def fpx_matmul_triton(
    x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor, *,
    element: str, bits: int, bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None, row_kernel: bool | None = None, config: triton.Config | None = None,
    dequantize: bool | None = None, group: int = 0, w_global_scale: torch.Tensor | None = None, gated: bool = False,
) -> torch.Tensor:
    """The Triton twin of ``reference.fpx_matmul_ref`` (x 2-D); writes into ``out`` (M, N) when given.

    ``row_kernel``: whether the rows run on ``_fpx_row_kernel`` (CUDA cores) rather than the
    tensor-core kernel; None takes it for up to ROW_DEFAULT_MAX_M rows on a GPU. True with
    more than ROW_MAX_M rows is an error. ``config`` replaces the autotuner's pick or the interpreter's fixed
    config of the kernel that runs: BLOCK_N, BLOCK_KW, PREFETCH, LOOP_STAGES and SPLIT_K for the row kernel; BLOCK_M,
    BLOCK_N, BLOCK_K, PAIRED, SWAP_AB and SPLIT_K for the tensor-core one; warps, stages and ``maxnreg``.
    ``dequantize``: whether the weight is dequantized into x's dtype (``dequant.dequantize_triton``: each weight times
    its scale rounded once, the weight a fake-quantized model of that dtype holds) and multiplied by
    ``torch.mm`` (cuBLAS), out in x's dtype (None: ``takes_dequantized``, from DEQUANT_MIN_M rows).
    ``group``: INT4 or E2M1 scales per ``group`` codes along K, ``w_scale`` (N, K // group): the row kernel takes
    them at its rows (each word's sums times its group's scale), the tensor-core kernel's PAIRED tiles (the placed
    codes times their group's scale, rounded to x's dtype as the dequantized weight is) other rows below
    DEQUANT_MIN_M; the scales as a checkpoint encodes them (NVFP4's E4M3 with their rows' ``w_global_scale``,
    MXFP4's E8M0) are read so, a quarter of fp32's bytes, and decoded as they load; on the tensor-core kernel with
    bfloat16 x they scale the codes' values exactly, the global scales multiplying the sums (``_fpx_kernel``).
    ``gated``: the weight rows are an MLP's gate rows then its up rows, and the result (M, N / 2) is
    ``reference.silu_mul_ref`` of the product in the output dtype (``out`` (M, N / 2) when given): written by the
    row kernel's epilogue where it runs in its fp32 forms (``_fpx_row_kernel``'s GATED), else computed after the
    product.
    """
    check_fpx_args(x, planes, w_scale, element, bits, bias, out_dtype, group, w_global_scale, gated)
    if row_kernel and not (1 <= x.shape[0] <= ROW_MAX_M and x.shape[1] % 8 == 0):
        raise ValueError(f"the row kernel takes 1 to {ROW_MAX_M} activation rows and K a multiple of 8, got "
                         f"{x.shape[0]} rows and K={x.shape[1]}")
    m, k = x.shape
    if dequantize is None:
        dequantize = row_kernel is None and config is None and takes_dequantized(m, x.dtype, out_dtype or x.dtype,
                                                                                 bias)
    use_row_kernel = not dequantize and bool(row_kernel or (row_kernel is None and takes_row_kernel(m, k)))
    if gated and not (use_row_kernel and _row_gates(m, planes[0].shape[0], x.dtype, bits, group)):
        check_out(out, m, planes[0].shape[0] // 2, out_dtype or x.dtype)
        product = fpx_matmul_triton(x, planes, w_scale, element=element, bits=bits, bias=bias, out_dtype=out_dtype,
                                    row_kernel=row_kernel, config=config, dequantize=dequantize, group=group,
                                    w_global_scale=w_global_scale)
        return silu_mul_ref(product) if out is None else out.copy_(silu_mul_ref(product))
    if dequantize:
        return _dequantized_product(x, planes, w_scale, element, bits, bias, out_dtype, out, row_kernel, config,
                                    group, w_global_scale)
    exp_bits, man_bits, exp_bias = kernel_fields(element, bits)
    if config is not None:
        check_fixed_config(config, use_row_kernel, k)
        if group and not use_row_kernel and not config.kwargs["PAIRED"]:
            raise ValueError(f"config: scales in groups take the tensor-core kernel's PAIRED path, got "
                             f"{config.kwargs}")
    n = planes[0].shape[0]
    out_dtype = out_dtype or x.dtype
    width = n // 2 if gated else n
    check_out(out, m, width, out_dtype)
    if out is None:
        out = torch.empty((m, width), dtype=out_dtype, device=x.device)
    if out.numel() == 0:
        return out
    x = x.contiguous()
    low = planes[0].contiguous()
    high = planes[1].contiguous() if len(planes) > 1 else low
    # In groups the scales go to the kernels as group scales (below), the epilogue's undo GROUP_UNIT_SHIFT's.
    shift = group_unit_shift(exp_bias) if group else 0
    scale = _filled(x.device, n, 2.0 ** (0 if use_row_kernel else shift)) if group else \
        w_scale.float().reshape(n).contiguous()
    bias_arg = bias.contiguous() if bias is not None else out  # (no bias: never read)
    # The planes as words of 8 codes (the row kernel's and the tile kernel's PAIRED path), when K allows.
    low_words, high_words = low, high
    if k % 8 == 0:
        low_words = _words(low)
        high_words = _words(high, HIGH_WORD_DTYPES[HIGH_PLANE_WIDTH[bits]]) if len(planes) > 1 else low_words
    args = (
        x, low, high, low_words, high_words, scale, bias_arg, out,
        m, n, k, _m_bucket(m), x.stride(0), low.stride(0), high.stride(0), low_words.stride(0),
        high_words.stride(0), out.stride(0),
    )
    dot_f32 = INTERPRET or x.dtype == torch.float32
    flags = dict(EXP_BITS=exp_bits, MAN_BITS=man_bits, EXP_BIAS=exp_bias,
                 HIGH_WIDTH=HIGH_PLANE_WIDTH[bits], HAS_BIAS=bias is not None,
                 DOT_F32=dot_f32, W_UNIT=2.0 ** (127 - exp_bias),
                 VALUED_BF16=x.dtype == torch.bfloat16, UNIT_EXP=127 - exp_bias, USE_ASM=not INTERPRET,
                 LANE_PAIRS=tile_lane_on(),
                 HIGH_WORD_PAIRS=bits == 6 and k % 16 == 0 and high_words.data_ptr() % 4 == 0)
    # The group scales (in their encoding: ``_group_scales``) take the placements' power of two (G_UNIT).
    group_flags = dict(GROUP=group, G_UNIT=2.0 ** (127 - exp_bias - shift), gglobal_ptr=w_global_scale,
                       **group_scale_args(w_scale)) if group else {}
    fixed, launch = ({}, {}) if config is None else (config.kwargs, launch_options(config))
    if use_row_kernel:
        if INTERPRET and not fixed:
            fixed = INTERPRET_ROW_CONFIG
        partials, counters = _split_k_slots(x.device, m, n, fixed["SPLIT_K"] if fixed else ROW_MAX_SPLIT_K,
                                            triton.cdiv(n, ROW_MIN_BLOCK_N))
        mma = _row_mma(m, x.dtype, group)
        # A plane made under torch.inference_mode counts no in-place writes: an interleaved copy of it could go stale.
        interleaved = not mma and _row_interleaves(m, n, bits) and not high.is_inference()
        row_high = interleaved_high(high, bits) if interleaved else high_words
        # In groups the placements' power of two goes with the group scales (G_UNIT), less GROUP_UNIT_SHIFT's.
        unit_exp = shift if group else 127 - exp_bias
        row_args = (x, low_words, row_high, scale, bias_arg, out, partials, counters, m, n, k // 8, x.stride(0),
                    out.stride(0), low_words.stride(0), row_high.stride(0), 2.0 ** (unit_exp - ROW_X_SCALE_EXP))
        row_flags = dict(BITS=bits, MAN_BITS=man_bits, HIGH_WIDTH=HIGH_PLANE_WIDTH[bits], HAS_BIAS=bias is not None,
                         X_SCALE=2.0 ** ROW_X_SCALE_EXP, BLOCK_M=triton.next_power_of_2(m), MMA=mma,
                         UNIT_EXP=127 - exp_bias, USE_ASM=not INTERPRET, INTERLEAVED=interleaved, GATED=gated,
                         ROUND_BF16=out_dtype == torch.bfloat16, ROUND_F16=out_dtype == torch.float16)
        row_flags.update(group_flags)

        def programs(block_n: int) -> int:  # a gated program takes BLOCK_N / 2 output columns: as many rows of each
            return triton.cdiv(width, block_n // 2) if gated else triton.cdiv(n, block_n)

        if fixed:
            even = _row_even(dict(N=n, KW=k // 8, **fixed))
            _fpx_row_kernel[(programs(fixed["BLOCK_N"]), fixed["SPLIT_K"])](*row_args, **row_flags, **fixed,
                                                                            EVEN=even, **launch)
        else:
            tuned = _fpx_row_group_autotuned if group else _fpx_row_autotuned
            tuned[lambda meta: (programs(meta["BLOCK_N"]), meta["SPLIT_K"])](*row_args, **row_flags)
    else:
        if INTERPRET and not fixed:
            paired = (INTERPRET_CONFIG["PAIRED"] or bool(group)) and k % 8 == 0
            fixed = {**INTERPRET_CONFIG, "PAIRED": paired, "SWAP_AB": INTERPRET_CONFIG["SWAP_AB"] and paired}
        if group:  # (a word at a time the weights times their scales are rounded to x's dtype, by hand in fp32 dots)
            flags.update(group_flags, ROUND_BF16=dot_f32 and x.dtype == torch.bfloat16,
                         ROUND_F16=dot_f32 and x.dtype == torch.float16)

        def grid(meta: dict) -> tuple[int, int, int]:
            return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

        splits = fixed["SPLIT_K"] if fixed else TILE_MAX_SPLIT_K if m <= SWAP_MAX_M else 1
        partials, counters = _split_k_slots(x.device, m, n, splits, triton.cdiv(m, 16) * triton.cdiv(n, 16))
        if fixed:
            _fpx_kernel[grid(fixed)](*args, **flags, **fixed, **launch, partial_ptr=partials, count_ptr=counters,
                                     EVEN=_tile_even(dict(N=n, K=k, **fixed)))
        else:
            tuned = _fpx_group_autotuned if group else _fpx_autotuned
            tuned[grid](*args, **flags, partial_ptr=partials, count_ptr=counters)
    return out


def _dequantized_product(x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor,
                         element: str, bits: int, bias: torch.Tensor | None, out_dtype: torch.dtype | None,
                         out: torch.Tensor | None, row_kernel: bool | None, config: triton.Config | None,
                         group: int, w_global_scale: torch.Tensor | None) -> torch.Tensor:
    """``fpx_matmul_triton(..., dequantize=True)``: x @ the dequantized weight (+ bias), by ``torch.mm``."""
    if row_kernel or config is not None or (out_dtype or x.dtype) != x.dtype or (
            bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"a dequantized weight is multiplied by torch.mm in x's dtype ({x.dtype}): pass no "
                         f"row_kernel or config, an out_dtype and a bias of x's dtype (got out_dtype={out_dtype}, "
                         f"bias {None if bias is None else bias.dtype}), or dequantize=False for the kernels")
    from .dequant import dequantize_triton  # late: dequant imports this module's decoding helpers

    check_out(out, x.shape[0], planes[0].shape[0], x.dtype)
    weight = dequantize_triton(planes, w_scale, element=element, bits=bits, group=group, dtype=x.dtype,
                               global_scale=w_global_scale)
    if bias is None:
        return torch.mm(x, weight.T, out=out)
    return torch.addmm(bias, x, weight.T, out=out)


def group_unit_shift(exp_bias: int) -> int:
    """The power of two (``GROUP_UNIT_SHIFT``) that scales in groups leave to the sums: none for INT4, whose
    placements are their levels."""
    return 0 if exp_bias == 127 else GROUP_UNIT_SHIFT


_FILLED: dict[tuple[torch.device, int, float], torch.Tensor] = {}


def _filled(device: torch.device, n: int, value: float) -> torch.Tensor:
    """A kept (n,) fp32 tensor of ``value`` on ``device``: the kernels' per-channel scales under group scales."""
    key = (device, n, value)
    if key not in _FILLED:
        _FILLED[key] = torch.full((n,), value, dtype=torch.float32, device=device)
    return _FILLED[key]


def _split_k_slots(device: torch.device, m: int, n: int, splits: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-K's unscaled partial sums, a (splits, m, n) fp32 slot for each slice (every slot written before it is
    read; the tuner's split is not known before its launch, so ``splits`` is the most it may pick; unsplit, one
    element, never read), and ``tiles`` zeroed tile counters (``w4a4_gemv.split_k_buffer``)."""
    shape = (splits, m, n) if splits > 1 else (1,)
    return torch.empty(shape, dtype=torch.float32, device=device), split_k_buffer(device, 0, tiles, 1)[1]
