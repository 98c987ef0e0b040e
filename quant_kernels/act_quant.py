"""Triton kernel: dynamic 4-bit activation quantization (optional fused block Hadamard).

One program quantizes one (BLOCK_M, BLOCK_K) tile of the activations in a single read:
rotate (optional), absmax per scale group, scale, round, encode, pack two codes per
byte, write the codes and the fp32 scales. Per-token scales make the tile a whole
(padded) row. The codes can instead be written one byte each: as FP8 E4M3 (``fp8_codes``,
the FP8 prefill path) or as signed bytes in the decode kernel's dp4a order
(``dp4a_for``). NVFP4's fp32 tensor scale needs the absolute maximum of the whole
(rotated) tensor first: the same kernel computes it in an earlier launch
(``AMAX_ONLY``), with an atomic max.

Rounding is done by hand, with fp32 adds and bit operations that behave the same
compiled and under ``TRITON_INTERPRET=1`` (the interpreter's fp8 and bf16 casts do
not round to nearest even), so the CPU tests check the very code that runs on a GPU.
The twin divides with IEEE rounding, and so does the kernel: element by element with ``div_rn``
only where a scale is far from 1, elsewhere with one reciprocal per scale group and a
correction (``_divide``).

The kernels here and in ``w4a4_gemm`` call only Triton builtins and their own
``triton.jit`` helpers, never the ``triton.jit`` functions of Triton's standard library
(``tl.max``, ``tl.sum``, ``tl.zeros``, ``tl.cdiv``): those are built when triton is
first imported, and if that happened before ``TRITON_INTERPRET=1`` was set (transformers
imports triton), the interpreter cannot call them. Maxima are ``tl.reduce`` with the
standard library's own combine function, which is what ``tl.max`` compiles to and which
the interpreter recognises and runs with numpy instead of calling it element by element.
"""

from __future__ import annotations

from functools import lru_cache, partial

import torch
import triton
import triton.language as tl
from triton.language.standard import _elementwise_max, _elementwise_min, _sum_combine

from quant_layers.formats import E2M1, E4M3
from quant_layers.packing import element_named
from transforms.hadamard import sylvester_hadamard

from .autotuning import autotune
from .reference import PROLOGUES, SCALE_KIND_CODES, NormTail, check_activation_args, check_prologue_args
from .rounding import _round_to_dtype, _silu_mul
from .pdl import launch_dependents, pdl_flags, uses_pdl, wait_for_producer

# Whether the kernels below were built for the interpreter (decided when triton.jit ran), and so whether they may
# hold inline PTX (the interpreter runs none).
INTERPRET = triton.knobs.runtime.interpret
INLINE_PTX = tl.constexpr(not INTERPRET)

# The kernels' DP4A_FOR: 0 packs two codes a byte; 1 (2) writes dp4a bytes for INT4 (E2M1 or INT8) weights.
DP4A_FOR_IDS = {None: 0, "int4": 1, "e2m1": 2, "int8": 2}
E4M3_MAX = tl.constexpr(E4M3.max_value)
NVFP_TENSOR_RANGE = tl.constexpr(E4M3.max_value * E2M1.max_value)  # as Quantizer.scales
# Elements per program: enough work per program, registers to spare for a fused rotation.
TILE_ELEMENTS = 4096
# Hadamard blocks above this are applied as H_16 (x) H_{b/16}: a b x b matrix in shared
# memory (256 x 256 fp32 = 256 KiB) would not fit.
MAX_DENSE_HADAMARD = 128
# Column chunks a program may walk a per-token row in (autotuned; ``_act_quant_kernel``'s CHUNK).
CHUNKS = (2048, 4096)
# The chunk the interpreter uses for per-token rows wider than it (0: whole rows); tests set it.
INTERPRET_CHUNK = 0
# Column chunks of a row split among programs (``_act_quant_kernel``'s SPLIT), for plain per-token rows of at most
# SPLIT_MAX_M rows (decode), and whether the interpreter splits its chunked rows so (tests set it).
SPLIT_CHUNKS = (512, 1024, 2048)
SPLIT_MAX_M = 4
INTERPRET_SPLIT = False
# Row blocks a program quantizes in turn, its next block's load in flight (``_act_quant_kernel``'s ROW_STEPS;
# autotuned for plain x), and the count the interpreter uses for plain x (tests set it).
ROW_STEP_COUNTS = (4, 16)
INTERPRET_ROW_STEPS = 1
# The most rows (M bucket) a program of one warp is tuned for: at 2048 x 4096 on the H100 it took 1.19-1.36x the time
# of 4 warps, INT4 and E2M1, alone and in a stream, and one tuning process of three picked it there
# (``benchmarks/results/act_quant_picks_{alone,in_stream}_read_s66_h100.md``).
ONE_WARP_MAX_M = 1024
# The narrowest power-of-two piece a per-token row is held in (``row_pieces``): a whole number of dp4a words and of
# 16-byte loads a thread.
MIN_PIECE = 128
# Twice the E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (magnitude code c in nibble c), as int32.
E2M1_DOUBLED_TABLE = tl.constexpr(0xC8643210 - (1 << 32))
# 1.5 * 2**23: adding then subtracting it rounds |y| < 2**22 to an integer, ties to even.
ROUND_MAGIC = tl.constexpr(12582912.0)
ROUND_MAGIC_BITS = tl.constexpr(0x4B400000)  # its fp32 bits: the sum's bits less these are the integer
# The divisors whose reciprocal division ``_divide`` rounds as IEEE division: 2^-96 <= s < 2^96.
DIVISION_MIN = tl.constexpr(2.0**-96)
DIVISION_MAX = tl.constexpr(2.0**96)


@triton.jit
def _code_values(words, j: tl.constexpr, IS_INT4: tl.constexpr):
    """Code j (bits 4j..4j+3) of int32 words as an int32: the INT4 level, or twice the E2M1 value."""
    # One return: compiled Triton does not stop at a return inside an if.
    if IS_INT4:
        values = (words << (28 - 4 * j)) >> 28  # arithmetic shift: sign-extends the nibble
    else:
        code = (words >> (4 * j)) & 0xF
        table = tl.full(code.shape, E2M1_DOUBLED_TABLE, tl.int32)
        magnitude = (table >> ((code & 7) * 4)) & 0xF
        values = tl.where(code >= 8, -magnitude, magnitude)
    return values


@triton.jit
def _rint(y):
    """Round to the nearest integer, ties to even, for |y| < 2**22."""
    return (y + ROUND_MAGIC) - ROUND_MAGIC


