"""Triton kernel: packed weight codes times their scales, written once in a float dtype.

The weight-only products from ``fpx_gemm.DEQUANT_MIN_M`` rows of half-precision activations (prefill) multiply this
weight with cuBLAS: FPx and INT4 weights per channel, and INT4 or E2M1 weights in groups (W4A16 checkpoints: GPTQ's,
NVFP4, MXFP4). One pass reads the packed bytes (0.5 to 0.75 a weight) and writes 2 (half dtypes), where torch's ops
went through fp32 tensors several times. The FPx tensor-core kernel, in groups, rounds each weight as this one
does.

Each program takes a (BLOCK_N, BLOCK_K) tile: the planes are spread into one code per element and decoded as
the FPx tile kernel's unpaired path does (``fpx_placement._plane_codes`` and ``_decode``, INT4's two's complement
nibbles included), multiplied by the row's or the group's fp32 scale (NVFP4's E4M3 and MXFP4's E8M0 ones decoded as
they load, ``tile_loads._group_scales``), and rounded to the output dtype once, to nearest (by hand for bfloat16,
whose cast the interpreter truncates): the weight a fake-quantized model of that dtype holds,
``reference.packed_weight(...).to(dtype)`` bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fpx_gemm import HIGH_PLANE_WIDTH, kernel_fields
from .fpx_placement import _decode, _plane_codes
from .reference import check_packed_weight_args
from .rounding import _round_to_dtype
from .tile_loads import _group_scales, _row_globals, group_scale_args

BLOCK = dict(BLOCK_N=32, BLOCK_K=128)  # a tile per program: each thread writes 16 contiguous bytes (bfloat16)


@triton.jit
def _dequant_kernel(
    low_ptr, high_ptr, scale_ptr, global_ptr, out_ptr, N, K, stride_low, stride_high, stride_scale, stride_out,
    EXP_BITS: tl.constexpr, MAN_BITS: tl.constexpr, EXP_BIAS: tl.constexpr,
    HIGH_WIDTH: tl.constexpr, GROUP: tl.constexpr, ROUND_BF16: tl.constexpr, SCALE_CODE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out (N, K) = value(code) * scale in out's dtype: the FP element's values or INT4 levels (MAN_BITS =
    ``fpx_placement.INT4_LEVELS``); the scale per row (GROUP 0) or per GROUP columns (``stride_scale`` between rows),
    encoded as ``tile_loads._group_scales`` takes them (SCALE_CODE), E4M3 ones times their row's global scale at
    ``global_ptr``."""
    HIGH_PER_BYTE: tl.constexpr = 8 // HIGH_WIDTH if HIGH_WIDTH > 0 else 8
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    n_ok = offs_n < N
    low_ptrs = low_ptr + k0 // 2 + offs_n[:, None] * stride_low + tl.arange(0, BLOCK_K // 2)[None, :]
    high_ptrs = high_ptr + k0 // HIGH_PER_BYTE + offs_n[:, None] * stride_high + \
        tl.arange(0, BLOCK_K // HIGH_PER_BYTE)[None, :]
    codes = _plane_codes(low_ptrs, high_ptrs, n_ok, K - k0, BLOCK_N, BLOCK_K, HIGH_WIDTH)
    values = _decode(codes, EXP_BITS, MAN_BITS, EXP_BIAS)
    k_ok = offs_k < K
    if GROUP > 0 and BLOCK_K % GROUP == 0:  # each group's scale loaded once, then spread over its columns
        offs_g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
        groups = _group_scales(scale_ptr, offs_n[:, None], offs_g[None, :],
                               n_ok[:, None] & (offs_g * GROUP < K)[None, :], stride_scale, False, SCALE_CODE)
        scale = tl.broadcast_to(groups[:, :, None], (BLOCK_N, BLOCK_K // GROUP, GROUP)).reshape(BLOCK_N, BLOCK_K)
    elif GROUP > 0:
        scale = _group_scales(scale_ptr, offs_n[:, None], (offs_k // GROUP)[None, :], n_ok[:, None] & k_ok[None, :],
                              stride_scale, False, SCALE_CODE)
    else:
        scale = tl.load(scale_ptr + offs_n * stride_scale, mask=n_ok, other=0.0)[:, None]
    if SCALE_CODE == 1:
        scale *= _row_globals(global_ptr, offs_n, n_ok, True)[:, None]
    values = _round_to_dtype(values * scale, ROUND_BF16, False)
    tl.store(out_ptr + offs_n[:, None] * stride_out + offs_k[None, :], values.to(out_ptr.dtype.element_ty),
             mask=n_ok[:, None] & k_ok[None, :])


def dequantize_triton(planes: tuple[torch.Tensor, ...] | list[torch.Tensor], scale: torch.Tensor, *, element: str,
                      bits: int = 4, group: int = 0, dtype: torch.dtype = torch.float32,
                      global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``reference.packed_weight`` (N, K), rounded once to ``dtype``: ``planes`` a packed 4-bit plane (plus the
    1- or 2-bit plane of 5- and 6-bit FPx codes), ``scale`` (N,) or (N, 1) per row, (N, K // group) per group (as
    ``reference.check_weight_scales`` takes them, E4M3 ones with their rows' ``global_scale``)."""
    check_packed_weight_args(planes, scale, element, bits, group, global_scale)
    low = planes[0].contiguous()
    high = planes[1].contiguous() if len(planes) > 1 else low
    n, k = low.shape[0], 2 * low.shape[1]
    scales = group_scale_args(scale.reshape(n, -1))  # (per-row scales: an (N, 1) fp32 column, SCALE_CODE 0)
    out = torch.empty((n, k), dtype=dtype, device=low.device)
    grid = (triton.cdiv(n, BLOCK["BLOCK_N"]), triton.cdiv(k, BLOCK["BLOCK_K"]))
    exp_bits, man_bits, bias = kernel_fields(element, bits)
    _dequant_kernel[grid](low, high, scales["gscale_ptr"], global_scale, out, n, k, low.stride(0), high.stride(0),
                          scales["stride_gs"], out.stride(0), EXP_BITS=exp_bits, MAN_BITS=man_bits, EXP_BIAS=bias,
                          HIGH_WIDTH=HIGH_PLANE_WIDTH[bits], GROUP=group, ROUND_BF16=dtype == torch.bfloat16,
                          SCALE_CODE=scales["SCALE_CODE"], **BLOCK)
    return out
