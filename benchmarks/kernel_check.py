"""Correctness of the Triton kernels on a GPU: each one against its torch twin on the same device.

CI checks the kernels under ``TRITON_INTERPRET=1`` on the CPU; this script checks the
compiled kernels (autotuned tiles, the int8 / fp8 tensor-core dots, the real rounding
of the GPU) on random data (outliers, ragged M, real LLM widths):

* activation quantization (INT4, E2M1 per token, NVFP4, MXFP4, INT4 groups of 16 and 64;
  with and without the fused block Hadamard): the fractions of codes and of scales that
  differ from the twin's (both 0 without the Hadamard; with it the twin rotates in another
  summation order, so an amax may move by an ulp, an NVFP4 block scale then by one E4M3
  step, and a value on a rounding tie may go either way: at most 1e-3 of the codes, and
  1e-2 of the scales off by more than 1e-5 relative);
* the W4A4 GEMM, for every pair of formats the real-quantized linear uses (M <= 8 with
  per-row scales runs the decode kernel ``w4a4_gemv``; M = 16 and grouped M = 1 the split-K
  configs, operands swapped or not), the whole linear from bf16 rows at M <= 8
  (``w4a4_linear``), and the FPx weight-only GEMM (M = 1 its one-row kernel): into an
  output filled with NaN (``w4a4_linear`` allocates its own)
  first (every entry must be written), against the fp32 twin within 1e-5 of the output's
  magnitude plus one ulp of a half output dtype;
* the quantizers a compiled decode step compiles into its glue (KV4 per head, activations per
  token), through ``torch.compile`` with the step's options, against the same quantizers run
  eagerly: every level and scale equal (inductor on a GPU multiplies by reciprocals and
  divides approximately unless told otherwise; ``quantizer.true_divide``,
  ``models.decoding.compile_options``);
* the FP8 path: activation codes as E4M3 bytes and the weight widened to E4M3 (both equal
  to the twins' bytes), and the whole FP8-path linear (cuBLAS's row-wise FP8 GEMM) against
  the fp32 twin within two bfloat16 roundings (the product's and the bias sum's) plus
  2^-8 of the largest output (FP8 accumulation on Hopper).

The GEMM checks run first: the activation checks autotune a kernel per case, and a time
limit should cut those rather than the GEMMs.

    python benchmarks/kernel_check.py --out benchmarks/results/kernel_check_h200

Exit status 1 when any check fails. ``--cpu_dry_run`` runs tiny shapes under the
interpreter (to exercise the script without a GPU).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import command_line, write_result_files  # noqa: E402
import quant_kernels  # noqa: E402  (imports no triton: TRITON_INTERPRET can still be set in main)
from quant_kernels import reference  # noqa: E402
from quant_kernels.int8_gemm import quantize_rows_int8  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402
from quant_layers.packing import element_named, encode, pack_planes  # noqa: E402
from quant_layers.quantizer import QuantSpec  # noqa: E402

# name -> (element, group, scale kind, clip ratio)
ACT_FORMATS = {
    "int4-tok-clip0.9": ("int4", 0, "float", 0.9),
    "e2m1-tok": ("e2m1", 0, "float", 1.0),
    "nvfp4": ("e2m1", 16, "e4m3", 1.0),
    "nvfp4-static": ("e2m1", 16, "e4m3", 1.0),  # a given tensor amax, a third of x's: blocks above it saturate
    "mxfp4": ("e2m1", 32, "e8m0", 1.0),
    "int4-g64": ("int4", 64, "float", 1.0),
    "int4-g16": ("int4", 16, "float", 1.0),
}
# (activation format, weight format) of the W4A4 GEMMs the real-quantized linear runs.
GEMM_PAIRS = [("int4-tok-clip0.9", "int4-tok-clip0.9"), ("e2m1-tok", "e2m1-tok"), ("int4-tok-clip0.9", "e2m1-tok"),
              ("nvfp4", "nvfp4"), ("mxfp4", "mxfp4"), ("int4-tok-clip0.9", "int4-g64"),
              ("int4-g16", "int4-g16")]  # K steps of 16: the fp16 dot path, as NVFP4's
PER_ROW_PAIRS = [("int4-tok-clip0.9", "int4-tok-clip0.9"), ("e2m1-tok", "e2m1-tok"), ("int4-tok-clip0.9", "e2m1-tok")]
FPX_ELEMENTS = ("e3m2", "e2m3", "e2m2", "e3m1", "e2m1", "e3m0", "int4")  # the FPx kernels' weights
GPU_ACT_SHAPES = [(7, 4096), (257, 14336)]
# (batch, K/V heads, new tokens, head dim): a Llama-3-8B decode step and a prompt
GPU_KV_WRITE_SHAPES = [(1, 8, 1, 128), (2, 8, 2048, 128)]
DRY_KV_WRITE_SHAPES = [(1, 2, 3, 64)]
# (M, hidden K, MLP width N): Llama-3-8B's decode rows, and a small ragged one.
GPU_FUSED_DECODE_SHAPES = [(1, 4096, 14336), (8, 4096, 14336), (3, 576, 1536)]
DRY_FUSED_DECODE_SHAPES = [(2, 64, 96)]
# (M, N, K) of W4A8 / W8A8 on the decode kernel: the up to 8 rows it takes, ragged N.
GPU_INT8_DECODE_SHAPES = [(1, 4096, 4096), (4, 1000, 4096), (1, 4096, 14336), (300, 4096, 4096)]
DRY_INT8_DECODE_SHAPES = [(1, 40, 128), (5, 40, 256)]
# (M, N, K) of the tensor-core decode kernel: batch-8 and -16 decode at Llama-3-8B's shapes, 64 rows, and ragged N and
# K (masked steps).
GPU_TC_DECODE_SHAPES = [(8, 4096, 4096), (16, 14336, 4096), (5, 4096, 14336), (64, 6144, 4096), (13, 1000, 1000)]
DRY_TC_DECODE_SHAPES = [(5, 40, 200), (16, 32, 256)]
# The int8 prefill path (the tensor-core kernel tiled over M): ragged rows and sizes, and a Llama-3-8B prefill.
GPU_INT8_LINEAR_SHAPES = [(300, 1000, 1000), (2049, 4096, 4096), (513, 14336, 4096)]
DRY_INT8_LINEAR_SHAPES = [(70, 40, 200)]
# The e4m3 path's rows: the prefill launch (E2M1 linears' auto path from 513 rows), K up to 14336 (its sums
# accumulate in wgmma over the whole K), then the decode launch (12 rows, split K; its autotuning took a 120 s limit
# on the H200 when it ran first).
GPU_E4M3_LINEAR_SHAPES = [(300, 1000, 1000), (2049, 4096, 14336), (12, 4096, 4096)]
DRY_E4M3_LINEAR_SHAPES = [(12, 40, 200), (70, 40, 200)]
# Every new (M bucket, N, K) autotunes: a few shapes keep the check to minutes.
# (1, 6144, 4096) takes bfloat16 (OUT_DTYPES by position): the FPx row kernel's tensor-core form at a model's width.
GPU_GEMM_SHAPES = [(1, 40, 128), (1, 4096, 4096), (4, 4096, 4096), (1, 6144, 4096), (8, 4096, 4096),
                   (16, 4096, 4096), (33, 4096, 4096), (257, 6144, 4096)]
DRY_ACT_SHAPES = [(1, 128), (5, 256)]
# The quantizers a compiled decode step compiles into its glue: KV4 per head (K symmetric, V with a zero
# point), and the activations' per-token ones; rows of 8 heads of 128.
COMPILED_QUANTIZER_SPECS = {
    "int4-head": QuantSpec("int", 4, granularity="head"),
    "int4-head-asym": QuantSpec("int", 4, granularity="head", symmetric=False),
    "int4-tok-clip0.9": QuantSpec("int", 4, granularity="token", clip_ratio=0.9),
    "e2m1-tok": QuantSpec("fp", 4, exp_bits=2, granularity="token"),
}
COMPILED_QUANTIZER_HEAD_DIM = 128
GPU_COMPILED_QUANTIZER_SHAPES = [(2049, 1024)]
DRY_COMPILED_QUANTIZER_SHAPES = [(3, 256)]
DRY_GEMM_SHAPES = [(1, 40, 128), (5, 48, 256)]
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def random_activations(m: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Gaussian rows with a few outlier channels (x 8), as LLM activations have."""
    x = torch.randn(m, k, device=device) * 2
    x[:, :: max(k // 3, 1)] *= 8
    return x.to(dtype)


def check_act(x: torch.Tensor, name: str, hadamard_block: int) -> dict:
    element, group, kind, clip = ACT_FORMATS[name]
    amax = x.float().abs().amax() / 3 if name == "nvfp4-static" else None
    got = quant_kernels.quantize_activations(x, element, group, kind, clip, hadamard_block, tensor_amax=amax,
                                             backend="triton")
    want = reference.quantize_activations_ref(x, element, group, kind, clip, hadamard_block, tensor_amax=amax)
    codes = (got[0] != want[0]).float().mean().item()
    if hadamard_block:  # the fraction of scales off by more than a few ulps
        scales = ((got[1] - want[1]).abs() > 1e-5 * want[1].abs()).float().mean().item()
    else:
        scales = (got[1] != want[1]).float().mean().item()
    ok = codes == 0 and scales == 0 if not hadamard_block else codes <= 1e-3 and scales <= 1e-2
    return {"kernel": "act_quant", "case": name + (f" + H{hadamard_block}" if hadamard_block else ""),
            "shape": f"{x.shape[0]}x{x.shape[1]} {str(x.dtype).removeprefix('torch.')}",
            "codes_differ": codes, "scales_differ": scales, "ok": ok}


def check_compiled_quantizer(x: torch.Tensor, name: str) -> dict:
    """A quantizer compiled as a compiled decode step compiles its K/V quantizers (inductor, the step's options)
    against the same quantizer run eagerly on the device: every level and scale equal."""
    from models.decoding import compile_options
    from quant_layers.quantizer import Quantizer

    quantizer = Quantizer(COMPILED_QUANTIZER_SPECS[name], COMPILED_QUANTIZER_HEAD_DIM)

    def levels_and_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xg = quantizer.grouped(x)
        params = quantizer.fit(xg)
        return quantizer.levels(xg, params), params.scale

    torch._dynamo.reset()
    got = torch.compile(levels_and_scale, fullgraph=True, options=compile_options())(x)
    want = levels_and_scale(x)
    levels = (got[0] != want[0]).float().mean().item()
    scales = (got[1] != want[1]).float().mean().item()
    return {"kernel": "compiled quantizer", "case": name,
            "shape": f"{x.shape[0]}x{x.shape[1]} {str(x.dtype).removeprefix('torch.')}",
            "codes_differ": levels, "scales_differ": scales, "ok": levels == 0 and scales == 0}


# Hopper's FP8 tensor cores add into their accumulator with fewer bits than fp32 between
# promotions: cuBLAS's FP8 GEMM was off by up to 2.8e-3 of the largest output on the H200
# (benchmarks/results/kernels_h200.md), so the FP8 path is held to 2^-8 of it.
FP8_ACCUMULATION_OF_MAX = 2.0**-8


def close(out: torch.Tensor, want: torch.Tensor, of_max: float = 1e-5,
          rounded_before: torch.Tensor | None = None) -> tuple[bool, float]:
    """Within fp32-accumulation rounding: ``of_max`` of max |want| plus one ulp of a half out dtype.

    ``rounded_before``: the twin's values that were rounded to the out dtype before a last addition (a
    product before its residual). Their rounding may flip an ulp too, which the sum keeps however much
    the addition cancels: the bound takes their share as well."""
    rtol = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[out.dtype]
    err = (out.float() - want.float()).abs()
    bound = of_max * want.float().abs().max() + rtol * want.float().abs()
    if rounded_before is not None:
        bound = bound + of_max * rounded_before.float().abs().max() + rtol * rounded_before.float().abs()
    excess = (err / bound.clamp(min=1e-30)).max().item()
    return bool((err <= bound).all()) and not out.isnan().any().item(), excess


def check_gemm(m: int, n: int, k: int, a_name: str, w_name: str, out_dtype: torch.dtype,
               device: torch.device) -> dict:
    from quant_kernels.w4a4_gemm import w4a4_matmul_triton

    a_el, a_group, a_kind, a_clip = ACT_FORMATS[a_name]
    w_el, w_group, w_kind, w_clip = ACT_FORMATS[w_name]
    a = quant_kernels.quantize_activations(random_activations(m, k, torch.bfloat16, device), a_el, a_group, a_kind,
                                           a_clip, backend="triton")
    w = quant_kernels.quantize_activations(torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02, w_el, w_group,
                                           w_kind, w_clip, backend="triton")
    spec = dict(a_element=a_el, w_element=w_el, a_group=a_group, w_group=w_group)
    bias = torch.randn(n, device=device)
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device=device)
    w4a4_matmul_triton(*a, *w, bias=bias, out_dtype=out_dtype, out=out, **spec)
    want = reference.w4a4_matmul_ref(*a, *w, bias=bias, out_dtype=torch.float32, **spec)
    ok, excess = close(out, want)
    return {"kernel": "w4a4_gemm", "case": f"{a_name} x {w_name}",
            "shape": f"M{m} N{n} K{k} -> {str(out_dtype).removeprefix('torch.')}",
            "error_over_bound": excess, "ok": ok}


def check_linear(m: int, n: int, k: int, a_name: str, w_name: str, out_dtype: torch.dtype,
                 device: torch.device, path: str | None = None, of_max: float = 1e-5) -> dict:
    """``quant_kernels.w4a4_linear`` from bf16 rows (activation kernel, then the GEMM it picks for M, or ``path``'s)
    against quantize-then-multiply with the twins, within ``close``'s ``of_max``; where the auto path's decode rows
    take E4M3 planes (``quant_kernels.decode_codes_form``: the one-dot FP8 form) within FP8_ACCUMULATION_OF_MAX, as
    ``check_e4m3_linear``."""
    a_el, _, _, a_clip = ACT_FORMATS[a_name]
    w_el, _, _, w_clip = ACT_FORMATS[w_name]
    planes = path is None and quant_kernels.decode_codes_form(w_el, m, device.type == "cuda")[1]
    if planes:
        of_max = max(of_max, FP8_ACCUMULATION_OF_MAX)
    x = random_activations(m, k, torch.bfloat16, device)
    w = quant_kernels.quantize_activations(torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02, w_el, 0,
                                           "float", w_clip, backend="triton")
    bias = torch.randn(n, device=device)
    out = quant_kernels.w4a4_linear(x, *w, a_element=a_el, w_element=w_el, clip_ratio=a_clip, bias=bias,
                                    out_dtype=out_dtype, backend="triton", path=path)
    a = reference.quantize_activations_ref(x, a_el, 0, "float", a_clip)
    want = reference.w4a4_matmul_ref(*a, *w, a_element=a_el, w_element=w_el, bias=bias, out_dtype=torch.float32)
    ok, excess = close(out, want, of_max)
    kernel = ("w4a4_linear (E4M3 planes)" if planes else "w4a4_linear") if path is None else f"{path} path"
    return {"kernel": kernel, "case": f"{a_name} x {w_name}",
            "shape": f"M{m} N{n} K{k} -> {str(out_dtype).removeprefix('torch.')}",
            "error_over_bound": excess, "ok": ok}


def check_int8_linear(m: int, n: int, k: int, a_name: str, w_name: str, out_dtype: torch.dtype,
                      device: torch.device) -> dict:
    """``check_linear`` on the int8 path (the activation kernel's int8 bytes, then the tensor-core kernel tiled over
    M: INT4 weights, E2M1 as twice its values)."""
    return check_linear(m, n, k, a_name, w_name, out_dtype, device, path="int8")


def check_e4m3_linear(m: int, n: int, k: int, a_name: str, w_name: str, out_dtype: torch.dtype,
                      device: torch.device) -> dict:
    """``check_linear`` on the e4m3 path (the activation kernel's E4M3 planes, then the tensor-core kernel's one-dot
    FP8 form: the decode launch up to TC_MAX_M rows, the prefill one above), its sums at FP8 wgmma's accumulation
    precision: within FP8_ACCUMULATION_OF_MAX of the largest output, as the FP8 path's cuBLAS GEMM."""
    return check_linear(m, n, k, a_name, w_name, out_dtype, device, path="e4m3", of_max=FP8_ACCUMULATION_OF_MAX)


def check_fp8_codes(x: torch.Tensor, name: str) -> dict:
    element, group, kind, clip = ACT_FORMATS[name]
    got, got_scale = quant_kernels.quantize_activations(x, element, group, kind, clip, fp8_codes=True, backend="triton")
    want, want_scale = quant_kernels.quantize_activations(x, element, group, kind, clip, fp8_codes=True,
                                                          backend="torch")
    codes = (got.view(torch.uint8) != want.view(torch.uint8)).float().mean().item()
    scales = (got_scale != want_scale).float().mean().item()
    return {"kernel": "act_quant fp8 codes", "case": name,
            "shape": f"{x.shape[0]}x{x.shape[1]} {str(x.dtype).removeprefix('torch.')}",
            "codes_differ": codes, "scales_differ": scales, "ok": codes == 0 and scales == 0}


def check_fp8_linear(m: int, n: int, k: int, a_name: str, w_name: str, device: torch.device) -> dict:
    """Weight widening (bytes equal to the twin's) and the FP8-path linear against the fp32 twin."""
    a_el, _, _, a_clip = ACT_FORMATS[a_name]
    w_el, _, _, w_clip = ACT_FORMATS[w_name]
    x = random_activations(m, k, torch.bfloat16, device)
    w = quant_kernels.quantize_activations(torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02, w_el, 0,
                                           "float", w_clip, backend="triton")
    widened = quant_kernels.unpack_fp8(w[0], w_el, backend="triton").view(torch.uint8)
    unpack_differ = (widened != quant_kernels.unpack_fp8(w[0], w_el, backend="torch").view(torch.uint8)).float().mean()
    bias = torch.randn(n, device=device).to(torch.bfloat16)
    out = quant_kernels.w4a4_linear(x, *w, a_element=a_el, w_element=w_el, clip_ratio=a_clip, bias=bias,
                                    out_dtype=torch.bfloat16, backend="triton", path="fp8")
    a = reference.quantize_activations_ref(x, a_el, 0, "float", a_clip)
    want = reference.w4a4_matmul_ref(*a, *w, a_element=a_el, w_element=w_el, bias=bias, out_dtype=torch.float32)
    ok, excess = close(out, want, FP8_ACCUMULATION_OF_MAX)  # out is bfloat16: one bfloat16 ulp
    ok = ok and unpack_differ.item() == 0
    return {"kernel": "fp8 path", "case": f"{a_name} x {w_name}", "shape": f"M{m} N{n} K{k} -> bfloat16",
            "codes_differ": unpack_differ.item(), "error_over_bound": excess, "ok": ok}


def random_fpx_weight(n: int, k: int, fmt, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A random (N, K) weight rounded per output channel to ``fmt``'s grid: its bit planes and (N, 1) scales."""
    w = torch.randn(n, k, device=device) * 0.02
    scale = w.abs().amax(dim=1, keepdim=True) / fmt.max_value
    return pack_planes(encode(fmt.round(w / scale), fmt), fmt.bits), scale


def check_fpx(m: int, n: int, k: int, element: str, x_dtype: torch.dtype, device: torch.device,
              config: tuple | None = None) -> dict:
    """The FPx kernel against the twin: the autotuner's pick, or a fixed ``config``: the row kernel's (BLOCK_N,
    BLOCK_KW, warps, PREFETCH, SPLIT_K) or the tensor-core kernel's ("tile", BLOCK_M, BLOCK_N, BLOCK_K, warps,
    SWAP_AB, SPLIT_K; PAIRED), two or three stages. A fixed config runs twice: the same bits both times."""
    import triton

    from quant_kernels.fpx_gemm import fpx_matmul_triton

    fmt = element_named(element)
    planes, scale = random_fpx_weight(n, k, fmt, device)
    x = random_activations(m, k, x_dtype, device)
    out = torch.full((m, n), float("nan"), dtype=x_dtype, device=device)
    fixed, case = {}, element
    if config is not None and config[0] == "tile":
        _, block_m, block_n, block_k, warps, swap, split = config
        fixed = dict(row_kernel=False, config=triton.Config(
            dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PAIRED=True, SWAP_AB=swap, SPLIT_K=split),
            num_warps=warps, num_stages=3))
        case += f" tile {block_m}x{block_n}x{block_k} w{warps}{' swapped' if swap else ''}"
        case += f" split{split}" if split > 1 else ""
    elif config is not None:
        block_n, block_kw, warps, prefetch, split = config
        fixed = dict(row_kernel=True, config=triton.Config(
            dict(BLOCK_N=block_n, BLOCK_KW=block_kw, PREFETCH=prefetch, LOOP_STAGES=1, SPLIT_K=split),
            num_warps=warps, num_stages=2))
        case += f" row {block_n}x{block_kw} w{warps}{' prefetch' if prefetch else ''} split{split}"
    fpx_matmul_triton(x, planes, scale, element=element, bits=fmt.bits, out=out, **fixed)
    want = reference.fpx_matmul_ref(x, planes, scale, element=element, bits=fmt.bits, out_dtype=torch.float32)
    ok, excess = close(out, want)
    if fixed:
        again = fpx_matmul_triton(x, planes, scale, element=element, bits=fmt.bits, **fixed)
        ok = ok and torch.equal(again, out)
    return {"kernel": "fpx_gemm", "case": case, "shape": f"M{m} N{n} K{k} {str(x_dtype).removeprefix('torch.')}",
            "error_over_bound": excess, "ok": ok}


def check_fpx_dequantized(m: int, n: int, k: int, element: str, x_dtype: torch.dtype, device: torch.device) -> dict:
    """The FPx prefill path: the dequantizing kernel's weight bit for bit the twin's rounded to x's dtype, and the
    product of ``m`` rows by cuBLAS (``fpx_matmul_triton(..., dequantize=True)``) into a NaN-poisoned output within
    its roundings (``reference.dequantized_product_excess``)."""
    from quant_kernels.dequant import dequantize_triton
    from quant_kernels.fpx_gemm import fpx_matmul_triton

    fmt = element_named(element)
    planes, scale = random_fpx_weight(n, k, fmt, device)
    weight = dequantize_triton(planes, scale, element=element, bits=fmt.bits, dtype=x_dtype)
    same = torch.equal(weight, reference.fpx_weight(planes, scale, element, fmt.bits, k).to(x_dtype))
    x = random_activations(m, k, x_dtype, device)
    out = torch.full((m, n), float("nan"), dtype=x_dtype, device=device)
    fpx_matmul_triton(x, planes, scale, element=element, bits=fmt.bits, out=out, dequantize=True)
    excess = reference.dequantized_product_excess(out, x, planes, scale, element, fmt.bits)
    return {"kernel": "fpx_dequant", "case": f"{element} weight {'equal' if same else 'DIFFERS'}, product by cuBLAS",
            "shape": f"M{m} N{n} K{k} {str(x_dtype).removeprefix('torch.')}", "error_over_bound": excess,
            "ok": same and not out.isnan().any() and excess <= 1}


def check_dequant(n: int, k: int, element: str, group: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The weight dequantizing kernel on packed 4-bit codes (W4A16 checkpoints: INT4, E2M1 per row or in groups)
    against ``reference.packed_weight`` rounded to ``dtype``: bit for bit."""
    from quant_kernels.dequant import dequantize_triton

    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device)
    scale = torch.rand(n, k // group if group else 1, device=device) * 0.03 + 1e-3
    planes = (pack_planes(codes, 4)[0],)
    got = dequantize_triton(planes, scale, element=element, group=group, dtype=dtype)
    want = reference.packed_weight(planes, scale, element, 4, group).to(dtype)
    differ = (got != want).float().mean().item()
    return {"kernel": "dequant", "case": f"{element}{f' g{group}' if group else ' per row'}", "codes_differ": differ,
            "shape": f"N{n} K{k} {str(dtype).removeprefix('torch.')}", "ok": differ == 0}


def check_fpx_groups(m: int, n: int, k: int, element: str, group: int, dtype: torch.dtype, device: torch.device,
                     encoding: str = "float") -> dict:
    """W4A16 weights with scales in groups (INT4 or E2M1; ``encoding`` 'e4m3': NVFP4's E4M3 scales with a global
    scale a row, 'e8m0': MXFP4's bytes, as ``RealQuantLinear`` holds them) through ``fpx_matmul`` (the row kernel at
    its rows, the tensor-core kernel's PAIRED tiles at other rows below DEQUANT_MIN_M, the dequantized weight from
    there) into a NaN-poisoned output, against the twin: the row kernel within fp32-accumulation rounding, the
    others, which may round each weight to x's dtype (the tensor-core kernel where its K steps are wider than a
    group), within those roundings (``reference.dequantized_product_excess``)."""
    from quant_kernels.fpx_gemm import fpx_matmul_triton, takes_dequantized, takes_row_kernel

    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device)
    global_scale = None
    if encoding == "e4m3":
        scale = (torch.rand(n, k // group, device=device) * 400 + 1).to(torch.float8_e4m3fn)
        global_scale = torch.rand(n, device=device) * 1e-4 + 1e-5
    elif encoding == "e8m0":
        scale = torch.randint(117, 124, (n, k // group), dtype=torch.uint8, device=device)
    else:  # 2^-10 to 2^3: E2M1 groups past |w| = 24 too, where a scale times 2^126 would overflow fp32
        scale = torch.exp2(torch.rand(n, k // group, device=device) * 13 - 10)
    planes = pack_planes(codes, 4)
    x = random_activations(m, k, dtype, device)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    spec = dict(element=element, bits=4, group=group, w_global_scale=global_scale)
    fpx_matmul_triton(x, planes, scale, out=out, **spec)
    row = takes_row_kernel(m, k)
    if row:
        ok, excess = close(out, reference.fpx_matmul_ref(x, planes, scale, out_dtype=torch.float32, **spec))
    else:
        excess = reference.dequantized_product_excess(out, x, planes, scale, element, 4, group=group,
                                                      w_global_scale=global_scale)
        ok = excess <= 1
    path = "row kernel" if row else "dequantized" if takes_dequantized(m, dtype, dtype, None) else "tensor cores"
    scales = "" if encoding == "float" else f" {encoding.upper()} scales"
    return {"kernel": "fpx_gemm", "case": f"{element} g{group}{scales} ({path})",
            "shape": f"M{m} N{n} K{k} {str(dtype).removeprefix('torch.')}", "error_over_bound": excess,
            "ok": ok and not out.isnan().any()}


# (M, N, K, element, group, x dtype, scale encoding): W4A16 in groups at Llama-3-8B shapes, the row kernel's rows
# (NVFP4's and MXFP4's groups too), the tensor-core kernel's (ragged rows; fp16 E2M1 tiles lifting their scaled
# codes, and NVFP4's in fp16 pairs) and the dequantized weight's; NVFP4 and MXFP4 on their encoded scales on each.
GPU_FPX_GROUPS = [(1, 4096, 4096, "int4", 128, torch.bfloat16, "float"),
                  (4, 14336, 4096, "e2m1", 64, torch.bfloat16, "float"),
                  (1, 4096, 14336, "int4", 128, torch.float16, "float"),
                  (16, 6144, 4096, "int4", 128, torch.bfloat16, "float"),
                  (1, 4096, 4096, "e2m1", 16, torch.bfloat16, "float"),
                  (8, 14336, 4096, "e2m1", 32, torch.bfloat16, "float"),
                  (61, 4096, 14336, "int4", 128, torch.float16, "float"),
                  (16, 4096, 4096, "e2m1", 16, torch.float16, "float"),
                  (300, 6144, 4096, "e2m1", 16, torch.bfloat16, "float"),
                  (1024, 4096, 4096, "int4", 128, torch.bfloat16, "float"),
                  (1, 4096, 4096, "e2m1", 16, torch.bfloat16, "e4m3"),
                  (3, 4096, 14336, "e2m1", 32, torch.float16, "e8m0"),
                  (8, 14336, 4096, "e2m1", 16, torch.bfloat16, "e4m3"),
                  (16, 6144, 4096, "e2m1", 16, torch.float16, "e4m3"),
                  (61, 6144, 4096, "e2m1", 32, torch.bfloat16, "e8m0"),
                  (1024, 4096, 4096, "e2m1", 16, torch.bfloat16, "e4m3")]
DRY_FPX_GROUPS = [(1, 40, 256, "int4", 128, torch.bfloat16, "float"), (5, 24, 128, "e2m1", 32, torch.float16, "float"),
                  (1030, 24, 128, "int4", 64, torch.bfloat16, "float"),
                  (5, 24, 128, "e2m1", 16, torch.bfloat16, "e4m3"), (1, 40, 256, "e2m1", 32, torch.bfloat16, "e8m0"),
                  (5, 24, 128, "e2m1", 16, torch.float16, "e4m3")]


# (N, K, element, group, dtype): W4A16 weights dequantized, a Llama-3-8B shape and ragged ones.
GPU_DEQUANT = [(4096, 14336, "int4", 128, torch.bfloat16), (14336, 4096, "e2m1", 16, torch.bfloat16),
               (6144, 4096, "e2m1", 32, torch.float16), (40, 200, "int4", 0, torch.bfloat16)]
DRY_DEQUANT = [(40, 192, "int4", 64, torch.bfloat16), (24, 64, "e2m1", 16, torch.float16)]
# (M, N, K, element, x dtype): the FPx prefill path at a Llama-3-8B shape and a ragged one.
GPU_FPX_DEQUANTIZED = [(1024, 4096, 14336, "e3m2", torch.bfloat16), (1500, 6144, 4096, "e2m2", torch.float16),
                       (1030, 40, 200, "e2m1", torch.bfloat16)]
DRY_FPX_DEQUANTIZED = [(20, 40, 200, "e3m2", torch.bfloat16), (9, 24, 64, "e2m2", torch.float16)]


# (M, N, K, element, x dtype, (BLOCK_N, BLOCK_KW, warps, PREFETCH, SPLIT_K)): the row kernel's split-K forced, at
# the down, o_proj and q/k/v shapes and a ragged one, one and several rows (whole tiles at 4096 x 4096 and 6144 x 4096,
# the FP5 row on the interleaved high plane); the interpreter takes the small ones.
GPU_FPX_SPLIT = [(1, 4096, 4096, "e3m2", torch.bfloat16, (32, 128, 8, True, 2)),
                 (1, 4096, 14336, "e2m3", torch.float16, (32, 64, 8, True, 4)),
                 (3, 4096, 4096, "e2m1", torch.bfloat16, (16, 64, 4, False, 4)),
                 (1, 40, 200, "e2m2", torch.bfloat16, (16, 64, 4, False, 2)),
                 (1, 6144, 4096, "e3m1", torch.bfloat16, (64, 32, 8, False, 2))]
DRY_FPX_SPLIT = [(1, 40, 200, "e3m2", torch.bfloat16, (16, 4, 1, True, 3)),
                 (3, 40, 64, "e2m1", torch.float32, (8, 4, 1, False, 2)),
                 (1, 48, 256, "e2m2", torch.bfloat16, (16, 4, 1, False, 2))]
# (M, N, K, element, x dtype, ("tile", BLOCK_M, BLOCK_N, BLOCK_K, warps, SWAP_AB, SPLIT_K)): the tensor-core
# kernel's swapped PAIRED path forced at decode batches (and its unswapped twin once), ragged M and K included, and
# with K split among programs; every element, in bfloat16 and fp16 rows.
GPU_FPX_SWAP = [(8, 4096, 4096, "e3m2", torch.bfloat16, ("tile", 16, 64, 128, 4, True, 1)),
                (128, 4096, 4096, "e3m2", torch.float16, ("tile", 64, 64, 128, 4, True, 2)),
                (100, 6144, 4096, "e3m1", torch.bfloat16, ("tile", 128, 64, 128, 4, True, 1)),
                (64, 4096, 4096, "e3m1", torch.float16, ("tile", 64, 64, 128, 4, True, 4)),
                (16, 4096, 14336, "int4", torch.float16, ("tile", 16, 64, 256, 4, True, 2)),
                (128, 4096, 4096, "int4", torch.bfloat16, ("tile", 128, 64, 128, 4, True, 1)),
                (33, 4096, 4096, "e2m1", torch.float16, ("tile", 64, 64, 128, 4, True, 1)),
                (8, 4096, 4096, "e2m3", torch.bfloat16, ("tile", 16, 64, 128, 4, True, 1)),
                (16, 14336, 4096, "e2m3", torch.float16, ("tile", 16, 128, 256, 8, True, 1)),
                (40, 4096, 14336, "e2m1", torch.bfloat16, ("tile", 64, 128, 128, 8, True, 1)),
                (5, 40, 200, "e3m2", torch.bfloat16, ("tile", 16, 64, 128, 4, True, 1)),
                (8, 4096, 4096, "e3m2", torch.bfloat16, ("tile", 16, 64, 128, 4, False, 1)),
                (8, 4096, 14336, "e3m2", torch.bfloat16, ("tile", 16, 64, 256, 4, True, 4)),
                (16, 4096, 4096, "e2m2", torch.float16, ("tile", 16, 64, 128, 4, True, 2)),
                (5, 6144, 4096, "e3m2", torch.bfloat16, ("tile", 16, 64, 128, 4, False, 4)),
                (20, 40, 1000, "e2m1", torch.bfloat16, ("tile", 32, 64, 256, 4, True, 2))]
DRY_FPX_SWAP = [(5, 40, 200, "e3m2", torch.bfloat16, ("tile", 16, 16, 64, 1, True, 1)),
                (3, 24, 64, "e2m2", torch.float32, ("tile", 16, 16, 32, 1, True, 1)),
                (5, 40, 200, "e3m2", torch.bfloat16, ("tile", 16, 16, 32, 1, True, 3))]


def check_fpx_split(m: int, n: int, k: int, element: str, x_dtype: torch.dtype, device: torch.device,
                    config: tuple[int, int, int, bool, int]) -> dict:
    """``check_fpx`` on the row kernel with K split among programs (``config``'s SPLIT_K)."""
    return check_fpx(m, n, k, element, x_dtype, device, config)


def check_fpx_swap(m: int, n: int, k: int, element: str, x_dtype: torch.dtype, device: torch.device,
                   config: tuple) -> dict:
    """``check_fpx`` on the tensor-core kernel's PAIRED path with a fixed tile, swapped or not, K split or not."""
    return check_fpx(m, n, k, element, x_dtype, device, config)


# (M, N, K, element, x dtype, (BLOCK_N, BLOCK_KW, warps, PREFETCH, SPLIT_K) or None): gated products (gate's rows
# then up's) on the row kernel: Llama-3-8B's fused gate/up at its config pinned for one FP6 row (None), forced configs
# (split, several rows, INT4), a ragged one; forced, none waits for the tuner.
GPU_FPX_GATED = [(1, 28672, 4096, "e3m2", torch.bfloat16, None), (1, 28672, 4096, "e2m3", torch.bfloat16, None),
                 (3, 28672, 4096, "e3m2", torch.bfloat16, (32, 64, 8, False, 1)),
                 (1, 28672, 4096, "int4", torch.bfloat16, (64, 64, 8, False, 1)),
                 (1, 28672, 4096, "e3m2", torch.bfloat16, (64, 64, 8, False, 2)),
                 (1, 80, 200, "e3m2", torch.float16, (16, 64, 4, True, 1))]
DRY_FPX_GATED = [(1, 72, 128, "e3m2", torch.bfloat16, (16, 4, 1, False, 2)),
                 (3, 40, 64, "int4", torch.float16, (8, 4, 1, False, 1))]


def check_fpx_gated(m: int, n: int, k: int, element: str, x_dtype: torch.dtype, device: torch.device,
                    config: tuple | None) -> dict:
    """A gated product (``fpx_matmul_triton(..., gated=True)``: silu(gate) * up in the row kernel's epilogue) into a
    NaN-poisoned (M, N / 2) output against ``reference.silu_mul_ref`` of the same kernel's ungated product (the
    same sums, out in fp32 and rounded by torch): within one rounding of the output dtype (the epilogue's
    exponential is Triton's, the twin's torch's); ``codes_differ``: the share of outputs not equal."""
    import triton

    from quant_kernels.fpx_gemm import fpx_matmul_triton

    fmt = element_named(element)
    planes, scale = random_fpx_weight(n, k, fmt, device)
    x = random_activations(m, k, x_dtype, device)
    fixed, case = dict(row_kernel=True), f"{element} gated"
    if config is not None:
        block_n, block_kw, warps, prefetch, split = config
        fixed["config"] = triton.Config(dict(BLOCK_N=block_n, BLOCK_KW=block_kw, PREFETCH=prefetch, LOOP_STAGES=1,
                                             SPLIT_K=split), num_warps=warps, num_stages=2)
        case += f" row {block_n}x{block_kw} w{warps}{' prefetch' if prefetch else ''} split{split}"
    out = torch.full((m, n // 2), float("nan"), dtype=x_dtype, device=device)
    fpx_matmul_triton(x, planes, scale, element=element, bits=fmt.bits, out=out, gated=True, **fixed)
    product = fpx_matmul_triton(x, planes, scale, element=element, bits=fmt.bits, out_dtype=torch.float32, **fixed)
    want = reference.silu_mul_ref(product.to(x_dtype))
    rtol = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[x_dtype]
    ok = not out.isnan().any().item() and torch.allclose(out.float(), want.float(), rtol=rtol, atol=0.0)
    return {"kernel": "fpx_gemm", "case": case, "shape": f"M{m} N{n} K{k} {str(x_dtype).removeprefix('torch.')}",
            "codes_differ": (out != want).float().mean().item(), "ok": ok}


# (batch, K/V heads, query heads per K/V head, head dim, cache length, tokens written per row)
GPU_DECODE_ATTENTION = [(1, 8, 4, 128, 2100, [2049]), (8, 8, 4, 128, 2100, [2049] * 8), (3, 4, 7, 64, 333, [1, 200, 333])]
DRY_DECODE_ATTENTION = [(1, 2, 4, 64, 200, [130])]


def check_decode_attention(batch: int, heads_kv: int, groups: int, dim: int, length: int, written: list[int],
                           dtype: torch.dtype, device: torch.device) -> dict:
    q, key, value = (torch.randn(batch, heads_kv, rows, dim, device=device).to(dtype) for rows in (groups, length, length))
    mask = (torch.arange(length, device=device)[None, :] < torch.tensor(written, device=device)[:, None])[:, None, None]
    out = quant_kernels.decode_attention(q, key, value, mask, backend="triton")
    want = reference.decode_attention_ref(q.float(), key.float(), value.float(), mask, dim**-0.5)
    # Half operands: the probabilities enter the second product in q's dtype (as in flash attention).
    ok, excess = close(out, want, of_max=1e-5 if dtype == torch.float32 else 2.0**-7)
    return {"kernel": "decode_attention", "case": f"{groups} query heads per K/V head, {written[0]} of {length} keys",
            "shape": f"B{batch} Hkv{heads_kv} D{dim} {str(dtype).removeprefix('torch.')}", "error_over_bound": excess,
            "ok": ok}


def check_decode_attention_packed(batch: int, heads_kv: int, groups: int, dim: int, length: int, written: list[int],
                                  dtype: torch.dtype, device: torch.device) -> dict:
    """The KV4 benchmark's cache (INT4 K, asymmetric INT4 V, a scale per token and head) read as packed codes,
    with o_proj's input quantization as the combining kernel's tail (``reference.NormTail`` without a norm), in
    each form the kernel has: tiles dequantized (``PTQ_KV4_FACTORED=0``) against attention over K and V dequantized
    the cache's way, and, for half queries, the scales factored out of the dots (``PTQ_KV4_FACTORED=1``, the default)
    against attention over K and V dequantized in fp32, within the same bound. The tail's output equals the
    untailed call's bit for bit, and its dp4a bytes and scales are those the activation kernel writes for its rows."""
    from quant_kernels.switches import environment
    from quant_kernels.flash_decode import decode_attention_packed_triton
    from quant_layers.packed_kv_cache import _PackedTensor
    from quant_layers.quantizer import QuantSpec, Quantizer

    specs = (QuantSpec("int", 4, granularity="head"), QuantSpec("int", 4, granularity="head", symmetric=False))
    key, value = (_PackedTensor(Quantizer(spec, dim)) for spec in specs)
    for packed in (key, value):
        packed.append(torch.randn(batch, heads_kv, length, dim, device=device).to(dtype))
    q = torch.randn(batch, heads_kv, groups, dim, device=device).to(dtype)
    mask = (torch.arange(length, device=device)[None, :] < torch.tensor(written, device=device)[:, None])[:, None, None]
    attention = functools.partial(decode_attention_packed_triton, q, key.operand, value.operand, mask, dim**-0.5,
                                  key.kernel_element, value.kernel_element)
    tail = reference.NormTail(None, 0.0, "int4", 1.0, "int4")
    forms = {"dequantized tiles": ("0", dtype)}
    if dtype != torch.float32:
        forms["the factored form"] = ("1", torch.float32)
    ok, excess, cases = True, 0.0, []
    for form, (switch, cache_dtype) in forms.items():
        with environment((("PTQ_KV4_FACTORED", switch),)):
            out = attention()
            tailed, codes, scales = attention(tail)
        want = reference.decode_attention_ref(q.float(), key.dequantized(cache_dtype).float(),
                                              value.dequantized(cache_dtype).float(), mask, dim**-0.5)
        form_ok, form_excess = close(out, want, of_max=1e-5 if dtype == torch.float32 else 2.0**-7)
        want_codes, want_scales = quant_kernels.quantize_activations(tailed.reshape(batch, -1), "int4", 0, "float",
                                                                     1.0, dp4a_for="int4", backend="triton")
        tail_ok = torch.equal(tailed, out) and torch.equal(codes, want_codes) and torch.equal(scales, want_scales)
        ok, excess = ok and form_ok and tail_ok, max(excess, form_excess)
        cases.append(f"{form} ({'ok' if form_ok else 'FAILED'}, o_proj's input tail {'ok' if tail_ok else 'FAILED'})")
    return {"kernel": "decode_attention_packed",
            "case": f"KV4 int4 K, uint4 V, {groups} query heads per K/V head, {written[0]} of {length} keys: "
                    + "; ".join(cases), "ok": ok,
            "shape": f"B{batch} Hkv{heads_kv} D{dim} {str(dtype).removeprefix('torch.')}", "error_over_bound": excess}


def check_kv_write(batch: int, heads: int, tokens: int, dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The K/V write kernel against the static packed cache's torch writes: the KV4 benchmark's quantizers (INT4 K,
    asymmetric INT4 V, per head) and a grouped pair with clipping, K and V from a (B, T, H, D) view; every code,
    scale and zero point of the buffers equal."""
    from quant_kernels.kv_write import write_kv4_triton
    from quant_layers.packed_kv_cache import _PackedTensor
    from quant_layers.quantizer import QuantSpec, Quantizer

    pairs = {"int4 K, uint4 V per head": (QuantSpec("int", 4, granularity="head"),
                                          QuantSpec("int", 4, granularity="head", symmetric=False)),
             "groups of 32, clip 0.9": (QuantSpec("int", 4, granularity="group", group_size=32, clip_ratio=0.9),
                                        QuantSpec("int", 4, granularity="group", group_size=32, symmetric=False,
                                                  clip_ratio=0.9))}
    key, value = (torch.randn(batch, tokens, heads, dim, device=device).to(dtype).transpose(1, 2) for _ in range(2))
    length = tokens + 3
    positions = torch.arange(tokens, device=device) + 2
    differ = []
    for key_spec, value_spec in pairs.values():
        buffers = []
        for fused in (True, False):
            k, v = _PackedTensor(Quantizer(key_spec, dim)), _PackedTensor(Quantizer(value_spec, dim))
            if fused:
                k.allocate(key, length)
                v.allocate(value, length)
                write_kv4_triton(key, value, positions, k.operand, v.operand, k.write_element, v.write_element,
                                 key_spec.clip_ratio, value_spec.clip_ratio)
            else:
                k.write(positions, key, length)
                v.write(positions, value, length)
            buffers.append([t for t in (*k.operand, *v.operand) if t is not None])
        differ.append(max((a != b).float().mean().item() for a, b in zip(*buffers)))
    return {"kernel": "kv_write", "case": " / ".join(pairs), "codes_differ": max(differ),
            "shape": f"B{batch} H{heads} T{tokens} D{dim} {str(dtype).removeprefix('torch.')}", "ok": max(differ) == 0}


def check_fused_decode(m: int, k: int, n: int, element: str, dtype: torch.dtype, device: torch.device) -> dict:
    """The fused decode layer's kernels against their twins: the RMSNorm prologue (normalised rows within an ulp
    of the twin's, at most 5 % of them off, and codes and scales exactly the twin quantizer's of the kernel's own
    rows), silu(gate) * up (the GPU's exponential is not torch's: at most 0.1 % of codes and scales may differ,
    scales by an ulp of the dtype) and the decode kernel's residual epilogue (within fp32-accumulation
    rounding, the product's own rounding included: on the H200 one bfloat16 product an ulp off, then mostly
    cancelled by its residual, was 6.8 bounds off the sum's ulp, ``kernel_check_fused_decode_pdl_h200.md``).
    Where the CUDA-core decode kernel takes the rows (``takes_gated``), also gate/up's product writing silu(gate) *
    up (``gated``) into a NaN-poisoned output: every value written, each within the ulps its roundings allow of
    the twin's (the gate and up products an ulp each, silu's exponential, which turns an ulp of a negative gate g
    into about 1 + |g| of silu's, and the two roundings after; and 1e-5 of the largest value, the twin's own fp32
    accumulation). There too, o_proj's norm tail (``norm_tail``): the same product plus residual bit for bit, its
    last program's codes and scales of the next RMSNorm exactly those the activation kernel writes for that output
    in a launch of its own."""
    from quant_kernels.w4a4_gemv import takes_gated, w4a4_gemv_triton

    x = random_activations(m, k, dtype, device)
    weight = (torch.rand(k, device=device) + 0.5).to(dtype)
    codes, scales, normed = quant_kernels.rms_norm_quantize(x, weight, 1e-5, element, 0.9, dp4a_for=element,
                                                            backend="triton")
    want_normed = reference.rms_norm_quantize_ref(x, weight, 1e-5, element, 0.9, element)[2]
    again = reference.quantize_activations_ref(normed, element, 0, "float", 0.9, dp4a_for=element)
    ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    norm_off = (normed != want_normed).float().mean().item()
    norm_ok = (bool(((normed.float() - want_normed.float()).abs() <= ulp * want_normed.float().abs()).all())
               and norm_off <= 0.05 and torch.equal(codes, again[0]) and torch.equal(scales, again[1]))
    gate_up = random_activations(m, 2 * n, dtype, device)
    silu = quant_kernels.silu_mul_quantize(gate_up, element, 0.9, dp4a_for=element, backend="triton")
    silu_want = reference.silu_mul_quantize_ref(gate_up, element, 0.9, element)
    silu_codes = (silu[0] != silu_want[0]).float().mean().item()
    silu_ok = (silu_codes <= 1e-3 and bool(((silu[1] - silu_want[1]).abs() <= ulp * silu_want[1]).all()))
    w_packed, w_scale = quant_kernels.quantize_activations(torch.randn(n, k, device=device, dtype=dtype) * 0.02,
                                                           element, backend="triton")
    residual = random_activations(m, n, dtype, device)
    got = quant_kernels.w4a4_matmul_dp4a(codes, scales, w_packed, w_scale, a_element=element, w_element=element,
                                         out_dtype=dtype, residual=residual, backend="triton")
    want = reference.w4a4_gemv_ref(codes, scales, w_packed, w_scale, a_element=element, w_element=element,
                                   out_dtype=dtype, residual=residual)
    product = reference.w4a4_gemv_ref(codes, scales, w_packed, w_scale, a_element=element, w_element=element,
                                      out_dtype=dtype)
    gemv_ok, excess = close(got, want, rounded_before=product)
    gated, gated_ok, tail_ok = "", True, True
    if takes_gated(m, element):
        w_gate_up, w_gate_up_scale = quant_kernels.quantize_activations(
            torch.randn(2 * n, k, device=device, dtype=dtype) * 0.02, element, backend="triton")
        poisoned = torch.full((m, n), float("nan"), dtype=dtype, device=device)
        got = w4a4_gemv_triton(codes, scales, w_gate_up, w_gate_up_scale, a_element=element, w_element=element,
                               out_dtype=dtype, gated=True, out=poisoned)
        product = reference.w4a4_gemv_ref(codes, scales, w_gate_up, w_gate_up_scale, a_element=element,
                                          w_element=element, out_dtype=dtype)
        want = reference.silu_mul_ref(product)  # the gated twin (tests/test_fused_decode_kernels.py)
        gate = product[:, :n].float()
        # plus the twin's own fp32 accumulation: a product whose integer sum is 0 comes out about 1e-9 there
        bound = ulp * (3 + gate.abs()) * want.float().abs() + 1e-5 * want.float().abs().max()
        gated_over = ((got.float() - want.float()).abs() / bound).max().item()
        gated_ok = not got.isnan().any() and gated_over <= 1
        gated = (f", gated silu*up ({(got != want).float().mean().item():.1%} off the twin, "
                 f"{gated_over:.2f} of the ulp bound)")
        tail_ok = norm_tail_matches(codes, scales, w_packed, w_scale, residual, element, dtype)
        gated += f", norm tail ({'ok' if tail_ok else 'FAILED'})"
    return {"kernel": "fused decode", "case": f"{element}: RMSNorm ({norm_off:.1%} rows' values off an ulp), "
                                              f"silu*up, GEMV + residual{gated}",
            "shape": f"M{m} K{k} N{n} {str(dtype).removeprefix('torch.')}", "codes_differ": silu_codes,
            "error_over_bound": excess, "ok": norm_ok and silu_ok and gemv_ok and gated_ok and tail_ok}


def norm_tail_matches(codes: torch.Tensor, scales: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                      residual: torch.Tensor, element: str, dtype: torch.dtype) -> bool:
    """Whether the decode kernel with a norm tail writes the product plus residual of the kernel without one (into
    a NaN-poisoned output) and, in its last program, the codes and scales the activation kernel's RMSNorm
    prologue writes for that output."""
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    m, n = residual.shape
    tail = reference.NormTail((torch.rand(n, device=residual.device) + 0.5).to(dtype), 1e-5, element, 0.9, element)
    args = dict(a_element=element, w_element=element, out_dtype=dtype, residual=residual)
    plain = w4a4_gemv_triton(codes, scales, w_packed, w_scale, **args)
    poisoned = torch.full((m, n), float("nan"), dtype=dtype, device=residual.device)
    out, tail_codes, tail_scales = w4a4_gemv_triton(codes, scales, w_packed, w_scale, out=poisoned, norm_tail=tail,
                                                    **args)
    want_codes, want_scales, _ = quant_kernels.rms_norm_quantize(out, tail.weight, tail.eps, element, 0.9,
                                                                 dp4a_for=element, backend="triton")
    return (out is poisoned and torch.equal(out, plain) and torch.equal(tail_codes, want_codes)
            and torch.equal(tail_scales, want_scales))


def check_int8_decode(m: int, n: int, k: int, w_element: str, dtype: torch.dtype, device: torch.device) -> dict:
    """W4A8 / W8A8 (``quant_kernels.w4a8_linear`` / ``w8a8_linear``: the decode kernel, for INT4 weights above 64 rows
    the tensor-core kernel tiled over M): the activation kernel's INT8 dp4a bytes and scales exactly the twin's, and
    the product within fp32-accumulation rounding of the exact integer product (float64) times the scales."""
    x = random_activations(m, k, dtype, device)
    w = torch.randn(n, k, device=device) * 0.02
    if w_element == "int4":
        w_codes, w_scale = quant_kernels.quantize_activations(w, "int4", backend="triton")
    else:  # per-channel INT8 weights: the same symmetric absmax rounding as per-token INT8 activations
        w_int8, w_scale = quantize_rows_int8(w)
        w_codes = w_int8.view(torch.uint8)
    w_levels = reference.int8_weight_codes(w_codes, w_element).view(torch.int8)
    a_bytes, a_scale = quant_kernels.quantize_activations(x, "int8", clip_ratio=0.9, dp4a_for=w_element,
                                                          backend="triton")
    want_bytes, want_scale = reference.quantize_activations_ref(x, "int8", 0, "float", 0.9, dp4a_for=w_element)
    codes = (a_bytes != want_bytes).float().mean().item()
    scales = (a_scale != want_scale).float().mean().item()
    bias = torch.randn(n, device=device)
    linear = quant_kernels.w4a8_linear if w_element == "int4" else quant_kernels.w8a8_linear
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    out.copy_(linear(x, w_codes, w_scale, clip_ratio=0.9, bias=bias, out_dtype=dtype, backend="triton"))
    levels = reference.dp4a_values(want_bytes, "int8", w_element).double()
    want = (levels @ w_levels.double().t()) * want_scale.double() * w_scale.double().reshape(1, -1) + bias.double()
    ok, excess = close(out, want.float())
    return {"kernel": "int8 decode", "case": f"W{w_element[3:]}A8 ({w_element} weights, INT8 activations)",
            "shape": f"M{m} N{n} K{k} {str(dtype).removeprefix('torch.')}", "codes_differ": codes,
            "scales_differ": scales, "error_over_bound": excess, "ok": ok and codes == 0 and scales == 0}


def check_tc_decode(m: int, n: int, k: int, a_element: str, dtype: torch.dtype, device: torch.device,
                    split_k: int | None = None, w_element: str = "int4") -> dict:
    """INT4 or E2M1 weights on the tensor-core decode kernel (``w4a4_gemv_triton(..., tensor_cores=True)``) with a
    bias and a residual, against the twin (``reference.w4a4_gemv_ref``) on the activation kernel's dp4a bytes; the
    autotuner's config (split_k None) or 64 x 128 bytes split ``split_k`` ways (on the CPU: the interpreter's)."""
    import triton

    from quant_kernels.w4a4_gemv import INTERPRET, INTERPRET_TC_CONFIG, _tc_autotuned, w4a4_gemv_triton

    x = random_activations(m, k, dtype, device)
    w_codes, w_scale = quant_kernels.quantize_activations(torch.randn(n, k, device=device) * 0.02, w_element,
                                                          backend="triton")
    a_bytes, a_scale = quant_kernels.quantize_activations(x, a_element, clip_ratio=0.9 if a_element == "int4" else 1.0,
                                                          dp4a_for=w_element, backend="triton")
    bias = torch.randn(n, device=device)
    residual = random_activations(m, n, dtype, device)
    kw = dict(a_element=a_element, w_element=w_element, bias=bias, out_dtype=dtype, residual=residual)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    config = None if split_k is None else triton.Config(
        dict(INTERPRET_TC_CONFIG, SPLIT_K=split_k) if INTERPRET else dict(BLOCK_N=64, BLOCK_KB=128, SPLIT_K=split_k),
        num_warps=4, num_stages=4)
    w4a4_gemv_triton(a_bytes, a_scale, w_codes, w_scale, out=out, tensor_cores=True, config=config, **kw)
    if config is None:
        config = INTERPRET_TC_CONFIG if INTERPRET else _tc_autotuned.best_config.kwargs
        label = f"split {config['SPLIT_K']} ({'interpreter' if INTERPRET else 'autotuned'})"
    else:
        label = f"split {split_k} (fixed)"
    want = reference.w4a4_gemv_ref(a_bytes.cpu(), a_scale.cpu(), w_codes.cpu(), w_scale.cpu(),
                                   **{**kw, "bias": bias.cpu(), "residual": residual.cpu()}).to(device)
    ok, excess = close(out, want.float(), rounded_before=want.float() - residual.float())
    return {"kernel": "tensor-core decode", "case": f"{a_element} x {w_element}, bias + residual, {label}",
            "shape": f"M{m} N{n} K{k} {str(dtype).removeprefix('torch.')}", "error_over_bound": excess,
            "ok": ok and not out.isnan().any().item()}


CHECKS = (check_act, check_compiled_quantizer, check_gemm, check_linear, check_int8_linear, check_e4m3_linear,
          check_fp8_codes, check_fp8_linear,
          check_fpx, check_fpx_split, check_fpx_swap, check_fpx_gated, check_fpx_dequantized, check_dequant,
          check_fpx_groups,
          check_decode_attention, check_decode_attention_packed, check_kv_write, check_fused_decode, check_int8_decode,
          check_tc_decode)


def check_name(check) -> str:
    """What ``--only`` calls a check: its function's name without ``check_``."""
    return check.__name__.removeprefix("check_")


def markdown(result: dict) -> str:
    failed = [r for r in result["checks"] if not r["ok"]]
    lines = [f"Triton kernels vs their torch twins on the same device. Device: {result['device']}. "
             f"Date: {result['date']}.", f"Versions: {result['versions']}.", f"Command: `{result['command']}`", "",
             f"{len(result['checks'])} checks, {len(failed)} failed.", "",
             "| kernel | case | shape | codes differ | scales differ | error / bound | ok |", "|---|---|---|---|---|---|---|"]
    for r in result["checks"]:
        lines.append(f"| {r['kernel']} | {r['case']} | {r['shape']} | {r.get('codes_differ', '')} | "
                     f"{r.get('scales_differ', '')} | "
                     f"{'' if 'error_over_bound' not in r else format(r['error_over_bound'], '.3f')} | "
                     f"{'ok' if r['ok'] else 'FAIL ' + r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu_dry_run", action="store_true", help="no GPU: Triton interpreter on CPU, tiny shapes")
    p.add_argument("--only", help=f"comma list of checks to run, of {', '.join(map(check_name, CHECKS))} (default: all)")
    p.add_argument("--gemm_pairs", help="comma list of the activation formats whose GEMM pairs to check, of "
                                        f"{', '.join(dict.fromkeys(a for a, _ in GEMM_PAIRS))} (default: all)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N of the chosen checks: resume a run its time limit cut after N checks")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    unknown = sorted((only or set()) - {check_name(c) for c in CHECKS})
    if unknown:
        p.error(f"unknown checks {unknown} in --only: choose from {', '.join(map(check_name, CHECKS))}")
    pair_names = set(args.gemm_pairs.split(",")) if args.gemm_pairs else {a for a, _ in GEMM_PAIRS}
    if pair_names - {a for a, _ in GEMM_PAIRS}:
        p.error(f"unknown activation formats {sorted(pair_names - {a for a, _ in GEMM_PAIRS})} in --gemm_pairs: "
                f"choose from {', '.join(dict.fromkeys(a for a, _ in GEMM_PAIRS))}")
    gemm_pairs = [(a, w) for a, w in GEMM_PAIRS if a in pair_names]
    if args.cpu_dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu_dry_run to exercise the script on CPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # the twin's fp32 matmul must be fp32
    from quant_kernels.w4a4_gemv import TC_MAX_M  # late: builds Triton kernels, after TRITON_INTERPRET is settled

    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    act_shapes = DRY_ACT_SHAPES if args.cpu_dry_run else GPU_ACT_SHAPES
    gemm_shapes = DRY_GEMM_SHAPES if args.cpu_dry_run else GPU_GEMM_SHAPES
    torch.manual_seed(0)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_name(device),
              "versions": library_versions(),
              "command": command_line("kernel_check.py", argv if argv is not None else sys.argv[1:]),
              "checks": []}
    checks = result["checks"]
    decode_attention_cases = DRY_DECODE_ATTENTION if args.cpu_dry_run else GPU_DECODE_ATTENTION

    chosen = 0

    def record(run, *run_args) -> None:
        nonlocal chosen
        if only and check_name(run) not in only:
            return
        chosen += 1
        if chosen <= args.skip:
            return
        try:
            check = run(*run_args)
        except Exception as err:  # a kernel that fails to build or launch is a failed check, not the end
            check = {"kernel": check_name(run), "shape": "", "ok": False,
                     "case": " ".join(str(a) for a in run_args if isinstance(a, (int, str, torch.dtype))),
                     "error": f"{type(err).__name__}: {err}"[:300].replace("\n", " ")}
        checks.append(check)
        print(check, flush=True)
        write_result_files(args.out, result, markdown(result))  # partial results survive a time limit

    for case in decode_attention_cases:
        for dtype in OUT_DTYPES:
            record(check_decode_attention, *case, dtype, device)
            record(check_decode_attention_packed, *case, dtype, device)
    for i, (m, n, k) in enumerate(gemm_shapes):
        for a_name, w_name in gemm_pairs:
            record(check_gemm, m, n, k, a_name, w_name, OUT_DTYPES[i % len(OUT_DTYPES)], device)
        if m <= TC_MAX_M:  # the decode kernels' rows (INT4 weights on the tensor-core one from TC_MIN_M)
            for a_name, w_name in PER_ROW_PAIRS:
                record(check_linear, m, n, k, a_name, w_name, OUT_DTYPES[i % len(OUT_DTYPES)], device)
        for element in FPX_ELEMENTS:
            record(check_fpx, m, n, k, element, OUT_DTYPES[i % len(OUT_DTYPES)], device)
        if n % 16 == 0 and k % 16 == 0:
            for a_name, w_name in PER_ROW_PAIRS:
                record(check_fp8_linear, m, n, k, a_name, w_name, device)
    for i, (m, n, k) in enumerate(DRY_INT8_LINEAR_SHAPES if args.cpu_dry_run else GPU_INT8_LINEAR_SHAPES):
        for a_name, w_name in PER_ROW_PAIRS + [("e2m1-tok", "int4-tok-clip0.9")]:
            record(check_int8_linear, m, n, k, a_name, w_name, OUT_DTYPES[i % 2], device)
    for i, (m, n, k) in enumerate(DRY_E4M3_LINEAR_SHAPES if args.cpu_dry_run else GPU_E4M3_LINEAR_SHAPES):
        for a_name, w_name in PER_ROW_PAIRS + [("e2m1-tok", "int4-tok-clip0.9")]:
            record(check_e4m3_linear, m, n, k, a_name, w_name, OUT_DTYPES[i % 2], device)
    for m, n, k, element, dtype, config in DRY_FPX_SPLIT if args.cpu_dry_run else GPU_FPX_SPLIT:
        record(check_fpx_split, m, n, k, element, dtype, device, config)
    for m, n, k, element, dtype, config in DRY_FPX_SWAP if args.cpu_dry_run else GPU_FPX_SWAP:
        record(check_fpx_swap, m, n, k, element, dtype, device, config)
    for m, n, k, element, dtype, config in DRY_FPX_GATED if args.cpu_dry_run else GPU_FPX_GATED:
        record(check_fpx_gated, m, n, k, element, dtype, device, config)
    for m, n, k, element, dtype in DRY_FPX_DEQUANTIZED if args.cpu_dry_run else GPU_FPX_DEQUANTIZED:
        record(check_fpx_dequantized, m, n, k, element, dtype, device)
    for n, k, element, group, dtype in DRY_DEQUANT if args.cpu_dry_run else GPU_DEQUANT:
        record(check_dequant, n, k, element, group, dtype, device)
    for m, n, k, element, group, dtype, encoding in DRY_FPX_GROUPS if args.cpu_dry_run else GPU_FPX_GROUPS:
        record(check_fpx_groups, m, n, k, element, group, dtype, device, encoding)
    for batch, heads, tokens, dim in DRY_KV_WRITE_SHAPES if args.cpu_dry_run else GPU_KV_WRITE_SHAPES:
        for dtype in OUT_DTYPES:
            record(check_kv_write, batch, heads, tokens, dim, dtype, device)
    for m, k, n in DRY_FUSED_DECODE_SHAPES if args.cpu_dry_run else GPU_FUSED_DECODE_SHAPES:
        for element in ("int4", "e2m1"):
            for dtype in (torch.bfloat16, torch.float16):
                record(check_fused_decode, m, k, n, element, dtype, device)
    for i, (m, n, k) in enumerate(DRY_TC_DECODE_SHAPES if args.cpu_dry_run else GPU_TC_DECODE_SHAPES):
        for a_element in ("int4", "e2m1", "int8"):
            record(check_tc_decode, m, n, k, a_element, OUT_DTYPES[i % 2], device)
        record(check_tc_decode, m, n, k, "int4", OUT_DTYPES[i % 2], device, 3)
        for a_element in ("int4", "e2m1"):  # E2M1 weights on the FP8 tensor cores
            record(check_tc_decode, m, n, k, a_element, OUT_DTYPES[i % 2], device, 3, "e2m1")
    for m, n, k in DRY_INT8_DECODE_SHAPES if args.cpu_dry_run else GPU_INT8_DECODE_SHAPES:
        for w_element in ("int4", "int8"):
            for dtype in (torch.bfloat16, torch.float16):
                record(check_int8_decode, m, n, k, w_element, dtype, device)
    for m, k in DRY_COMPILED_QUANTIZER_SHAPES if args.cpu_dry_run else GPU_COMPILED_QUANTIZER_SHAPES:
        x = random_activations(m, k, torch.bfloat16, device)
        for name in COMPILED_QUANTIZER_SPECS:
            record(check_compiled_quantizer, x, name)
    for m, k in act_shapes:
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            x = random_activations(m, k, dtype, device)
            for name in ACT_FORMATS:
                for hadamard_block in (0, 128):
                    record(check_act, x, name, hadamard_block)
            for name in ("int4-tok-clip0.9", "e2m1-tok"):
                record(check_fp8_codes, x, name)
    print(markdown(result))  # the files were written after the last step
    return 0 if all(r["ok"] for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
