"""The machine code of the decode kernels for a GPU architecture, compiled on any machine (no GPU needed).

For each autotuning config of the FPx one-row kernel (``quant_kernels.fpx_gemm._fpx_row_kernel``),
the W4A4 decode kernel (``quant_kernels.w4a4_gemv._w4a4_gemv_kernel``, one row), the tensor-core decode
kernel (``_w4a4_tc_kernel``, 16 rows: its wgmma count is IGMMA, QGMMA for E2M1 weights), its prefill launch
(``w4a4_tc_prefill``: the prefill tiles, E2M1 weights as int8 operands, IGMMA) or the
activation kernel (``quant_kernels.act_quant._act_quant_kernel``: bfloat16 rows of ``--k`` columns, per token
without clipping or NVFP4 / MXFP4 groups, the configs its autotuner keeps at prefill sizes; its count holds the per-element
division fallback for scales outside 2^-96..2^96 too, which runs only there) it compiles
the kernel with Triton for ``--arch`` (default sm_90, Hopper) as the JIT would on an aligned
call (pointers, sizes and strides divisible by 16), disassembles the cubin with Triton's
bundled ``nvdisasm`` and reports the SASS instruction mix: how many integer (LOP3, IMAD,
SHF, IADD3), float (FFMA), dp4a (IDP), load and shared-memory instructions and barriers
the kernel holds, how many of its instructions one K step runs (its longest loop), how many wgmmas
a step lets stay in flight at its waits and whether ptxas serialized them (its C7515 note), how many
layout conversions Triton put in (``convert_layout``; inside the K loop they go through
shared memory with a barrier each), and the registers a thread
uses (``cuobjdump -res-usage``), with the warps an SM can hold at that count (ncu found the
decode kernel latency-bound at the occupancy its registers allow). These are static counts of
the whole kernel, not a speed measurement: they show where the instructions go and which
configs shuffle their tiles, which ``kernel_bench.py`` then times on a GPU.

    python benchmarks/kernel_sass.py --kernel fpx_row --element e3m2 --out benchmarks/results/kernel_sass_fpx_row
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from pipeline.results import library_versions  # noqa: E402

KERNELS = ("fpx_row", "fpx_tile", "w4a4_gemv", "w4a4_tc", "w4a4_tc_prefill", "act_quant", "attention")
# attention --element: the decode attention's partial kernel over a bf16 cache, or a packed one of INT4 K and UINT4 V
# (zero points) with a scale per token: each tile dequantized, or (``_factored``) its scales factored out of the dots.
ATTENTION_CASES = ("bf16", "int4xuint4", "int4xuint4_factored")
# act_quant --element: the activation element, whether its codes are written as E4M3 bytes (the FP8 path), its group
# (0: per token), scale kind (reference.SCALE_KIND_CODES) and the weight element whose dp4a order it writes (None:
# natural order; 'int4' with E4M3 bytes: the E4M3 planes of INT4 weights' order, the tensor-core kernel's FP8 forms).
ACT_ELEMENTS = {"int4": ("int4", False, 0, "float", None), "e2m1": ("e2m1", False, 0, "float", None),
                "int4_e4m3": ("int4", True, 0, "float", None), "e2m1_e4m3": ("e2m1", True, 0, "float", None),
                "int4_planes_e4m3": ("int4", True, 0, "float", "int4"),
                "e2m1_planes_e4m3": ("e2m1", True, 0, "float", "int4"),
                "nvfp4": ("e2m1", False, 16, "e4m3", None), "mxfp4": ("e2m1", False, 32, "e8m0", None)}
# SASS opcodes reported in their own column; the rest are counted in the total only.
COLUMNS = ("LOP3", "IMAD", "SHF", "PRMT", "IADD3", "FFMA", "HMUL2", "I2F", "IDP", "HMMA", "IMMA", "HGMMA", "IGMMA",
           "QGMMA", "LDG", "LDGSTS", "LDS", "STS", "BAR")
ALIGNED = 16  # the divisibility Triton's JIT assumes of an aligned pointer or size argument
GUARD = r"@!?U?P\w+\s+"  # a SASS instruction's guard predicate (@P0, @!UP1, ...)


def add_group_arguments(signature: dict, constants: dict, group: int, exp_bias: int, scales: str = "fp32") -> None:
    """The FPx kernels' scales-in-groups arguments, added to an ASTSource's ``signature`` and ``constants`` after
    the other constants are marked constexpr: GROUP and G_UNIT (as a launch sets it,
    ``fpx_gemm.group_unit_shift``), ``stride_gs``, ``gscale_ptr`` (a pointer in groups, None per channel, as a launch
    leaves it), and SCALE_CODE for ``scales`` 'e4m3' (NVFP4's bytes, with the rows' global scales at
    ``gglobal_ptr``) or 'e8m0' (MXFP4's bytes; 'fp32': fp32 scales)."""
    from quant_kernels.fpx_gemm import group_unit_shift
    from quant_kernels.reference import SCALE_KIND_CODES

    shift = group_unit_shift(exp_bias) if group else 0
    constants.update(GROUP=group, G_UNIT=2.0 ** (127 - exp_bias - shift), SCALE_CODE=SCALE_KIND_CODES.get(scales, 0))
    signature.update(GROUP="constexpr", G_UNIT="constexpr", stride_gs="i32", SCALE_CODE="constexpr")
    if group:
        signature["gscale_ptr"] = "*u8" if scales != "fp32" else "*fp32"
    else:
        constants["gscale_ptr"] = None
        signature["gscale_ptr"] = "constexpr"
    if scales == "e4m3":
        signature["gglobal_ptr"] = "*fp32"
    else:
        constants["gglobal_ptr"] = None
        signature["gglobal_ptr"] = "constexpr"


def fpx_row_source(element: str, config: tuple[int, ...], mma: bool = False, group: int = 0, scales: str = "fp32",
                   gated: bool = False):
    """The FPx row kernel's ASTSource for one row of bfloat16 activations and one (BLOCK_N, BLOCK_KW, warps,
    stages, PREFETCH[, FOLD, LOOP_STAGES[, SPLIT_K[, MAXNREG]]]); ``mma``: its tensor-core form (``PTQ_FPX_MMA=1``);
    ``group``: scales per ``group`` codes (INT4, E2M1), encoded as ``scales`` says (``add_group_arguments``);
    ``gated``: silu(gate) * up in the epilogue (GATED, bfloat16 out). As at Llama-3-8B's shapes: every tile whole
    (EVEN), and the high plane interleaved for ``INTERLEAVED_BITS`` (the fp32 form, ungated)."""
    from triton.compiler import ASTSource

    from quant_kernels.fpx_gemm import (
        HIGH_PLANE_WIDTH, INTERLEAVED_BITS, ROW_X_SCALE_EXP, _fpx_row_kernel, kernel_fields,
    )
    from quant_layers.packing import element_named

    fmt = element_named(element)
    _, man_bits, exp_bias = kernel_fields(element, fmt.bits)
    high = HIGH_PLANE_WIDTH[fmt.bits]
    interleaved = fmt.bits in INTERLEAVED_BITS and not mma and not gated
    pointers = ["*bf16", "*i32", "*i32" if interleaved else "*i16" if high == 2 else "*u8", "*fp32", "*bf16", "*bf16",
                "*fp32", "*i32"]
    names = ["x_ptr", "low_ptr", "high_ptr", "scale_ptr", "bias_ptr", "out_ptr", "partial_ptr", "count_ptr", "M", "N",
             "KW", "stride_xm", "stride_om", "stride_low", "stride_high", "unit"]
    signature = dict(zip(names, pointers + ["i32"] * 7 + ["fp32"]))
    constants = dict(BITS=fmt.bits, MAN_BITS=man_bits, HIGH_WIDTH=high, HAS_BIAS=False,
                     X_SCALE=2.0**ROW_X_SCALE_EXP, BLOCK_M=1, BLOCK_N=config[0], BLOCK_KW=config[1], PREFETCH=config[4],
                     LOOP_STAGES=config[6] if len(config) > 6 else 1, MMA=mma, UNIT_EXP=127 - exp_bias,
                     USE_ASM=True, SPLIT_K=config[7] if len(config) > 7 else 1, INTERLEAVED=interleaved,
                     EVEN=True, GATED=gated, ROUND_BF16=gated, ROUND_F16=False)
    signature.update({name: "constexpr" for name in constants})
    add_group_arguments(signature, constants, group, exp_bias, scales)
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i in range(15) if names[i] != "M"}
    return ASTSource(_fpx_row_kernel, signature, constants, aligned)


