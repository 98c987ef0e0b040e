#!/usr/bin/env bash
# The GPU measurements behind benchmarks/results/*_h200.* and *_h100.*, one section per call of at most ten minutes;
# each file name ends in the GPU it ran on (GPU: h100 or h200 from nvidia-smi, else gpu).
# usage: OUT=DIR [SMOLLM2=DIR DATA=DIR] bash benchmarks/gpu_suite.sh SECTION...
#   kernels    kernel_check (compiled kernels against their twins), then kernel_bench (Llama-3-8B shapes)
#   calib      FlatQuant calibration speed on Llama-3-8B- and SmolLM2-shaped random blocks (issue 6)
#   model      bench_model on a random Llama-3-8B: prefill (eager and compiled graph), compiled CUDA-graph decode of
#              256 tokens after the 2048-token prefill, as issue 10 asks (earlier runs decoded 128); each
#              mode and batch compiles its step (about a minute), so the modes take two calls: MODES=bf16,w4a4,w4a4kv4
#              (the default), then MODES=bf16,w4a16,fp6,fp5,bf16_eager OUT=another folder; PREFILL_BATCHES (default
#              1,4; issue 10 asks 1,4,16) and DECODE_BATCHES (default 1,8,64) split a mode across calls, NAME names
#              the result file, HF_GENERATE=1 adds HF generate's bf16 decode (labelled, issue 10);
#              benchmarks/model_table.py merges the calls' JSON files into one table
#   decode     decode-sized kernels (M = 1, 8, 16) and bf16 / W4A4 compiled CUDA-graph decode at batch 1 and 8;
#              first the decode attention (bf16 and packed KV4), the K/V write kernel and w4a4_linear checked
#              against their twins (issues 9, 10)
#   fpx        the FPx weight-only kernels: checked against their twins, FP6 E3M2 timed at M = 1, 8, 16 and 128
#              (autotuned picks named; every element autotuning its own kernels did not fit: 230 s for one
#              shape), and a compiled FP6 decode step profiled (issue 10)
#   fpx_mma    the FPx row kernel's tensor-core form (PTQ_FPX_MMA=1) checked against the twin, FP6 E3M2 at M = 1
#              timed in both forms, then bf16 / FP6 compiled CUDA-graph decode at batch 1 on it (issue 10)
#   fpx_split  the FPx row kernel with K split among programs: forced split configs checked against the twin, FP6
#              E3M2 at M = 1 timed with the split configs among the tuner's candidates, then bf16 / FP6 compiled
#              CUDA-graph decode at batch 1 (issue 10)
#   fpx_swap   the FPx tensor-core kernel's swapped PAIRED tiles (weights as wgmma's register operand) forced and
#              checked against the twin, FP6 E3M2 at M = 8, 16 and 64 timed with them among the tuner's candidates
#              (PTQ_FPX_SWAP=1), then bf16 / FP6 compiled CUDA-graph decode at batch 8 (issue 10)
#   fpx_tile_split  the FPx tensor-core kernel's tiles with K split among programs (and swapped) forced and checked
#              against the twin, then FP6 E3M2 timed at M = 8, 16 and 64 at the five Llama-3-8B decode shapes (fused
#              q/k/v and gate/up included, so that the picks it leaves in triton_autotune.tgz serve fpx_b8) (issue 10)
#   fpx_tile_rows  the FPx tensor-core kernel's tiles (paired, swapped, split) forced and checked against the twin,
#              then FP6 E3M2 timed at M = 8, 16, 64 and 128 at the five Llama-3-8B decode shapes (issue 10: the FPx
#              GEMM faster than bf16 at 1-128 rows)
#   fpx_f16    the FPx tensor-core kernel's tiles forced and checked against the twin (swapped ones of every element
#              in bfloat16 and fp16 rows), then FP6 E3M2 x fp16 against fp16 torch.matmul at M = 1, 16, 64 and 128 at
#              the five Llama-3-8B decode shapes (issue 10: faster than fp16 at 1-128 rows)
#   fpx_lane_fp5  FP5 E2M2 x bf16 at M = 16 and 128 (4096x4096, 28672x4096) with the codes in the dot's register
#              pairs (PTQ_FPX_LANE=1) and in K order (0) (issue 10)
#   fpx_ncu    the FPx row kernel under Nsight Compute at one FP6 E3M2 row (gemv_ncu.py --kernel fpx: the split and
#              unsplit picks, with and without prefetching; then the tensor-core form), then FP6 E3M2 at M = 1 timed
#              with the tensor-core form (PTQ_FPX_MMA=1) and the split configs among the tuner's candidates (issue 10)
#   fpx_tile_ncu  the FPx tensor-core tile kernel under Nsight Compute at boost clocks (--clock-control none, as the
#              timings run): FP6 E3M2 x bf16, gemv_ncu.py --kernel fpx_tile's default tiles at 64 rows of 14336x4096
#              and 128 rows of 4096x4096 (issue 10)
#   fpx_capped the FPx row kernel's register-capped configs (maxnreg) under Nsight Compute beside their uncapped
#              twins, with the warps' stall reasons, then FP6 E3M2 at M = 1 timed at the five Llama-3-8B decode shapes
#              with them among the tuner's candidates (its picks, in triton_autotune.tgz, serve fpx_b1) (issue 10)
#   fpx_interleaved  the FPx row kernel at one row (FP5 on the interleaved high plane, INTERLEAVED_BITS): autotuned
#              picks and forced split configs checked against the twin, then FP6 E3M2 at M = 1 at the five Llama-3-8B
#              decode shapes and FP5 E2M2 at two, timed (the picks, in triton_autotune.tgz, serve fpx_b1); with FP6 in
#              INTERLEAVED_BITS too it gave the rejected FP6 tables of kernels_h200.md's eighteenth run (issue 10)
#   fpx_interleave_ab  FP5 E2M2 at M = 1 with the interleaved high plane (PTQ_FPX_INTERLEAVE=1) and without (0),
#              and FP6 E3M2 on its own words, at the Llama-3-8B decode shapes (issue 10)
#   fpx_mma_capped  FP6 E3M2 at M = 1 at the Llama-3-8B decode shapes on the row kernel's tensor-core form
#              (PTQ_FPX_MMA=1), then its fp32 form, in one call, the register-capped configs among both tuners'
#              candidates (issue 10)
#   fpx_prmt   the FPx kernels with FP6's high-plane words spread by PTX prmt (the row kernel, its tensor-core form and
#              the tile kernel) checked against their twins, then FP6 E3M2 at M = 1 timed at the five Llama-3-8B decode
#              shapes; then MODES=fp6,bf16 NAME=fp6_prmt fpx_b1 times the decode step (issue 10)
#   fpx_b1     bf16 / FP6 compiled CUDA-graph decode at batch 1, 256 tokens: FP6 E3M2 with lm_head in bf16 and in FP6
#              (fp6_head), FP6 E2M3 (MODES; NAME names the result file; issue 10)
#   fpx_b8     bf16 / FP6 compiled CUDA-graph decode at batch 8 (MODES; issue 10)
#   fpx_gated  the row kernel's gated products (silu(gate) * up in its epilogue, models.gated_mlp) checked, then
#              FP6 / bf16 (MODES) compiled CUDA-graph decode at batch 1, 256 tokens, gated (the default), and FP6
#              (UNGATED_MODES) with PTQ_FPX_GATED=0 (HF's MLP forward) in a second process (issue 10)
#   decode_b8  W4A4KV4 and bf16 (MODES) compiled CUDA-graph decode at batch 8, the tensor-core decode kernel's pinned
#              8-row configs (issue 10)
#   gemv       the W4A4 decode kernel on dp4a activation bytes: w4a4_linear checked against its twin, the
#              decode-sized kernels timed at M = 1 and 8 (INT4, E2M1), a compiled W4A4KV4 decode step profiled
#              (issues 9, 10)
#   decode_b1  bf16 against W4A4KV4 (MODES) compiled CUDA-graph decode at batch 1, 256 tokens (issue 10)
#   rounding   the quantizers a compiled decode step compiles (KV4 per head, activations per token) against the
#              same quantizers run eagerly, then a compiled W4A4KV4 decode step profiled (issue 10)
#   prefill_graph  bench_model's prefill (BATCHES, default 1) eager and replayed from a compiled CUDA graph, bf16 /
#              W4A4 / W4A4KV4 (MODES) (issue 10)
#   prefill_profile  the GPU time of each kernel of bench_model's eager prefill (BATCH, default 1; MODES, default
#              w4a4,w4a4kv4), to find what KV4 adds to it (issue 10)
#   gemv_fold  the one-row decode kernels timed inside a stream of 20 calls (L2 flushed), with the folded-accumulator
#              configs among the autotuner's candidates (issue 9)
#   profile    the GPU time of each kernel of one compiled decode step, bf16 / W4A4 / W4A4KV4, and the
#              autotuned configs (issue 10); BATCH=8 for batch-8 decode
#   fpx_prefill  the FPx prefill path and the W4A16 weights' dequantization checked (kernel_check --only
#              fpx_dequantized,dequant), then FPx weight-only at prefill
#              rows (MS, default 512-8192; SHAPES): the dequantized weight times cuBLAS
#              (the default from fpx_gemm.DEQUANT_MIN_M rows) beside the tile kernel, FP6 E3M2, every output checked;
#              then the FP6 / FP5 / bf16 (MODES) prefill at batch 1 and 4, eager and graph-replayed (issue 10)
#   w4a16_int4 INT4 weights per channel on the FPx kernels (W4A16): checked against the twins with the FP elements,
#              timed at 1-64 rows beside E2M1, then bf16 / W4A16 INT4 per channel and in groups of 128 (MODES)
#              compiled CUDA-graph decode at batch 1
#   w4a16_groups  INT4 / E2M1 weights with scales in groups (W4A16: GPTQ's g128, NVFP4's 16, MXFP4's 32) checked
#              (kernel_check --only fpx_groups), timed at 1-256 rows (MS; FORMATS, NVFP4 and MXFP4 with their scales
#              encoded beside E2M1 g16 with fp32 ones) beside the dequantized weight times cuBLAS
#              (the default before the tensor-core kernel took groups), then bf16 / W4A16 INT4 g128 / NVFP4 (MODES)
#              compiled CUDA-graph decode at batch 8 (issue 10)
#   decode_planes  FP4 W4A4KV4 and bf16 (MODES) compiled CUDA-graph decode at batch 8 and 16, E2M1 decode rows on
#              E4M3 planes (the default since decode_rows_e4m3_e2m1_h200.md) (issues 9, 10)
#   targets9   issue 9's decode-size target measured again after the re-timing autotuner (quant_kernels/autotuning.py):
#              the W4A4 kernels and linears at M = 1 and 16 (MS; INT4, E2M1; their default paths only) against cuBLAS
#              bf16, each a lone CUDA-graph replay, then each inside a stream of 20 calls (without a lone replay's 5 µs
#              launch floor, as in a captured model step); MS=128,512 NAME=128_512_ the issue's middle rows, the
#              packed kernel beside the linear w4a4_linear takes there (int8 / e4m3); FORMATS=nvfp4,mxfp4 the
#              group-scaled W4A4 formats, the packed kernel beside their dequantized path
#   targets9_prefill  issue 9's prefill targets so: prefill_bench at M = 2048 and 8192 (MS) for INT4 and E2M1
#              weights (ELEMENTS; SHAPES), kernels and whole linears against bf16 and cuBLAS's FP8 GEMM: the default
#              path's only (ALL_PATHS=1: every form, each autotuned, which cut a cold call at two shapes of four);
#              MS=128,512 the middle rows, on the int8 path from 65 rows (quant_kernels.INT8_MIN_ROWS)
#   targets10  issue 10's FPx target measured again after the re-timing autotuner: FP6 E3M2 weight-only at 1, 64
#              and 128 rows (MS) at the five Llama-3-8B decode shapes against torch bf16, every output checked
#   targets_flush  the kernel targets that the L2 flush moves, timed with it by a write (zero_, every result before
#              2026-12-07) and by a read (the default since): the W4A4 kernels and linears at M = 1 and 16 (INT4, E2M1;
#              default paths) and FP6 E3M2 weight-only at 128 rows (DTYPE fp16 or bf16 rows), 4096x4096 and 6144x4096
#              (SHAPES), each inside a stream of 20 calls; the first step (380 s) autotunes, the second (200 s)
#              reads the picks back (issues 9, 10)
#   autotune_flush  the autotuners' candidates timed after Triton's write flush (PTQ_AUTOTUNE_READ_FLUSH=0, the
#              default) and after a read (1), each in its own process: FP6 E3M2 weight-only at 64 and 128 rows (MS;
#              DTYPE fp16 or bf16 rows) at 4096x4096, 6144x4096 and 14336x4096 (SHAPES), timed by a read, the picks
#              named (issue 10: the picks were not the fastest tiles in the sweeps)
#   autotune_flush_w4a4  the same for the W4A4 decode kernels (default paths), one flag a call (READ_FLUSH, 1 by
#              default; tuning cold, both in one call's 540 s got through one shape, 2026-12-07): INT4 and E2M1
#              (FORMATS) at 1 and 16 rows (MS) at the four Llama-3-8B shapes (SHAPES), timed by a read in a stream of
#              20, the picks named (issue 9's 3x at M <= 16 by a read)
#   ws_probe   the warp-specialization probe (ws_tile_probe.py): INT4 and FP6 E3M2 weight-only on split layouts,
#              Triton's warp-specialized loop against the same kernel unspecialized, the library's weight-only product
#              and cuBLAS bf16 at 64 and 128 rows (MS) of 4096 x 4096, 6144 x 4096 (where FP6 trails bf16 on the H100)
#              and 14336 x 4096 (SHAPES), every output checked (issue 10: FPx faster than bf16 at 64-128 rows). Each warp-specialized config runs once first in a
#              child process killed after 90 s: with host-built descriptors the first hung on an H100 and took the
#              whole 420 s step
#   casts_ab   the compiled CUDA-graph decode step (MODES, default fp4a4kv4,bf16; BATCH, default 8) profiled with
#              models.decoding.compile_options' emulate_precision_casts (eager's bfloat16 roundings, the default)
#              and without it (inductor's fp32 glue), to time what matching eager costs (issue 10)
#   decode_match  the compiled decode step against the eager one, E4M3 planes against dp4a bytes, on a random 4-layer
#              Llama-3-8B (MODES, default fp4a4kv4) at batch 8 and 16: logits and greedy tokens (issue 10)
#   act_quant  the activation kernel against a device copy at prefill sizes, per-token INT4 and E2M1 (packed and as
#              E4M3 codes, checked against the twin; cold, its autotuning takes most of the 420 s), then INT4 and
#              E2M1 at 2048 rows and 8192 x 4096 timed inside a stream of 20 calls, the copy too (issue 9)
#   act_groups the same for NVFP4 (also with a calibrated tensor amax: one read of x) and MXFP4, then the activation
#              and E4M3-code checks of kernel_check (issue 9)
#   act_capped the activation kernel's E2M1 per-token pick (one row, 2 warps at K = 4096, 4 at 14336) pinned, uncapped
#              and with ptxas's register cap at 64, 80 and 96 (act_quant_bench --pin ...,maxnreg=N), every code checked
#              against the twin: the rejected caps of kernels_h200.md's twenty-first run (issue 9)
#   act_picks  the activation kernel's picks at 2048 x 4096 (SHAPES), where E2M1's pick differed in each process
#              that tuned it (1, 4 or 8 warps; 12.0-14.5 us alone, kernels_h200.md's sixty-fifth session): six
#              configs pinned, E2M1 and INT4 (FORMATS), timed alone and in a stream of 20, by a read (issue 9)
#   prefill    W4A8 / W8A8 (300 rows among them) and the int8 path's linears (INT4 and E2M1 weights) checked against
#              their twins, each check under its own limit (the linears' autotuning filled 200 s before), then
#              W4A4 linears at prefill sizes (MS, default 256,512,2048,8192; ELEMENT int4 or e2m1 weights; ACTIVATIONS
#              int8 for W4A8 instead, cuBLAS's int8 GEMM the peer): the int8
#              path (the tensor-core kernel tiled over M, autotuned) against bf16, cuBLAS's FP8 GEMM and the FP8 path,
#              kernels alone and whole linears, every output checked (issue 9)
#   prefill_async  the e4m3 path's linears checked against the twins (kernel_check --only
#              e4m3_linear: 300, 2049 and 12 rows, K up to 14336), then prefill_bench (MS, default 2048,8192; ELEMENT
#              int4 or e2m1) with the weights also as E4M3 operands against E4M3 activation planes, step sums in fp32
#              or one dot a step whose wgmmas stay in flight, kernels and linears, every output checked against the
#              exact product (issue 9)
#   decode_async  decode_rows_bench (MS, default 8,16,64; ELEMENT e2m1 or int4) with the
#              tensor-core kernel's one-dot FP8 form on E4M3 planes beside its int8 / FP8 step-sum forms (issue 9)
#   act_ncu    the activation kernel's autotuned picks under Nsight Compute, per-token INT4 and E2M1 packed at
#              8192 x 4096 and 8192 x 14336 (act_quant_ncu.py: only the launches inside its NVTX range) (issue 9)
#   roundtrip  real_quant_roundtrip on SmolLM2 (needs SMOLLM2 and DATA)
#   gated      the W4A4KV4 batch-1 decode step with and without down_proj's tail (the next layer's input norm,
#              down_untailed) and the attention's tail (attention_untailed), in one process, each variant's one-token
#              logits compared with the control's (launch_cost_probe.py); then the packed decode attention's check
#              (o_proj's input tail) (issue 10)
#   lm_head    bf16 / W4A4KV4 / W4A4KV4 with a W4A4 and with a W4A8 lm_head compiled CUDA-graph decode at batch 1,
#              the quantized-head steps profiled, then the fused-decode kernel checks (issue 10)
#   int8_head  W4A8 / W8A8 on the decode kernel checked (INT8 activation bytes from the activation kernel), then bf16 /
#              W4A4KV4 / W4A4KV4 with a W4A8 and with a W8A8 lm_head compiled CUDA-graph decode at batch 1 (issue 10)
#   int8_head_profile  those steps profiled, then the fused-decode kernel checks (issue 10)
#   tc_decode  the tensor-core decode kernel (INT4 weights, 5-64 rows, split-K autotuned) checked against its twin, then
#              timed across rows against cuBLAS bf16 and the CUDA-core kernel (issue 9)
#   tc_decode_model  bf16 / W4A4KV4 compiled CUDA-graph decode at batch 8 and 16, where the products take that
#              kernel (about 370 s cold, issue 10)
#   tc_sweep   every tensor-core decode config that fits, fixed, timed by a read in a stream (decode_rows_bench.py
#              --tc_sweep), INT4 and E2M1 (ELEMENTS) at 16 rows (MS) at the four Llama-3-8B shapes (SHAPES), with and
#              without a residual (RESIDUAL), tiles beside the candidates where EXTRA (INT4) or EXTRA_E2M1 name them,
#              the tuner's pick marked (or PINNED_TC_CONFIGS'): the evidence for the H100's pins
#              (tc_sweep_{int4,e2m1}_s67_h100.md, then _s70_ with the warps splitting narrow tiles' K), where one
#              process had picked 16 x 256 on 2 warps for INT4 at 4096 x 4096 (7.1 us) and two others 32 x 256 split
#              in two (7.8-8.0 us) (issue 9: 3x bf16 at M <= 16)
#   gemv_sweep  every CUDA-core decode config its pruning keeps, fixed, timed by a read in a stream
#              (decode_rows_bench.py --gemv_sweep), INT4 and E2M1 (ELEMENTS) at one row (MS) at the four Llama-3-8B
#              shapes (SHAPES), the tuner's pick marked (or PINNED_GEMV_CONFIGS'): which one-row picks to pin on the
#              H100, where E2M1 at one row moved 4-7 % with the process's draw (2.59-2.69x bf16 at 4096 x 4096,
#              2.93-3.15x at 6144 x 4096, kernel_bench_pinned_rest_s67_h100.md) (issue 9: 3x bf16 at M <= 16)
#   tc_ncu     the W4A4 tensor-core decode kernel under Nsight Compute at boost clocks (gemv_ncu.py --kernel w4a4_tc),
#              16 rows (ROWS) at 4096 x 4096 and 14336 x 4096 (SHAPES): INT4 on its H100 pin, E2M1's and the split tile
#              other draws picked, then the same on its packed codes (A_PACKED); E2M1 on 64 x 256 and 64 x 128, on
#              E4M3 planes and on packed codes; DRAM and L2 bytes beside the sections: at 4096 x 4096 16 rows run
#              2.2x bf16 where 14336 x 4096 runs 3.2x, and a 16-wide tile reads the 16 rows' 64 KB of activation
#              bytes per program, twice its weight bytes (issue 9: 3x at M <= 16)
#   tc_packed_ab  the tensor-core decode kernel's configs at 16 rows (MS) of the four Llama-3-8B shapes (SHAPES),
#              INT4 and E2M1 (ELEMENTS), each on the codes the linear writes and on the activations' packed codes
#              (A_PACKED: half the activation bytes, decoded in registers as the weight's; INT4 16 x 256 on 2 warps:
#              300 SASS instructions a step against 229, 113 registers against 96; E2M1 64 x 128: 213 against 238, but
#              its nibbles go to shared memory each step and the step waits for its wgmmas, where the planes leave 7
#              groups in flight; kernel_sass_w4a4_tc_*_s67_sm90.md), by a read in a stream (decode_rows_bench.py
#              --tc_sweep --codes both) (issue 9: 3x at M <= 16)
#   tc_split_narrow  the tensor-core decode kernel's INT4 configs at 16 rows (MS) of 4096 x 4096, 6144 x 4096 and
#              4096 x 14336 (SHAPES) with tiles that are not autotuning candidates beside them (EXTRA,
#              decode_rows_bench.py --tc_sweep --extra): 32 x 256 and 32 x 128 on 2 warps split in two, 32 x 256
#              split in four, 16 x 256 on 2 warps split in two, and unsplit 32 x 256 on 2 warps and 16 x 256 on one
#              (the rows shared out, or one warp, without the split). ncu found the 16 x 256 pin on 2 warps at
#              4096 x 4096 one warp a scheduler, issuing every 4.9 cycles (ncu_tc_int4_s68_h100.txt), and in its
#              sm_90 SASS each warp runs all 32 IMMA and 97 unpacking instructions of a step (the 16-row mma tile is
#              replicated over the second warp); on 32-wide tiles the 2 warps take 16 rows each (242 instructions
#              a step), and the split halves each warp's chain of steps; each sweep with one accumulator and with
#              the odd nibbles' sums in their own (TWO_ACCS, PTQ_TC_TWO_ACC 0 and 1: four chains of 8 dependent IMMA
#              a step for two of 16, kernel_sass_w4a4_tc_int4_two_acc_s68_sm90.md) (issue 9: 3x at M <= 16)
#   tc_warp_split  the tensor-core decode kernel's configs at 16 rows (MS) of 4096 x 4096, 6144 x 4096 and
#              4096 x 14336 (SHAPES), INT4 and E2M1 (ELEMENTS, a step each), with tiles beside the candidates (EXTRA,
#              EXTRA_E2M1), first with PTQ_TC_WARP_SPLIT=0, then each tile of fewer than 16 weight rows a warp
#              again with it on, the default since it won there (decode_rows_bench.py --tc_sweep --warp_split both,
#              tc_warp_split_{int4,e2m1}_s70_h100.md: 6.5 against 6.9 us for INT4 at 4096 x 4096): INT4's warps
#              each take a slice of a step's K, a batched dot Triton lays one batch a warp, where without it the
#              16 x 256 tile's two warps each run the whole step (in sm_90 SASS a warp's step falls from 229 to 149
#              instructions, 16 IMMA for 32; kernel_sass_w4a4_tc_int4_narrow_tiles{,_warp_split}_s69_sm90.md); E2M1's
#              tiles of 16 or 32 rows on 4 warps, which FP8 wgmma takes only whole (64 rows a warpgroup), stack their
#              K slices as the warpgroup's rows (140 instructions a warp's step on 16 x 256 against 439 on the 64 x 256
#              pin, four times the programs; kernel_sass_w4a4_tc_e2m1_narrow_tiles_sliced_s69_sm90.md) (issue 9: 3x
#              at M <= 16)
#   tc_tma_ab  every INT4 tensor-core decode tile at 16 rows (MS) of 4096 x 4096, 6144 x 4096 and 4096 x 14336
#              (SHAPES), fixed, by a read in a stream, its int8 dots' operands loaded by 16-byte copies
#              (PTQ_TC_TMA=0, the default) and by the tensor memory accelerator through descriptors each program
#              makes (1) or the launch builds on the host (host), each setting (TMA_SETTINGS) in its own process: in
#              sm_90 SASS the 16 x 512 pin's warp step falls from 284 to 246 instructions, its registers from 150 to
#              93 (kernel_sass_w4a4_tc_int4_{copies,tma}_s70_sm90.md), each program making its two descriptors first;
#              host's kernel drops that prologue (128 instructions) but its step keeps 283
#              (issue 9: 3x at M <= 16)
#   tc_stalls  the warps' stall reasons (smsp__average_warps_issue_stalled_*) of the W4A4 tensor-core decode kernel
#              under Nsight Compute at 16 rows (ROWS) of 4096 x 4096 (SHAPES), INT4, on the 16 x 512 and 16 x 256
#              pins and the 32-wide 2-warp tiles of tc_split_narrow (CONFIGS), once a switch setting (SETTINGS:
#              PTQ_TC_WARP_SPLIT 0 and 1, PTQ_TC_TMA=1, PTQ_TC_TWO_ACC=1, each a step): ncu put the 16 x 256 pin's
#              warps, before they split K, at an issue every 4.9 cycles, 1.6 of them on L1TEX, the rest unnamed
#              (ncu_tc_int4_s68_h100.txt); chains of dependent IMMA would show as wait stalls, the warps splitting K
#              and TMA as fewer instructions issued (issue 9: 3x at M <= 16)
#   e2m1_signs_ab  E2M1 at one row (MS) on the CUDA-core decode kernel, its weights decoded by three table lookups
#              (PTQ_E2M1_SIGN_BYTES=0) and by one lookup and the packed bytes' own sign bits (1, the default: 10-14 %
#              fewer SASS instructions a K step, kernel_sass_w4a4_gemv_e2m1_sign_bytes_s66_sm90.md), each in its own
#              process tuning afresh (the switch is not in the tuning key, so the disk cache would hand the second
#              process the first's picks), by a read in a stream of 20, every product checked, at the four
#              Llama-3-8B shapes (SHAPES)
#              (issue 9: E2M1 at one row ran 2.54-2.97x bf16 against the 3x target; on the H100, 2.69-3.25x on one
#              lookup against 2.70-3.09x on three, kernel_bench_e2m1_sign_bytes_{0,1}_s67_h100.md)
#   tc_e2m1    E2M1 weights on the tensor-core decode kernel (FP8 E4M3): checked against the twin with
#              a fixed three-way split, then timed at 8, 16 and 64 rows against cuBLAS bf16 and the path E2M1 takes with
#              PTQ_TC_E2M1=0 (the CUDA-core kernel to 8 rows, w4a4_gemm above) (issue 9)
#   tc_e2m1_model  FP4 W4A4KV4 (E2M1 weights and activations) compiled CUDA-graph decode at batch 8 and 16, on
#              the tensor-core decode kernel and with PTQ_TC_E2M1=0, then bf16 (issue 10)
#   attention  the decode attention kernels over a static bf16 and a packed KV4 cache (Llama-3-8B's heads, 2176 of
#              2306 keys) at batch 1, 8 and 64, by programs per SM (PTQ_ATTENTION_PROGRAMS_PER_SM 2, 4, 8, 16;
#              issue 10: W4A4KV4's batch-8 step trailed W4A4's); the KV4 cache in both forms, its tiles dequantized
#              and its scales factored out of the dots (PTQ_KV4_FACTORED), both first checked by kernel_check;
#              TILES=64x4x3,128x8x3,... also sweeps the split kernel's tiles (PTQ_ATTENTION_TILE)
#   attention_tiles  attention_bench alone (no kernel_check: its error column checks each row against fp32
#              attention on the GPU) over the split kernel's tiles (PTQ_ATTENTION_TILE): TILES, by default the
#              fifty-second session's defaults and the tiles of fewer warps a program that take a quarter fewer
#              instructions a key offline, at PROGRAMS 4 and 8 an SM and BATCHES 1 and 64: the first sweep of
#              kernels_h200.md's fifty-third session, which chose flash_decode.partial_tile's tiles by batch (issue 10)
#   kv4_profile  the compiled CUDA-graph decode step of W4A4 (bf16 cache) and W4A4KV4 at batch 8 in one process
#              (the same autotuned picks), each kernel's GPU time listed (decode_profile.py): 3837 against 3976 us
#              on the H100 (decode_profile_kv4_b8_llama3_8b_h100.md), where separate runs had put them 0.34 ms
#              apart (issue 10)
# Each step has its own time limit (LIMIT_<SECTION>, seconds) so that one slow step leaves the others their
# turn; every script writes its files as it goes, so a step that runs out still leaves its partial tables.
# Autotuning: each new (kernel, shape) times every candidate config, compiling each (a few seconds apiece: most of a
# cold model step's first minutes), then times the four fastest again side by side (quant_kernels/autotuning.py;
# PTQ_AUTOTUNE_RETIME=0 skips that). The autotuners' picks are kept in TRITON_CACHE_DIR (default .triton_cache, git
# ignored) as small *.autotune.json files keyed by the kernel's source, the shape key, the Triton version and the
# GPU's name, and collected into $OUT/triton_autotune.tgz: unpacked into .triton_cache here and carried to the next
# call, they make that call compile only the picked configs (TRITON_CACHE_AUTOTUNING=0 tunes afresh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the result files}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1  # each log shows how far a step got, should its limit cut it
case $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) in
  *H100*) default_tag=h100 ;; *H200*) default_tag=h200 ;; *) default_tag=gpu ;;
