"""The Triton kernel of ``ws_tile_probe.py`` (its own module: Triton reads TRITON_INTERPRET as it loads one)."""

import triton
import triton.language as tl

# The interpreter's bfloat16 dot is wrong: there the probe's dots take fp32 operands (exact: INT4 levels and
# bfloat16 activations are fp32 values).
DOT_F32 = triton.knobs.runtime.interpret


@triton.jit
def _int4_values(nibbles, DOT_F32: tl.constexpr):
    """Two's-complement nibbles (int32 0..15) -> their INT4 levels in bfloat16: 128 + (v xor 8) as bits, less 136
    (in fp32 for the interpreter, whose bfloat16 arithmetic is wrong too)."""
    biased = ((nibbles ^ 0x8) | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
    if DOT_F32:
        return biased.to(tl.float32) - 136.0
    return biased - 136.0


@triton.jit
def _dot(a, b, acc, DOT_F32: tl.constexpr):
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def halves_kernel(x_desc, w_desc, scale_ptr, out_ptr, M, N, K, stride_om, WARP_SPECIALIZE: tl.constexpr,
                  SWAP_AB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HALF: tl.constexpr,
                  DOT_F32: tl.constexpr):
    """out = x @ (levels * scale).T for x (M, K) and INT4 levels in ``ws_tile_probe.halves_layout`` (N, K / 2), both
    read by TMA descriptors (blocks of HALF columns). One dot a step of HALF codes: the even steps take the low
    nibbles of a block's bytes, the odd ones the high nibbles of the same bytes (loaded again), so that Triton's
    warp specialization can split the tile between its consumer warp groups (two dots a step it cannot).
    SWAP_AB: acc^T = W X^T, the weight wgmma's register operand."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    if SWAP_AB:
        acc = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in tl.range(0, K, HALF, warp_specialize=WARP_SPECIALIZE, num_stages=3):
        x = x_desc.load([pid_m * BLOCK_M, k0])
        packed = w_desc.load([pid_n * BLOCK_N, (k0 // (2 * HALF)) * HALF]).to(tl.int32)
        w = _int4_values((packed >> ((k0 // HALF) % 2 * 4)) & 0xF, DOT_F32)
        if SWAP_AB:
            acc = _dot(w, tl.trans(x), acc, DOT_F32)
        else:
            acc = _dot(x, tl.trans(w), acc, DOT_F32)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    scale = tl.load(scale_ptr + offs_n, mask=offs_n < N, other=0.0)
    if SWAP_AB:
        out = acc * scale[:, None]
        ptrs = out_ptr + offs_m[None, :] * stride_om + offs_n[:, None]
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_m[None, :] < M) & (offs_n[:, None] < N))
    else:
        out = acc * scale[None, :]
        ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))