def fpx_tile_rows(config: tuple[int, ...]) -> int:
    """An FPx tile config's BLOCK_M: its sixth field, 16 where it has five."""
    return config[5] if len(config) > 5 else 16


def fpx_tile_source(element: str, config: tuple[int, ...], group: int = 0, scales: str = "fp32", dtype: str = "bf16"):
    """The FPx tensor-core kernel's ASTSource on its PAIRED path for ``dtype`` (bf16 or fp16) activation rows and one
    (BLOCK_N, BLOCK_K, warps, stages, SWAP_AB[, BLOCK_M]) (BLOCK_M 16, a decode batch's, unless given); its configs
    are the autotuner's, unswapped (``GPU_PAIRED_CONFIGS``) and swapped (``GPU_SWAP_CONFIGS``), the codes placed as
    values of x's dtype (``group``: scales per ``group`` codes, INT4 or E2M1, each step's sums scaled where it lies in
    one group, else each word's codes times its scales, as values of x's dtype (SCALED_VALUES) or placed in float32;
    ``scales``: their encoding, ``add_group_arguments``), every tile whole (EVEN, as at Llama-3-8B's shapes); swapped
    tiles in the dot's register pairs as ``PTQ_FPX_LANE`` says, FP6's high words two a load (aligned)."""
    from triton.compiler import ASTSource

    from quant_kernels.fpx_gemm import HIGH_PLANE_WIDTH, _fpx_kernel, kernel_fields, tile_lane_on
    from quant_layers.packing import element_named

    fmt = element_named(element)
    exp_bits, man_bits, exp_bias = kernel_fields(element, fmt.bits)
    high = HIGH_PLANE_WIDTH[fmt.bits]
    names = ["x_ptr", "low_ptr", "high_ptr", "low_words_ptr", "high_words_ptr", "scale_ptr", "bias_ptr", "out_ptr",
             "M", "N", "K", "M_BUCKET", "stride_xm", "stride_low", "stride_high", "stride_low_words",
             "stride_high_words", "stride_om"]
    pointers = [f"*{dtype}", "*u8", "*u8", "*i32", "*i16" if high == 2 else "*u8", "*fp32", f"*{dtype}", f"*{dtype}"]
    signature = dict(zip(names, pointers + ["i32"] * 10))
    constants = dict(EXP_BITS=exp_bits, MAN_BITS=man_bits, EXP_BIAS=exp_bias, HIGH_WIDTH=high,
                     HAS_BIAS=False, DOT_F32=False, W_UNIT=2.0 ** (127 - exp_bias),
                     BLOCK_M=fpx_tile_rows(config), BLOCK_N=config[0], BLOCK_K=config[1], PAIRED=True,
                     SWAP_AB=bool(config[4]), VALUED_BF16=dtype == "bf16", UNIT_EXP=127 - exp_bias, USE_ASM=True,
                     EVEN=True, ROUND_BF16=False, ROUND_F16=False, LANE_PAIRS=tile_lane_on(),
                     HIGH_WORD_PAIRS=fmt.bits == 6)
    signature.update({name: "constexpr" for name in constants})
    signature.update(partial_ptr="*fp32", count_ptr="*i32", SPLIT_K="constexpr")
    add_group_arguments(signature, constants, group, exp_bias, scales)
    constants["SPLIT_K"] = 1
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i in range(len(names)) if names[i] not in ("M", "M_BUCKET")}
    return ASTSource(_fpx_kernel, signature, constants, aligned)