@triton.jit
def _bits_to_float(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_plain(x_ptr, rows, row_ok, pid_k, K, stride_xm, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                WORDS: tl.constexpr):
    """The tile of x at rows and column block pid_k as loaded (zeros outside x): (BLOCK_M, BLOCK_K) elements, or
    with WORDS (bfloat16 x, an even row stride) (BLOCK_M, BLOCK_K // 2) int32 words of element pairs."""
    if WORDS:
        cols = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
        tile = tl.load(x_ptr.to(tl.pointer_type(tl.int32)) + rows[:, None] * (stride_xm // 2) + cols[None, :],
                       mask=row_ok[:, None] & (cols < K // 2)[None, :], other=0)
    else:
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        tile = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=row_ok[:, None] & (cols < K)[None, :],
                       other=0.0)
    return tile


@triton.jit
def _widen(tile, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WORDS: tl.constexpr):
    """A tile from _load_plain in fp32, (BLOCK_M, BLOCK_K). Each word's low bfloat16 shifted up and its high one
    masked in place take one integer operation each; compiled, bfloat16's own cast spends a byte permute and a
    shift on each high element."""
    if WORDS:
        low = (tile << 16).to(tl.float32, bitcast=True)
        high = (tile & -65536).to(tl.float32, bitcast=True)
        y = tl.join(low, high).reshape(BLOCK_M, BLOCK_K)
    else:
        y = tile.to(tl.float32)
    return y


@triton.jit
def _hadamard_dot(y, h, R: tl.constexpr, HB: tl.constexpr, DOT_F32: tl.constexpr):
    """(R * HB) elements as R rows of HB, each times H_HB; fp32 out.

    Half-precision inputs times +-1 are exact products, so a half dot with fp32
    accumulation is as accurate as an fp32 one (and runs on tensor cores).
    """
    rows = y.reshape(R, HB)
    # One return per helper: compiled Triton does not stop at a return inside an if.
    if DOT_F32:
        out = tl.dot(rows.to(tl.float32), h.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(rows, h.to(rows.dtype))
    return out


@triton.jit
def _rotate(x, h_ptr, inv_sqrt_b, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, HAD_BLOCK: tl.constexpr,
            HB: tl.constexpr, DOT_F32: tl.constexpr):
    """x (BLOCK_M, BLOCK_K) @ blockdiag(H_b) / sqrt(b), fp32 out (Sylvester H_b, symmetric)."""
    h = tl.load(h_ptr + tl.arange(0, HB)[:, None] * HB + tl.arange(0, HB)[None, :])
    blocks: tl.constexpr = BLOCK_M * BLOCK_K // HAD_BLOCK
    if HAD_BLOCK == HB:
        y = _hadamard_dot(x, h, blocks, HB, DOT_F32)
    else:
        # b = P * HB with index p * HB + q: H_b = H_P (x) H_HB acts on q, then on p.
        P: tl.constexpr = HAD_BLOCK // HB
        y = _hadamard_dot(x, h, blocks * P, HB, DOT_F32).reshape(blocks, P, HB)
        y = tl.permute(y, (0, 2, 1))  # the partial sums are no longer exact in half: fp32 from here
        y = tl.dot(y.reshape(blocks * HB, P), h, input_precision="ieee").reshape(blocks, HB, P)
        y = tl.permute(y, (0, 2, 1))
    return y.reshape(BLOCK_M, BLOCK_K) * inv_sqrt_b


@triton.jit
def _round_e4m3(s):
    """Nearest FP8 E4M3 value of s >= 0 (ties to even, subnormals, saturating at 448), as e4m3_scale."""
    e = tl.maximum(((s.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)
    step_exp = e - 3  # three mantissa bits
    q = _rint(s * _bits_to_float((127 - step_exp) << 23)) * _bits_to_float((127 + step_exp) << 23)
    return tl.minimum(q, E4M3_MAX)


@triton.jit
def _e8m0_scale(amax):
    """2^(floor(log2 amax) - 2), clamped to [2^-127, 2^127], as e8m0_scale for E2M1 (frexp(0) = 0)."""
    field = (amax.to(tl.int32, bitcast=True) >> 23) & 0xFF
    frexp_exp = tl.where(amax == 0, 0, tl.where(field == 0, -126, field - 126))
    exponent = tl.minimum(tl.maximum(frexp_exp - 3, -127), 127)
    normal = _bits_to_float((tl.maximum(exponent, -126) + 127) << 23)
    return tl.where(exponent >= -126, normal, _bits_to_float(tl.full(exponent.shape, 1 << 22, tl.int32)))


@triton.jit
def _tensor_scale(tensor_amax_ptr):
    """NVFP4's fp32 tensor scale g from the absmax of the whole tensor (its fp32 bits at ``tensor_amax_ptr``), as
    Quantizer.scales: a scalar."""
    return tl.maximum(tl.math.div_rn(_bits_to_float(tl.load(tensor_amax_ptr)), NVFP_TENSOR_RANGE), 1e-30)


@triton.jit
def _tensor_scales_in_range(tensor_amax_ptr):
    """Whether every NVFP4 scale of the tensor lies where ``_divide`` divides by a reciprocal: a scale is an E4M3
    value (0, or 2^-9 to 448) times g, rounded, and a zero scale divides as 1, so g alone decides it, a scalar
    where the scales of a tile took a reduction across the program's threads."""
    g = _tensor_scale(tensor_amax_ptr)
    return (g * 0.001953125 >= DIVISION_MIN) & (g * 448.0 < DIVISION_MAX)


@triton.jit
def _in_division_range(s):
    """Whether every divisor of the tile s lies where ``_divide`` divides by a reciprocal: a scalar."""
    return tl.reduce(((s >= DIVISION_MIN) & (s < DIVISION_MAX)).to(tl.int32), None, _elementwise_min) > 0


@triton.jit
def _scales(amax, tensor_amax_ptr, clip_ratio, max_value, SCALE_KIND: tl.constexpr):
    """Dequantization scale of each group from its absmax, as Quantizer.fit / Quantizer.scales."""
    amax = amax * clip_ratio
    if SCALE_KIND == 0:
        scale = tl.math.div_rn(amax, tl.full(amax.shape, max_value, tl.float32))
    elif SCALE_KIND == 1:
        g = _tensor_scale(tensor_amax_ptr)
        per_element = tl.math.div_rn(amax, tl.full(amax.shape, max_value, tl.float32))
        s = tl.math.div_rn(per_element, tl.full(amax.shape, g, tl.float32))
        scale = _round_e4m3(s) * g
    else:
        scale = _e8m0_scale(amax)
    return scale


@triton.jit
def _encode(v, ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr, CLAMP: tl.constexpr):
    """4-bit codes of v = x / scale, rounded as IntFormat(4) / E2M1 round (ties to even), in the low four bits of
    int32s whose higher bits are the magic sum's (E2M1: bits 4 to 21 zero; INT4: ones for a negative level):
    ``_byte_pairs`` and ``_code_values`` read the nibble alone; for INT8 the level itself (int32 -128..127), as
    IntFormat(8) rounds.

    Both round with one fp32 add of the magic number M = 1.5 * 2^23, whose ulp is 1: the rounded integer lands in
    the sum's low mantissa bits. INT4's low nibble is the code (INT8's level: the sum's bits less M's). E2M1's
    magnitude index on the grid 0, 0.5, 1, 1.5, 2, 3, 4, 6 (the code's low three bits) is, for a = |v|,
    rint(2a) below 2, rint(a + 2) below 4 and rint(a / 2 + 4) from 4 on: the least of the three everywhere (each
    line lies above the others outside its piece), and rint is monotonic, so the index is the least of three
    magic sums, each rounded once (an fma or an add with M folded into the constant). Ties go to the even index,
    which is the even mantissa. Every magnitude below 2^24 was checked against the grid's rounding. M's bits 0 to
    21 are zero, so the least sum's low bits are the index itself. The sign bit (8) goes on by one more fma where
    v < -0.25, the values whose magnitude does not round to 0 (``_below_quarter``). All of it runs on the float
    pipe: the exponent-dependent magic number it replaced (the steps of a sum 1.5 * 2^(E + 22) + a plus 2 (E -
    127), E the exponent of max(a, 1), and v + 0.25's sign bit moved to bit 3) took about seven integer operations
    an element.

    CLAMP (``clamp_kind``): 2 saturates v to the grid first; 1 only from above (INT4 / INT8: v
    already rounds to the lowest level or above); 0 not at all (v already rounds onto the grid).
    Each saturation it leaves out saves the ALU a min or max an element.
    """
    if ELEMENT_INT8:
        codes = (_saturated(v, -128.0, 127.0, CLAMP) + ROUND_MAGIC).to(tl.int32, bitcast=True) - ROUND_MAGIC_BITS
    elif ELEMENT_INT4:
        codes = (_saturated(v, -8.0, 7.0, CLAMP) + ROUND_MAGIC).to(tl.int32, bitcast=True)
    else:
        a = tl.abs(v)
        least = tl.minimum(tl.minimum(tl.fma(a, 2.0, ROUND_MAGIC), a + (ROUND_MAGIC + 2.0)),
                           tl.fma(a, 0.5, ROUND_MAGIC + 4.0))
        if CLAMP > 0:
            least = tl.minimum(least, ROUND_MAGIC + 7.0)
        codes = tl.fma(_below_quarter(v), 8.0, least).to(tl.int32, bitcast=True)
    return codes


@triton.jit
def _below_quarter(v):
    """1.0 where v < -0.25, else 0.0 (NaN: 0.0): the E2M1 sign bit, on where the magnitude does not round to 0.
    Compiled it is one saturating fma on the float pipe, (-v - 0.25) * 2^126 clamped to [0, 1] (a float below -0.25
    lies at least 2^-26 below it), where the sign bit moved by integer operations took three."""
    if INLINE_PTX:
        below = tl.inline_asm_elementwise("fma.rn.sat.f32 $0, $1, 0fFE800000, 0fFD800000;", "=r,r", [v],
                                          dtype=tl.float32, is_pure=True, pack=1)
    else:
        below = tl.where(v < -0.25, 1.0, 0.0)
    return below


@triton.jit
def _saturated(v, low, high, CLAMP: tl.constexpr):
    """An integer element's v saturated as CLAMP says (``_encode``): to [low, high] (2), to high only (1), not (0)."""
    if CLAMP == 2:
        v = tl.maximum(v, low)
    if CLAMP > 0:
        v = tl.minimum(v, high)
    return v


@triton.jit
def _e2m1_sum(v, CLAMP: tl.constexpr):
    """|v| (saturated at 6 with CLAMP) plus the magic number 1.5 * 2^(E + 22), E the exponent of max(|v|, 1): the
    sum rounds |v| to E2M1's step (0.5 below 2, 1 below 4, 2 from 4 on; ties to even), and the magic number's
    bits (``_grid_values``)."""
    a = tl.abs(v)
    if CLAMP > 0:
        a = tl.minimum(a, 6.0)
    magic_bits = (tl.maximum(a, 1.0).to(tl.int32, bitcast=True) & 0x7F800000) + ((22 << 23) | 0x400000)
    return a + _bits_to_float(magic_bits), magic_bits


@triton.jit
def _grid_values(v, ELEMENT_INT4: tl.constexpr, CLAMP: tl.constexpr):
    """v rounded onto the INT4 / E2M1 grid as fp32, as ``_encode`` rounds it, zeros +0: exact in FP8 E4M3, whose
    conversion then gives the E4M3 codes (one instruction for two) where decoding ``_encode``'s codes took about seven
    operations each. The magic sums less their magic numbers are the rounded magnitudes (INT4: the level itself,
    the difference of equal numbers +0); E2M1 takes v + 0.25's sign, as its codes do."""
    if ELEMENT_INT4:
        values = (_saturated(v, -8.0, 7.0, CLAMP) + ROUND_MAGIC) - ROUND_MAGIC
    else:
        total, magic_bits = _e2m1_sum(v, CLAMP)
        magnitude = (total - _bits_to_float(magic_bits)).to(tl.int32, bitcast=True)
        values = _bits_to_float(magnitude | ((v + 0.25).to(tl.int32, bitcast=True) & -2147483648))
    return values


@triton.jit
def _quantized(y, s, max_value, tensor_amax_ptr, ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr,
               SCALE_KIND: tl.constexpr, CLAMP: tl.constexpr, OUT_FP8: tl.constexpr):
    """y / s (``_divide``) as ``_store_codes`` takes it: grid values for E4M3 bytes, else codes. NVFP4's scales
    (SCALE_KIND 1) are known to be in the reciprocal's range from the tensor scale (``tensor_amax_ptr``)."""
    if SCALE_KIND == 1:
        in_range = _tensor_scales_in_range(tensor_amax_ptr)
    else:
        in_range = _in_division_range(s)
    q = _divide(y, s, _lowest(max_value, ELEMENT_INT4, ELEMENT_INT8), max_value, SCALE_KIND == 2, in_range)
    if OUT_FP8:
        out = _grid_values(q, ELEMENT_INT4, CLAMP)
    else:
        out = _encode(q, ELEMENT_INT4, ELEMENT_INT8, CLAMP)
    return out


@triton.jit
def _lowest(max_value, ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr):
    """The element's lowest level: -(max_value + 1) for the integers, -max_value for E2M1."""
    if ELEMENT_INT4 or ELEMENT_INT8:
        lowest = -max_value - 1.0
    else:
        lowest = -max_value
    return lowest


@triton.jit
def _divide(y, s, low, high, POW2: tl.constexpr, in_range):
    """y / s rounded to nearest even (IEEE), s > 0 broadcast against y; as the twin's division. Where the tile
    takes the per-element fallback below, the quotient is saturated to [low, high] as well: a divisor below 2^-96
    may be subnormal, and a subnormal scale can be off amax / max_value by far more than the relative rounding
    ``clamp_kind``'s bound assumes (a row of amax 7 subnormal steps gets the scale of one step for E2M1).

    POW2: every s is a power of two from 2^-127 to 2^127 (E8M0 scales). Its reciprocal is then exact, and
    y * (1 / s) is the correctly rounded quotient in one operation an element.
    Otherwise, where ``in_range`` (a scalar: every s in 2^-96 <= s < 2^96, ``_in_division_range``) it takes one
    reciprocal per divisor and three operations per
    element: q0 = y * RN(1/s), then q0 + (y - q0 s) RN(1/s) with two fused multiply-adds
    (Markstein's correction; the remainder is exact there, and the sum rounds to RN(y / s):
    ``benchmarks/division_check.py`` compares it with exact rationals). Below that range the
    remainder can lose bits and a quotient within an ulp of a rounding tie can come out wrong,
    so any tile holding such a divisor (or one above it) takes ``div_rn`` per element: a
    reciprocal, its refinement and a branch, which bound the kernel's speed before.
    """
    if POW2:
        q = y * tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)
    else:
        if in_range:
            r = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)
            q0 = y * r
            q = tl.fma(tl.fma(q0, -s, y), r, q0)  # -s, not -q0: compiled, -q0 became a second product y * -r
        else:
            q = tl.minimum(tl.maximum(tl.math.div_rn(y, tl.broadcast_to(s, y.shape)), low), high)
    return q


@triton.jit
def _dp4a_words(values, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, W_INT4: tl.constexpr):
    """(BLOCK_M, BLOCK_K) code values -> the two (BLOCK_M, BLOCK_K // 8) int32 words of signed bytes that meet
    each weight word's two dp4a operands in ``w4a4_gemv``: byte b of the first (second) word holds code 2b
    (2b + 1) of the 8 for INT4 weights, code b (4 + b) for E2M1 weights (``reference.dp4a_bytes``)."""
    if W_INT4:
        pairs = values.reshape(BLOCK_M, BLOCK_K // 8, 4, 2)
    else:
        pairs = tl.permute(values.reshape(BLOCK_M, BLOCK_K // 8, 2, 4), (0, 1, 3, 2))
    first, second = tl.split(pairs)
    shifts = (8 * tl.arange(0, 4))[None, None, :]
    return (tl.reduce((first & 0xFF) << shifts, 2, _sum_combine),
            tl.reduce((second & 0xFF) << shifts, 2, _sum_combine))


@triton.jit
def _load(x_ptr, h_ptr, norm_ptr, rows, cols, M, K, stride_xm, inv_sqrt_b, eps, BLOCK_M: tl.constexpr,
          BLOCK_K: tl.constexpr, HAD_BLOCK: tl.constexpr, HB: tl.constexpr, DOT_F32: tl.constexpr,
          ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr, PROLOGUE: tl.constexpr):
    """The (BLOCK_M, BLOCK_K) tile of x at rows x cols in fp32, rotated when HAD_BLOCK (zeros outside x).

    PROLOGUE (``PROLOGUES``) 1: the tile is whole rows, RMS-normalised and times the norm's weight as HF's
    RMSNorm does it (fp32 mean of squares, the normalised row rounded to x's dtype, then times the weight,
    rounded again); 2: x is (M, 2K), gate columns then up columns, and the tile is silu(gate) * up, each
    rounded to x's dtype as eager torch rounds them."""
    ok = (rows < M)[:, None] & (cols < K)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=ok, other=0.0)
    if HAD_BLOCK > 0:
        # The model's rotation hands the quantizer activations in their own dtype.
        y = _round_to_dtype(_rotate(x, h_ptr, inv_sqrt_b, BLOCK_M, BLOCK_K, HAD_BLOCK, HB, DOT_F32), ROUND_BF16,
                            ROUND_F16)
    elif PROLOGUE == 1:
        weight = tl.load(norm_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
        y = _rms_normed(x.to(tl.float32), weight, K, eps, ROUND_BF16, ROUND_F16)
    elif PROLOGUE == 2:
        gate = x.to(tl.float32)
        up = tl.load(x_ptr + rows[:, None] * stride_xm + K + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        y = _silu_mul(gate, up, ROUND_BF16, ROUND_F16)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def _rms_normed(x, weight, K, eps, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr):
    """HF's RMSNorm of whole fp32 rows x (zeros past K) times the norm's fp32 weight (K,): fp32 mean of squares,
    the normalised rows rounded to x's dtype, then times the weight, rounded again."""
    inv_rms = tl.math.rsqrt(tl.reduce(x * x, 1, _sum_combine) / K + eps)
    return _round_to_dtype(weight[None, :] * _round_to_dtype(x * inv_rms[:, None], ROUND_BF16, ROUND_F16),
                           ROUND_BF16, ROUND_F16)


@triton.jit
def _tail_quantize_rows(count_ptr, x_ptr, stride_xm, norm_ptr, packed_ptr, scale_ptr, M, K, stride_pm, eps,
                        clip_ratio, max_value, NORM: tl.constexpr, ELEMENT_INT4: tl.constexpr, CLAMP: tl.constexpr,
                        DP4A_FOR: tl.constexpr, ROUND_BF16: tl.constexpr, ROUND_F16: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    """A kernel's tail (``reference.NormTail``), called by each of its programs once its share of x is stored: the
    last to arrive (a counter at ``count_ptr``, zero between launches, which it resets) writes the per-token dp4a
    bytes and scales of x's M rows, after an RMSNorm by the weight at ``norm_ptr`` (NORM) as ``rms_norm_quantize``
    computes them, else of the rows as they are (``quantize_activations``), a row at a time (BLOCK_K: K padded to
    a power of two). Other programs wrote x: it is read from L2 (``.cg``), never from this SM's L1, which may hold
    older lines of it."""
    tl.debug_barrier()  # every thread's outputs are stored before the counter says so
    # The work nests under the if: compiled Triton does not stop at a return inside an if (``_code_values``).
    if tl.atomic_add(count_ptr, 1, sem="acq_rel") == tl.num_programs(0) - 1:
        tl.atomic_xchg(count_ptr, 0, sem="relaxed")
        cols = tl.arange(0, BLOCK_K)
        if NORM:
            weight = tl.load(norm_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
        for r in range(M):
            rows = r + tl.arange(0, 1)
            x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=(cols < K)[None, :], other=0.0,
                        cache_modifier=".cg")
            y = x.to(tl.float32)
            if NORM:
                y = _rms_normed(y, weight, K, eps, ROUND_BF16, ROUND_F16)
            _quantize_tile(y, y, rows, 0, packed_ptr, scale_ptr, scale_ptr, M, K, 1, stride_pm, 1, clip_ratio,
                           max_value, ELEMENT_INT4, False, 0, BLOCK_K, CLAMP, False, DP4A_FOR, 1, BLOCK_K, False)


@triton.jit
def _store_codes(codes, packed_ptr, rows, col0, M, K, stride_pm, ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr,
                 OUT_FP8: tl.constexpr, DP4A_FOR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Write a (BLOCK_M, BLOCK_K) tile of codes whose first column is col0: packed two a byte, as E4M3 bytes (OUT_FP8:
    ``codes`` are the grid values, ``_quantized``), or as the decode kernel's dp4a bytes (INT8 levels only so);
    OUT_FP8 with DP4A_FOR 1: the dp4a bytes' values (INT4 levels, twice the E2M1 values) as E4M3 bytes in INT4
    weights' order, the even codes' plane then the odd codes' (split as the packed bytes' nibbles are)."""
    row_ok = rows < M
    if OUT_FP8 and DP4A_FOR == 1:
        even, odd = tl.split((codes * (1.0 if ELEMENT_INT4 else 2.0)).reshape(BLOCK_M, BLOCK_K // 2, 2))
        half_cols = col0 // 2 + tl.arange(0, BLOCK_K // 2)
        ptrs = packed_ptr + rows[:, None] * stride_pm + half_cols[None, :]
        half_mask = row_ok[:, None] & (half_cols < K // 2)[None, :]
        tl.store(ptrs, even.to(tl.float8e4nv).to(tl.uint8, bitcast=True), mask=half_mask)
        tl.store(ptrs + K // 2, odd.to(tl.float8e4nv).to(tl.uint8, bitcast=True), mask=half_mask)
    elif OUT_FP8:  # one E4M3 byte per element, for the FP8 GEMM
        cols = col0 + tl.arange(0, BLOCK_K)
        tl.store(packed_ptr + rows[:, None] * stride_pm + cols[None, :],
                 codes.to(tl.float8e4nv).to(tl.uint8, bitcast=True), mask=row_ok[:, None] & (cols < K)[None, :])
    elif DP4A_FOR > 0:  # signed bytes for the decode kernel's dp4a, written as int32 words (see _dp4a_words)
        values = codes if ELEMENT_INT8 else _code_values(codes, 0, ELEMENT_INT4)
        first, second = _dp4a_words(values, BLOCK_M, BLOCK_K, DP4A_FOR == 1)
        word_cols = col0 // 8 + tl.arange(0, BLOCK_K // 8)
        ptrs = packed_ptr + rows[:, None] * stride_pm + word_cols[None, :]
        word_mask = row_ok[:, None] & (word_cols < K // 8)[None, :]
        tl.store(ptrs, first, mask=word_mask)
        tl.store(ptrs + K // 8, second, mask=word_mask)
    else:
        low, high = tl.split(codes.reshape(BLOCK_M, BLOCK_K // 2, 2))
        byte_cols = col0 // 2 + tl.arange(0, BLOCK_K // 2)
        tl.store(packed_ptr + rows[:, None] * stride_pm + byte_cols[None, :], _byte_pairs(low, high, ELEMENT_INT4),
                 mask=row_ok[:, None] & (byte_cols < K // 2)[None, :])


@triton.jit
def _byte_pairs(low, high, MASK_LOW: tl.constexpr):
    """Bytes of two ``_encode`` codes each, low's in the low nibble: low + (high << 4), one shift-and-add (LEA) a
    pair where masking both and an or took three operations. High's bits above its nibble carry past bit 7 and
    drop out of the byte, and so do low's for E2M1 (bits 4 to 21 zero); MASK_LOW masks low's first (INT4: a
    negative level's bits 4 to 21 are ones)."""
    if MASK_LOW:
        low = low & 0xF
    return (low + (high << 4)).to(tl.uint8)


@triton.jit
def _pair_absmax(a, b):
    """max(|a|, |b|) of int32 words of bfloat16 pairs, pair by pair, in one instruction (sm_86 and up); the results'
    sign bits are not the values' (xorsign): ``_pair_word_max`` clears them."""
    return tl.inline_asm_elementwise("max.xorsign.abs.bf16x2 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def _pair_word_max(m):
    """The larger magnitude of the two bfloat16 halves of ``_pair_absmax`` words, as fp32 (sign bits cleared)."""
    return tl.maximum(_bits_to_float((m << 16) & 0x7FFF0000), _bits_to_float(m & 0x7FFF0000))


@triton.jit
def _group_absmax(y, words, BLOCK_M: tl.constexpr, GROUPS: tl.constexpr, GROUP: tl.constexpr,
                  PAIR_MAX: tl.constexpr):
    """The absmax of each group of GROUP columns of the fp32 tile y (BLOCK_M, GROUPS * GROUP), (BLOCK_M, GROUPS).
    PAIR_MAX: y is ``_widen`` of the tile of bfloat16 pairs ``words``, which are reduced a word, two elements, an
    instruction (``_pair_absmax``) instead of one fp32 max an element."""
    if PAIR_MAX:
        amax = _pair_word_max(tl.reduce(words.reshape(BLOCK_M, GROUPS, GROUP // 2), 2, _pair_absmax))
    else:
        amax = tl.reduce(tl.abs(y.reshape(BLOCK_M, GROUPS, GROUP)), 2, _elementwise_max)
    return amax


@triton.jit
def _quantize_tile(y, words, rows, pid_k, packed_ptr, scale_ptr, tensor_amax_ptr, M, K, n_scales, stride_pm,
                   stride_sm, clip_ratio, max_value, ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr,
                   SCALE_KIND: tl.constexpr, GROUP: tl.constexpr, CLAMP: tl.constexpr, OUT_FP8: tl.constexpr,
                   DP4A_FOR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PAIR_MAX: tl.constexpr):
    """Scale each group of the fp32 tile y (rows x column block pid_k), encode it and write codes and scales; with
    PAIR_MAX the absmax comes from ``words``, the bfloat16 pairs y was widened from (``_group_absmax``)."""
    groups: tl.constexpr = BLOCK_K // GROUP
    yg = y.reshape(BLOCK_M, groups, GROUP)
    scale = _scales(_group_absmax(y, words, BLOCK_M, groups, GROUP, PAIR_MAX), tensor_amax_ptr, clip_ratio, max_value,
                    SCALE_KIND)
    safe = tl.where(scale > 0, scale, 1.0)
    codes = _quantized(yg, safe[:, :, None], max_value, tensor_amax_ptr, ELEMENT_INT4, ELEMENT_INT8, SCALE_KIND,
                       CLAMP, OUT_FP8)
    codes = codes.reshape(BLOCK_M, BLOCK_K)
    _store_codes(codes, packed_ptr, rows, pid_k * BLOCK_K, M, K, stride_pm, ELEMENT_INT4, ELEMENT_INT8,
                 OUT_FP8, DP4A_FOR, BLOCK_M, BLOCK_K)
    scale_cols = pid_k * groups + tl.arange(0, groups)
    tl.store(scale_ptr + rows[:, None] * stride_sm + scale_cols[None, :], scale,
             mask=(rows < M)[:, None] & (scale_cols < n_scales)[None, :])


@triton.jit
def _load_pieces(x_ptr, rows, row_ok, stride_xm, K, BLOCK_M: tl.constexpr, WORDS: tl.constexpr,
                 PIECE_A: tl.constexpr, PIECE_B: tl.constexpr, PIECE_C: tl.constexpr):
    """Whole rows of x as ``_load_plain`` tiles of PIECE_A, PIECE_B and PIECE_C columns (PIECE_C 0: a (BLOCK_M, 1)
    placeholder), side by side: each piece's first column is a multiple of its width."""
    xa = _load_plain(x_ptr, rows, row_ok, 0, K, stride_xm, BLOCK_M, PIECE_A, WORDS)
    xb = _load_plain(x_ptr, rows, row_ok, PIECE_A // PIECE_B, K, stride_xm, BLOCK_M, PIECE_B, WORDS)
    if PIECE_C > 0:
        xc = _load_plain(x_ptr, rows, row_ok, (PIECE_A + PIECE_B) // PIECE_C, K, stride_xm, BLOCK_M, PIECE_C, WORDS)
    else:
        xc = tl.full((BLOCK_M, 1), 0, tl.int32)
    return xa, xb, xc


@triton.jit
def _piece_absmax(y, words, PAIR_MAX: tl.constexpr):
    """The absmax of a whole piece, a scalar (``_group_absmax`` for one group)."""
    if PAIR_MAX:
        amax = _pair_word_max(tl.reduce(words, None, _pair_absmax))
    else:
        amax = tl.reduce(tl.abs(y), None, _elementwise_max)
    return amax


@triton.jit
def _store_piece(y, safe, rows, col0, packed_ptr, M, K, stride_pm, max_value, ELEMENT_INT4: tl.constexpr,
                 ELEMENT_INT8: tl.constexpr, CLAMP: tl.constexpr, OUT_FP8: tl.constexpr, DP4A_FOR: tl.constexpr,
                 WIDTH: tl.constexpr):
    """The codes of one piece (1, WIDTH) of a per-token row, its first column col0, under the row's scale."""
    # packed_ptr stands in for the tensor amax pointer, which per-token scales (SCALE_KIND 0) never read
    codes = _quantized(y, safe, max_value, packed_ptr, ELEMENT_INT4, ELEMENT_INT8, 0, CLAMP, OUT_FP8)
    _store_codes(codes, packed_ptr, rows, col0, M, K, stride_pm, ELEMENT_INT4, ELEMENT_INT8, OUT_FP8, DP4A_FOR, 1,
                 WIDTH)


@triton.jit
def _quantize_pieces(xa, xb, xc, rows, packed_ptr, scale_ptr, M, K, stride_pm, stride_sm, clip_ratio, max_value,
                     ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr, CLAMP: tl.constexpr,
                     OUT_FP8: tl.constexpr, DP4A_FOR: tl.constexpr, WORDS: tl.constexpr, PIECE_A: tl.constexpr,
                     PIECE_B: tl.constexpr, PIECE_C: tl.constexpr, PAIR_MAX: tl.constexpr):
    """``_quantize_tile`` of one per-token row held as the pieces of ``_load_pieces``: one absmax and scale, each
    piece's codes stored in place. The absmax and scale are scalars: the pieces' tiles differ in width and so in
    layout, and a scalar broadcasts into each without a conversion (a row of them moved whole pieces through shared
    memory)."""
    ya = _widen(xa, 1, PIECE_A, WORDS)
    yb = _widen(xb, 1, PIECE_B, WORDS)
    amax = tl.maximum(_piece_absmax(ya, xa, PAIR_MAX), _piece_absmax(yb, xb, PAIR_MAX))
    if PIECE_C > 0:
        yc = _widen(xc, 1, PIECE_C, WORDS)
        amax = tl.maximum(amax, _piece_absmax(yc, xc, PAIR_MAX))
    scale = _scales(amax, scale_ptr, clip_ratio, max_value, 0)
    safe = tl.full((1, 1), 1.0, tl.float32) * tl.where(scale > 0, scale, 1.0)  # a tile: _divide reduces over it
    _store_piece(ya, safe, rows, 0, packed_ptr, M, K, stride_pm, max_value, ELEMENT_INT4, ELEMENT_INT8, CLAMP,
                 OUT_FP8, DP4A_FOR, PIECE_A)
    _store_piece(yb, safe, rows, PIECE_A, packed_ptr, M, K, stride_pm, max_value, ELEMENT_INT4, ELEMENT_INT8, CLAMP,
                 OUT_FP8, DP4A_FOR, PIECE_B)
    if PIECE_C > 0:
        _store_piece(yc, safe, rows, PIECE_A + PIECE_B, packed_ptr, M, K, stride_pm, max_value, ELEMENT_INT4,
                     ELEMENT_INT8, CLAMP, OUT_FP8, DP4A_FOR, PIECE_C)
    tl.store(scale_ptr + rows * stride_sm, tl.full((1,), 0.0, tl.float32) + scale, mask=rows < M)


@triton.jit
def _act_quant_kernel(
    x_ptr, h_ptr, norm_ptr, normed_ptr, packed_ptr, scale_ptr, tensor_amax_ptr,
    M, K, M_BUCKET, n_scales, stride_xm, stride_pm, stride_sm, clip_ratio, max_value, inv_sqrt_b, eps,
    ELEMENT_INT4: tl.constexpr, ELEMENT_INT8: tl.constexpr, SCALE_KIND: tl.constexpr, GROUP: tl.constexpr,
    CLAMP: tl.constexpr, WORDS: tl.constexpr, PAIR_MAX: tl.constexpr,
    HAD_BLOCK: tl.constexpr, HB: tl.constexpr, DOT_F32: tl.constexpr, ROUND_BF16: tl.constexpr,
    ROUND_F16: tl.constexpr, AMAX_ONLY: tl.constexpr, OUT_FP8: tl.constexpr, DP4A_FOR: tl.constexpr,
    LAUNCH_DEPENDENTS: tl.constexpr, USE_GDC: tl.constexpr, PROLOGUE: tl.constexpr, PIECE_A: tl.constexpr,
    PIECE_B: tl.constexpr, PIECE_C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr,
    ROW_STEPS: tl.constexpr, SPLIT: tl.constexpr,
):
    """DP4A_FOR: 0 packs two codes a byte; 1 (2) writes each code's value as a signed byte in the decode
    kernel's order for INT4 (E2M1) weights, ``reference.dp4a_bytes``. LAUNCH_DEPENDENTS: the next kernel (the
    decode kernel, a programmatic dependent launch) may start now; it waits for this one before reading.
    USE_GDC: this kernel is such a launch itself (``quant_kernels.pdl``) and waits before it reads x.
    CHUNK (per-token scales only, 0: off): the program walks its rows CHUNK columns at a time, twice (the
    absmax, then the codes, the second read from the caches) instead of holding the whole row padded to a
    power of two. SPLIT (with CHUNK): program (i, j) reads its rows whole once, for their absmax, and writes the
    codes of chunk j only; every program of a row writes the same scale. At decode one program a row spends a
    single SM's issue slots on the whole row's codes; split, the codes take K / CHUNK SMs and each program's
    absmax runs on packed bfloat16 pairs (600 SASS instructions at K = 14336, chunk 512, 4 warps, for sm_90). On
    the H200 the tuner picked it for decode rows of 4096 (chunk 1024) and 14336 (chunk 512) columns
    (``benchmarks/results/end_to_end_h200.md``, run 19). PROLOGUE (``_load``): 1 also writes the normalised rows to
    ``normed_ptr`` (x's layout).
    ROW_STEPS (plain x only: no rotation, no prologue): the program quantizes ROW_STEPS blocks of BLOCK_M rows in turn
    and issues the next block's load before it quantizes the current one. A program of one block has bytes in flight
    only until its rows arrive, then none while it reduces, divides and stores, and at the occupancy its registers
    allow that left the memory short of loads in flight (on the H200, INT4 per token ran 14 % faster with this and
    the three-operation division, ``benchmarks/results/act_quant_row_steps_h200.md``).
    CLAMP (``clamp_kind``): how far the scaled values are saturated to the grid (``_encode``).
    WORDS (plain bfloat16 x with an even row stride, not chunked): x loads as int32 words of element pairs
    (``_load_plain``, ``_widen``); PAIR_MAX (with WORDS, compiled for sm_86 and up): their absmax is taken on the
    words (``_group_absmax``). PIECE_A, PIECE_B, PIECE_C (``row_pieces``; plain per-token rows, taken by configs of
    one row a program, BLOCK_M 1, unchunked): the row is held as power-of-two pieces of these widths instead of
    padded to BLOCK_K (``_load_pieces``, ``_quantize_pieces``); other configs pad it as before."""
    launch_dependents(LAUNCH_DEPENDENTS)
    wait_for_producer(USE_GDC)
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    if CHUNK > 0:
        if SPLIT:
            whole = _load(x_ptr, h_ptr, norm_ptr, rows, tl.arange(0, BLOCK_K), M, K, stride_xm, inv_sqrt_b, eps,
                          BLOCK_M, BLOCK_K, HAD_BLOCK, HB, DOT_F32, ROUND_BF16, ROUND_F16, PROLOGUE)
            amax = tl.reduce(tl.abs(whole), 1, _elementwise_max)
            first = tl.program_id(1) * CHUNK
            stop = first + CHUNK
        else:
            amax = tl.full((BLOCK_M,), 0.0, tl.float32)
            for c0 in range(0, K, CHUNK):
                y = _load(x_ptr, h_ptr, norm_ptr, rows, c0 + tl.arange(0, CHUNK), M, K, stride_xm, inv_sqrt_b, eps,
                          BLOCK_M, CHUNK, HAD_BLOCK, HB, DOT_F32, ROUND_BF16, ROUND_F16, PROLOGUE)
                amax = tl.maximum(amax, tl.reduce(tl.abs(y), 1, _elementwise_max))
            first = 0
            stop = K
        scale = _scales(amax[:, None], tensor_amax_ptr, clip_ratio, max_value, SCALE_KIND)
        safe = tl.where(scale > 0, scale, 1.0)
        for c0 in range(first, stop, CHUNK):
            y = _load(x_ptr, h_ptr, norm_ptr, rows, c0 + tl.arange(0, CHUNK), M, K, stride_xm, inv_sqrt_b, eps,
                      BLOCK_M, CHUNK, HAD_BLOCK, HB, DOT_F32, ROUND_BF16, ROUND_F16, PROLOGUE)
            codes = _quantized(y, safe, max_value, tensor_amax_ptr, ELEMENT_INT4, ELEMENT_INT8, SCALE_KIND, CLAMP,
                               OUT_FP8)
            _store_codes(codes, packed_ptr, rows, c0, M, K, stride_pm, ELEMENT_INT4, ELEMENT_INT8, OUT_FP8, DP4A_FOR,
                         BLOCK_M, CHUNK)
        tl.store(scale_ptr + rows[:, None] * stride_sm + tl.arange(0, 1)[None, :], scale, mask=row_ok[:, None])
    elif ROW_STEPS > 1 and PIECE_A > 0 and BLOCK_M == 1:
        rows = pid_m * ROW_STEPS * BLOCK_M + tl.arange(0, BLOCK_M)
        xa, xb, xc = _load_pieces(x_ptr, rows, rows < M, stride_xm, K, BLOCK_M, WORDS, PIECE_A, PIECE_B, PIECE_C)
        for step in range(ROW_STEPS):
            next_rows = rows + BLOCK_M
            na, nb, nc = _load_pieces(x_ptr, next_rows, (next_rows < M) & (step + 1 < ROW_STEPS), stride_xm, K,
                                      BLOCK_M, WORDS, PIECE_A, PIECE_B, PIECE_C)
            _quantize_pieces(xa, xb, xc, rows, packed_ptr, scale_ptr, M, K, stride_pm, stride_sm, clip_ratio,
                             max_value, ELEMENT_INT4, ELEMENT_INT8, CLAMP, OUT_FP8, DP4A_FOR, WORDS, PIECE_A, PIECE_B,
                             PIECE_C, PAIR_MAX)
            xa = na
            xb = nb
            xc = nc
            rows = next_rows
    elif ROW_STEPS > 1:
        pid_k = tl.program_id(1)
        rows = pid_m * ROW_STEPS * BLOCK_M + tl.arange(0, BLOCK_M)
        x = _load_plain(x_ptr, rows, rows < M, pid_k, K, stride_xm, BLOCK_M, BLOCK_K, WORDS)
        for step in range(ROW_STEPS):
            next_rows = rows + BLOCK_M
            x_next = _load_plain(x_ptr, next_rows, (next_rows < M) & (step + 1 < ROW_STEPS), pid_k, K, stride_xm,
                                 BLOCK_M, BLOCK_K, WORDS)
            _quantize_tile(_widen(x, BLOCK_M, BLOCK_K, WORDS), x, rows, pid_k, packed_ptr, scale_ptr,
                           tensor_amax_ptr, M, K, n_scales, stride_pm, stride_sm, clip_ratio, max_value, ELEMENT_INT4,
                           ELEMENT_INT8, SCALE_KIND, GROUP, CLAMP, OUT_FP8, DP4A_FOR, BLOCK_M, BLOCK_K, PAIR_MAX)
            x = x_next
            rows = next_rows
    elif PIECE_A > 0 and BLOCK_M == 1 and not AMAX_ONLY:
        xa, xb, xc = _load_pieces(x_ptr, rows, row_ok, stride_xm, K, BLOCK_M, WORDS, PIECE_A, PIECE_B, PIECE_C)
        _quantize_pieces(xa, xb, xc, rows, packed_ptr, scale_ptr, M, K, stride_pm, stride_sm, clip_ratio, max_value,
                         ELEMENT_INT4, ELEMENT_INT8, CLAMP, OUT_FP8, DP4A_FOR, WORDS, PIECE_A, PIECE_B, PIECE_C,
                         PAIR_MAX)
    else:
        pid_k = tl.program_id(1)
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        if WORDS:  # plain bfloat16 x
            words = _load_plain(x_ptr, rows, row_ok, pid_k, K, stride_xm, BLOCK_M, BLOCK_K, True)
            y = _widen(words, BLOCK_M, BLOCK_K, True)
        else:
            y = _load(x_ptr, h_ptr, norm_ptr, rows, cols, M, K, stride_xm, inv_sqrt_b, eps, BLOCK_M, BLOCK_K,
                      HAD_BLOCK, HB, DOT_F32, ROUND_BF16, ROUND_F16, PROLOGUE)
            words = y
        if PROLOGUE == 1:  # y is in x's dtype already: the cast is exact
            tl.store(normed_ptr + rows[:, None] * stride_xm + cols[None, :], y.to(normed_ptr.dtype.element_ty),
                     mask=row_ok[:, None] & (cols < K)[None, :])
        if AMAX_ONLY:
            tile_amax = tl.reduce(tl.abs(y).reshape(BLOCK_M * BLOCK_K), 0, _elementwise_max)
            tl.atomic_max(tensor_amax_ptr, tile_amax.to(tl.int32, bitcast=True))
        else:
            _quantize_tile(y, words, rows, pid_k, packed_ptr, scale_ptr, tensor_amax_ptr, M, K, n_scales, stride_pm,
                           stride_sm, clip_ratio, max_value, ELEMENT_INT4, ELEMENT_INT8, SCALE_KIND, GROUP, CLAMP,
                           OUT_FP8, DP4A_FOR, BLOCK_M, BLOCK_K, PAIR_MAX)


@lru_cache(maxsize=None)
def _hadamard_matrix(order: int, device: torch.device) -> torch.Tensor:
    return sylvester_hadamard(order, torch.float32).to(device)


def _tile(k: int, group_size: int, hadamard_block: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_K): a whole padded row for per-token scales, else a few groups."""
    block_k = triton.next_power_of_2(k) if group_size == 0 else max(group_size, hadamard_block, 128)
    return max(1, TILE_ELEMENTS // block_k), block_k


def row_pieces(k: int, group_size: int, hadamard_block: int, prologue: int) -> dict[str, int]:
    """PIECE_A, PIECE_B and PIECE_C of ``_act_quant_kernel``: the widths of the powers of two that add up to a per-token
    row of plain x too wide for a power of two (K = 14336: 8192, 4096, 2048), largest first, the third 0 for two,
    so that the kernel holds and quantizes the row without padding it to the next power of two (16384, a seventh
    more work for every element); all 0 where the row is a power of two, has more than three such pieces or one
    below MIN_PIECE, or is not plain per-token x."""
    widths = [1 << b for b in reversed(range(k.bit_length())) if k >> b & 1]
    if group_size or hadamard_block or prologue or not 2 <= len(widths) <= 3 or widths[-1] < MIN_PIECE:
        widths = []
    return dict(zip(("PIECE_A", "PIECE_B", "PIECE_C"), widths + [0] * (3 - len(widths))))


def _prune_tiles(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Tiles of 2K to 32K elements, at most M rows; a fused rotation keeps _tile's tile and 4 warps.

    On the H200 an autotuned tile gave wrong codes in 19 % of the elements for one fused
    rotation (INT4 per token, clip 0.9, float16, H128; ``benchmarks/results/kernel_check_h200.md``)
    while the fixed tile had passed every fused case: rotations stay on the fixed tile.
    Chunked configs (``CHUNK``) are for per-token rows wider than the chunk, without a rotation or an RMSNorm
    prologue; configs of several row blocks a program (``ROW_STEPS``) for plain x (no rotation, no prologue, not the
    amax launch) and at least that many rows, on 16 warps only for blocks of 8K elements or more (at K = 14336
    16 warps' registers hold a row twice, the current block and the next, where 8 warps' hold it once); on one or
    two warps up to 128 elements a thread (a row a warp reduces its absmax without a barrier), on one only up to
    ONE_WARP_MAX_M rows. Rows split among programs (``SPLIT``) are plain per-token rows wider than the chunk, at
    most SPLIT_MAX_M of them.
    """
    args = {**named_args, **kwargs}
    whole = [c for c in configs if c.kwargs["CHUNK"] == 0 and c.kwargs["ROW_STEPS"] == 1]
    split = [c for c in configs if c.kwargs["SPLIT"]]
    if args["HAD_BLOCK"]:
        rows = max(1, TILE_ELEMENTS // args["BLOCK_K"])  # _tile's
        return [c for c in whole if c.kwargs["BLOCK_M"] == rows and c.num_warps == 4]
    per_token = args["GROUP"] == args["BLOCK_K"] and not args["AMAX_ONLY"]
    chunkable = per_token and args["PROLOGUE"] != PROLOGUES["rms_norm"]  # the norm needs its whole row at once
    plain = not args["AMAX_ONLY"] and args["PROLOGUE"] == 0  # (and no rotation: returned above)
    splits = per_token and plain and args["M_BUCKET"] <= SPLIT_MAX_M
    kept = [c for c in split if splits and c.kwargs["CHUNK"] < args["BLOCK_K"]]
    kept += [c for c in configs if not c.kwargs["SPLIT"]
             and c.kwargs["BLOCK_M"] * c.kwargs["ROW_STEPS"] <= args["M_BUCKET"]
             and 2048 <= c.kwargs["BLOCK_M"] * (c.kwargs["CHUNK"] or args["BLOCK_K"]) <= 32768
             and (c.kwargs["CHUNK"] == 0 or (chunkable and c.kwargs["CHUNK"] < args["BLOCK_K"]))
             and (c.kwargs["ROW_STEPS"] == 1 or plain)
             and (c.kwargs["ROW_STEPS"] == 1 or c.num_warps < 16 or c.kwargs["BLOCK_M"] * args["BLOCK_K"] >= 8192)
             and (c.num_warps >= 4 or c.kwargs["BLOCK_M"] * args["BLOCK_K"] <= 128 * 32 * c.num_warps)
             and (c.num_warps > 1 or args["M_BUCKET"] <= ONE_WARP_MAX_M)]
    return kept or [c for c in whole if c.kwargs["BLOCK_M"] == 1]


# Rows per program and warps, for wide per-token rows chunks (walked by one program, or split among programs at
# decode), and for plain x row blocks walked in turn, tuned per width and M bucket on a GPU (the interpreter takes
# _tile's, unchunked unless INTERPRET_CHUNK is set, split if INTERPRET_SPLIT is too, one block a program unless
# INTERPRET_ROW_STEPS is).
_act_quant_autotuned = autotune(
    configs=[triton.Config(dict(BLOCK_M=bm, CHUNK=0, ROW_STEPS=1, SPLIT=False), num_warps=w)
             for bm in (1, 2, 4, 8, 16, 32, 64) for w in (4, 8, 16)]
    + [triton.Config(dict(BLOCK_M=bm, CHUNK=0, ROW_STEPS=1, SPLIT=False), num_warps=w) for bm in (1, 2)
       for w in (1, 2)]
    + [triton.Config(dict(BLOCK_M=bm, CHUNK=chunk, ROW_STEPS=1, SPLIT=False), num_warps=w) for chunk in CHUNKS
       for bm in (1, 2, 4) for w in (4, 8)]
    + [triton.Config(dict(BLOCK_M=bm, CHUNK=0, ROW_STEPS=steps, SPLIT=False), num_warps=w)
       for steps in ROW_STEP_COUNTS for bm in (1, 2) for w in (4, 8, 16)]
    + [triton.Config(dict(BLOCK_M=1, CHUNK=chunk, ROW_STEPS=1, SPLIT=True), num_warps=w) for chunk in SPLIT_CHUNKS
       for w in (4, 8)],
    key=["K", "M_BUCKET", "BLOCK_K", "ELEMENT_INT4", "ELEMENT_INT8", "SCALE_KIND", "GROUP", "CLAMP", "WORDS",
         "PAIR_MAX", "HAD_BLOCK", "ROUND_BF16", "ROUND_F16", "AMAX_ONLY", "OUT_FP8", "DP4A_FOR", "PROLOGUE"],
    prune_configs_by=dict(early_config_prune=_prune_tiles),
)(_act_quant_kernel)


def clamp_kind(element: str, scale_kind: str, clip_ratio: float) -> int:
    """The activation kernel's CLAMP (``_encode``) for these scales: 0 where every scaled value already rounds
    onto the grid, 1 where only values above it can fall off (integers), 2 otherwise.

    A float scale is amax * clip_ratio / max_value, so |x / scale| <= max_value / clip_ratio, times
    (1 + 2^-20) for the roundings of the scale and the quotient. Integers round below max_value + 0.5 onto the
    grid and from -(max_value + 1.5) up onto -(max_value + 1) or above, its lowest level; E2M1 rounds below 7
    to 6 at most. Block scales (E4M3, E8M0) can leave values far beyond the largest level.
    """
    if scale_kind != "float":
        return 2
    max_value = element_named(element).max_value
    reach = max_value / clip_ratio * (1 + 2.0**-20)
    if element == "e2m1":
        return 0 if reach < 7.0 else 2
    return 0 if reach < max_value + 0.5 else 1 if reach < max_value + 1.5 else 2


def quantize_activations_triton(
    x: torch.Tensor, element: str, group_size: int = 0, scale_kind: str = "float",
    clip_ratio: float = 1.0, hadamard_block: int = 0, fp8_codes: bool = False, dp4a_for: str | None = None,
    tensor_amax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton twin of ``reference.quantize_activations_ref`` (same arguments, same results).

    ``fp8_codes``: the codes come as (M, K) float8_e4m3fn values instead of packed bytes.
    ``dp4a_for``: as (M, K) int8 bytes for the decode kernel (``reference.dp4a_bytes``); with ``fp8_codes``
    (``dp4a_for="int4"``) those bytes' values as float8_e4m3fn in their order.
    ``tensor_amax`` (NVFP4): a calibrated absmax for the tensor scale, so that x is read once, where its own absmax
    takes a launch of its own first.
    """
    check_activation_args(x, element, group_size, scale_kind, clip_ratio, hadamard_block, dp4a_for, tensor_amax)
    packed, scales, _ = _quantize(x, element, group_size, scale_kind, clip_ratio, hadamard_block, fp8_codes,
                                  dp4a_for, tensor_amax=tensor_amax)
    return packed, scales


def norm_tail_triton(out: torch.Tensor, tail: NormTail) -> tuple[torch.Tensor, torch.Tensor]:
    """The (dp4a bytes or E4M3 planes, per-token scales) of ``reference.norm_tail_ref``, by the activation kernel:
    for a kernel that leaves its tail to a launch of its own."""
    if tail.weight is None:
        return quantize_activations_triton(out, tail.element, 0, "float", tail.clip_ratio, fp8_codes=tail.fp8_codes,
                                           dp4a_for=tail.dp4a_for)
    codes, scales, _ = rms_norm_quantize_triton(out, tail.weight, tail.eps, tail.element, tail.clip_ratio,
                                                tail.dp4a_for, tail.fp8_codes)
    return codes, scales


def rms_norm_quantize_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, element: str, clip_ratio: float,
                             dp4a_for: str | None, fp8_codes: bool = False,
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton twin of ``reference.rms_norm_quantize_ref`` (``fp8_codes``: E4M3 planes, as
    ``quant_kernels.rms_norm_quantize``): one read of x for the norm and the codes."""
    check_prologue_args(x, weight, element, clip_ratio, dp4a_for, PROLOGUES["rms_norm"])
    return _quantize(x.contiguous(), element, 0, "float", clip_ratio, 0, fp8_codes, dp4a_for,
                     PROLOGUES["rms_norm"], weight.contiguous(), eps)


def silu_mul_quantize_triton(x: torch.Tensor, element: str, clip_ratio: float,
                             dp4a_for: str | None, fp8_codes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton twin of ``reference.silu_mul_quantize_ref`` (``fp8_codes`` as ``rms_norm_quantize_triton``'s):
    gate and up read once, the product never written."""
    check_prologue_args(x, None, element, clip_ratio, dp4a_for, PROLOGUES["silu_mul"])
    packed, scales, _ = _quantize(x if x.stride(1) == 1 else x.contiguous(), element, 0, "float", clip_ratio, 0,
                                  fp8_codes, dp4a_for, PROLOGUES["silu_mul"])
    return packed, scales


def _quantize(x: torch.Tensor, element: str, group_size: int, scale_kind: str, clip_ratio: float,
              hadamard_block: int, fp8_codes: bool, dp4a_for: str | None, prologue: int = 0,
              norm_weight: torch.Tensor | None = None, eps: float = 0.0,
              tensor_amax: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The kernel's launch, arguments checked: (codes, scales, the normalised x for the RMSNorm prologue);
    ``tensor_amax``: NVFP4's given absmax (``quantize_activations_triton``)."""
    x = x if x.stride(1) == 1 else x.contiguous()
    m, k = x.shape
    if prologue == PROLOGUES["silu_mul"]:
        k //= 2  # gate columns, then up columns
    normed = torch.empty_like(x) if prologue == PROLOGUES["rms_norm"] else None
    int8_words = dp4a_for is not None and not fp8_codes  # dp4a bytes are written four at a time, E4M3 ones singly
    packed = torch.empty((m, k if fp8_codes or dp4a_for else k // 2), dtype=torch.int8 if int8_words else torch.uint8,
                         device=x.device)
    codes_out = packed.view(torch.int32) if int8_words else packed
    scales = torch.empty((m, k // group_size if group_size else 1), dtype=torch.float32, device=x.device)
    block_m, block_k = _tile(k, group_size, hadamard_block)
    hb = hadamard_block if hadamard_block <= MAX_DENSE_HADAMARD else 16
    h = _hadamard_matrix(max(hb, 1), x.device)
    # NVFP4's tensor amax, as fp32 bits (|x| >= 0 orders as int), given or taken by a launch of its own; the other
    # scale kinds never read it, and allocating it anyway cost a fill kernel per call (a tenth of the activation
    # quantization at decode).
    measure_amax = scale_kind == "e4m3" and tensor_amax is None
    if tensor_amax is not None:
        tensor_amax = tensor_amax.reshape(1).view(torch.int32)
    elif measure_amax:
        tensor_amax = torch.zeros(1, dtype=torch.int32, device=x.device)
    else:
        tensor_amax = scales
    # The rotation dots in x's half dtype (exact products, fp32 sums), except under the
    # interpreter, whose bfloat16 dot is wrong.
    dot_f32 = x.dtype == torch.float32 or (INTERPRET and x.dtype == torch.bfloat16)
    pdl = pdl_flags(x.device, "act_quant")
    words = (x.dtype == torch.bfloat16 and not hadamard_block and not prologue and x.stride(0) % 2 == 0
             and x.data_ptr() % 4 == 0)
    launch = dict(
        clip_ratio=clip_ratio, max_value=element_named(element).max_value, eps=eps,
        inv_sqrt_b=hadamard_block ** -0.5 if hadamard_block else 1.0,
        ELEMENT_INT4=element == "int4", ELEMENT_INT8=element == "int8", SCALE_KIND=SCALE_KIND_CODES[scale_kind],
        CLAMP=clamp_kind(element, scale_kind, clip_ratio),
        WORDS=words, PAIR_MAX=words and x.is_cuda and torch.cuda.get_device_capability(x.device) >= (8, 6),
        GROUP=group_size or block_k,
        HAD_BLOCK=hadamard_block, HB=hb, DOT_F32=dot_f32,
        ROUND_BF16=x.dtype == torch.bfloat16, ROUND_F16=x.dtype == torch.float16, OUT_FP8=fp8_codes,
        DP4A_FOR=DP4A_FOR_IDS[dp4a_for], BLOCK_K=block_k,
        **row_pieces(k, group_size, hadamard_block, prologue),
        LAUNCH_DEPENDENTS=pdl["USE_GDC"] or (dp4a_for is not None and uses_pdl(x.device, "gemv")),
        PROLOGUE=prologue, **pdl,
    )
    m_bucket = min(triton.next_power_of_2(max(m, 1)), 4096)
    args = (x, h, x if norm_weight is None else norm_weight, x if normed is None else normed, codes_out, scales,
            tensor_amax, m, k, m_bucket, scales.shape[1], x.stride(0), codes_out.stride(0), scales.stride(0))
    if INTERPRET:
        chunk = (INTERPRET_CHUNK if group_size == 0 and not hadamard_block and prologue != PROLOGUES["rms_norm"]
                 and 0 < INTERPRET_CHUNK < block_k else 0)
        steps = INTERPRET_ROW_STEPS if not (chunk or hadamard_block or prologue) else 1
        split = INTERPRET_SPLIT and chunk > 0 and not prologue
        launch.update(BLOCK_M=block_m, CHUNK=chunk, num_warps=4)
        amax_kernel = partial(_act_quant_kernel[(triton.cdiv(m, block_m), triton.cdiv(k, block_k))], ROW_STEPS=1,
                              SPLIT=False)
        columns = triton.cdiv(k, chunk) if split else 1 if chunk else triton.cdiv(k, block_k)
        kernel = partial(_act_quant_kernel[(triton.cdiv(m, block_m * steps), columns)], ROW_STEPS=steps, SPLIT=split)
    else:
        kernel = amax_kernel = _act_quant_autotuned[
            lambda meta: (triton.cdiv(m, meta["BLOCK_M"] * meta["ROW_STEPS"]),
                          triton.cdiv(k, meta["CHUNK"]) if meta["SPLIT"] else 1 if meta["CHUNK"]
                          else triton.cdiv(k, block_k))]
    if measure_amax:  # NVFP4's tensor scale: the amax of the whole (rotated) x first
        amax_kernel(*args, AMAX_ONLY=True, **launch)
    kernel(*args, AMAX_ONLY=False, **launch)
    return (packed.view(torch.float8_e4m3fn) if fp8_codes else packed), scales, normed
