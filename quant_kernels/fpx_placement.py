"""Where FPx and INT4 codes become numbers in registers: the bit placement the FPx kernels share.

Each helper takes words of the bit planes (``quant_layers.packing.pack_planes``: a 4-bit plane with every code's low
four bits, a 1-bit or 2-bit plane with the rest) and lays their fields with shifts, masks and multiplies where a
float's bits want them, two codes a 32-bit word: as float32s (``_placed_pair``, the row kernel's fp32 form), as
bfloat16 pairs scaled to their values by one packed multiply or fp16 pairs that are their values times a power of
two (``_valued_pairs``), joined in K order into a tile (``_placed_tile``, ``_valued_tile``) or in the pairs a wgmma
register operand holds (``_lane_tile``). The older arithmetic decode of spread codes (``_spread``, ``_plane_codes``,
``_decode``) serves the unpaired tiles, the dequantization pass and the KV4 attention. ``fpx_gemm`` holds the
kernels that call these and the reasons each placement was chosen.
"""

from __future__ import annotations

import triton
import triton.language as tl

# MAN_BITS of INT4 weights (two's complement levels, not sign | exponent | mantissa codes): the kernels place a
# nibble u as the bfloat16 128 + (u ^ 8) (INT4_PLACED's halves: exponent 2^7, u ^ 8 in the mantissa's low bits) and
# subtract INT4_OFFSET = 136, which leaves the level (u ^ 8) - 8 exactly; one shift and one LOP3 place two codes.
INT4_LEVELS = tl.constexpr(-1)
INT4_PLACED = tl.constexpr(0x43084308)
INT4_OFFSET = tl.constexpr(136.0)
# The same for fp16 values (``_placed_bits``' F16): u as 1024 + (u ^ 8), less 1032.
INT4_PLACED_F16 = tl.constexpr(0x64086408)
# A code pair's 32-bit word (``_placed_bits``, ``_lane_bits``): a field mask times PAIR_HALVES is the mask in both
# halves; PAIR_SIGNS holds their sign bits (15 and 31).
PAIR_HALVES = tl.constexpr(65537)
PAIR_SIGNS = tl.constexpr(-2147450880)


@triton.jit
def _spread(packed, ROWS: tl.constexpr, BYTES: tl.constexpr, WIDTH: tl.constexpr):
    """(ROWS, BYTES) bytes of WIDTH-bit fields -> (ROWS, BYTES * 8 // WIDTH) int32 fields, in packing order.

    Each split halves the fields, low half first (byte -> nibbles -> 2-bit -> 1-bit), so
    a field's position along K is its bit offset in the byte divided by WIDTH.
    """
    fields = packed.to(tl.int32)
    fields = tl.join(fields & 0xF, fields >> 4).reshape(ROWS, BYTES * 2)
    if WIDTH <= 2:
        fields = tl.join(fields & 3, fields >> 2).reshape(ROWS, BYTES * 4)
    if WIDTH == 1:
        fields = tl.join(fields & 1, fields >> 1).reshape(ROWS, BYTES * 8)
    return fields