def w4a4_gemv_source(pair: str, config: tuple[int, ...], norm_tail: int = 0):
    """The W4A4 decode kernel's ASTSource for one activation row, ``pair`` = 'A_ELEMENTxW_ELEMENT' (the
    activation element changes only the host's unit), and one (BLOCK_N, BLOCK_KW, warps, stages, PREFETCH, FOLD).
    ``norm_tail`` N > 0: with a residual and the norm tail of N-wide output rows (o_proj's), quantized to the
    activation element for the weight element, as a decode layer's o_proj runs it."""
    import torch
    from triton.compiler import ASTSource

    from quant_kernels.reference import NormTail
    from quant_kernels.w4a4_gemv import _w4a4_gemv_kernel, e2m1_sign_bytes_on, norm_tail_flags

    a_element, w_element = pair.split("x")
    names = ["a_ptr", "a_scale_ptr", "w_ptr", "w_scale_ptr", "bias_ptr", "residual_ptr", "out_ptr", "norm_ptr",
             "codes_ptr", "codes_scale_ptr", "count_ptr", "M", "N", "KW", "M_BUCKET", "stride_am", "stride_wn",
             "stride_asm", "stride_wsn", "stride_om", "stride_rm", "unit", "stride_cm", "eps", "tail_clip", "tail_max"]
    weight_words = "*i64" if w_element == "int8" else "*i32"  # INT8 weights: 64-bit words of 8 bytes
    types = ["*i32", "*fp32", weight_words, "*fp32", "*bf16", "*bf16", "*bf16", "*bf16", "*i32", "*fp32", "*i32"]
    signature = dict(zip(names, types + ["i32"] * 10 + ["fp32", "i32"] + ["fp32"] * 3))
    tail = NormTail(torch.empty(0), 1e-5, a_element, 1.0, w_element) if norm_tail else None  # weight: not constexpr
    constants = dict(W_INT4=w_element == "int4", W_INT8=w_element == "int8", HAS_BIAS=False,
                     HAS_RESIDUAL=tail is not None, USE_ASM=True, ROUND_BF16=True,
                     ROUND_F16=False, BLOCK_M=1, BLOCK_N=config[0], BLOCK_KW=config[1], PREFETCH=config[4],
                     FOLD=config[5], USE_GDC=True, LOOP_STAGES=config[6] if len(config) > 6 else 1, GATED=False,
                     E2M1_SIGN_BYTES=w_element == "e2m1" and e2m1_sign_bytes_on(), **norm_tail_flags(tail, norm_tail))
    signature.update({name: "constexpr" for name in constants})
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i, name in enumerate(names)
               if signature[name] != "fp32" and name not in ("M", "M_BUCKET")}
    return ASTSource(_w4a4_gemv_kernel, signature, constants, aligned)


