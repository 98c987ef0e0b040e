"""Triton helpers: fp32 values rounded to a half dtype's nearest value (ties to even), kept in fp32, and the
elementwise ops the kernels' prologues and epilogues compute as eager torch rounds them.

By hand, with integer operations on the bits, for bfloat16: the interpreter's fp32 -> bfloat16
cast truncates, so a kernel that must round like torch (and be checked against its twin on
the CPU) rounds first and then casts exactly.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _round_to_bf16(y):
    """fp32 -> nearest bfloat16 (ties to even), kept in fp32."""
    bits = y.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _round_to_dtype(y, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """fp32 -> the nearest value of the activations' half dtype (none for fp32), kept in fp32."""
    if ROUND_BF16:
        y = _round_to_bf16(y)
    if ROUND_F16:
        y = y.to(tl.float16).to(tl.float32)
    return y


@triton.jit
def _silu_mul(gate, up, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """silu(gate) * up for fp32 values of the activations' dtype, each op rounded to it as eager torch rounds an HF
    MLP's ``act_fn(gate) * up``: silu in fp32 with an IEEE division, then the product; kept in fp32."""
    silu = _round_to_dtype(tl.math.div_rn(gate, 1.0 + tl.exp(-gate)), ROUND_BF16, ROUND_F16)
    return _round_to_dtype(silu * up, ROUND_BF16, ROUND_F16)