@triton.jit
def _plane_codes(low_ptrs, high_ptrs, n_ok, rest, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 HIGH_WIDTH: tl.constexpr):
    """(BLOCK_N, BLOCK_K) int32 codes of the planes' bytes at ``low_ptrs`` (BLOCK_N, BLOCK_K // 2) and
    ``high_ptrs`` (BLOCK_N, BLOCK_K * HIGH_WIDTH // 8), rows ``n_ok`` and ``rest`` codes along K read (zeros past)."""
    offs_low = tl.arange(0, BLOCK_K // 2)
    low = tl.load(low_ptrs, mask=n_ok[:, None] & (offs_low[None, :] < rest // 2), other=0)
    codes = _spread(low, BLOCK_N, BLOCK_K // 2, 4)
    if HIGH_WIDTH > 0:
        HIGH_PER_BYTE: tl.constexpr = 8 // HIGH_WIDTH
        offs_high = tl.arange(0, BLOCK_K // HIGH_PER_BYTE)
        high = tl.load(high_ptrs, mask=n_ok[:, None] & (offs_high[None, :] < rest // HIGH_PER_BYTE), other=0)
        codes = codes | (_spread(high, BLOCK_N, BLOCK_K // HIGH_PER_BYTE, HIGH_WIDTH) << 4)
    return codes


@triton.jit
def _decode(codes, EXP_BITS: tl.constexpr, MAN_BITS: tl.constexpr, EXP_BIAS: tl.constexpr):
    """fp32 values of sign | exponent | mantissa codes (int32), as ``packing.code_values``; INT4 levels of two's
    complement nibbles with MAN_BITS = INT4_LEVELS."""
    if MAN_BITS == INT4_LEVELS:  # not an early return: Triton builds the code after one too (a dead block), and
        # the FP path's shifts by MAN_BITS = -1 do not build
        values = ((codes ^ 8) - 8).to(tl.float32)
    else:
        exponent = (codes >> MAN_BITS) & ((1 << EXP_BITS) - 1)
        mantissa = codes & ((1 << MAN_BITS) - 1)
        significand = tl.where(exponent > 0, mantissa + (1 << MAN_BITS), mantissa)  # implicit 1 when normal
        power = tl.maximum(exponent, 1) - (EXP_BIAS + MAN_BITS)
        magnitude = significand.to(tl.float32) * ((power + 127) << 23).to(tl.float32, bitcast=True)
        values = tl.where(((codes >> (EXP_BITS + MAN_BITS)) & 1) != 0, -magnitude, magnitude)
    return values


@triton.jit
def _shifted(v, by: tl.constexpr):
    """v shifted left by the constexpr ``by`` bits (right when negative)."""
    if by >= 0:
        return v << by
    else:
        return v >> -by


@triton.jit
def _spread_high(high, HIGH_WIDTH: tl.constexpr, USE_ASM: tl.constexpr):
    """High-plane words (int16 or uint8, as loaded) as int32 with the fields of codes 4..7 moved up to bit 16, level
    with those of codes 0..3 in the low half, as the low plane's nibbles of codes j and j + 4 are: one shift then
    places a field of both codes. For 16-bit words on a GPU one PTX prmt.b32 a word moves its two bytes (two words a
    register, each output taking its own word's bytes): sm_90 SASS (Triton 3.6) had a sign extension, a shift and two
    LOP3 a word, and the FP6 row kernel's loop at 64 x 64 words lost 62 of its 803 instructions."""
    HALF: tl.constexpr = 4 * HIGH_WIDTH  # bits of codes 0..3's fields
    if HIGH_WIDTH == 2 and USE_ASM:
        out = tl.inline_asm_elementwise("prmt.b32 $0, $2, 0, 0x4140; prmt.b32 $1, $2, 0, 0x4342;", "=r,=r,r",
                                        [high], dtype=tl.int32, is_pure=True, pack=2)
    else:
        words = high.to(tl.int32)
        out = (words & ((1 << HALF) - 1)) | (((words >> HALF) & ((1 << HALF) - 1)) << 16)
    return out


@triton.jit
def _placed_pair(low, high, J: tl.constexpr, BITS: tl.constexpr, MAN_BITS: tl.constexpr,
                 HIGH_WIDTH: tl.constexpr, USE_ASM: tl.constexpr = False):
    """Codes J and J + 4 (J < 4) of low-plane words and their ``_spread_high`` words, as fp32 values times
    2^(bias - 127): the halves of ``_placed_bits``, each read as the top of a float32 (a shift or a mask).

    bfloat16 shares fp32's exponent bias, so such a float32 is the code's value with fp32's bias
    instead of the format's, subnormal codes included (they become fp32 subnormals, which the
    caller's power of two makes normal again in the product). No conversion instruction; for FP6
    on sm_90, 30 % fewer integer instructions than placing one code at a time into a float32. INT4 levels
    take their offset off both halves at once on a GPU (``_valued_pairs``' sub.rn.bf16x2), in fp32 without the PTX.
    """
    bits = _placed_bits(low, high, J, BITS, MAN_BITS, HIGH_WIDTH)
    if MAN_BITS == INT4_LEVELS and USE_ASM:  # (W_UNIT and the row kernel's unit hold no bias for INT4)
        first, second = _bf16_halves(_valued_pairs(bits, MAN_BITS, 0, USE_ASM))
    else:
        first, second = _bf16_halves(bits)
        if MAN_BITS == INT4_LEVELS:
            first, second = first - INT4_OFFSET, second - INT4_OFFSET
    return first, second


@triton.jit
def _placed_bits(low, high, J: tl.constexpr, BITS: tl.constexpr, MAN_BITS: tl.constexpr,
                 HIGH_WIDTH: tl.constexpr, F16: tl.constexpr = False):
    """Codes J (low half) and J + 4 (high half) of low-plane words and their ``_spread_high`` words as the
    bfloat16 bits of their values times 2^(bias - 127): each shift and mask places a field of both codes at once
    (magnitude with the mantissa's top at bit 6, sign at bit 15 of each half). INT4 levels (MAN_BITS =
    INT4_LEVELS): each nibble u as the bfloat16 128 + (u ^ 8), one shift and one mask-and-xor for both. F16: as
    fp16 bits instead, the values times 2^(bias - 15) (the mantissa's top at bit 9; INT4: 1024 + (u ^ 8)); the
    magnitude then ends at bit 12 at most and FP6's high field (below) still lands apart from its copies."""
    if MAN_BITS == INT4_LEVELS:  # if / else as in ``_decode``
        bits = (_shifted(low, -4 * J) & 0x000F000F) ^ (INT4_PLACED_F16 if F16 else INT4_PLACED)
    else:
        MAG_LOW: tl.constexpr = 4 if BITS > 4 else 3  # magnitude bits in the low nibble
        TOP: tl.constexpr = (10 if F16 else 7) - MAN_BITS  # where the magnitude's bit 0 goes in a half
        bits = _shifted(low, TOP - 4 * J) & ((((1 << MAG_LOW) - 1) << TOP) * PAIR_HALVES)
        if BITS == 4:
            bits |= _shifted(low, 15 - (4 * J + 3)) & PAIR_SIGNS
        elif HIGH_WIDTH == 1:
            bits |= _shifted(high, 15 - J) & PAIR_SIGNS
        else:  # one multiply moves pair J's field (magnitude bit 4, sign) to TOP + 4 and 15, copies landing apart
            fields = (high & ((3 << (2 * J)) * PAIR_HALVES)).to(tl.uint32, bitcast=True)
            spread = (fields * ((1 << (TOP + 4 - 2 * J)) + (1 << (14 - 2 * J)))).to(tl.int32, bitcast=True)
            bits |= spread & (((1 << (TOP + 4)) * PAIR_HALVES) | PAIR_SIGNS)
    return bits


@triton.jit
def _bf16_halves(bits):
    """The two bfloat16 halves of int32 words as float32s (low half, high half)."""
    return (bits << 16).to(tl.float32, bitcast=True), (bits & -65536).to(tl.float32, bitcast=True)


@triton.jit
def _valued_pairs(bits, MAN_BITS: tl.constexpr, UNIT_EXP: tl.constexpr, USE_ASM: tl.constexpr,
                  SCALED: tl.constexpr = False, unit_pairs=0, F16: tl.constexpr = False):
    """``_placed_bits`` words times 2^UNIT_EXP (UNIT_EXP = 127 - bias) in both bfloat16 halves: the codes' values,
    exact (a power of two onto a normal result, subnormal placements included); PTX mul.rn.bf16x2. INT4 levels
    (MAN_BITS = INT4_LEVELS): INT4_OFFSET subtracted instead (sub.rn.bf16x2), exact. SCALED (E2M1 codes): times
    ``unit_pairs`` instead (``_unit_pairs``: a group scale exact in bfloat16 times 2^UNIT_EXP, less
    ``fpx_gemm.GROUP_UNIT_SHIFT``'s power), the codes' values times their scale, exact for E4M3 and E8M0 scales (at
    most 6 significant bits). F16 (``_placed_bits``' fp16 words): the same in fp16 halves (``_valued_f16_pairs``), but
    codes neither INT4 nor SCALED stay their placement, 2^(bias - 15) times their values."""
    UNIT_BITS: tl.constexpr = (UNIT_EXP + 127) << 7  # bfloat16 2^UNIT_EXP
    if F16:
        out = _valued_f16_pairs(bits, MAN_BITS, UNIT_EXP, USE_ASM, SCALED, unit_pairs)
    elif SCALED:
        if USE_ASM:
            out = tl.inline_asm_elementwise("mul.rn.bf16x2 $0, $1, $2;", "=r,r,r", [bits, unit_pairs], dtype=tl.int32,
                                            is_pure=True, pack=1)
        else:
            unit = (unit_pairs << 16).to(tl.float32, bitcast=True)
            low, high = _bf16_halves(bits)
            out = _half_pairs((low * unit).to(tl.bfloat16), (high * unit).to(tl.bfloat16))
    elif MAN_BITS == INT4_LEVELS:
        if USE_ASM:
            offset = tl.full(bits.shape, INT4_PLACED, tl.int32)  # 136 in both halves (u ^ 8 = 8)
            out = tl.inline_asm_elementwise("sub.rn.bf16x2 $0, $1, $2;", "=r,r,r", [bits, offset], dtype=tl.int32,
                                            is_pure=True, pack=1)
        else:
            low, high = _bf16_halves(bits)
            out = _half_pairs((low - INT4_OFFSET).to(tl.bfloat16), (high - INT4_OFFSET).to(tl.bfloat16))
    elif USE_ASM:
        unit = tl.full(bits.shape, UNIT_BITS * 65537, tl.int32)
        out = tl.inline_asm_elementwise("mul.rn.bf16x2 $0, $1, $2;", "=r,r,r", [bits, unit], dtype=tl.int32,
                                        is_pure=True, pack=1)
    else:
        unit = tl.full(bits.shape, UNIT_BITS << 16, tl.int32).to(tl.float32, bitcast=True)
        low, high = _bf16_halves(bits)
        out = _half_pairs((low * unit).to(tl.bfloat16), (high * unit).to(tl.bfloat16))
    return out


@triton.jit
def _valued_f16_pairs(bits, MAN_BITS: tl.constexpr, UNIT_EXP: tl.constexpr, USE_ASM: tl.constexpr,
                      SCALED: tl.constexpr, unit_pairs):
    """``_valued_pairs`` for fp16 words, whose placement is already fp16 values: the codes' values times 2^(bias -
    15), exact, subnormal placements included (at least 2^-17 of the formats' 2^-24), so the words return as they
    are and the kernel's sums take 2^(15 - bias) back (``fpx_gemm``'s F16_PLACED). INT4: less 1032, exact. SCALED: times
    2^(UNIT_EXP - 112) = 2^(15 - bias), then times ``unit_pairs`` (fp16 E4M3 scales, ``_unit_pairs``), exact: a product
    of at most 6 significant bits from 2^-10 to 2688, which 2^(bias - 15) below would leave fp16's precision. fp16 holds
    2^(15 - bias) and the scale apart, not their product (448 x 2^14), so SCALED takes two multiplies a pair where
    bfloat16 takes one. PTX mul.rn.f16x2 / sub.rn.f16x2; in fp32 without it."""
    UNIT_BITS: tl.constexpr = (UNIT_EXP - 112 + 15) << 10  # fp16 2^(UNIT_EXP - 112)
    if MAN_BITS != INT4_LEVELS and not SCALED:
        out = bits
    elif USE_ASM:
        if MAN_BITS == INT4_LEVELS:
            out = tl.inline_asm_elementwise("sub.rn.f16x2 $0, $1, $2;", "=r,r,r",
                                            [bits, tl.full(bits.shape, INT4_PLACED_F16, tl.int32)], dtype=tl.int32,
                                            is_pure=True, pack=1)
        else:
            out = tl.inline_asm_elementwise("mul.rn.f16x2 $0, $1, $2;", "=r,r,r",
                                            [bits, tl.full(bits.shape, UNIT_BITS * 65537, tl.int32)], dtype=tl.int32,
                                            is_pure=True, pack=1)
        if SCALED:
            out = tl.inline_asm_elementwise("mul.rn.f16x2 $0, $1, $2;", "=r,r,r", [out, unit_pairs], dtype=tl.int32,
                                            is_pure=True, pack=1)
    else:
        low, high = _halves_of(bits, True)
        low, high = low.to(tl.float32), high.to(tl.float32)
        if MAN_BITS == INT4_LEVELS:
            low, high = low - 1032.0, high - 1032.0
        else:  # (SCALED)
            unit = tl.full(bits.shape, UNIT_BITS, tl.int32).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            low, high = low * unit, high * unit
        if SCALED:
            scale, _ = _halves_of(unit_pairs, True)
            low, high = low * scale.to(tl.float32), high * scale.to(tl.float32)
        out = _half_pairs(low.to(tl.float16), high.to(tl.float16))
    return out


@triton.jit
def _unit_pairs(units, F16: tl.constexpr = False):
    """fp32 values exact in bfloat16 (F16: in fp16) as int32 words holding the value's bfloat16 (fp16) in both
    halves."""
    if F16:
        half = units.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        pairs = half | (half << 16)
    else:
        bits = units.to(tl.int32, bitcast=True)
        pairs = (bits & -65536) | ((bits >> 16) & 0xFFFF)
    return pairs


@triton.jit
def _half_pairs(low, high):
    """16-bit float vectors (bfloat16 or fp16) as int32 words: ``low`` in the low half, ``high`` in the high half."""
    return (low.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (high.to(tl.int16, bitcast=True).to(tl.int32) << 16)


@triton.jit
def _placed_tile(low, high, BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr, units, SCALED: tl.constexpr):
    """(BLOCK_N, BLOCK_K / 8) words -> the (BLOCK_N, BLOCK_K) tile of their placed codes (``_placed_pair``) in K
    order: code j of word w at column 8w + j (each join adds a trailing axis; the reshape reads them back with
    the first join innermost). SCALED: ``units``, the words' (BLOCK_N, BLOCK_K / 8) factors
    (``fpx_gemm._word_units``), is multiplied into each pair before the joins (unread otherwise)."""
    a0, a4 = _placed_pair(low, high, 0, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
    a1, a5 = _placed_pair(low, high, 1, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
    a2, a6 = _placed_pair(low, high, 2, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
    a3, a7 = _placed_pair(low, high, 3, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM)
    if SCALED:
        a0, a4, a1, a5 = a0 * units, a4 * units, a1 * units, a5 * units
        a2, a6, a3, a7 = a2 * units, a6 * units, a3 * units, a7 * units
    tile = tl.join(tl.join(tl.join(a0, a4), tl.join(a2, a6)), tl.join(tl.join(a1, a5), tl.join(a3, a7)))
    return tile.reshape(BLOCK_N, BLOCK_K)


@triton.jit
def _valued_tile(low, high, BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNIT_EXP: tl.constexpr, USE_ASM: tl.constexpr,
                 SCALED: tl.constexpr = False, unit_pairs=0, F16: tl.constexpr = False):
    """(BLOCK_N, BLOCK_K / 8) words -> the (BLOCK_N, BLOCK_K) bfloat16 tile of their codes' values in K order:
    each pair of ``_placed_bits`` (codes J and J + 4) scaled by one bfloat16 pair multiply (``_valued_pairs``),
    its halves read as bfloat16s and joined as ``_placed_tile`` joins its float32s. The four pairs are scaled before
    any is split: splitting each as it comes (one pair helper shared with ``_placed_tile``) changed ptxas's register
    allocation, 166 -> 198 registers at 32 x 64 x 256 swapped (sm_90, Triton 3.6). SCALED: each word's codes times
    its ``unit_pairs`` (``_valued_pairs``). F16: an fp16 tile (``_placed_bits``)."""
    v0 = _valued_pairs(_placed_bits(low, high, 0, BITS, MAN_BITS, HIGH_WIDTH, F16), MAN_BITS, UNIT_EXP, USE_ASM,
                       SCALED, unit_pairs, F16)
    v1 = _valued_pairs(_placed_bits(low, high, 1, BITS, MAN_BITS, HIGH_WIDTH, F16), MAN_BITS, UNIT_EXP, USE_ASM,
                       SCALED, unit_pairs, F16)
    v2 = _valued_pairs(_placed_bits(low, high, 2, BITS, MAN_BITS, HIGH_WIDTH, F16), MAN_BITS, UNIT_EXP, USE_ASM,
                       SCALED, unit_pairs, F16)
    v3 = _valued_pairs(_placed_bits(low, high, 3, BITS, MAN_BITS, HIGH_WIDTH, F16), MAN_BITS, UNIT_EXP, USE_ASM,
                       SCALED, unit_pairs, F16)
    a0, a4 = _halves_of(v0, F16)
    a1, a5 = _halves_of(v1, F16)
    a2, a6 = _halves_of(v2, F16)
    a3, a7 = _halves_of(v3, F16)
    tile = tl.join(tl.join(tl.join(a0, a4), tl.join(a2, a6)), tl.join(tl.join(a1, a5), tl.join(a3, a7)))
    return tile.reshape(BLOCK_N, BLOCK_K)


@triton.jit
def _lane_bits(low, high, BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
               USE_ASM: tl.constexpr, HIGH_WORD_PAIRS: tl.constexpr = False, F16: tl.constexpr = False):
    """Codes 2p (low half) and 2p + 1 (high half) of low-plane words and their high-plane words as loaded (int16 or
    uint8; the low words again for FP4), for p = 0..3 along a new last axis, as ``_placed_bits``' bfloat16 bits
    (F16: its fp16 bits; codes J and J + 4 there): (N, W) words -> (N, W, 4) pairs. Each field pair is one byte of
    the low word (a nibble a code) and two or four bits of the high word; one multiply lays both codes' copies of a
    field into both halves, apart (no carries), and one mask keeps the copy each half wants. FP6's high field in
    fp16 halves takes two: its magnitude bit sits 3 bits higher than in bfloat16, where one multiply's copies of
    the magnitude and sign bits would overlap and carry."""
    lane = tl.arange(0, 4)[None, None, :]
    if USE_ASM:  # byte p of the word, zero-extended: one prmt.b32 (selector 0x4440 | p: the other bytes from 0)
        words, selector = tl.broadcast(low[:, :, None], 0x4440 | lane)
        byte = tl.inline_asm_elementwise("prmt.b32 $0, $1, 0, $2;", "=r,r,r", [words, selector], dtype=tl.uint32,
                                         is_pure=True, pack=1)
    else:
        byte = ((low[:, :, None] >> (8 * lane)) & 0xFF).to(tl.uint32, bitcast=True)
    if MAN_BITS == INT4_LEVELS:  # nibble 2p at bit 0, 2p + 1 at bit 16
        bits = ((byte * 0x1001).to(tl.int32, bitcast=True) & 0x000F000F) ^ (INT4_PLACED_F16 if F16 else INT4_PLACED)
    else:
        MAG_LOW: tl.constexpr = 4 if BITS > 4 else 3  # magnitude bits in the low nibble
        TOP: tl.constexpr = (10 if F16 else 7) - MAN_BITS  # where the magnitude's bit 0 goes in a half
        bits = (byte * ((1 << TOP) | (1 << (TOP + 12)))).to(tl.int32, bitcast=True) & (
            (((1 << MAG_LOW) - 1) << TOP) * PAIR_HALVES)
        if BITS == 4:  # the nibbles' bit 3 is their sign
            bits |= (byte * ((1 << 12) | (1 << 24))).to(tl.int32, bitcast=True) & PAIR_SIGNS
        elif HIGH_WIDTH == 1:  # a sign bit a code
            signs = ((high.to(tl.int32)[:, :, None] >> (2 * lane)) & 3).to(tl.uint32, bitcast=True)
            bits |= (signs * ((1 << 15) | (1 << 30))).to(tl.int32, bitcast=True) & PAIR_SIGNS
        else:  # (magnitude bit 4, sign) a code: to TOP + 4 and 15 of each half
            if HIGH_WORD_PAIRS:  # words 2i and 2i + 1 in the low and high halves of int32 i
                half = tl.arange(0, 2)[None, None, :, None]
                fields = (high[:, :, None, None] >> (16 * half + 4 * lane[:, :, None, :])) & 15
                fields = fields.reshape(low.shape[0], low.shape[1], 4).to(tl.uint32, bitcast=True)
            else:
                fields = ((high.to(tl.int32)[:, :, None] >> (4 * lane)) & 15).to(tl.uint32, bitcast=True)
            if F16:  # the magnitude bits' copies at TOP + 4 .. TOP + 7 and 18 above, the signs' at 14 .. 17 and 28 ..
                magnitudes = fields * ((1 << (TOP + 4)) | (1 << (TOP + 18)))
                bits |= magnitudes.to(tl.int32, bitcast=True) & ((1 << (TOP + 4)) * PAIR_HALVES)
                signs = fields * ((1 << 14) | (1 << 28))
                bits |= signs.to(tl.int32, bitcast=True) & PAIR_SIGNS
            else:
                spread = fields * ((1 << (TOP + 4)) | (1 << 14) | (1 << (TOP + 18)) | (1 << 28))
                bits |= spread.to(tl.int32, bitcast=True) & (((1 << (TOP + 4)) * PAIR_HALVES) | PAIR_SIGNS)
    return bits


@triton.jit
def _lane_tile(low, high, BITS: tl.constexpr, MAN_BITS: tl.constexpr, HIGH_WIDTH: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNIT_EXP: tl.constexpr, USE_ASM: tl.constexpr,
               SCALED: tl.constexpr = False, unit_pairs=0, HIGH_WORD_PAIRS: tl.constexpr = False,
               F16: tl.constexpr = False):
    """``_valued_tile`` for half x (F16: fp16, else bfloat16) in the pairs a wgmma register operand holds: a 32-bit
    register of it takes codes 2p and 2p + 1 of a word, the four threads of a quad p = 0..3 (``_lane_bits``). Triton
    then places the tile where the dot reads it, each word loaded by the four threads that take its pairs: no layout
    conversion through shared memory a step (sm_90 SASS, Triton 3.6; ``_valued_tile``'s K-ordered joins hold a
    word's codes in one thread). SCALED: ``unit_pairs``, (N, W, 1), scales each word's codes."""
    bits = _lane_bits(low, high, BITS, MAN_BITS, HIGH_WIDTH, USE_ASM, HIGH_WORD_PAIRS, F16)
    pairs = _valued_pairs(bits, MAN_BITS, UNIT_EXP, USE_ASM, SCALED, unit_pairs, F16)
    first, second = _halves_of(pairs, F16)
    return tl.join(first, second).reshape(BLOCK_N, BLOCK_K)


@triton.jit
def _halves_of(words, F16: tl.constexpr = False):
    """The low and high 16-bit halves of int32 words as bfloat16s (F16: fp16s)."""
    dtype: tl.constexpr = tl.float16 if F16 else tl.bfloat16
    return (words & 0xFFFF).to(tl.int16).to(dtype, bitcast=True), (words >> 16).to(tl.int16).to(dtype, bitcast=True)