def w4a4_tc_source(pair: str, config: tuple[int, ...]):
    """The tensor-core decode kernel's ASTSource (``pair`` = 'A_ELEMENTxint4' or 'A_ELEMENTxe2m1': the weight
    element picks the int8 or FP8 dot, the activation element changes only the host's unit) for 16 rows and one
    (BLOCK_N, BLOCK_KB, warps, stages), steps unmasked, K unsplit (a split adds only the atomic epilogue to the
    same loop); with a prefill tile's (BLOCK_N, BLOCK_KB, warps, stages, BLOCK_M, GROUP_M), the prefill launch's
    (``w4a4_tc_prefill_triton``: E2M1 weights as int8 operands, no programmatic dependent launch; 'e4m3xint4' and
    'e4m3xe2m1': the weights as E4M3 operands against E4M3 activation planes, one dot a step accumulating in wgmma;
    for the decode kernel 'e4m3xe2m1' only, the form its linear runs at 16 rows). 'packedxint4' and 'packedxe2m1':
    the activations' packed codes, both nibbles decoded in the kernel as the weight's (A_PACKED; E2M1 on the one-dot
    FP8 form). INT4 weights on the int8 dots sum their odd nibbles apart where ``PTQ_TC_TWO_ACC=1`` says so, and a
    narrow tile's warps split its steps' K unless ``PTQ_TC_WARP_SPLIT=0``, and the decode kernel's int8 dots load by
    TMA where ``PTQ_TC_TMA`` is 1 or host, as the launches' do (``tc_two_accumulators_on``, ``tc_warp_slices``,
    ``tc_tma_form``; host: descriptor parameters in the signature)."""
    from triton.compiler import ASTSource

    from quant_kernels.w4a4_gemv import (TMA_COPIES, TMA_HOST, _w4a4_tc_kernel, tc_decode_flags, tc_tma_form,
                                         tc_two_accumulators_on, tc_warp_slices)

    names = ["a_ptr", "a_scale_ptr", "w_ptr", "w_scale_ptr", "bias_ptr", "residual_ptr", "out_ptr", "partial_ptr",
             "count_ptr", "M", "N", "KB", "M_BUCKET", "stride_am", "stride_wn", "stride_asm", "stride_wsn",
             "stride_om", "stride_rm", "unit"]
    types = ["*i8", "*fp32", "*u8", "*fp32", "*bf16", "*bf16", "*bf16", "*i32", "*i32"] + ["i32"] * 10 + ["fp32"]
    prefill = len(config) > 4
    e2m1 = pair.endswith("e2m1")
    packed = pair.startswith("packed")
    flags = tc_decode_flags("e2m1" if e2m1 else "int4", pair.startswith("e4m3"), packed)  # the launch's form
    e4m3 = flags["A_E4M3"]  # the one-dot FP8 form, its wgmma accumulating the steps
    types[0] = "*u8" if packed else "*fp8e4nv" if e4m3 else types[0]
    signature = dict(zip(names, types))
    constants = dict(HAS_BIAS=False, HAS_RESIDUAL=False, USE_ASM=True, ROUND_BF16=True, ROUND_F16=False,
                     BLOCK_M=config[4] if prefill else 16, BLOCK_N=config[0], BLOCK_KB=config[1], SPLIT_K=1,
                     EVEN=True, USE_GDC=not prefill, GROUP_M=config[5] if prefill else 1, **flags,
                     TWO_ACC=not e2m1 and not e4m3 and not prefill and tc_two_accumulators_on())
    # the prefill launch takes E2M1 weights off the E4M3 planes as int8 operands of twice their values
    constants.update(W_E2M1=flags["W_E2M1"] and not prefill, W_E2M1_INT8=flags["W_E2M1"] and prefill)
    constants["WARP_K"] = tc_warp_slices({**constants, "num_warps": config[2]})
    # the decode launch's operands aligned, as ``aligned`` below declares them; the prefill launch copies
    constants["TMA"] = TMA_COPIES if prefill else tc_tma_form(constants)
    if constants["TMA"] == TMA_HOST:
        signature.update(w_desc=f"tensordesc<u8[{config[0]}, {config[1]}]>",
                         a_desc=f"tensordesc<{types[0][1:]}[{constants['BLOCK_M']}, 1, {config[1]}]>")
    else:
        constants.update(w_desc=None, a_desc=None)
    signature.update({name: "constexpr" for name in constants})
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i in range(19) if names[i] not in ("M", "M_BUCKET")}
    return ASTSource(_w4a4_tc_kernel, signature, constants, aligned)


def attention_source(case: str, config: tuple[int, ...]):
    """The decode attention's partial kernel (``flash_decode._partial_kernel``) for bfloat16 queries of Llama-3-8B's
    heads (head dim 128, 4 query rows a K/V head, a boolean mask), ``case`` one of ATTENTION_CASES, and one
    (BLOCK_N, head dim, warps, stages[, ..., MAXNREG]), its strides aligned."""
    from triton.compiler import ASTSource

    from quant_kernels.flash_decode import ELEMENT_IDS, OFFSET_CODES, _partial_kernel, pair_words_asm

    import torch

    packed = case != "bf16"
    names = ["q_ptr", "k_ptr", "v_ptr", "mask_ptr", "acc_ptr", "ml_ptr", "k_scale_ptr", "k_zero_ptr", "v_scale_ptr",
             "v_zero_ptr", "L", "H_KV", "G", "scale", "split_len", "n_splits", "stride_qb", "stride_qh", "stride_qg",
             "stride_kb", "stride_kh", "stride_kl", "stride_vb", "stride_vh", "stride_vl", "stride_mb"]
    cache = "*u8" if packed else "*bf16"
    types = ["*bf16", cache, cache, "*u8"] + ["*fp32"] * 6 + ["i32"] * 3 + ["fp32"] + ["i32"] * 12
    signature = dict(zip(names, types))
    magic, base = OFFSET_CODES[torch.bfloat16]
    constants = dict(D=config[1], BLOCK_G=16, BLOCK_N=config[0], HAS_MASK=True, DOT_F32=False, PACKED=packed,
                     K_ELEMENT=ELEMENT_IDS["int4"], V_ELEMENT=ELEMENT_IDS["uint4"], K_GROUP=config[1],
                     V_GROUP=config[1], K_ZERO=False, V_ZERO=packed, ROUND_BF16=False, USE_GDC=True,
                     FACTORED=case.endswith("_factored"), MAGIC=magic, BASE=base,
                     K_ASM=pair_words_asm(magic, True), V_ASM=pair_words_asm(magic, False))
    signature.update({name: "constexpr" for name in constants})
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i, name in enumerate(names)
               if name.endswith("_ptr") or name.startswith("stride")}
    return ASTSource(_partial_kernel, signature, constants, aligned)