esac
GPU=${GPU:-$default_tag}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.triton_cache} TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
collect_autotune() {  # the picks, for the next call to carry
  (cd "$TRITON_CACHE_DIR" 2>/dev/null && find . -name '*.autotune.json' | tar czf "$OUT/triton_autotune.tgz" -T -)
}
trap collect_autotune EXIT
step() {  # step LIMIT NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name exit $? after ${SECONDS}s"
  tail -n 4 "$OUT/$name.log"
}
element_extra() {  # element_extra ELEMENT [INT4_TILES [E2M1_TILES]]: a sweep's --extra tiles, EXTRA or EXTRA_E2M1
  if [ "$1" = e2m1 ]; then echo "${EXTRA_E2M1:-${3:-}}"; else echo "${EXTRA:-${2:-}}"; fi
}
for section in "$@"; do
  case $section in
    kernels)
      step "${LIMIT_CHECK:-200}" kernel_check python benchmarks/kernel_check.py --out "$OUT/kernel_check_${GPU}"
      step "${LIMIT_BENCH:-360}" kernel_bench python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --formats int4,e2m1 --ms 1,16,2048,8192 --weight_only_ms 1,16,128 --out "$OUT/kernel_bench_${GPU}" ;;
    calib)
      step "${LIMIT_CALIB8B:-330}" flatquant_speed_llama3_8b python benchmarks/gptq_speed.py --method flatquant \
        --shape llama3-8b --layers 2 --out "$OUT/flatquant_speed_llama3_8b_${GPU}"
      step "${LIMIT_CALIBSMOL:-150}" flatquant_speed_smollm2 python benchmarks/gptq_speed.py --method flatquant \
        --shape smollm2-135m --layers 4 --out "$OUT/flatquant_speed_smollm2_${GPU}" ;;
    model)
      step "${LIMIT_MODEL:-560}" bench_model python benchmarks/bench_model.py --random_mode --config llama-3-8b \
        --modes "${MODES:-bf16,w4a4,w4a4kv4}" --prefill_batches "${PREFILL_BATCHES-1,4}" --graph_prefill \
        --decode_batches "${DECODE_BATCHES-1,8,64}" --decode_tokens 256 --compile --no_eager \
        $([ "${HF_GENERATE:-0}" = 1 ] && echo --hf_generate) --out "$OUT/bench_model_llama3_8b_${NAME:-}${GPU}" ;;
    prefill_graph)
      step "${LIMIT_PREFILL_GRAPH:-420}" bench_model_prefill_graph python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-bf16,w4a4,w4a4kv4}" --prefill_batches "${BATCHES:-1}" --decode_batches "" \
        --graph_prefill --compile --reps 5 --out "$OUT/bench_model_prefill_graph_compiled_llama3_8b_${GPU}" ;;
    decode)
      step "${LIMIT_DECODE_CHECK:-150}" kernel_check_decode python benchmarks/kernel_check.py \
        --only decode_attention,decode_attention_packed,kv_write,linear --out "$OUT/kernel_check_decode_${GPU}"
      step "${LIMIT_DECODE_KERNELS:-220}" kernel_bench_decode python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --formats int4,e2m1 --ms 1,8,16 --weight_only_ms "" --out "$OUT/kernel_bench_decode_${GPU}"
      step "${LIMIT_DECODE_MODEL:-300}" bench_model_decode python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes bf16,w4a4 --prefill_batches "" --decode_batches 1,8 --decode_tokens 128 \
        --compile --no_eager --out "$OUT/bench_model_decode_compiled_llama3_8b_${GPU}" ;;
    fpx)
      step "${LIMIT_FPX_CHECK:-150}" kernel_check_fpx python benchmarks/kernel_check.py --only fpx \
        --out "$OUT/kernel_check_fpx_row_${GPU}"
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fpx python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,14336x4096 --weight_only_ms 1,8,16,128 --weight_only_formats e3m2 \
        --out "$OUT/kernel_bench_fpx_row_${GPU}"
      step "${LIMIT_FPX_PROFILE:-250}" decode_profile_fp6 python benchmarks/decode_profile.py --compile --modes fp6 \
        --out "$OUT/decode_profile_compiled_fp6_llama3_8b_${GPU}" ;;
    fpx_mma)
      step "${LIMIT_FPX_CHECK:-150}" kernel_check_fpx_mma env PTQ_FPX_MMA=1 python -u benchmarks/kernel_check.py \
        --only fpx --out "$OUT/kernel_check_fpx_mma_${GPU}"
      for form in 0 1; do
        step "${LIMIT_FPX_BENCH:-120}" "kernel_bench_fpx_mma$form" env PTQ_FPX_MMA=$form \
          python benchmarks/kernel_bench.py --flush_l2 --cuda_graph --ms "" --shapes 4096x4096,14336x4096,4096x14336 --weight_only_ms 1 \
          --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_mma${form}_${GPU}"
      done
      step "${LIMIT_FPX_MODEL:-230}" bench_model_fp6_mma env PTQ_FPX_MMA=1 python benchmarks/bench_model.py \
        --random_mode --config llama-3-8b --modes fp6,bf16 --prefill_batches "" --decode_batches 1 --decode_tokens 128 \
        --compile --no_eager --out "$OUT/bench_model_decode_compiled_fp6_mma_llama3_8b_${GPU}" ;;
    fpx_split)
      step "${LIMIT_FPX_CHECK:-90}" kernel_check_fpx_split python -u benchmarks/kernel_check.py --only fpx_split \
        --out "$OUT/kernel_check_fpx_split_${GPU}"
      step "${LIMIT_FPX_BENCH:-170}" kernel_bench_fpx_split python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,4096x14336,6144x4096,14336x4096 --weight_only_ms 1 --weight_only_formats e3m2 \
        --out "$OUT/kernel_bench_fpx_split_${GPU}"
      step "${LIMIT_FPX_MODEL:-260}" bench_model_fp6_split python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes fp6,bf16 --prefill_batches "" --decode_batches 1 --decode_tokens 128 --compile \
        --no_eager --out "$OUT/bench_model_decode_compiled_fp6_split_llama3_8b_${GPU}" ;;
    fpx_swap)
      step "${LIMIT_FPX_CHECK:-90}" kernel_check_fpx_swap python -u benchmarks/kernel_check.py --only fpx_swap \
        --out "$OUT/kernel_check_fpx_swap_${GPU}"
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fpx_swap env PTQ_FPX_SWAP=1 python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,14336x4096,4096x14336 --weight_only_ms 8,16,64 --weight_only_formats e3m2 \
        --out "$OUT/kernel_bench_fpx_swap_${GPU}"
      step "${LIMIT_FPX_MODEL:-280}" bench_model_fp6_b8 env PTQ_FPX_SWAP=1 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes fp6,bf16 --prefill_batches "" --decode_batches 8 --decode_tokens 64 --compile \
        --no_eager --out "$OUT/bench_model_decode_b8_fp6_swap_llama3_8b_${GPU}" ;;
    fpx_tile_split)
      step "${LIMIT_FPX_CHECK:-90}" kernel_check_fpx_tile_split python -u benchmarks/kernel_check.py --only fpx_swap \
        --out "$OUT/kernel_check_fpx_tile_split_${GPU}"
      step "${LIMIT_FPX_BENCH:-400}" kernel_bench_fpx_tile_split python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 8,16,64 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_tile_split_${GPU}" ;;
    fpx_tile_rows)
      step "${LIMIT_FPX_CHECK:-120}" kernel_check_fpx_tile python -u benchmarks/kernel_check.py --only fpx,fpx_swap \
        --out "$OUT/kernel_check_fpx_tile_rows_${GPU}"
      step "${LIMIT_FPX_BENCH:-420}" kernel_bench_fpx_tile_rows python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 \
        --weight_only_ms 8,16,64,128 --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_tile_rows_${GPU}" ;;
    fpx_f16)
      step "${LIMIT_FPX_CHECK:-100}" kernel_check_fpx_f16 python -u benchmarks/kernel_check.py --only fpx_swap \
        --out "$OUT/kernel_check_fpx_f16_${GPU}"
      step "${LIMIT_FPX_BENCH:-420}" kernel_bench_fpx_f16 python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1,16,64,128 \
        --weight_only_formats e3m2 --weight_only_dtype fp16 --out "$OUT/kernel_bench_fpx_f16_${GPU}" ;;
    fpx_lane_fp5)
      for lane in 1 0; do
        step "${LIMIT_FPX_AB:-130}" "kernel_bench_fpx_fp5_lane$lane" env PTQ_FPX_LANE=$lane python \
          benchmarks/kernel_bench.py --flush_l2 --cuda_graph --ms "" --shapes 4096x4096,28672x4096 \
          --weight_only_ms 16,128 --weight_only_formats e2m2 --out "$OUT/kernel_bench_fpx_fp5_lane${lane}_${GPU}"
      done ;;
    fpx_ncu)
      ncu_sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
                    --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats)
      step "${LIMIT_FPX_NCU:-200}" ncu_fpx_row ncu "${ncu_sections[@]}" -k regex:_fpx_row_kernel python -u \
        benchmarks/gemv_ncu.py --kernel fpx --shapes 4096x4096,4096x14336,28672x4096 --launches 2
      step "${LIMIT_FPX_NCU:-200}" ncu_fpx_row_mma env PTQ_FPX_MMA=1 ncu "${ncu_sections[@]}" -k regex:_fpx_row_kernel \
        python -u benchmarks/gemv_ncu.py --kernel fpx --shapes 4096x4096,28672x4096 --launches 2 \
        --configs "64,64,8,2,0,4;64,64,8,2,0,1;32,128,8,2,0,1"
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fpx_mma_split env PTQ_FPX_MMA=1 python benchmarks/kernel_bench.py \
        --flush_l2 --cuda_graph --ms "" --shapes 4096x4096,4096x14336,28672x4096 --weight_only_ms 1 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_mma_split_${GPU}" ;;
    fpx_tile_ncu)
      tile_ncu=(ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats
                --section SchedulerStats --section MemoryWorkloadAnalysis -k regex:_fpx_kernel)
      step "${LIMIT_FPX_NCU:-200}" ncu_fpx_tile "${tile_ncu[@]}" python -u benchmarks/gemv_ncu.py --kernel fpx_tile \
        --shapes 14336x4096 --rows 64 --launches 2
      step "${LIMIT_FPX_NCU:-200}" ncu_fpx_tile_128 "${tile_ncu[@]}" python -u benchmarks/gemv_ncu.py \
        --kernel fpx_tile --shapes 4096x4096 --rows 128 --launches 2 ;;
    fpx_capped)
      capped="64,64,8,2,0,4;64,64,8,2,0,4,1,80;64,64,8,2,0,1;64,64,8,2,0,1,1,80;32,128,8,2,0,1,1,80"
      step "${LIMIT_FPX_NCU:-120}" ncu_fpx_capped ncu --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section SchedulerStats --section InstructionStats --section WarpStateStats -k regex:_fpx_row_kernel \
        python -u benchmarks/gemv_ncu.py --kernel fpx --shapes 4096x4096,28672x4096 --launches 1 --configs "$capped"
      step "${LIMIT_FPX_NCU:-120}" ncu_fpx_stalls ncu --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
        -k regex:_fpx_row_kernel python -u benchmarks/gemv_ncu.py --kernel fpx --shapes 28672x4096 --launches 1 \
        --configs "64,64,8,2,0,1;64,64,8,2,0,1,1,80"
      step "${LIMIT_FPX_BENCH:-300}" kernel_bench_fpx_capped python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_capped_${GPU}" ;;
    fpx_interleaved)
      step "${LIMIT_FPX_CHECK:-150}" kernel_check_fpx_interleaved python -u benchmarks/kernel_check.py \
        --only fpx_split,fpx --out "$OUT/kernel_check_fpx_interleaved_${GPU}"
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fpx_interleaved python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_interleaved_${GPU}"
      step "${LIMIT_FP5_BENCH:-120}" kernel_bench_fp5_interleaved python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --shapes 4096x4096,28672x4096 --weight_only_ms 1 --weight_only_formats e2m2 \
        --out "$OUT/kernel_bench_fp5_interleaved_${GPU}" ;;
    fpx_interleave_ab)
      for on in 1 0; do
        step "${LIMIT_FP5_BENCH:-110}" "kernel_bench_fp5_interleave$on" env PTQ_FPX_INTERLEAVE=$on python \
          benchmarks/kernel_bench.py --flush_l2 --cuda_graph --ms "" --shapes 4096x4096,28672x4096,4096x14336 \
          --weight_only_ms 1 --weight_only_formats e2m2 --out "$OUT/kernel_bench_fp5_interleave${on}_${GPU}"
      done
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fp6_words python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fp6_even_${GPU}" ;;
    fpx_mma_capped)  # FP6 E3M2 at M = 1, the row kernel's tensor-core form (1), then its fp32 form (0)
      for form in 1 0; do
        step "${LIMIT_FPX_BENCH:-150}" "kernel_bench_fp6_mma${form}_capped" env PTQ_FPX_MMA=$form python \
          benchmarks/kernel_bench.py --flush_l2 --cuda_graph --ms "" \
          --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1 --weight_only_formats e3m2 \
          --out "$OUT/kernel_bench_fp6_mma${form}_capped_${GPU}"
      done ;;
    fpx_prmt)
      step "${LIMIT_FPX_CHECK:-150}" kernel_check_fpx_prmt python -u benchmarks/kernel_check.py \
        --only fpx,fpx_split,fpx_swap --out "$OUT/kernel_check_fpx_prmt_${GPU}"
      step "${LIMIT_FPX_BENCH:-200}" kernel_bench_fpx_prmt python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms 1 \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_prmt_${GPU}" ;;
    fpx_b1)
      step "${LIMIT_FPX_MODEL:-560}" bench_model_fp6_b1 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-fp6,fp6_head,fp6_e2m3,bf16}" --prefill_batches "" --decode_batches 1 \
        --decode_tokens 256 --compile --no_eager --out "$OUT/bench_model_decode_compiled_${NAME:-fp6}_llama3_8b_${GPU}" ;;
    fpx_gated)
      step "${LIMIT_FPX_CHECK:-120}" kernel_check_fpx_gated python -u benchmarks/kernel_check.py --only fpx_gated \
        --out "$OUT/kernel_check_fpx_gated_${GPU}"
      step "${LIMIT_FPX_MODEL:-200}" bench_model_fp6_gated python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-fp6,bf16}" --prefill_batches "" --decode_batches 1 --decode_tokens 256 \
        --compile --no_eager --out "$OUT/bench_model_decode_compiled_fp6_gated_llama3_8b_${GPU}"
      step "${LIMIT_FPX_MODEL:-200}" bench_model_fp6_ungated env PTQ_FPX_GATED=0 python benchmarks/bench_model.py \
        --random_mode --config llama-3-8b --modes "${UNGATED_MODES:-fp6}" --prefill_batches "" --decode_batches 1 \
        --decode_tokens 256 --compile --no_eager --out "$OUT/bench_model_decode_compiled_fp6_ungated_llama3_8b_${GPU}" ;;
    fpx_b8)
      step "${LIMIT_FPX_MODEL:-400}" bench_model_fp6_b8 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-fp6,bf16}" --prefill_batches "" --decode_batches 8 --decode_tokens 64 \
        --compile --no_eager --out "$OUT/bench_model_decode_b8_fp6_split_llama3_8b_${GPU}" ;;
    decode_b8)
      step "${LIMIT_DECODE_B8:-300}" bench_model_decode_b8 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-w4a4kv4,bf16}" --prefill_batches "" --decode_batches 8 \
        --decode_tokens 128 --compile --no_eager --out "$OUT/bench_model_decode_b8_pinned_llama3_8b_${GPU}" ;;
    gemv)
      step "${LIMIT_GEMV_CHECK:-90}" kernel_check_linear python benchmarks/kernel_check.py --only linear \
        --out "$OUT/kernel_check_linear_dp4a_words_${GPU}"
      step "${LIMIT_GEMV_BENCH:-220}" kernel_bench_gemv python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --formats int4,e2m1 --ms 1,8 --weight_only_ms "" --out "$OUT/kernel_bench_decode_dp4a_bytes_${GPU}"
      step "${LIMIT_GEMV_PROFILE:-130}" decode_profile_w4a4kv4 python benchmarks/decode_profile.py --compile \
        --modes w4a4kv4 --out "$OUT/decode_profile_compiled_dp4a_words_llama3_8b_${GPU}" ;;
    decode_b1)
      step "${LIMIT_DECODE_B1:-230}" bench_model_decode_b1 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-bf16,w4a4kv4}" --prefill_batches "" --decode_batches 1 \
        --decode_tokens 256 --compile --no_eager --out "$OUT/bench_model_decode_compiled_down_tail_llama3_8b_${GPU}" ;;
    rounding)
      step "${LIMIT_ROUNDING_CHECK:-150}" kernel_check_compiled_quantizer python benchmarks/kernel_check.py \
        --only compiled_quantizer --out "$OUT/kernel_check_compiled_quantizer_${GPU}"
      step "${LIMIT_ROUNDING_PROFILE:-250}" decode_profile_rounding python benchmarks/decode_profile.py --compile \
        --modes w4a4kv4 --out "$OUT/decode_profile_compiled_ieee_division_llama3_8b_${GPU}" ;;
    prefill_profile)
      step "${LIMIT_PREFILL_PROFILE:-200}" prefill_profile python benchmarks/decode_profile.py --prefill --steps 5 \
        --modes "${MODES:-w4a4,w4a4kv4}" --batch "${BATCH:-1}" --out "$OUT/prefill_profile_b${BATCH:-1}_llama3_8b_${GPU}" ;;
    gemv_fold)
      step "${LIMIT_GEMV_FOLD:-240}" kernel_bench_gemv_fold python benchmarks/kernel_bench.py --flush_l2 --in_stream 20 \
        --shapes 4096x4096,14336x4096 --formats int4,e2m1 --ms 1 --weight_only_ms "" \
        --out "$OUT/kernel_bench_decode_folded_${GPU}" ;;
    profile)
      step "${LIMIT_PROFILE:-400}" decode_profile python benchmarks/decode_profile.py --compile \
        --modes w4a4,bf16,w4a4kv4 --batch "${BATCH:-1}" --out "$OUT/decode_profile_compiled_b${BATCH:-1}_llama3_8b_${GPU}" ;;
    act_quant)
      step "${LIMIT_ACT_BENCH:-420}" act_quant_bench python benchmarks/act_quant_bench.py --formats int4,e2m1 \
        --shapes 8192x4096,8192x14336,2048x4096,2048x14336 --out "$OUT/act_quant_${GPU}"
      step "${LIMIT_ACT_STREAM:-200}" act_quant_bench_in_stream python benchmarks/act_quant_bench.py \
        --formats int4,e2m1 --no_fp8_codes --in_stream 20 --shapes 2048x4096,2048x14336,8192x4096 \
        --out "$OUT/act_quant_in_stream_${GPU}" ;;
    act_groups)
      step "${LIMIT_ACT_BENCH:-250}" act_quant_bench python benchmarks/act_quant_bench.py --formats nvfp4,mxfp4 \
        --static_tensor_amax --shapes 8192x4096,8192x14336,2048x4096,2048x14336 --out "$OUT/act_quant_groups_${GPU}"
      step "${LIMIT_ACT_CHECK:-250}" kernel_check_act python benchmarks/kernel_check.py --only act,fp8_codes \
        --out "$OUT/kernel_check_act_${GPU}" ;;
    act_capped)
      row="BLOCK_M=1,CHUNK=0,ROW_STEPS=1,SPLIT=0"
      step "${LIMIT_ACT_PIN:-150}" act_quant_capped_4096 python benchmarks/act_quant_bench.py --formats e2m1 \
        --no_fp8_codes --shapes 8192x4096,2048x4096 --out "$OUT/act_quant_capped_4096_${GPU}" \
        --pin "$row,num_warps=2;$row,num_warps=2,maxnreg=64;$row,num_warps=2,maxnreg=80;$row,num_warps=2,maxnreg=96"
      step "${LIMIT_ACT_PIN:-150}" act_quant_capped_14336 python benchmarks/act_quant_bench.py --formats e2m1 \
        --no_fp8_codes --shapes 8192x14336,2048x14336 --out "$OUT/act_quant_capped_14336_${GPU}" \
        --pin "$row,num_warps=4;$row,num_warps=4,maxnreg=64;$row,num_warps=4,maxnreg=80;$row,num_warps=4,maxnreg=96" ;;
    act_picks)
      row="BLOCK_M=1,CHUNK=0,ROW_STEPS=1,SPLIT=0"
      picks="$row,num_warps=1;$row,num_warps=2;$row,num_warps=4;$row,num_warps=8"
      picks="$picks;BLOCK_M=1,CHUNK=0,ROW_STEPS=4,SPLIT=0,num_warps=8;BLOCK_M=2,CHUNK=0,ROW_STEPS=1,SPLIT=0,num_warps=4"
      for timing in alone in_stream; do
        step "${LIMIT_ACT_PIN:-150}" "act_quant_picks_$timing" python benchmarks/act_quant_bench.py \
          --formats "${FORMATS:-e2m1,int4}" --no_fp8_codes --shapes "${SHAPES:-2048x4096}" \
          --in_stream "$([ $timing = in_stream ] && echo 20 || echo 0)" --pin "$picks" \
          --out "$OUT/act_quant_picks_${timing}_${GPU}"
      done ;;
    prefill)
      step "${LIMIT_PREFILL_DECODE_CHECK:-120}" kernel_check_int8_decode python benchmarks/kernel_check.py \
        --only int8_decode --out "$OUT/kernel_check_int8_decode_prefill_${GPU}"
      step "${LIMIT_PREFILL_CHECK:-200}" kernel_check_int8 python benchmarks/kernel_check.py \
        --only int8_linear --out "$OUT/kernel_check_int8_linear_${GPU}"
      step "${LIMIT_PREFILL:-420}" prefill_bench python benchmarks/prefill_bench.py --ms "${MS:-256,512,2048,8192}" \
        --element "${ELEMENT:-int4}" --activations "${ACTIVATIONS:-4bit}" \
        --out "$OUT/prefill_int8_${ELEMENT:-int4}_${ACTIVATIONS:-4bit}_${GPU}" ;;
    prefill_async)
      step "${LIMIT_E4M3_CHECK:-150}" kernel_check_e4m3 python benchmarks/kernel_check.py --only e4m3_linear \
        --out "$OUT/kernel_check_e4m3_linear_${GPU}"
      step "${LIMIT_PREFILL:-420}" prefill_bench python benchmarks/prefill_bench.py --ms "${MS:-2048,8192}" \
        --element "${ELEMENT:-int4}" --out "$OUT/prefill_e4m3_async_${ELEMENT:-int4}_${GPU}" ;;
    decode_async)
      step "${LIMIT_DECODE_ROWS:-500}" decode_rows_bench python benchmarks/decode_rows_bench.py --ms "${MS:-8,16,64}" \
        --element "${ELEMENT:-e2m1}" --out "$OUT/decode_rows_e4m3_${ELEMENT:-e2m1}_${GPU}" ;;
    fpx_prefill)
      step "${LIMIT_FPX_DEQUANT_CHECK:-60}" kernel_check_fpx_dequantized python benchmarks/kernel_check.py \
        --only fpx_dequantized,dequant --out "$OUT/kernel_check_fpx_dequantized_${GPU}"
      step "${LIMIT_FPX_PREFILL:-330}" kernel_bench_fpx_prefill python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --shapes "${SHAPES:-4096x4096,14336x4096,4096x14336}" \
        --weight_only_ms "${MS:-512,1024,2048,8192}" --weight_only_formats e3m2 \
        --out "$OUT/kernel_bench_fpx_prefill_${GPU}"
      step "${LIMIT_FPX_PREFILL_MODEL:-240}" bench_model_fpx_prefill python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-fp6,fp5,bf16}" --prefill_batches 1,4 --decode_batches "" \
        --graph_prefill --out "$OUT/bench_model_prefill_fpx_dequantized_llama3_8b_${GPU}" ;;
    w4a16_int4)
      step "${LIMIT_INT4_CHECK:-150}" kernel_check_fpx_int4 python benchmarks/kernel_check.py --only fpx,fpx_groups \
        --out "$OUT/kernel_check_fpx_int4_${GPU}"
      step "${LIMIT_INT4_BENCH:-240}" kernel_bench_w4a16_int4 python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --weight_only_ms 1,8,16,64 --weight_only_formats int4,e2m1 \
        --out "$OUT/kernel_bench_w4a16_int4_${GPU}"
      step "${LIMIT_INT4_MODEL:-220}" bench_model_w4a16_int4 python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-w4a16_int4,w4a16_int4_g128,bf16}" --prefill_batches "" \
        --decode_batches 1 --decode_tokens 128 --compile --no_eager \
        --out "$OUT/bench_model_decode_w4a16_int4_llama3_8b_${GPU}" ;;
    w4a16_groups)
      step "${LIMIT_GROUPS_CHECK:-120}" kernel_check_fpx_groups python benchmarks/kernel_check.py --only fpx_groups \
        --out "$OUT/kernel_check_fpx_groups_${GPU}"
      step "${LIMIT_GROUPS_BENCH:-300}" kernel_bench_w4a16_groups python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --ms "" --weight_only_ms "${MS:-1,8,16,64,256}" \
        --weight_only_formats "${FORMATS:-int4_g128,nvfp4,e2m1_g16,mxfp4}" --out "$OUT/kernel_bench_w4a16_groups_${GPU}"
      step "${LIMIT_GROUPS_MODEL:-170}" bench_model_w4a16_groups python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-w4a16_int4_g128,w4a16_nvfp4,bf16}" --prefill_batches "" --decode_batches 8 \
        --decode_tokens 64 --compile --no_eager --out "$OUT/bench_model_decode_b8_w4a16_g128_llama3_8b_${GPU}" ;;
    decode_planes)
      step "${LIMIT_DECODE_PLANES:-560}" bench_model_decode_planes python benchmarks/bench_model.py --random_mode \
        --config llama-3-8b --modes "${MODES:-fp4a4kv4,bf16}" --prefill_batches "" --decode_batches 8,16 \
        --decode_tokens 64 --compile --no_eager --out "$OUT/bench_model_decode_b8_b16_fp4_planes_llama3_8b_${GPU}" ;;
    targets9)
      step "${LIMIT_TARGET_DECODE:-300}" kernel_bench_targets9 python benchmarks/kernel_bench.py --flush_l2 \
        --cuda_graph --formats "${FORMATS:-int4,e2m1}" --ms "${MS:-1,16}" --weight_only_ms "" --default_paths_only \
        --out "$OUT/kernel_bench_decode_retimed_${NAME:-}${GPU}"
      step "${LIMIT_TARGET_STREAM:-150}" kernel_bench_targets9_in_stream python benchmarks/kernel_bench.py --flush_l2 \
        --in_stream 20 --formats "${FORMATS:-int4,e2m1}" --ms "${MS:-1,16}" --weight_only_ms "" --default_paths_only \
        --out "$OUT/kernel_bench_decode_in_stream_retimed_${NAME:-}${GPU}"
      ;;
    targets9_prefill)
      for element in ${ELEMENTS:-int4 e2m1}; do
        step "${LIMIT_TARGET_PREFILL:-280}" "prefill_bench_targets9_$element" python benchmarks/prefill_bench.py \
          --ms "${MS:-2048,8192}" --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" \
          --element "$element" $([ "${ALL_PATHS:-0}" = 1 ] || echo --default_paths_only) \
          --out "$OUT/prefill_${element}_retimed_${GPU}"
      done ;;
    targets10)
      step "${LIMIT_TARGET_FPX:-480}" kernel_bench_targets10 python benchmarks/kernel_bench.py --flush_l2 --cuda_graph \
        --ms "" --shapes 4096x4096,6144x4096,28672x4096,4096x14336,14336x4096 --weight_only_ms "${MS:-1,64,128}" \
        --weight_only_formats e3m2 --out "$OUT/kernel_bench_fpx_retimed_${GPU}" ;;
    targets_flush)
      limit=${LIMIT_TARGET_FLUSH:-380}  # the first step autotunes cold: 270 s ran out on an H100 (2026-12-07)
      for flush in write read; do
        step "$limit" "kernel_bench_targets_flush_$flush" python benchmarks/kernel_bench.py \
          --flush_l2 --l2_flush "$flush" --in_stream 20 --formats int4,e2m1 --ms 1,16 --default_paths_only \
          --weight_only_ms 128 --weight_only_formats e3m2 --weight_only_dtype "${DTYPE:-fp16}" \
          --shapes "${SHAPES:-4096x4096,6144x4096}" --out "$OUT/kernel_bench_targets_flush_${flush}_${GPU}"
        limit=${LIMIT_TARGET_FLUSH:-200}
      done ;;
    autotune_flush)
      for read in 0 1; do
        step "${LIMIT_AUTOTUNE_FLUSH:-270}" "kernel_bench_autotune_read_flush_$read" env PTQ_AUTOTUNE_READ_FLUSH=$read \
          python benchmarks/kernel_bench.py --flush_l2 --cuda_graph --ms "" --weight_only_ms "${MS:-64,128}" \
          --weight_only_formats e3m2 --weight_only_dtype "${DTYPE:-fp16}" \
          --shapes "${SHAPES:-4096x4096,6144x4096,14336x4096}" \
          --out "$OUT/kernel_bench_fpx_autotune_read_flush_${read}_${GPU}"
      done ;;
    autotune_flush_w4a4)
      read=${READ_FLUSH:-1}
      step "${LIMIT_AUTOTUNE_FLUSH:-560}" "kernel_bench_w4a4_autotune_read_flush_$read" \
        env PTQ_AUTOTUNE_READ_FLUSH="$read" python benchmarks/kernel_bench.py --flush_l2 --in_stream 20 \
        --formats "${FORMATS:-int4,e2m1}" --ms "${MS:-1,16}" --default_paths_only --weight_only_ms "" \
        --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" \
        --out "$OUT/kernel_bench_w4a4_autotune_read_flush_${read}_${GPU}" ;;
    ws_probe)
      step "${LIMIT_WS_PROBE:-420}" ws_tile_probe python benchmarks/ws_tile_probe.py --ms "${MS:-64,128}" \
        --shapes "${SHAPES:-4096x4096,6144x4096,14336x4096}" --out "$OUT/ws_tile_probe_${GPU}" ;;
    casts_ab)
      step "${LIMIT_CASTS:-280}" decode_profile_casts python benchmarks/decode_profile.py --compile \
        --modes "${MODES:-fp4a4kv4,bf16}" --batch "${BATCH:-8}" \
        --out "$OUT/decode_profile_compiled_b${BATCH:-8}_emulated_casts_${GPU}"
      step "${LIMIT_CASTS:-280}" decode_profile_fused_casts python benchmarks/decode_profile.py --compile \
        --inductor emulate_precision_casts=0 --modes "${MODES:-fp4a4kv4,bf16}" --batch "${BATCH:-8}" \
        --out "$OUT/decode_profile_compiled_b${BATCH:-8}_fused_casts_${GPU}" ;;
    decode_match)
      step "${LIMIT_DECODE_MATCH:-400}" decode_match python benchmarks/decode_match.py --modes "${MODES:-fp4a4kv4}" \
        --batches 8,16 --out "$OUT/decode_match_fp4_planes_${GPU}" ;;
    act_ncu)
      step "${LIMIT_ACT_NCU:-300}" ncu_act_quant ncu --nvtx --nvtx-include "measure/" --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis --section InstructionStats python -u benchmarks/act_quant_ncu.py \
        --shapes 8192x4096,8192x14336 --formats int4,e2m1 ;;
    lm_head)
      step "${LIMIT_BENCH:-290}" bench_model python benchmarks/bench_model.py --random_mode --config llama-3-8b \
        --modes bf16,w4a4kv4,w4a4kv4_head,w4a4kv4_head8 --prefill_batches "" --decode_batches 1 \
        --decode_tokens 128 --compile --no_eager --out "$OUT/bench_model_decode_compiled_lm_head_llama3_8b_${GPU}"
      step "${LIMIT_PROFILE:-150}" profile python benchmarks/decode_profile.py --compile \
        --modes w4a4kv4_head,w4a4kv4_head8 --out "$OUT/decode_profile_compiled_lm_head_llama3_8b_${GPU}"
      step "${LIMIT_CHECK:-140}" kernel_check python benchmarks/kernel_check.py --only fused_decode \
        --out "$OUT/kernel_check_fused_decode_${GPU}" ;;
    int8_head)
      step "${LIMIT_CHECK:-100}" kernel_check python benchmarks/kernel_check.py --only int8_decode \
        --out "$OUT/kernel_check_int8_decode_${GPU}"
      step "${LIMIT_BENCH:-330}" bench_model python benchmarks/bench_model.py --random_mode --config llama-3-8b \
        --modes bf16,w4a4kv4,w4a4kv4_head8,w4a4kv4_head_w8a8 --prefill_batches "" --decode_batches 1 \
        --decode_tokens 128 --compile --no_eager --out "$OUT/bench_model_decode_compiled_int8_head_llama3_8b_${GPU}" ;;
    int8_head_profile)
      step "${LIMIT_PROFILE:-200}" profile python benchmarks/decode_profile.py --compile \
        --modes w4a4kv4,w4a4kv4_head8,w4a4kv4_head_w8a8 --out "$OUT/decode_profile_compiled_int8_head_llama3_8b_${GPU}"
      step "${LIMIT_CHECK:-360}" kernel_check python benchmarks/kernel_check.py --only fused_decode \
        --out "$OUT/kernel_check_fused_decode_${GPU}" ;;
    tc_decode)
      step "${LIMIT_CHECK:-300}" kernel_check python benchmarks/kernel_check.py --only tc_decode \
        --out "$OUT/kernel_check_tc_decode_${GPU}"
      step "${LIMIT_BENCH:-250}" decode_rows python benchmarks/decode_rows_bench.py \
        --shapes 4096x4096,14336x4096,4096x14336 --ms 1,8,16,64 --out "$OUT/decode_rows_${GPU}" ;;
    e2m1_signs_ab)
      for signs in 0 1; do
        step "${LIMIT_SIGNS:-280}" "kernel_bench_e2m1_sign_bytes_$signs" \
          env PTQ_E2M1_SIGN_BYTES=$signs TRITON_CACHE_AUTOTUNING=0 python benchmarks/kernel_bench.py --flush_l2 \
          --in_stream 20 --formats e2m1 --ms "${MS:-1}" --default_paths_only --weight_only_ms "" \
          --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" \
          --out "$OUT/kernel_bench_e2m1_sign_bytes_${signs}_${GPU}"
      done ;;
    tc_tma_ab)
      for tma in ${TMA_SETTINGS:-0 1 host}; do
        step "${LIMIT_TC_TMA:-200}" "tc_tma_ab_$tma" env PTQ_TC_TMA=$tma python benchmarks/decode_rows_bench.py \
          --tc_sweep --element int4 --ms "${MS:-16}" --shapes "${SHAPES:-4096x4096,6144x4096,4096x14336}" \
          --out "$OUT/tc_tma_${tma}_${GPU}"
      done ;;
    tc_sweep)
      for element in ${ELEMENTS:-int4 e2m1}; do
        extra=$(element_extra "$element")
        step "${LIMIT_TC_SWEEP:-280}" "tc_sweep_$element" python benchmarks/decode_rows_bench.py --tc_sweep \
          --element "$element" --ms "${MS:-16}" --residual "${RESIDUAL:-both}" ${extra:+--extra "$extra"} \
          --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" --out "$OUT/tc_sweep_${element}_${GPU}"
      done ;;
    gemv_sweep)
      for element in ${ELEMENTS:-int4 e2m1}; do
        step "${LIMIT_GEMV_SWEEP:-280}" "gemv_sweep_$element" python benchmarks/decode_rows_bench.py --gemv_sweep \
          --element "$element" --ms "${MS:-1}" \
          --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" --out "$OUT/gemv_sweep_${element}_${GPU}"
      done ;;
    tc_packed_ab)
      for element in ${ELEMENTS:-int4 e2m1}; do
        step "${LIMIT_TC_PACKED:-280}" "tc_packed_ab_$element" python benchmarks/decode_rows_bench.py --tc_sweep \
          --element "$element" --codes both --ms "${MS:-16}" \
          --shapes "${SHAPES:-4096x4096,4096x14336,14336x4096,6144x4096}" --out "$OUT/tc_packed_ab_${element}_${GPU}"
      done ;;
    tc_split_narrow)
      for two_acc in ${TWO_ACCS:-0 1}; do
        PTQ_TC_TWO_ACC=$two_acc step "${LIMIT_TC_SPLIT:-280}" "tc_split_narrow_two_acc_$two_acc" python \
          benchmarks/decode_rows_bench.py --tc_sweep --element int4 --ms "${MS:-16}" \
          --shapes "${SHAPES:-4096x4096,6144x4096,4096x14336}" --out "$OUT/tc_split_narrow_two_acc_${two_acc}_${GPU}" \
          --extra "${EXTRA:-32,256,2,2,3;32,128,2,2,4;32,256,4,2,3;16,256,2,2,3;32,256,1,2,3;16,256,1,1,3}"
      done ;;
    tc_warp_split)
      for element in ${ELEMENTS:-int4 e2m1}; do
        extra=$(element_extra "$element" \
          "16,256,2,2,3;16,128,1,2,4;16,256,1,4,3;16,512,2,2,3;16,1024,1,2,3;32,1024,1,4,3" \
          "16,256,1,4,3;16,128,1,4,4;16,256,2,4,3;16,512,2,4,3;16,1024,1,4,3;32,1024,1,4,3")
        step "${LIMIT_TC_WARP_SPLIT:-420}" "tc_warp_split_$element" python benchmarks/decode_rows_bench.py --tc_sweep \
          --element "$element" --ms "${MS:-16}" --warp_split both --shapes "${SHAPES:-4096x4096,6144x4096,4096x14336}" \
          --out "$OUT/tc_warp_split_${element}_${GPU}" --extra "$extra"
      done ;;
    tc_stalls)
      for setting in ${SETTINGS:-PTQ_TC_WARP_SPLIT=0 PTQ_TC_WARP_SPLIT=1 PTQ_TC_TMA=1 PTQ_TC_TWO_ACC=1}; do
        name=$(echo "${setting#PTQ_TC_}" | tr 'A-Z=' 'a-z_')
        (export "$setting"
         step "${LIMIT_TC_NCU:-140}" "ncu_tc_stalls_$name" ncu --clock-control none \
           --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" -k regex:_w4a4_tc_kernel \
           python -u benchmarks/gemv_ncu.py --kernel w4a4_tc --rows "${ROWS:-16}" --shapes "${SHAPES:-4096x4096}" \
           --configs "${CONFIGS:-16,512,1,2,3;16,256,1,2,3;32,256,2,2,3;32,128,2,2,4}" --launches 1)
      done ;;
    tc_ncu)
      tc_ncu=(ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats
              --section SchedulerStats --section MemoryWorkloadAnalysis --metrics dram__bytes_read.sum,lts__t_bytes.sum
              -k regex:_w4a4_tc_kernel)
      step "${LIMIT_TC_NCU:-140}" ncu_tc_int4 "${tc_ncu[@]}" python -u benchmarks/gemv_ncu.py --kernel w4a4_tc \
        --rows "${ROWS:-16}" --shapes "${SHAPES:-4096x4096,14336x4096}" --launches 1
      step "${LIMIT_TC_NCU:-140}" ncu_tc_int4_packed "${tc_ncu[@]}" python -u benchmarks/gemv_ncu.py --kernel w4a4_tc \
        --packed_codes --rows "${ROWS:-16}" --shapes "${SHAPES:-4096x4096,14336x4096}" --launches 1
      for codes in "" --packed_codes; do
        step "${LIMIT_TC_NCU:-140}" "ncu_tc_e2m1${codes:+_packed}" "${tc_ncu[@]}" python -u benchmarks/gemv_ncu.py \
          --kernel w4a4_tc --w_element e2m1 $codes --rows "${ROWS:-16}" --shapes "${SHAPES:-4096x4096,14336x4096}" \
          --configs "64,256,1,4,3;64,128,1,4,4" --launches 1
      done ;;
    tc_decode_model)
      step "${LIMIT_MODEL:-540}" bench_model python benchmarks/bench_model.py --random_mode --config llama-3-8b \
        --modes w4a4kv4,bf16 --prefill_batches "" --decode_batches 8,16 --decode_tokens 64 --compile --no_eager \
        --out "$OUT/bench_model_decode_b8_b16_tc_llama3_8b_${GPU}" ;;
    tc_e2m1)
      step "${LIMIT_CHECK:-90}" tc_e2m1_check python -c "
