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
def _e3m2_values(codes):
    """FP6 E3M2 codes (int32 0..63: sign, exponent biased by 3, two mantissa bits) -> their values in bfloat16, by
    integer operations only: a normal code's exponent and mantissa placed with the bias moved to bfloat16's (+124),
    a subnormal's value m / 16 built from its own bits (2^-4, 2^-3, 1.5 * 2^-3), then the sign."""
    magnitude = codes & 31
    m = magnitude & 3
    subnormal = tl.where(m == 0, 0, ((123 + (m >> 1)) << 7) | ((m & (m >> 1)) << 6))
    bits = tl.where(magnitude < 4, subnormal, (magnitude + (124 << 2)) << 5) | ((codes & 32) << 10)
    return bits.to(tl.int16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _dot(a, b, acc, DOT_F32: tl.constexpr):
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def halves_kernel(x_desc, w_desc, h_desc, scale_ptr, out_ptr, M, N, K, stride_om, WARP_SPECIALIZE: tl.constexpr,
                  SWAP_AB: tl.constexpr, DEVICE_DESC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  HALF: tl.constexpr, FP6: tl.constexpr, DOT_F32: tl.constexpr):
    """out = x @ (values * scale).T for x (M, K) and the weight's codes in ``ws_tile_probe.step_planes``: INT4 levels
    in the halves layout at ``w_desc`` (N, K / 2) or, FP6, E3M2 codes' low nibbles there and their top two bits in
    the quarters layout at ``h_desc`` (N, K / 4; INT4 passes ``w_desc`` again, unread). All are read by TMA
    descriptors in blocks of HALF columns. One dot a step of HALF codes: step s takes nibble s % 2 of the bytes of
    low block s // 2 (loaded again for the odd steps) and field s % 4 of high block s // 4, so that Triton's warp
    specialization can split the tile between its consumer warp groups (two dots a step it cannot). SWAP_AB:
    acc^T = W X^T, the weight wgmma's register operand. DEVICE_DESC: the three arguments are the contiguous tensors
    themselves and the kernel builds their descriptors, whose boxes Triton's warp specialization can shrink to the
    loads it splits between the consumers (a host-built box stays whole: each split copy then moves twice the bytes
    its barrier expects, and the kernel hangs)."""
    if DEVICE_DESC:
        x_desc = tl.make_tensor_descriptor(x_desc, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, HALF])
        w_desc = tl.make_tensor_descriptor(w_desc, shape=[N, K // 2], strides=[K // 2, 1], block_shape=[BLOCK_N, HALF])
        if FP6:
            h_desc = tl.make_tensor_descriptor(h_desc, shape=[N, K // 4], strides=[K // 4, 1],
                                               block_shape=[BLOCK_N, HALF])
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    if SWAP_AB:
        acc = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in tl.range(0, K, HALF, warp_specialize=WARP_SPECIALIZE, num_stages=3):
        step = k0 // HALF
        x = x_desc.load([pid_m * BLOCK_M, k0])
        low = (w_desc.load([pid_n * BLOCK_N, step // 2 * HALF]).to(tl.int32) >> (step % 2 * 4)) & 0xF
        if FP6:
            high = (h_desc.load([pid_n * BLOCK_N, step // 4 * HALF]).to(tl.int32) >> (step % 4 * 2)) & 0x3
            w = _e3m2_values((high << 4) | low)
        else:
            w = _int4_values(low, DOT_F32)
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