def act_quant_source(case: str, config: tuple[int, ...], k: int):
    """The activation kernel's ASTSource for rows of ``k`` bfloat16 columns (``case``: ACT_ELEMENTS; per token
    without clipping, or the block-scaled formats) and one (BLOCK_M, CHUNK, warps, stages, ROW_STEPS)."""
    from triton.compiler import ASTSource

    from quant_kernels.act_quant import DP4A_FOR_IDS, _act_quant_kernel, _tile, clamp_kind, row_pieces
    from quant_kernels.reference import SCALE_KIND_CODES

    element, fp8_codes, group, scale_kind, dp4a_for = ACT_ELEMENTS[case]
    names = ["x_ptr", "h_ptr", "norm_ptr", "normed_ptr", "packed_ptr", "scale_ptr", "tensor_amax_ptr", "M", "K",
             "M_BUCKET", "n_scales", "stride_xm", "stride_pm", "stride_sm", "clip_ratio", "max_value", "inv_sqrt_b",
             "eps"]
    types = ["*bf16", "*fp32", "*bf16", "*bf16", "*u8", "*fp32", "*fp32"] + ["i32"] * 7 + ["fp32"] * 4
    signature = dict(zip(names, types))
    block_k = _tile(k, group, 0)[1]
    constants = dict(ELEMENT_INT4=element == "int4", ELEMENT_INT8=False, SCALE_KIND=SCALE_KIND_CODES[scale_kind],
                     GROUP=group or block_k, CLAMP=clamp_kind(element, scale_kind, 1.0), WORDS=True, PAIR_MAX=True,
                     HAD_BLOCK=0, HB=1, DOT_F32=False, ROUND_BF16=True, ROUND_F16=False, AMAX_ONLY=False,
                     OUT_FP8=fp8_codes, DP4A_FOR=DP4A_FOR_IDS[dp4a_for], LAUNCH_DEPENDENTS=False, USE_GDC=False,
                     PROLOGUE=0,
                     **row_pieces(k, group, 0, 0), BLOCK_M=config[0], BLOCK_K=block_k, CHUNK=config[1],
                     ROW_STEPS=config[4], SPLIT=False)
    signature.update({name: "constexpr" for name in constants})
    aligned = {(i,): [["tt.divisibility", ALIGNED]] for i, name in enumerate(names)
               if name in ("x_ptr", "packed_ptr", "scale_ptr", "K", "stride_xm", "stride_pm")}
    return ASTSource(_act_quant_kernel, signature, constants, aligned)


def act_quant_configs(k: int, group: int = 0) -> list[tuple[int, ...]]:
    """(BLOCK_M, CHUNK, warps, stages, ROW_STEPS) of the configs the activation kernel's autotuner keeps for rows of
    k columns at M = 8192, per token or in groups of ``group``."""
    from quant_kernels import act_quant

    block_k = act_quant._tile(k, group, 0)[1]
    kept = act_quant._prune_tiles(act_quant._act_quant_autotuned.configs, dict(M_BUCKET=4096), HAD_BLOCK=0,
                                  BLOCK_K=block_k, GROUP=group or block_k, AMAX_ONLY=False, PROLOGUE=0)
    return [(c.kwargs["BLOCK_M"], c.kwargs["CHUNK"], c.num_warps, c.num_stages, c.kwargs["ROW_STEPS"]) for c in kept]


def config_label(kernel: str, config: tuple[int, ...]) -> str:
    """A config in words: (BLOCK_M, CHUNK, warps, stages, ROW_STEPS) for act_quant, else tile sizes, warps, stages
    and the decode kernels' options (prefetch, fold, pipelined)."""
    if kernel == "w4a4_tc_prefill":
        return f"{config[0]}x{config[4]}x{config[1]} w{config[2]} s{config[3]}" + (
            f" group{config[5]}" if config[5] > 1 else "")
    if kernel == "fpx_tile":
        return (f"{fpx_tile_rows(config)}x{config[0]}x{config[1]} w{config[2]} s{config[3]}"
                + (" swapped" if config[4] else ""))
    if kernel == "act_quant":
        return (f"{config[0]} row{'s' if config[0] > 1 else ''}" + (f", chunk {config[1]}" if config[1] else "")
                + (f", {config[4]} blocks in turn" if config[4] > 1 else "") + f" w{config[2]} s{config[3]}")
    return ("x".join(map(str, config[:2])) + f" w{config[2]} s{config[3]}"
            + (" prefetch" if config[4:] and config[4] else "")
            + (f" fold{config[5]}" if config[5:] and config[5] > 1 else "")
            + (f" pipelined{config[6]}" if config[6:] and config[6] > 1 else "")
            + (f" split{config[7]}" if config[7:] and config[7] > 1 else "")
            + (f" maxnreg{config[8]}" if config[8:] else ""))


def sass_counts(source, config: tuple[int, ...], arch: int, label: str) -> dict:
    """Compile ``source`` for sm_``arch`` with the config's warps, stages and register cap (an FPx row config's
    ninth field); count its SASS and conversions."""
    import triton
    from triton.backends.compiler import GPUTarget

    maxnreg = config[8] if len(config) > 8 else None
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=config[2], num_stages=config[3], maxnreg=maxnreg))
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        sass = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([os.path.join(os.path.dirname(nvdisasm), "cuobjdump"), "-res-usage", cubin],
                               capture_output=True, text=True, check=True).stdout
    opcodes = collections.Counter()
    for line in sass.splitlines():
        found = re.match(rf"\s+/\*[0-9a-f]{{4,}}\*/\s+(?:{GUARD})?([A-Z][A-Z0-9_]*)", line)
        if found:
            opcodes[found.group(1)] += 1
    loop = longest_loop(sass)
    return {"config": label, "instructions": sum(opcodes.values()), "loop": len(loop),
            **{op: opcodes.get(op, 0) for op in COLUMNS},
            "wgmma_wait": wgmma_wait(loop),
            "wgmma_serialized": wgmma_serialization(kernel.asm["ptx"], arch, maxnreg)
            if any(op.endswith("GMMA") for op in opcodes) else "",
            "convert_layout": kernel.asm["ttgir"].count("ttg.convert_layout"),
            "shared_bytes": kernel.metadata.shared, **resource_usage(usage, config[2])}


