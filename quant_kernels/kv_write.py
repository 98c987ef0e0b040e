"""Triton kernel: quantize new K and V tokens into a static packed KV4 cache, both in one launch.

``quant_layers.packed_kv_cache.StaticPackedKVLayer`` stores each new token's K and V as
4-bit codes with their scales (and zero points) in buffers written in place. Its torch
path (``_PackedTensor.write``: group, fit, levels, encode, pack, ``index_copy_``) is the
twin of this kernel. Compiled into a Llama-3-8B W4A4KV4 decode step it became four fused
kernels a layer (about 7 us of 9 for the step's K/V and RoPE glue on the H200,
``benchmarks/results/decode_profile_compiled_pdl_llama3_8b_h200.md``). Here one program
quantizes BLOCK_R rows (one token of one head each) of K or V, and the second grid axis
picks K or V: per scale group the absmax (symmetric INT4 or E2M1) or the clamped min and
max (asymmetric INT4, with a zero point), scales and rounding exactly as ``Quantizer`` does
them (``act_quant``'s division and rounding), codes packed two a byte, all written at the
token's cache position, which the kernel reads from the positions tensor (a captured step
cannot bake it in).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.standard import _elementwise_max, _elementwise_min

from .act_quant import _byte_pairs, _divide, _encode, _in_division_range, _rint
# The packed elements' kernel ids, as the decode-attention kernel reads them: int4 (symmetric, two's complement),
# uint4 (asymmetric: the code is the level, under a zero point), e2m1 (symmetric).
from .flash_decode import ELEMENT_IDS
from .pdl import launch_dependents, pdl_flags, wait_for_producer
from .reference import packed_kv_element

FLOAT_MAX = tl.constexpr(3.4028234663852886e38)  # _divide's saturation left out: the levels are clamped after

ROWS_PER_PROGRAM = 8


@triton.jit
def _write_rows(x_ptr, stride_b, stride_h, stride_t, pos_ptr, codes_ptr, scale_ptr, zero_ptr, rows, n_rows, T, H, L,
                clip, max_value, D: tl.constexpr, ELEMENT: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr):
    """Quantize rows ``rows`` ((b * H + h) * T + t, those below n_rows) of x (B, H, T, D) into cache rows
    (b * H + h) * L + pos[t]."""
    ok = rows < n_rows
    bh = rows // T
    t = rows % T
    d = tl.arange(0, D)
    x = tl.load(x_ptr + ((bh // H) * stride_b + (bh % H) * stride_h + t * stride_t)[:, None] + d[None, :],
                mask=ok[:, None], other=0.0).to(tl.float32)
    destination = bh * L + tl.load(pos_ptr + t, mask=ok, other=0)
    groups: tl.constexpr = D // GROUP
    xg = x.reshape(BLOCK_R, groups, GROUP)
    if ELEMENT == 1:  # asymmetric: lo <= 0 <= hi, scale (hi - lo) / 15, zero round(-lo / scale)
        lo = tl.minimum(tl.reduce(xg, 2, _elementwise_min), 0.0) * clip
        hi = tl.maximum(tl.reduce(xg, 2, _elementwise_max), 0.0) * clip
        scale = tl.math.div_rn(hi - lo, tl.full(hi.shape, max_value, tl.float32))
        safe = tl.where(scale > 0, scale, 1.0)
        in_range = _in_division_range(safe)
        zero = _rint(_divide(-lo, safe, -FLOAT_MAX, FLOAT_MAX, False, in_range))
        levels = _rint(_divide(xg, safe[:, :, None], -FLOAT_MAX, FLOAT_MAX, False, in_range)) + zero[:, :, None]
        levels = tl.minimum(tl.maximum(levels, 0.0), 15.0)
        codes = levels.to(tl.int32)
    else:
        amax = tl.reduce(tl.abs(xg), 2, _elementwise_max) * clip
        scale = tl.math.div_rn(amax, tl.full(amax.shape, max_value, tl.float32))
        safe = tl.where(scale > 0, scale, 1.0)
        codes = _encode(_divide(xg, safe[:, :, None], -FLOAT_MAX, FLOAT_MAX, False, _in_division_range(safe)),
                        ELEMENT == 0, False, 2)
    low, high = tl.split(codes.reshape(BLOCK_R, D // 2, 2))
    tl.store(codes_ptr + destination[:, None] * (D // 2) + tl.arange(0, D // 2)[None, :],
             _byte_pairs(low, high, ELEMENT == 0), mask=ok[:, None])
    group_ids = tl.arange(0, groups)
    tl.store(scale_ptr + destination[:, None] * groups + group_ids[None, :], scale, mask=ok[:, None])
    if ELEMENT == 1:
        tl.store(zero_ptr + destination[:, None] * groups + group_ids[None, :], zero, mask=ok[:, None])


@triton.jit
def _kv4_write_kernel(
    k_ptr, v_ptr, pos_ptr, k_codes_ptr, k_scale_ptr, k_zero_ptr, v_codes_ptr, v_scale_ptr, v_zero_ptr,
    n_rows, T, H, L, k_stride_b, k_stride_h, k_stride_t, v_stride_b, v_stride_h, v_stride_t, k_clip, v_clip,
    k_max, v_max, D: tl.constexpr, K_ELEMENT: tl.constexpr, V_ELEMENT: tl.constexpr, K_GROUP: tl.constexpr,
    V_GROUP: tl.constexpr, BLOCK_R: tl.constexpr, USE_GDC: tl.constexpr,
):
    """Axis 0: blocks of BLOCK_R rows; axis 1: 0 writes K, 1 writes V. USE_GDC: a programmatic dependent launch
    (``quant_kernels.pdl``)."""
    launch_dependents(USE_GDC)
    wait_for_producer(USE_GDC)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if tl.program_id(1) == 0:
        _write_rows(k_ptr, k_stride_b, k_stride_h, k_stride_t, pos_ptr, k_codes_ptr, k_scale_ptr, k_zero_ptr,
                    rows, n_rows, T, H, L, k_clip, k_max, D, K_ELEMENT, K_GROUP, BLOCK_R)
    else:
        _write_rows(v_ptr, v_stride_b, v_stride_h, v_stride_t, pos_ptr, v_codes_ptr, v_scale_ptr, v_zero_ptr,
                    rows, n_rows, T, H, L, v_clip, v_max, D, V_ELEMENT, V_GROUP, BLOCK_R)


def kv4_write_problem(key: torch.Tensor, value: torch.Tensor, key_cache: tuple, value_cache: tuple) -> str | None:
    """Why ``write_kv4_triton`` cannot take these tensors, or None when it can (shapes only: it runs inside
    compiled decode steps)."""
    if key.dim() != 4 or key.shape != value.shape:
        return f"K and V must be (B, H, T, D) of one shape, got {tuple(key.shape)} and {tuple(value.shape)}"
    batch, heads, _, dim = key.shape
    if dim < 16 or dim & (dim - 1):
        return f"the head dimension must be a power of two >= 16, got {dim}"
    for name, (codes, scale, zero) in (("K", key_cache), ("V", value_cache)):
        length = codes.shape[2] if codes.dim() == 4 else -1
        if (codes.dtype != torch.uint8 or tuple(codes.shape) != (batch, heads, length, dim // 2)
                or not codes.is_contiguous()):
            return (f"the {name} codes must be contiguous uint8 (B, H, L, D // 2), got {codes.dtype} "
                    f"{tuple(codes.shape)}")
        groups = scale.shape[-1] if scale.dim() == 4 else 0
        if (scale.dtype != torch.float32 or tuple(scale.shape[:3]) != (batch, heads, length) or not groups
                or dim % groups or (dim // groups) & (dim // groups - 1) or not scale.is_contiguous()):
            return f"the {name} scales must be contiguous float32 (B, H, L, D // group), got {tuple(scale.shape)}"
        if zero is not None and (zero.shape != scale.shape or zero.dtype != torch.float32 or not zero.is_contiguous()):
            return f"the {name} zero points must be contiguous float32 like its scales, got {tuple(zero.shape)}"
    return None


def write_kv4_triton(key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor, key_cache: tuple,
                     value_cache: tuple, key_element: str, value_element: str, key_clip: float,
                     value_clip: float) -> None:
    """Quantize ``key`` and ``value`` (B, H, T, D) into token slots ``positions`` (T,) of the packed caches
    ``(codes (B, H, L, D // 2), scales (B, H, L, D // group), zero points or None)``, as
    ``_PackedTensor.write`` does (``*_element``: int4, uint4 (with zero points) or e2m1)."""
    problem = kv4_write_problem(key, value, key_cache, value_cache)
    if problem:
        raise ValueError(problem)
    for name, element, (_, _, zero) in (("K", key_element, key_cache), ("V", value_element, value_cache)):
        if element not in ELEMENT_IDS:
            raise ValueError(f"unknown {name} element {element!r}: choose one of {', '.join(ELEMENT_IDS)}")
        if (zero is not None) != (element == "uint4"):
            raise ValueError(f"{name}: uint4 codes need zero points and the symmetric elements none")
    batch, heads, tokens, dim = key.shape
    if key.stride(-1) != 1:
        key = key.contiguous()
    if value.stride(-1) != 1:
        value = value.contiguous()
    (k_codes, k_scale, k_zero), (v_codes, v_scale, v_zero) = key_cache, value_cache
    n_rows = batch * heads * tokens
    grid = (triton.cdiv(n_rows, ROWS_PER_PROGRAM), 2)
    _kv4_write_kernel[grid](
        key, value, positions.contiguous(), k_codes, k_scale, k_scale if k_zero is None else k_zero,
        v_codes, v_scale, v_scale if v_zero is None else v_zero,
        n_rows, tokens, heads, k_codes.shape[2], key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2), key_clip, value_clip,
        packed_kv_element(key_element).max_value, packed_kv_element(value_element).max_value, D=dim,
        K_ELEMENT=ELEMENT_IDS[key_element], V_ELEMENT=ELEMENT_IDS[value_element], K_GROUP=dim // k_scale.shape[-1],
        V_GROUP=dim // v_scale.shape[-1], BLOCK_R=ROWS_PER_PROGRAM, num_warps=4, **pdl_flags(key.device, "kv_write"),
        # No multiply-add contraction: a clipped zero-point range (hi - lo, each a product with the clip ratio)
        # fused into one FMA rounded differently from the twin's, a scale an ulp off in a fifth of the groups
        # on the H200 (benchmarks/results/kernel_check_decode_fused_h200.md).
        enable_fp_fusion=False,
    )
