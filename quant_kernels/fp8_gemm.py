"""The prefill path for per-row-scaled W4A4: 4-bit codes as FP8 E4M3 bytes, cuBLAS's FP8 GEMM.

Every INT4 level (-8..7) and every E2M1 value is exact in FP8 E4M3, and a row-wise scaled
FP8 GEMM (``torch._scaled_mm``, out = diag(a_scale) (A @ W.T) diag(w_scale)) is exactly
the W4A4 product with per-token and per-channel scales. On Hopper it runs on the FP8 tensor
cores from pipelined shared memory, which our register-unpacking Triton GEMM cannot feed
(``benchmarks/results/kernels_h200.md``). The activations arrive as 1-byte codes from the
activation kernel (``quantize_activations(..., fp8_codes=True)``); the packed weight is
widened to FP8 by ``unpack_fp8``, one bandwidth-bound pass of 1.5 bytes per weight.

Products of 4-bit values are exact and sums are fp32; the result is rounded once to
bfloat16, the only output dtype of the row-wise FP8 GEMM.

MXFP4 (E2M1 codes, power-of-two scales per 32 along K) takes the same GEMM with each row's group scales folded into
its E4M3 values (``fold_multipliers``): a code times its group's scale over the row's largest, times 2^FOLD_SHIFT,
is an E4M3 value while the group lies within 2^14 of the row's largest (E4M3's subnormals end at 2^-9, E2M1's
finest value is 0.5), and the row's scale goes to the GEMM's per-row scales. Then the product is the MXFP4 one,
fp32 sums. A group below that keeps its value rounded to E4M3, an error of at most 2^-16 of the row's largest
group scale for each of its values. On SmolLM2-135M (WikiText-2, 2048 tokens) the linears' inputs spanned at most
2^13 per token without a rotation and 2^3 after one, the weights' rows 2^5.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quant_layers import packing

from .reference import FP8_ALIGNMENT, fp8_path_fits, w4a4_element
from .w4a4_gemm import code_operand

INTERPRET = triton.knobs.runtime.interpret
FP8 = torch.float8_e4m3fn


# A row's folded MXFP4 values: its largest group's codes times 2^FOLD_SHIFT (E2M1's 6 to 384, under E4M3's 448).
FOLD_SHIFT = 6


@triton.jit
def _e4m3_grid(v):
    """A 4-bit value times a power of two at most 2^FOLD_SHIFT (fp32), rounded to E4M3 (to even), sign and -0 kept.
    Such products have at most two significant bits, so only those below E4M3's normals (2^-6) round: to E4M3's
    subnormal step 2^-9, by one fp32 add and subtract of 1.5 * 2^14 (whose ulp is 2^-9). Casting the result to
    E4M3 is then exact, on the GPU and under the interpreter (whose fp8 cast truncates)."""
    magnitude = (tl.abs(v) + 24576.0) - 24576.0
    return tl.where(v.to(tl.int32, bitcast=True) < 0, -magnitude, magnitude)


@triton.jit
def _unpack_fp8_kernel(packed_ptr, out_ptr, mult_ptr, N, BYTES, stride_pn, stride_on, stride_mn,
                       IS_INT4: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """(BLOCK_N, BLOCK_B) packed bytes -> (BLOCK_N, 2 * BLOCK_B) E4M3 bytes, element 2i from the low nibble; GROUP > 0:
    each value times its group's multiplier (``fold_multipliers``), rounded to E4M3 (exact within 2^14)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = (rows < N)[:, None] & (cols < BYTES)[None, :]
    packed = tl.load(packed_ptr + rows[:, None] * stride_pn + cols[None, :], mask=ok, other=0)
    low = code_operand(packed & 0xF, IS_INT4, 1)
    high = code_operand(packed >> 4, IS_INT4, 1)
    if GROUP:  # both codes of a byte lie in one group
        mult = tl.load(mult_ptr + rows[:, None] * stride_mn + (cols // (GROUP // 2))[None, :], mask=ok, other=0.0)
        low = _e4m3_grid(low.to(tl.float32) * mult).to(tl.float8e4nv)
        high = _e4m3_grid(high.to(tl.float32) * mult).to(tl.float8e4nv)
    low = low.to(tl.uint8, bitcast=True)
    high = high.to(tl.uint8, bitcast=True)
    out_cols = 2 * tl.program_id(1) * BLOCK_B + tl.arange(0, 2 * BLOCK_B)
    out_ok = (rows < N)[:, None] & (out_cols < 2 * BYTES)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_on + out_cols[None, :],
             tl.join(low, high).reshape(BLOCK_N, 2 * BLOCK_B), mask=out_ok)


def fold_multipliers(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-of-two group scales (rows, groups), fp32 -> (each group's multiplier, (rows, groups); the rows' scales,
    (rows, 1)), scale = multiplier * row scale, the row's largest multiplier 2^FOLD_SHIFT. Quotients of powers of
    two are exact in IEEE division (on the GPU too), or 0 below fp32's range; a row of zero scales keeps scale 1."""
    row_max = scale.amax(dim=1, keepdim=True)
    row_scale = torch.where(row_max > 0, row_max * 2.0 ** -FOLD_SHIFT, torch.ones_like(row_max))
    return scale / row_scale, row_scale


def _group_of(packed: torch.Tensor, mult: torch.Tensor | None) -> int:
    """The group size ``mult`` (rows, groups) gives the packed codes' K, or 0 without it; a ValueError where the
    shapes do not agree."""
    if mult is None:
        return 0
    k = 2 * packed.shape[1]
    if mult.dim() != 2 or mult.shape[0] != packed.shape[0] or not mult.shape[1] or k % mult.shape[1] or \
            (k // mult.shape[1]) % 2:
        raise ValueError(f"group multipliers must be (rows, groups) with the groups dividing K into even groups, got "
                         f"{tuple(mult.shape)} for {packed.shape[0]} rows of K={k}")
    return k // mult.shape[1]


def unpack_fp8_ref(packed: torch.Tensor, element: str, mult: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, K // 2) packed codes -> (rows, K) their values as FP8 E4M3 (exact); with ``mult`` (rows, groups),
    ``fold_multipliers``' first output: each value times its group's multiplier, rounded to E4M3."""
    values = packing.decode(packing.unpack(packed), w4a4_element(element))
    group = _group_of(packed, mult)
    if group:
        values = values.float() * mult.float().repeat_interleave(group, dim=1)
    return values.to(FP8)


def unpack_fp8_triton(packed: torch.Tensor, element: str, mult: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton twin of ``unpack_fp8_ref``."""
    w4a4_element(element)
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed codes must be a 2-D uint8 tensor, got {packed.dtype} with shape {tuple(packed.shape)}")
    packed = packed if packed.stride(1) == 1 else packed.contiguous()
    group = _group_of(packed, mult)
    mult = packed if mult is None else mult.float().contiguous()  # without groups the kernel never reads it
    n, nbytes = packed.shape
    out = torch.empty((n, 2 * nbytes), dtype=torch.uint8, device=packed.device)
    block_n, block_b = (16, 32) if INTERPRET else (32, 256)
    grid = (triton.cdiv(n, block_n), triton.cdiv(nbytes, block_b))
    _unpack_fp8_kernel[grid](packed, out, mult, n, nbytes, packed.stride(0), out.stride(0), mult.stride(0),
                             IS_INT4=element == "int4", GROUP=group, BLOCK_N=block_n, BLOCK_B=block_b, num_warps=4)
    return out.view(FP8)


def w4a4_matmul_fp8(a_fp8: torch.Tensor, a_scale: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """bfloat16 (M, N) = diag(a_scale) (a_fp8 @ w_fp8.T) diag(w_scale) (+ bias), fp32 sums.

    ``a_fp8`` (M, K) and ``w_fp8`` (N, K) hold 4-bit values as E4M3; ``a_scale`` (M, 1) and
    ``w_scale`` (N, 1) are their fp32 per-row scales. A ragged M is padded to a multiple
    of 16 with zero rows (a copy of the codes).
    """
    m, k = a_fp8.shape
    n = w_fp8.shape[0]
    if a_fp8.dtype != FP8 or w_fp8.dtype != FP8 or w_fp8.shape[1] != k:
        raise ValueError(f"the FP8 path takes (M, K) and (N, K) float8_e4m3fn codes, got {a_fp8.dtype} "
                         f"{tuple(a_fp8.shape)} and {w_fp8.dtype} {tuple(w_fp8.shape)}")
    if not fp8_path_fits(m, n, k, 0, 0):
        raise ValueError(f"the FP8 GEMM needs K and N multiples of {FP8_ALIGNMENT}, got K={k}, N={n}")
    a_scale = a_scale.float().reshape(m, 1)
    pad = (-m) % FP8_ALIGNMENT  # the row-wise kernels take M in multiples of 16: zero rows, sliced off
    if pad:
        a_fp8 = torch.cat([a_fp8, a_fp8.new_zeros(pad, k)])
        a_scale = torch.cat([a_scale, a_scale.new_zeros(pad, 1)])
    out = torch._scaled_mm(a_fp8, w_fp8.t(), scale_a=a_scale, scale_b=w_scale.float().reshape(1, n),
                           bias=None if bias is None else bias.to(torch.bfloat16), out_dtype=torch.bfloat16)
    return out[:m] if pad else out