import sys, torch
from benchmarks.kernel_check import check_tc_decode
for m, n, k, dtype in ((8, 4096, 4096, torch.bfloat16), (16, 14336, 4096, torch.float16)):
    for a_element in ('int4', 'e2m1'):
        print(check_tc_decode(m, n, k, a_element, dtype, torch.device('cuda'), 3, 'e2m1'), flush=True)"
      step "${LIMIT_BENCH:-240}" decode_rows_e2m1 env PTQ_TC_E2M1=0 python benchmarks/decode_rows_bench.py --element e2m1 \
        --shapes 14336x4096,4096x4096,4096x14336 --ms 8,16,64 --out "$OUT/decode_rows_e2m1_${GPU}" ;;
    tc_e2m1_model)
      step "${LIMIT_MODEL:-560}" bench_model python benchmarks/bench_model.py --random_mode --config llama-3-8b \
        --modes fp4a4kv4,fp4a4kv4_cuda_core,bf16 --prefill_batches "" --decode_batches 8,16 --decode_tokens 64 --compile \
        --no_eager --out "$OUT/bench_model_decode_b8_b16_fp4_tc_llama3_8b_${GPU}" ;;
    attention)
      step "${LIMIT_CHECK:-240}" kernel_check_attention_packed python benchmarks/kernel_check.py \
        --only decode_attention_packed --out "$OUT/kernel_check_attention_packed_${GPU}"
      step "${LIMIT_ATTENTION:-240}" attention_bench python benchmarks/attention_bench.py \
        --batches "${BATCHES:-1,8,64}" --programs "${PROGRAMS:-2,4,8,16}" --tiles "${TILES-}" \
        --out "$OUT/attention_bench_${GPU}" ;;
    attention_tiles)
      step "${LIMIT_ATTENTION_TILES:-560}" attention_bench_tiles python benchmarks/attention_bench.py \
        --batches "${BATCHES:-1,64}" --programs "${PROGRAMS:-4,8}" \
        --tiles "${TILES:-64x4x3,64x4x3x128,128x8x3x128,128x4x3,64x2x3x168,32x1x3,64x1x3}" \
        --out "$OUT/attention_bench_tiles_${GPU}" ;;
    kv4_profile)
      step "${LIMIT_KV4_PROFILE:-400}" decode_profile_kv4_b8 python benchmarks/decode_profile.py --compile \
        --modes w4a4,w4a4kv4 --batch "${BATCH:-8}" --top 40 \
        --out "$OUT/decode_profile_kv4_b${BATCH:-8}_llama3_8b_${GPU}" ;;
    gated)
      step "${LIMIT_PROBE:-290}" launch_cost_probe python benchmarks/launch_cost_probe.py \
        --variants control,down_untailed,attention_untailed,control --out "$OUT/launch_cost_probe_down_tail_${GPU}"
      step "${LIMIT_CHECK:-60}" kernel_check python -u benchmarks/kernel_check.py \
        --only decode_attention_packed --out "$OUT/kernel_check_attention_tail_refactor_${GPU}" ;;
    roundtrip)
      step "${LIMIT_ROUNDTRIP:-400}" real_quant_roundtrip python benchmarks/real_quant_roundtrip.py \
        --model "${SMOLLM2:?set SMOLLM2}" --data_dir "${DATA:?set DATA}" --device cuda --windows 40 \
        --out "$OUT/real_quant_roundtrip_smollm2_${GPU}" ;;
    *) echo "unknown section $section: choose kernels, calib, model, prefill_graph, decode, fpx, fpx_mma, fpx_split, fpx_swap, fpx_tile_split, fpx_tile_rows, fpx_f16, fpx_lane_fp5, fpx_ncu, fpx_tile_ncu, fpx_capped, fpx_interleaved, fpx_interleave_ab, fpx_prmt, fpx_b1, fpx_gated, fpx_b8, decode_b8, gemv, decode_b1, rounding, prefill_profile, gemv_fold, profile, act_quant, act_groups, act_capped, act_picks, prefill, prefill_async, decode_async, fpx_prefill, w4a16_int4, w4a16_groups, decode_planes, targets9, targets9_prefill, targets10, targets_flush, autotune_flush, autotune_flush_w4a4, ws_probe, casts_ab, decode_match, act_ncu, lm_head, int8_head, int8_head_profile, tc_decode, tc_sweep, gemv_sweep, tc_split_narrow, tc_warp_split, tc_tma_ab, tc_stalls, tc_ncu, tc_packed_ab, e2m1_signs_ab, tc_decode_model, tc_e2m1, tc_e2m1_model, attention, attention_tiles, kv4_profile, gated, roundtrip" >&2; exit 2 ;;
  esac
done