def longest_loop(sass: str) -> list[str]:
    """The instructions of the longest loop of an ``nvdisasm`` listing: from a predicated backward branch's target
    label to the branch, both included; none without one. In these kernels that is one K step, the part that runs per
    weight. An unpredicated backward branch closes no loop: it returns from code placed out of line (a TMA barrier
    wait's retries) to where that code was left, or it is the idle branch to itself after the kernel's exit."""
    labels: dict[str, int] = {}
    waiting: list[str] = []
    listing: list[tuple[int, str]] = []
    branches: list[tuple[int, str]] = []
    for line in sass.splitlines():
        label = re.match(r"(\.L_x_\d+):", line.strip())
        if label:
            waiting.append(label.group(1))
            continue
        found = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*)", line)
        if found:
            address = int(found.group(1), 16)
            labels.update((name, address) for name in waiting)
            waiting = []
            listing.append((address, found.group(2)))
            target = re.search(rf"^{GUARD}BRA\b.*?(\.L_x_\d+)", found.group(2))
            if target:
                branches.append((address, target.group(1)))
    spans = [(labels[name], address) for address, name in branches if labels.get(name, address) < address]
    loops = [[text for a, text in listing if first <= a <= last] for first, last in spans]
    return max(loops, key=len, default=[])


def wgmma_wait(loop: list[str]) -> int | None:
    """The fewest wgmma groups a K step lets stay in flight at its waits (``WARPGROUP.DEPBAR.LE gsb0, N``): 0 when
    some wgmma is waited for before anything else runs, so that the step's other work never overlaps it; None
    without a wgmma in the loop (or without a wait there: none is then held back)."""
    if not any(re.match(rf"(?:{GUARD})?[A-Z]GMMA\.", text) for text in loop):
        return None
    levels = [int(found.group(1), 16) for text in loop
              if (found := re.search(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*(0x[0-9a-f]+|\d+)", text))]
    return min(levels, default=None)


def wgmma_serialization(ptx: str, arch: int, maxnreg: int | None) -> str:
    """Why ptxas serialized the kernel's wgmmas (its C7515 note: every wgmma then waits for the one before,
    whatever waits Triton placed), or '' where it did not: the PTX assembled again, verbose, by the ptxas Triton
    uses for sm_``arch`` (sm_90a on Hopper: wgmma needs it)."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        command = [ptxas, f"-arch=sm_{arch}{'a' if arch >= 90 else ''}", "-v", source, "-o",
                   os.path.join(tmp, "kernel.cubin")] + ([f"-maxrregcount={maxnreg}"] if maxnreg else [])
        notes = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    return serialization_reason(notes)


def serialization_reason(notes: str) -> str:
    """The reason in ptxas's C7515 note ('wgmma.mma_async instructions are serialized due to ...'), '' without one."""
    found = re.search(r"C7515\).*?serialized due to (.*?)(?: in the function '[^']*')?\.?\s*$", notes, re.MULTILINE)
    return found.group(1).strip() if found else ""


def resource_usage(text: str, warps: int) -> dict:
    """Registers a thread and spilled (local) bytes from ``cuobjdump -res-usage``, and the warps an SM can hold
    at that register count (65,536 registers an SM, allocated per warp in units of 256, at most 64 warps)."""
    found = re.search(r"REG:(\d+).*?LOCAL:(\d+)", text)
    if not found:
        raise RuntimeError(f"cuobjdump -res-usage gave no register count: {text[:200]!r}")
    registers, local = int(found.group(1)), int(found.group(2))
    per_warp = -(-registers * 32 // 256) * 256
    blocks = 65536 // (per_warp * warps)
    return {"registers": registers, "local_bytes": local, "warps_per_sm": min(blocks * warps, 64)}


def markdown(result: dict) -> str:
    lines = [f"# SASS of `{result['kernel']}` ({result['case']}) for sm_{result['arch']}, compiled without a GPU", "",
             f"Date: {result['date']}. Versions: {result['versions']}.", f"Command: `{result['command']}`", "",
             "Static counts over the whole kernel (one K step's body plus prologue and epilogue), per autotuning "
             "config; `loop` counts the instructions of its longest loop (one K step); `wgmma wait` is the fewest "
             "wgmma groups the step lets stay in flight at its waits (0: the step's other work never overlaps a "
             "wgmma; - without one); `wgmma serialized` is ptxas's reason where it made every wgmma wait for the one "
             "before (its C7515 note); `convert_layout` counts Triton's layout conversions (through shared memory).",
             "",
             "| config | SASS | loop | " + " | ".join(COLUMNS) + " | wgmma wait | wgmma serialized | convert_layout | "
             "shared bytes | registers | spilled bytes | warps an SM holds (registers) |",
             "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|---|---|---|---|"]
    for r in result["configs"]:
        wait = "-" if r["wgmma_wait"] is None else r["wgmma_wait"]
        lines.append(f"| {r['config']} | {r['instructions']} | {r['loop']} | " + " | ".join(str(r[c]) for c in COLUMNS)
                     + f" | {wait} | {r['wgmma_serialized'] or '-'} | {r['convert_layout']} | {r['shared_bytes']} | "
                     f"{r['registers']} | {r['local_bytes']} | {r['warps_per_sm']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernel", choices=KERNELS, default="fpx_row")
    p.add_argument("--element", default="e3m2",
                   help="fpx_row: the weight element (e3m2, e2m3, e2m2, e3m1, e2m1, e3m0); w4a4_gemv: "
                        "A_ELEMENTxW_ELEMENT of int4 and e2m1, or int8xint4 / int8xint8, e.g. int4xint4; "
                        "w4a4_tc, w4a4_tc_prefill: A_ELEMENTxint4 or A_ELEMENTxe2m1 (e4m3x...: planes; w4a4_tc: "
                        "packedxint4, packedxe2m1, packed codes); act_quant: "
                        + ", ".join(ACT_ELEMENTS) + "; attention: " + ", ".join(ATTENTION_CASES))
    p.add_argument("--k", type=int, default=4096, help="act_quant: the activation rows' width")
    p.add_argument("--norm_tail", type=int, default=0, metavar="N",
                   help="w4a4_gemv: with a residual and the norm tail of N-wide output rows (a decode layer's o_proj; "
                        "0: without)")
    p.add_argument("--mma", action="store_true", help="fpx_row: its tensor-core form for one row (PTQ_FPX_MMA=1)")
    p.add_argument("--gated", action="store_true",
                   help="fpx_row: a gated product (silu(gate) * up in the epilogue, as an MLP's fused gate/up)")
    p.add_argument("--group", type=int, default=0,
                   help="fpx_row, fpx_tile: scales per GROUP codes along K (INT4 or E2M1); the row kernel's on "
                        "ROW_GROUP_CONFIGS (0: per channel)")
    p.add_argument("--scales", choices=("fp32", "e4m3", "e8m0"), default="fp32",
                   help="with --group: the scales' encoding (e4m3: NVFP4's, with a global scale a row; e8m0: MXFP4's)")
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16",
                   help="fpx_tile: the activations' dtype (fp16 places the codes as fp16 values)")
    p.add_argument("--arch", type=int, default=90, help="compute capability times ten (90: Hopper)")
    p.add_argument("--configs", default="",
                   help="w4a4_tc: ';'-separated BLOCK_N,BLOCK_KB,split_k,warps,stages to compile instead of "
                        "TC_CONFIGS (gemv_ncu.py --configs' form; split_k adds only the atomic epilogue, and is "
                        "compiled unsplit)")
    p.add_argument("--limit", type=int, help="only the first LIMIT configs (default: all)")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if "TRITON_INTERPRET" in os.environ and os.environ["TRITON_INTERPRET"] not in ("", "0"):
        p.error("TRITON_INTERPRET is set: unset it, the kernels must be compiled, not interpreted")
    if args.group and (args.group < 0 or args.group % 8 or args.element not in ("int4", "e2m1") or args.mma
                       or args.kernel not in ("fpx_row", "fpx_tile")):
        p.error(f"--group takes INT4 or E2M1 weights on fpx_row (its fp32 form: no --mma) or fpx_tile, in groups of "
                f"a multiple of 8 codes; got {args.kernel} of {args.element} in groups of {args.group}")
    if args.scales != "fp32" and not args.group:
        p.error(f"--scales {args.scales} is an encoding of scales in groups: give --group")
    if args.configs and args.kernel != "w4a4_tc":
        p.error(f"--configs names tensor-core decode configs: give --kernel w4a4_tc, not {args.kernel}")
    if args.kernel == "fpx_row":
        from quant_kernels.fpx_gemm import (
            ROW_CAPPED_CONFIGS, ROW_CONFIGS, ROW_GROUP_CONFIGS, ROW_PIPELINED_CONFIGS, ROW_SPLIT_CONFIGS,
        )

        configs = ROW_CONFIGS + [(bn, bkw, w, stages, False, 1, stages)
                                 for bn, bkw, w, stages in ROW_PIPELINED_CONFIGS]
        configs += [(bn, bkw, w, stages, prefetch, 1, 1, split)
                    for bn, bkw, w, stages, prefetch, split in ROW_SPLIT_CONFIGS]
        configs += [(bn, bkw, w, stages, False, 1, 1, split, cap)
                    for bn, bkw, w, stages, split, cap in ROW_CAPPED_CONFIGS]
        if args.group:
            configs = [(bn, bkw, w, stages, False, 1, 1, split) for bn, bkw, w, stages, split in ROW_GROUP_CONFIGS]
        from quant_kernels.reference import fpx_element
        from quant_layers.packing import element_named

        try:
            fpx_element(args.element, element_named(args.element).bits)
        except (KeyError, ValueError) as err:
            p.error(f"--element {args.element!r}: {err}")
        if args.mma:  # the tensor-core form has no prefetching path
            configs = [c for c in configs if not c[4]]

        def build(case, config):
            return fpx_row_source(case, config, args.mma, args.group, args.scales, args.gated)
    elif args.kernel == "fpx_tile":
        from quant_kernels.fpx_gemm import GPU_PAIRED_CONFIGS, GPU_SWAP_CONFIGS

        configs = [(bn, bk, w, s, swap, bm) for swap, tiles in ((False, GPU_PAIRED_CONFIGS), (True, GPU_SWAP_CONFIGS))
                   for bm, bn, bk, w, s in tiles]

        def build(case, config):
            return fpx_tile_source(case, config, args.group, args.scales, args.dtype)
    elif args.kernel == "act_quant":
        if args.element not in ACT_ELEMENTS:
            p.error(f"--element for act_quant is one of {', '.join(ACT_ELEMENTS)}; got {args.element!r}")
        if args.k < 16 or args.k % 16:
            p.error(f"--k must be a positive multiple of 16, got {args.k}")
        configs = act_quant_configs(args.k, ACT_ELEMENTS[args.element][2])

        def build(case, config):
            return act_quant_source(case, config, args.k)
    elif args.kernel in ("w4a4_tc", "w4a4_tc_prefill"):
        from quant_kernels.w4a4_gemv import (
            TC_CONFIGS, TC_PREFILL_CONFIGS, TC_PREFILL_ONE_DOT_CONFIGS, tc_config_takes, tc_decode_flags,
        )

        pairs = ("int4xint4", "e2m1xint4", "int8xint4", "int4xe2m1", "e2m1xe2m1")
        extra = ("e4m3xint4", "e4m3xe2m1") if args.kernel == "w4a4_tc_prefill" else ("e4m3xe2m1", "packedxint4",
                                                                                      "packedxe2m1")
        if args.element not in pairs + extra:
            p.error(f"--element for {args.kernel} is A_ELEMENTxint4 (int4, e2m1 or int8 activations) or "
                    f"A_ELEMENTxe2m1 (int4 or e2m1 activations; e4m3 planes, e4m3xint4 or e4m3xe2m1, for "
                    f"w4a4_tc_prefill; e4m3xe2m1, packedxint4 or packedxe2m1, packed codes, for w4a4_tc); got "
                    f"{args.element!r}")
        if args.kernel == "w4a4_tc":
            from benchmarks.decode_rows_bench import extra_tc_configs

            w_element = "e2m1" if args.element.endswith("e2m1") else "int4"
            try:  # gemv_ncu's checks, and whole warpgroups for E2M1
                named = extra_tc_configs(args.configs, w_element) if args.configs else TC_CONFIGS
            except ValueError as error:
                p.error(f"--configs: {error}")
            flags = tc_decode_flags(w_element, args.element.startswith("e4m3"), args.element.startswith("packed"))
            taken = [c for c in named if tc_config_takes(dict(flags, BLOCK_N=c[0], BLOCK_KB=c[1], num_warps=c[3]))]
            if args.configs and len(taken) < len(named):
                bad = next(c for c in named if c not in taken)
                p.error(f"--configs: {','.join(map(str, bad))}: fewer than 16 weight rows a warp on FP8 dots run only "
                        "with their K in slices (not with PTQ_TC_WARP_SPLIT=0; on E4M3 planes: --element e4m3xe2m1)")
            configs = list(dict.fromkeys((bn, bkb, w, s) for bn, bkb, _, w, s in taken))
        else:
            tiles = TC_PREFILL_CONFIGS + (TC_PREFILL_ONE_DOT_CONFIGS if args.element.startswith("e4m3") else [])
            configs = [(bn, bkb, w, s, bm, g) for bn, bm, bkb, w, s, g in tiles]
        build = w4a4_tc_source
    elif args.kernel == "attention":
        import torch

        from quant_kernels.flash_decode import partial_tile

        if args.element not in ATTENTION_CASES:
            p.error(f"--element for attention is one of {', '.join(ATTENTION_CASES)}; got {args.element!r}")
        # the launch's tile but for the factored form's one-warp tile (PTQ_ATTENTION_TILE=32x1x3 compiles that)
        tile = partial_tile(args.element != "bf16", False, 1, 1, torch.device("cpu"))
        configs = [(tile.keys, 128, tile.warps, tile.stages) + ((False, 1, 1, 1, tile.maxnreg) if tile.maxnreg else ())]
        build = attention_source
    else:
        from quant_kernels.w4a4_gemv import (FOLD, GEMV_CONFIGS, GEMV_FOLDED_CONFIGS, GEMV_PIPELINED_CONFIGS,
                                             GEMV_PREFETCH_CONFIGS)

        configs = ([(*c, False, 1) for c in GEMV_CONFIGS] + [(*c, True, 1) for c in GEMV_PREFETCH_CONFIGS]
                   + [(*c, False, FOLD) for c in GEMV_FOLDED_CONFIGS]
                   + [(bn, bkw, w, stages, False, 1, stages) for bn, bkw, w, stages in GEMV_PIPELINED_CONFIGS])
        from quant_kernels.reference import DP4A_PAIRS

        if tuple(args.element.split("x")) not in DP4A_PAIRS:
            p.error(f"--element for w4a4_gemv is A_ELEMENTxW_ELEMENT, one of "
                    f"{', '.join(sorted('x'.join(pair) for pair in DP4A_PAIRS))}; got {args.element!r}")
        if args.norm_tail and (args.norm_tail % 8 or "int8" in args.element):
            p.error(f"--norm_tail N quantizes N-wide rows to INT4 / E2M1 dp4a bytes: N a positive multiple of 8 and "
                    f"4-bit elements, got N={args.norm_tail} with {args.element}")

        def build(case, config):
            return w4a4_gemv_source(case, config, args.norm_tail)
    if args.norm_tail and args.kernel != "w4a4_gemv":
        p.error("--norm_tail is for --kernel w4a4_gemv")
    if args.mma and args.kernel != "fpx_row":
        p.error("--mma is for --kernel fpx_row")
    if args.gated and (args.kernel != "fpx_row" or args.mma):
        p.error("--gated is for --kernel fpx_row in its fp32 form (no --mma)")
    if args.dtype != "bf16" and args.kernel != "fpx_tile":
        p.error(f"--dtype {args.dtype} is for --kernel fpx_tile (the other kernels compile for bfloat16 rows)")
    case = args.element + (f", K {args.k}" if args.kernel == "act_quant" else "")
    case += ", tensor cores" if args.mma else ", gated (silu(gate) * up)" if args.gated else ""
    case += ", fp16 x" if args.dtype == "fp16" else ""
    case += f", {'' if args.scales == 'fp32' else args.scales.upper() + ' '}scales per {args.group} codes" \
        if args.group else ""
    result = {"kernel": args.kernel, "case": case + (f", norm tail N {args.norm_tail}" if args.norm_tail else ""),
              "arch": args.arch,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": library_versions(),
              "command": command_line("kernel_sass.py", argv if argv is not None else sys.argv[1:]),
              "configs": []}
    for config in configs[:args.limit]:
        result["configs"].append(sass_counts(build(args.element, config), config, args.arch,
                                             config_label(args.kernel, config)))
        write_result_files(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
