"""Triton helpers that load tiles: masked or whole (``_tile_load``), and weight scales in groups along K read in
the encoding they are held in (``_group_scales``).

NVFP4 and MXFP4 checkpoints store their weight scales as E4M3 bytes (with an fp32 global scale, one a row here so
that fused linears keep their parts' own) and as E8M0 biased exponents; ``RealQuantLinear`` keeps them so, a quarter
of fp32's bytes, and the kernels that read weight scales in groups (the FPx row and tile kernels, the dequantizing
kernel, the W4A4 GEMM) decode them as they load them, to the bits ``reference.scale_values`` gives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import ENCODED_SCALES, SCALE_KIND_CODES


@triton.jit
def _tile_load(ptrs, mask, EVEN: tl.constexpr):
    """``ptrs``' elements, zero where ``mask`` is false; unmasked when EVEN (every tile whole)."""
    if EVEN:
        out = tl.load(ptrs)
    else:
        out = tl.load(ptrs, mask=mask, other=0)
    return out


@triton.jit
def _group_scales(gscale_ptr, rows, groups, mask, stride_gs, EVEN: tl.constexpr, SCALE_CODE: tl.constexpr):
    """The fp32 scales of groups ``groups`` of rows ``rows`` (broadcast together), zero off ``mask`` (unmasked when
    EVEN): fp32 ones (SCALE_CODE 0); or bytes, NVFP4's E4M3 (1) or MXFP4's E8M0 biased exponents e (2: 2^(e - 127),
    e = 0 the subnormal 2^-127), as ``reference.scale_values`` decodes them. (Read as int32 words of four bytes, which
    Hopper would copy asynchronously as it does fp32 scales, the FPx row and tile kernels took more instructions a
    step: ``benchmarks/results/kernels_h200.md``, fortieth session.)"""
    raw = _tile_load(gscale_ptr + rows * stride_gs + groups, mask, EVEN)
    if SCALE_CODE == 1:
        values = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    elif SCALE_CODE == 2:
        values = tl.where(raw == 0, 1 << 22, raw.to(tl.int32) << 23).to(tl.float32, bitcast=True)
    else:
        values = raw.to(tl.float32)
    return values


@triton.jit
def _row_globals(gglobal_ptr, offs_n, n_ok, HAS_GLOBAL: tl.constexpr):
    """Rows ``offs_n``'s fp32 global scales (HAS_GLOBAL: NVFP4's, which multiply its E4M3 group scales), else 1."""
    if HAS_GLOBAL:
        values = tl.load(gglobal_ptr + offs_n, mask=n_ok, other=0.0)
    else:
        values = 1.0
    return values


def group_scale_args(scale: torch.Tensor) -> dict:
    """The kernels' arguments for (N, groups) scales (``_group_scales``): ``gscale_ptr`` and ``stride_gs``, fp32
    ones as fp32, encoded ones (``reference.ENCODED_SCALES``) as bytes, SCALE_CODE 1 (E4M3) or 2 (E8M0)."""
    code = SCALE_KIND_CODES[ENCODED_SCALES.get(scale.dtype, "float")]
    operand = scale.contiguous().view(torch.uint8) if code else scale.float().contiguous()
    return dict(gscale_ptr=operand, stride_gs=operand.stride(0), SCALE_CODE=code)
