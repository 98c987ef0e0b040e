"""W4A4 kernels: torch twins against fake quantization, Triton kernels against the twins.

The Triton kernels run on CPU under ``TRITON_INTERPRET=1``, which must be set before
``quant_kernels.act_quant`` / ``quant_kernels.w4a4_gemm`` are imported (``triton.jit`` reads it when
it builds a kernel): hence the assignment above the imports. Triton itself may already
be imported by then (transformers imports it when other test modules import
``quant_layers``); the kernels are written to run under the interpreter all the same.
"""

from __future__ import annotations

import functools
import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import quant_kernels  # noqa: E402
from quant_kernels import act_quant, w4a4_gemm  # noqa: E402
from quant_kernels.reference import PROLOGUES, dequantize, quantize_activations_ref, w4a4_matmul_ref  # noqa: E402
from quant_layers import E2M1, E4M3, QuantSpec, Quantizer  # noqa: E402
from quant_layers.formats import e4m3_scale, e8m0_scale  # noqa: E402
from quant_layers.packing import code_values, decode, element_named, unpack  # noqa: E402
from transforms.hadamard import block_hadamard_transform  # noqa: E402

# (element, group_size, scale_kind, clip_ratio) and the spec the twin must realise.
ACT_CASES = {
    "int4-tok-clip0.9": (("int4", 0, "float", 0.9), QuantSpec(format="int", bits=4, granularity="token", clip_ratio=0.9)),
    "e2m1-tok": (("e2m1", 0, "float", 1.0), QuantSpec(format="fp", bits=4, exp_bits=2, granularity="token")),
    "nvfp4": (("e2m1", 16, "e4m3", 1.0), QuantSpec(format="nvfp", bits=4)),
    "mxfp4": (("e2m1", 32, "e8m0", 1.0), QuantSpec(format="mxfp", bits=4)),
    "int4-g64": (("int4", 64, "float", 1.0), QuantSpec(format="int", bits=4, granularity="group", group_size=64)),
}
# (a_element, a_group, a_scale_kind, w_element, w_group, w_scale_kind)
GEMM_CASES = {
    "int4xint4": ("int4", 0, "float", "int4", 0, "float"),
    "e2m1xe2m1": ("e2m1", 0, "float", "e2m1", 0, "float"),
    "int4xe2m1": ("int4", 0, "float", "e2m1", 0, "float"),
    "nvfp4": ("e2m1", 16, "e4m3", "e2m1", 16, "e4m3"),
    "mxfp4": ("e2m1", 32, "e8m0", "e2m1", 32, "e8m0"),
    "int4-tok x int4-g128": ("int4", 0, "float", "int4", 128, "float"),
}
# (M, N, K, bias, out_dtype): ragged M, N = 40 is not a multiple of the 16-wide tiles.
GEMM_SHAPES = [(1, 40, 128, True, torch.float16), (5, 40, 256, False, torch.float32), (33, 40, 128, True, torch.float32)]
TIES = {"int4": torch.arange(-7.5, 7.0, 1.0), "e2m1": torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])}


def test_kernels_are_built_for_the_interpreter():
    assert act_quant.INTERPRET and w4a4_gemm.INTERPRET, "kernels were imported before TRITON_INTERPRET=1 was set"


def activations(m: int, k: int, element: str, group_size: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random rows, rows whose values sit on rounding ties (and the grid), an all-zero row.

    Tie rows: each scale group has its amax at max_value * 2^s (its first element) and
    values that are multiples of 2^s / 4. With float scales (no clipping) and MXFP4's
    power-of-two scales the scale is 2^s, so x / scale lands exactly on the ties of INT4
    (half-integers) and E2M1 (0.25, 0.75, ..., 5); under NVFP4 or clipping, near them.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen) * 2
    x[:, :: max(k // 3, 1)] *= 8  # outliers
    group = group_size or k
    exps = torch.randint(-3, 4, (m, k // group, 1), generator=gen).float()
    quarters = torch.randint(-24, 25, (m, k // group, group), generator=gen).float() * 0.25
    quarters[..., 0] = 7.0 if element == "int4" else 6.0
    ties = (quarters * torch.exp2(exps)).reshape(m, k)
    x[1::2] = ties[1::2]
    if m > 2:
        x[2] = 0
    return x.to(dtype)


def tie_fraction(x: torch.Tensor, scale: torch.Tensor, element: str) -> float:
    v = (x.float().reshape(scale.numel(), -1) / scale.reshape(-1, 1)).abs()
    return torch.isin(v, TIES[element].abs()).float().mean().item()


def grid_index(codes: torch.Tensor, element: str) -> torch.Tensor:
    """Rank of each code's value on the sorted grid (adjacent values differ by 1)."""
    values = code_values(element_named(element))
    return torch.bucketize(values[codes.long()], values.unique())


# ---------------------------------------------------------------------------
# The twin against fake quantization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ACT_CASES)
def test_reference_is_fake_quantization(case, dtype):
    (element, group, kind, clip), spec = ACT_CASES[case]
    x = activations(9, 256, element, group, dtype)
    packed, scale = quantize_activations_ref(x, element, group, kind, clip)
    assert packed.dtype == torch.uint8 and packed.shape == (9, 128)
    assert scale.dtype == torch.float32 and scale.shape == (9, 256 // group if group else 1)
    expected = Quantizer(spec).fake_quantize(x.float())
    assert torch.equal(dequantize(packed, scale, element, group), expected)


def test_reference_rotates_before_quantizing():
    x = activations(6, 128, "e2m1", 16, torch.float16)
    packed, scale = quantize_activations_ref(x, "e2m1", 16, "e4m3", hadamard_block=32)
    expected = Quantizer(QuantSpec(format="nvfp", bits=4)).fake_quantize(block_hadamard_transform(x, 32).float())
    assert torch.equal(dequantize(packed, scale, "e2m1", 16), expected)


def test_auto_backend_on_cpu_is_the_twin():
    x = activations(4, 64, "int4", 0, torch.float32)
    for got, want in zip(quant_kernels.quantize_activations(x, "int4"), quantize_activations_ref(x, "int4")):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_tokens(backend):
    packed, scale = quant_kernels.quantize_activations(torch.zeros(0, 64), "e2m1", 16, "e4m3", backend=backend)
    assert packed.shape == (0, 32) and scale.shape == (0, 4)
    out = quant_kernels.w4a4_matmul(packed, scale, torch.zeros(5, 32, dtype=torch.uint8), torch.ones(5, 4),
                                    a_element="e2m1", w_element="e2m1", a_group=16, w_group=16, backend=backend)
    assert out.shape == (0, 5)
    codes, scale = quant_kernels.quantize_activations(torch.zeros(0, 64), "int4", dp4a_for="e2m1", backend=backend)
    assert codes.dtype == torch.int8 and codes.shape == (0, 64) and scale.shape == (0, 1)


# ---------------------------------------------------------------------------
# Rounding helpers of the activation kernel, exhaustively
# ---------------------------------------------------------------------------


ENCODE_HELPERS = {"int4": 2, "e2m1": 3, "int8": 4}  # run_helper's WHICH for _encode of each element


@triton.jit
def _helper_kernel(x_ptr, y_ptr, n, WHICH: tl.constexpr, CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    if WHICH == 0:
        y = act_quant._round_e4m3(x)
    elif WHICH == 1:
        y = act_quant._e8m0_scale(x)
    elif WHICH >= 5:  # grid values of INT4 (5) / E2M1 (6)
        y = act_quant._grid_values(x, WHICH == 5, CLAMP)
    elif WHICH == 4:  # INT8: the level itself
        y = act_quant._encode(x, False, True, CLAMP).to(tl.float32)
    else:  # a 4-bit code is the low nibble (E2M1's bits 22 and up are not zero: the stores truncate)
        y = (act_quant._encode(x, WHICH == 2, False, CLAMP) & 0xF).to(tl.float32)
    tl.store(y_ptr + offs, y, mask=offs < n)


def run_helper(x: torch.Tensor, which: int, clamp: int = 2) -> torch.Tensor:
    y = torch.empty_like(x)
    _helper_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), WHICH=which, CLAMP=clamp, BLOCK=1024)
    return y


def neighbourhood(values: torch.Tensor) -> torch.Tensor:
    """The values, their midpoints, and the floats one ulp either side of each."""
    v = values.float().unique()
    mids = (v[1:] + v[:-1]) / 2
    pts = torch.cat([v, mids])
    return torch.cat([pts, torch.nextafter(pts, pts + 1), torch.nextafter(pts, pts - 1)]).unique()


def test_e4m3_block_scale_rounding_matches_e4m3_scale():
    s = neighbourhood(E4M3.grid().clamp(min=0))
    s = torch.cat([s, torch.tensor([0.0, 1e-30, 2.0**-12, 460.0, 464.0, 500.0, 1e4])])
    assert torch.equal(run_helper(s, 0), e4m3_scale(s))


def test_e8m0_scale_matches():
    amax = torch.cat([neighbourhood(torch.exp2(torch.arange(-130.0, 128.0))), torch.tensor([0.0, 3.0, 6.0, 1e-40])])
    amax = amax[torch.isfinite(amax) & (amax >= 0)]
    assert torch.equal(run_helper(amax, 1), e8m0_scale(amax, E2M1))


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_element_rounding_and_codes_match_the_format(element):
    fmt = element_named(element)
    v = neighbourhood(torch.cat([fmt.grid(), -fmt.grid(), torch.tensor([-9.0, 9.0, 100.0, -100.0])]))
    codes = run_helper(v, ENCODE_HELPERS[element]).to(torch.uint8)
    expected = fmt.round(v)
    assert torch.equal(code_values(fmt)[codes.long()], expected)
    assert torch.equal(codes[expected == 0], torch.zeros_like(codes[expected == 0]))  # no negative zero code


@pytest.mark.parametrize("clip", [1.0, 0.9, 0.85, 0.8])
@pytest.mark.parametrize("element", ["int4", "e2m1", "int8"])
def test_partial_saturation_holds_for_every_value_its_scales_give(element, clip):
    """With clamp_kind's CLAMP for per-token float scales clipped at ``clip``, the codes are the format's for every
    value those scales can give: the grid, its ties and their neighbours, out to the largest level / clip times
    (1 + 2^-21) either way."""
    fmt = element_named(element)
    clamp = act_quant.clamp_kind(element, "float", clip)
    reach = float(fmt.max_value) / clip * (1 + 2.0**-21)
    grid = fmt.grid().float()
    v = neighbourhood(torch.cat([grid, -grid, grid + 1, -grid - 1, torch.tensor([reach, -reach])]))
    v = v[v.abs() <= reach]
    assert v.abs().max() > fmt.max_value  # values beyond the grid are in the test
    out = run_helper(v, ENCODE_HELPERS[element], clamp=clamp)
    expected = fmt.round(v)
    if element == "int8":
        assert torch.equal(out, expected)
    else:
        codes = out.to(torch.uint8)
        assert torch.equal(code_values(fmt)[codes.long()], expected)
        assert torch.equal(codes[expected == 0], torch.zeros_like(codes[expected == 0]))


@pytest.mark.parametrize("clip", [1.0, 0.9])
@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_grid_values_are_the_formats_rounding_with_positive_zeros(element, clip):
    """The fp32 values the E4M3-code path converts: the format's rounding of every grid point, tie and neighbour (out
    to what per-token scales clipped at ``clip`` give, and far beyond with full saturation), zeros as +0."""
    fmt = element_named(element)
    reach = float(fmt.max_value) / clip * (1 + 2.0**-21)
    v = neighbourhood(torch.cat([fmt.grid().float(), -fmt.grid().float(), torch.tensor([reach, -reach, 9.0, -9.0])]))
    which = 5 if element == "int4" else 6
    for clamp, values in ((act_quant.clamp_kind(element, "float", clip), v[v.abs() <= reach]), (2, v)):
        out = run_helper(values, which, clamp=clamp)
        expected = fmt.round(values)
        assert torch.equal(out, expected)
        assert (out[expected == 0].view(torch.int32) == 0).all()  # +0, not -0: E4M3 byte 0x00


def test_clamp_kinds_leave_out_only_what_cannot_overflow():
    assert [act_quant.clamp_kind("int4", "float", c) for c in (1.0, 0.95, 0.9, 0.83, 0.8)] == [0, 0, 1, 1, 2]
    assert [act_quant.clamp_kind("e2m1", "float", c) for c in (1.0, 0.9, 0.86, 0.85)] == [0, 0, 0, 2]
    assert [act_quant.clamp_kind("int8", "float", c) for c in (1.0, 0.997, 0.99, 0.98)] == [0, 0, 1, 2]
    assert act_quant.clamp_kind("e2m1", "e4m3", 1.0) == act_quant.clamp_kind("e2m1", "e8m0", 1.0) == 2


def test_int8_rounding_gives_the_levels_of_the_format():
    """INT8 comes out as the level itself: every level, the ties between them (to even), beyond the range."""
    fmt = element_named("int8")
    v = neighbourhood(torch.cat([fmt.grid().float(), torch.tensor([-129.0, 128.5, 300.0, -1e6, 1e6])]))
    assert torch.equal(run_helper(v, ENCODE_HELPERS["int8"]), fmt.round(v))


# ---------------------------------------------------------------------------
# Triton activation quantization against the twin
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [64, 128, 192])
@pytest.mark.parametrize("m", [1, 3, 17, 33])
@pytest.mark.parametrize("case", ACT_CASES)
def test_triton_quantize_equals_twin(case, m, k):
    (element, group, kind, clip), _ = ACT_CASES[case]
    x = activations(m, k, element, group, torch.bfloat16, seed=m * k)
    want = quantize_activations_ref(x, element, group, kind, clip)
    got = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if m > 1 and kind == "float" and clip == 1.0:
        assert tie_fraction(x[1::2], want[1][1::2], element) > 0.05  # the data does exercise the ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_quantize_other_dtypes_equal_twin(dtype):
    for case in ACT_CASES.values():
        element, group, kind, clip = case[0]
        x = activations(17, 192, element, group, dtype)
        want = quantize_activations_ref(x, element, group, kind, clip)
        got = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])



def near_ties(amax: torch.Tensor, element: str, k: int) -> torch.Tensor:
    """float32 rows of k values: each row's amax first, then the values 2 ulps below to 2 ulps above
    tie * scale for every rounding tie of the element (both signs), scale = amax / max_value as the twin
    computes it; zeros after them."""
    max_value = 7.0 if element == "int4" else 6.0
    scale = amax / max_value
    ties = TIES[element].abs().unique()
    ties = ties[ties < max_value]  # (INT4's 7.5 would raise the amax)
    near = (ties[None, :] * scale[:, None]).reshape(-1, 1).view(torch.int32) + torch.arange(-2, 3, dtype=torch.int32)
    values = near.view(torch.float32).reshape(len(amax), -1)
    rows = torch.zeros(len(amax), k)
    rows[:, 0] = amax
    rows[:, 1:1 + 2 * values.shape[1]] = torch.cat([values, -values], dim=1)
    return rows


@pytest.mark.parametrize("case", ["int4-g64", "e2m1-tok"])
def test_triton_quantize_tiny_scales_near_ties_equal_twin(case):
    """Scales near 2^-123, values within 2 ulps of every rounding tie times the scale: there the remainder
    of a reciprocal division loses bits, and the tiles holding them divide element by element; scales
    near 2^-90 take the reciprocal path."""
    (element, group, kind, clip), _ = ACT_CASES[case]
    gen = torch.Generator().manual_seed(0)
    for exponent in (-120, -87):
        amax = (1 + torch.rand(16, generator=gen)) * 2.0**exponent
        x = near_ties(amax, element, 128)
        want = quantize_activations_ref(x, element, group, kind, clip)
        got = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["int4-g64", "e2m1-tok", "int4-tok-clip0.9", "nvfp4", "mxfp4"])
def test_triton_quantize_scales_far_from_one_equal_twin(case, dtype):
    """Rows scaled by 2^-122 and 2^118 (scales outside the kernel's reciprocal division range) and rows next
    to them in other tiles, ties included."""
    (element, group, kind, clip), _ = ACT_CASES[case]
    x = activations(8, 128, element, group, torch.float32, seed=5)
    x[0] *= 2.0**-122
    x[3] *= 2.0**118
    x[5] *= 2.0**-90  # a scale inside the range: the reciprocal path
    x = x.to(dtype)
    for rows in (x, x[4:]):  # one tile holding all rows (interpreter: 32+ rows a tile), then one without them
        want = quantize_activations_ref(rows, element, group, kind, clip)
        got = quant_kernels.quantize_activations(rows, element, group, kind, clip, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def nvfp4_near_ties(g: float, levels: tuple[float, ...]) -> torch.Tensor:
    """float32 rows of 16-wide NVFP4 groups under the tensor scale g: the tensor's first element 2688 g (so g is
    the tensor scale), each other group's amax 6 e g for an E4M3 value e of ``levels`` (so e g is its scale), then
    values from 2 ulps below to 2 ulps above tie * e g for E2M1's rounding ties, both signs."""
    groups = [torch.cat([torch.tensor([2688 * g]), torch.zeros(15)])]
    for e in levels:
        scale = torch.tensor(e * g, dtype=torch.float32)
        near = (TIES["e2m1"] * scale).view(torch.int32)[:, None] + torch.arange(-2, 3, dtype=torch.int32)
        values = near.view(torch.float32).reshape(-1)
        values = torch.cat([values, -values])
        for start in range(0, len(values), 15):
            chunk = values[start:start + 15]
            groups.append(torch.cat([6 * scale[None], chunk, torch.zeros(15 - len(chunk))]))
    flat = torch.cat(groups)
    return torch.cat([flat, torch.zeros(-len(flat) % 128)]).reshape(-1, 128)


@pytest.mark.parametrize("g, levels", [(2.0**-80, (1.0, 1.125, 3.5, 13.0)),
                                       (1e-30, (2.0**-9, 3 * 2.0**-9, 2.0**-6, 0.1875)),
                                       (2.0**100, (1.0, 1.625, 2.75))])
def test_nvfp4_scales_far_from_one_equal_twin(g, levels):
    """NVFP4 decides its division path from the tensor scale g alone (every scale an E4M3 value times g): values
    within 2 ulps of every rounding tie times their group's scale, with every scale inside the reciprocal's range
    (g = 2^-80), below 2^-101 (g at its floor 1e-30, small E4M3 levels: the reciprocal's remainder is subnormal
    there, and such tensors divide element by element) and above 2^96."""
    (element, group, kind, clip), _ = ACT_CASES["nvfp4"]
    x = nvfp4_near_ties(g, levels)
    want = quantize_activations_ref(x, element, group, kind, clip)
    got = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert (want[1] > 0).sum() > 10  # the groups kept their scales


@pytest.mark.parametrize("case", ["e2m1-tok", "int4-g64", "int4-tok-clip0.9"])
def test_triton_quantize_subnormal_scales_saturate_like_the_twin(case):
    """Rows whose amax is a few fp32 subnormal steps: the scale amax / max_value rounds to a whole step, far from
    the relative rounding clamp_kind's bound assumes, and values land past the grid's end (7 steps / RN(7/6) = 7
    for E2M1). The kernel saturates them there as the twin does, where its saturation is otherwise left out."""
    (element, group, kind, clip), _ = ACT_CASES[case]
    tiny = 2.0**-149
    x = torch.zeros(24, 64)
    for r, steps in enumerate(range(1, 25)):
        x[r, :2 * steps + 1] = torch.arange(-steps, steps + 1) * tiny
    assert (x[x != 0].abs() < 2.0**-126).all()  # subnormal
    want = quantize_activations_ref(x, element, group, kind, clip)
    got = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block", [16, 32, 256])
@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "nvfp4", "mxfp4"])
def test_triton_fused_hadamard_matches_twin(case, block, dtype):
    """The kernel rotates with a dot, the twin with butterflies: sums differ in the last bit.

    Asserted: scales equal within 2 fp32 ulps; codes equal except on under 1% of the
    elements, where they are neighbours on the grid (a value that sat on a rounding tie).
    """
    (element, group, kind, clip), _ = ACT_CASES[case]
    x = activations(17, 256, element, group, dtype)
    want_packed, want_scale = quantize_activations_ref(x, element, group, kind, clip, block)
    packed, scale = quant_kernels.quantize_activations(x, element, group, kind, clip, block, backend="triton")
    torch.testing.assert_close(scale, want_scale, rtol=2.5e-7, atol=0)
    got, want = grid_index(unpack(packed), element), grid_index(unpack(want_packed), element)
    assert (got != want).float().mean() < 0.01
    assert (got - want).abs().max() <= 1


# ---------------------------------------------------------------------------
# Triton W4A4 GEMM against the twin
# ---------------------------------------------------------------------------


def quantized_operands(case: str, m: int, n: int, k: int) -> tuple:
    a_el, a_group, a_kind, w_el, w_group, w_kind = GEMM_CASES[case]
    gen = torch.Generator().manual_seed(m * n + k)
    a = quantize_activations_ref(torch.randn(m, k, generator=gen) * 3, a_el, a_group, a_kind)
    w = quantize_activations_ref(torch.randn(n, k, generator=gen) * 0.05, w_el, w_group, w_kind)
    return a, w, dict(a_element=a_el, w_element=w_el, a_group=a_group, w_group=w_group)


def assert_matches_twin(out: torch.Tensor, want: torch.Tensor) -> None:
    """fp32 accumulation in another order: 1e-5 of the output's magnitude, plus one ulp of a half out dtype."""
    rtol = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[out.dtype]
    torch.testing.assert_close(out.float(), want.float(), rtol=rtol, atol=1e-5 * want.float().abs().max().item())


def shape_id(shape: tuple) -> str:
    m, n, k, with_bias, out_dtype = shape
    return f"M{m}-N{n}-K{k}-{'bias' if with_bias else 'nobias'}-{str(out_dtype).removeprefix('torch.')}"


def check_gemm_against_twin(case: str, shape: tuple, **options) -> None:
    """w4a4_matmul_triton (with ``options``) into a NaN-filled output against the twin."""
    m, n, k, with_bias, out_dtype = shape
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands(case, m, n, k)
    bias = torch.randn(n) if with_bias else None
    want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, bias=bias, out_dtype=out_dtype, **kw)
    poisoned = torch.full((m, n), float("nan"), dtype=out_dtype)
    out = w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, bias=bias, out_dtype=out_dtype,
                                       out=poisoned, **options, **kw)
    assert out is poisoned and not out.isnan().any()  # every entry written
    assert_matches_twin(out, want)


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=shape_id)
@pytest.mark.parametrize("case", GEMM_CASES)
def test_triton_gemm_equals_twin(case, shape):
    check_gemm_against_twin(case, shape)


@pytest.mark.parametrize("split_k", [2, 3, 8])
@pytest.mark.parametrize("case", ["int4xint4", "e2m1xe2m1", "nvfp4", "int4-tok x int4-g128"])
def test_triton_split_k_gemm_equals_twin(case, split_k):
    """The decode path: K splits (some of them empty: 8 splits of 4 K steps) add into one output."""
    m, n, k = 3, 40, 256
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands(case, m, n, k)
    bias = torch.randn(n)
    for out_dtype in (torch.float32, torch.bfloat16):
        want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, bias=bias, out_dtype=out_dtype, **kw)
        poisoned = torch.full((m, n), float("nan"), dtype=out_dtype)
        out = w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, bias=bias, out_dtype=out_dtype,
                                           out=poisoned, split_k=split_k, **kw)
        assert out is poisoned and not out.isnan().any()
        assert_matches_twin(out, want)
    fresh = w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float16,
                                         split_k=split_k, **kw)
    assert fresh.dtype == torch.float16
    assert_matches_twin(fresh, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float16, **kw))


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("case", ["int4xint4", "e2m1xe2m1", "int4xe2m1"])
def test_triton_swapped_operands_equal_twin(case, split_k):
    """acc^T = W A^T (the decode configs' swap), transposed back in the epilogue: ragged M and N."""
    for shape in ((5, 40, 256, True, torch.bfloat16), (16, 24, 128, False, torch.float32)):
        check_gemm_against_twin(case, shape, swap_ab=True, split_k=split_k)


def test_swapped_operands_take_per_row_scales_only():
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("nvfp4", 3, 16, 64)
    with pytest.raises(ValueError, match="per-row scales only"):
        w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, swap_ab=True, **kw)
    decode = w4a4_gemm._w4a4_decode_autotuned.configs
    grouped = w4a4_gemm._prune_configs(decode, dict(M_BUCKET=16), A_GROUP=16, W_GROUP=16)
    per_row = w4a4_gemm._prune_configs(decode, dict(M_BUCKET=16), A_GROUP=0, W_GROUP=0)
    assert grouped and not any(c.kwargs["SWAP_AB"] for c in grouped)
    assert {c.kwargs["SWAP_AB"] for c in per_row} == {False, True}


def test_decode_configs_split_k_and_reset_their_output():
    decode = w4a4_gemm._w4a4_decode_autotuned
    assert decode.reset_to_zero == ["out_ptr"]
    assert {c.kwargs["BLOCK_M"] for c in decode.configs} == {16} and min(c.kwargs["SPLIT_K"] for c in decode.configs) > 1
    assert {c.kwargs["SPLIT_K"] for c in w4a4_gemm._w4a4_autotuned.configs} == {1}
    with pytest.raises(ValueError, match="split_k"):
        (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 2, 16, 64)
        w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, split_k=0, **kw)


@pytest.mark.parametrize("shape", [(1, 40, 200, True, torch.bfloat16), (3, 40, 128, False, torch.float32),
                                   (4, 24, 264, True, torch.float16), (7, 16, 136, False, torch.bfloat16)],
                         ids=shape_id)
@pytest.mark.parametrize("case", ["int4xint4", "e2m1xe2m1", "int4xe2m1"])
def test_triton_gemv_equals_twin(case, shape):
    """The decode kernel: ragged K (25 and 33 words against 4-word steps), ragged N, every entry written."""
    check_gemm_against_twin(case, shape, gemv=True)


def test_gemv_decodes_every_code_pair():
    """All 16 x 16 code pairs of each element pairing, on the grid, sum to the twin's values."""
    codes = torch.arange(16, dtype=torch.uint8)
    a_codes, w_codes = codes.repeat_interleave(16), codes.repeat(16)  # K = 256: every (a, w) pair once
    pack = lambda c: (c[0::2] | (c[1::2] << 4)).reshape(1, -1)  # noqa: E731
    for a_el in ("int4", "e2m1"):
        for w_el in ("int4", "e2m1"):
            one = torch.ones(1, 1)
            for a_packed, w_packed in ((pack(a_codes), pack(w_codes)), (pack(a_codes), pack(a_codes))):
                got = w4a4_gemm.w4a4_matmul_triton(a_packed, one, w_packed, one, a_element=a_el, w_element=w_el,
                                                   out_dtype=torch.float32, gemv=True)
                want = w4a4_matmul_ref(a_packed, one, w_packed, one, a_element=a_el, w_element=w_el,
                                       out_dtype=torch.float32)
                assert torch.equal(got, want), (a_el, w_el)


@triton.jit
def _prmt_probe(lo_ptr, hi_ptr, selector_ptr, out_ptr):
    from quant_kernels.w4a4_gemv import _prmt

    offs = tl.arange(0, 2)
    tl.store(out_ptr + offs, _prmt(tl.load(lo_ptr + offs), tl.load(hi_ptr + offs), tl.load(selector_ptr + offs),
                                   False))


def test_prmt_twin_replicates_the_sign_where_a_selector_nibble_has_its_msb():
    """PTX prmt's default mode: nibble i's low three bits pick byte i from hi:lo, its msb sets the byte to the
    picked byte's bit 7 repeated (0xFF or 0x00). Bytes 0..7: 00 81 02 83 | 84 05 86 07."""
    as_int32 = lambda v: v - (1 << 32) if v >= 1 << 31 else v  # noqa: E731
    lo, hi = torch.tensor([as_int32(0x83028100)] * 2), torch.tensor([0x07860584] * 2)
    selector = torch.tensor([0xCA19, 0x3210], dtype=torch.int32)
    out = torch.empty(2, dtype=torch.int32)
    _prmt_probe[(1,)](lo, hi, selector, out)
    assert [v & 0xFFFFFFFF for v in out.tolist()] == [0xFF0081FF, 0x83028100]


@triton.jit
def _no_signed_bytes(magnitudes, words, shifted, signs: tl.constexpr, USE_ASM: tl.constexpr):
    return words * 0


@triton.jit
def _no_table_bytes(words, USE_ASM: tl.constexpr):
    return words * 0


@pytest.mark.parametrize("signs", ["1", "0"])
@pytest.mark.parametrize("a_el", ["int4", "e2m1"])
def test_gemv_decodes_e2m1_either_way(a_el, signs, monkeypatch):
    """``PTQ_E2M1_SIGN_BYTES``: E2M1 weights decoded by one table lookup and the packed bytes' own sign bits
    (``_e2m1_signed_bytes``, 1, the default) or by three lookups (``_e2m1_bytes``, 0): every code pair, negative zero
    among them, at one row (plain, prefetching, folded) and at three rows sums to the twin's; the switch takes the
    kernel to its decode and refuses other values."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    assert w4a4_gemv.e2m1_sign_bytes_on()
    monkeypatch.setenv("PTQ_E2M1_SIGN_BYTES", signs)
    codes = torch.arange(16, dtype=torch.uint8)
    pack = lambda c: (c[..., 0::2] | (c[..., 1::2] << 4)).reshape(c.shape[0], -1)  # noqa: E731
    a_codes = codes.repeat_interleave(16).reshape(1, -1)  # K = 256: every (a, w) pair once in each weight row
    gen = torch.Generator().manual_seed(11)
    w_codes = torch.cat([torch.stack([codes.repeat(16), codes.flip(0).repeat(16)]),
                         torch.randint(0, 16, (5, 256), generator=gen, dtype=torch.uint8)])
    a_packed, w_packed = pack(a_codes), pack(w_codes)
    rows = pack(torch.cat([a_codes, torch.randint(0, 16, (2, 256), generator=gen, dtype=torch.uint8)]))
    scales, w_scale = torch.tensor([[0.5], [1.0], [2.0]]), torch.ones(7, 1)
    for a, a_scale, config in ((a_packed, scales[:1], None), (rows, scales, None),
                               (a_packed, scales[:1], triton.Config(dict(BLOCK_N=4, BLOCK_KW=8, PREFETCH=True, FOLD=1,
                                                                           LOOP_STAGES=1), num_warps=1)),
                               (a_packed, scales[:1], triton.Config(dict(BLOCK_N=4, BLOCK_KW=8, PREFETCH=False,
                                                                           FOLD=4, LOOP_STAGES=1), num_warps=1))):
        got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a, a_el, "e2m1"), a_scale, w_packed, w_scale, a_element=a_el,
                                         w_element="e2m1", out_dtype=torch.float32, config=config)
        want = w4a4_matmul_ref(a, a_scale, w_packed, w_scale, a_element=a_el, w_element="e2m1",
                               out_dtype=torch.float32)
        assert torch.equal(got, want), (a.shape, config)
    decode, stub = ("_e2m1_signed_bytes", _no_signed_bytes) if signs == "1" else ("_e2m1_bytes", _no_table_bytes)
    monkeypatch.setattr(w4a4_gemv, decode, stub)  # the interpreter looks the name up at run time
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, a_el, "e2m1"), scales[:1], w_packed, w_scale,
                                     a_element=a_el, w_element="e2m1", out_dtype=torch.float32)
    assert not got.any()  # the switch took the kernel there
    monkeypatch.setenv("PTQ_E2M1_SIGN_BYTES", "2")
    with pytest.raises(ValueError, match="PTQ_E2M1_SIGN_BYTES='2': choose 1"):
        w4a4_gemv.e2m1_sign_bytes_on()


def test_gemv_takes_operands_that_start_mid_word():
    """Packed rows sliced out of a larger buffer (storage offsets not a multiple of 4 bytes)."""
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 3, 16, 64)
    a_view = torch.cat([torch.zeros(1, dtype=torch.uint8), a_packed.flatten()])[1:].view(3, 32)
    assert a_view.storage_offset() == 1 and torch.equal(a_view, a_packed)
    got = w4a4_gemm.w4a4_matmul_triton(a_view, a_scale, w_packed, w_scale, out_dtype=torch.float32, gemv=True, **kw)
    assert_matches_twin(got, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float32, **kw))


@pytest.mark.parametrize("gemv", [False, True], ids=["tensor-core", "decode"])
def test_gemm_refuses_an_output_it_cannot_write(gemv):
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 2, 16, 64)
    for out in (torch.empty(2, 8), torch.empty(2, 16, dtype=torch.float16), torch.empty(16, 2).t()):
        with pytest.raises(ValueError, match=r"out must be a \(2, 16\) torch.float32 tensor with unit column stride"):
            w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float32, out=out,
                                         gemv=gemv, **kw)


def test_gemv_refuses_what_it_cannot_take():
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 9, 16, 64)
    with pytest.raises(ValueError, match="1 to 8 rows"):
        w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, gemv=True, **kw)
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("nvfp4", 2, 16, 64)
    with pytest.raises(ValueError, match="per-row scales"):
        w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, gemv=True, **kw)
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 2, 16, 36)
    with pytest.raises(ValueError, match="multiple of 8"):
        w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, gemv=True, **kw)


def test_dp4a_bytes_pair_each_code_with_its_weight_operand():
    """Hand-written orders: INT4 weights take codes 0, 2, 4, 6 | 1, 3, 5, 7 of a word; E2M1 weights 0..3 | 4..7."""
    from quant_kernels.reference import dp4a_bytes

    codes = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 15, 9, 8, 14, 10, 11, 12, 13]], dtype=torch.uint8)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    levels = [0, 1, 2, 3, 4, 5, 6, 7, -1, -7, -8, -2, -6, -5, -4, -3]  # INT4 codes are two's complement nibbles
    doubled = [0, 1, 2, 3, 4, 6, 8, 12, -12, -1, 0, -8, -2, -3, -4, -6]  # twice the E2M1 values
    for element, v in (("int4", levels), ("e2m1", doubled)):
        interleaved = dp4a_bytes(packed, element, "int4").tolist()[0]
        assert interleaved == [v[0], v[2], v[4], v[6], v[8], v[10], v[12], v[14],
                               v[1], v[3], v[5], v[7], v[9], v[11], v[13], v[15]]
        assert dp4a_bytes(packed, element, "e2m1").tolist()[0] == v[0:4] + v[8:12] + v[4:8] + v[12:16]


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_dp4a_values_undo_dp4a_bytes(element):
    """Every code, in both weight orders, back in K order as its value."""
    from quant_kernels.reference import dp4a_bytes, dp4a_values

    codes = torch.arange(16, dtype=torch.uint8).repeat(3, 2)[:, torch.randperm(32)]
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    want = decode(codes, element_named(element))
    for w_element in ("int4", "e2m1"):
        assert torch.equal(dp4a_values(dp4a_bytes(packed, element, w_element), element, w_element), want)


@pytest.mark.parametrize("case", ["int4xint4", "e2m1xe2m1", "int4xe2m1"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_w4a4_matmul_dp4a_equals_the_packed_product(case, backend):
    """``quant_kernels.w4a4_matmul_dp4a`` (the decode kernel, or its twin) on dp4a bytes equals the product of the
    packed codes they came from, at 1..8 rows."""
    from quant_kernels.reference import dp4a_bytes

    a_el, w_el = case.split("x")
    for m in (1, 5, 8):
        (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", m, 24, 64)
        bias = torch.randn(24)
        want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element=a_el, w_element=w_el, bias=bias,
                               out_dtype=torch.float32)
        got = quant_kernels.w4a4_matmul_dp4a(dp4a_bytes(a_packed, a_el, w_el), a_scale, w_packed, w_scale,
                                             a_element=a_el, w_element=w_el, bias=bias, out_dtype=torch.float32, backend=backend)
        assert_matches_twin(got, want)


@pytest.mark.parametrize("hadamard_block, dtype", [(0, torch.float32), (0, torch.bfloat16), (64, torch.bfloat16)])
@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_activation_kernel_writes_dp4a_bytes(element, hadamard_block, dtype):
    """The activation kernel's dp4a bytes equal the twin's for both weight orders: ragged M, ties, a zero row
    (a fused rotation with bfloat16 rounding: fp32 rotations differ from the twin's in the last bit, see
    test_triton_fused_hadamard_matches_twin)."""
    x = activations(5, 192, element, 0, dtype)
    for w_element in ("int4", "e2m1"):
        got = quant_kernels.quantize_activations(x, element, clip_ratio=0.9, hadamard_block=hadamard_block,
                                                 dp4a_for=w_element, backend="triton")
        want = quantize_activations_ref(x, element, 0, "float", 0.9, hadamard_block, dp4a_for=w_element)
        assert got[0].dtype == torch.int8 and got[0].shape == (5, 192)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("case", ["int4xint4", "e2m1xe2m1", "int4xe2m1", "e2m1xint4"])
def test_gemv_prefetching_equals_twin(case, monkeypatch):
    """The one-row configs that load the next K step's words first: ragged K (25 words against 4-word steps)."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    monkeypatch.setattr(w4a4_gemv, "INTERPRET_CONFIG", dict(w4a4_gemv.INTERPRET_CONFIG, PREFETCH=True))
    a_el, w_el = case.split("x")
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 1, 40, 200)
    bias = torch.randn(40)
    want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element=a_el, w_element=w_el, bias=bias,
                           out_dtype=torch.float32)
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, a_el, w_el), a_scale, w_packed, w_scale, a_element=a_el,
                                     w_element=w_el, bias=bias, out_dtype=torch.float32)
    assert_matches_twin(got, want)


@pytest.mark.parametrize("prefetch, fold, stages", [(False, 1, 1), (True, 1, 1), (False, 4, 1), (False, 1, 3)])
def test_gemv_with_a_fixed_config_equals_twin(prefetch, fold, stages):
    """``w4a4_gemv_triton(..., config=...)`` (the profiling driver's way in) runs that config, ragged N and K;
    with FOLD the accumulator sums four words a slot; LOOP_STAGES > 1 is a software-pipelined loop on a GPU."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 1, 37, 200)
    want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element="int4", w_element="e2m1",
                           out_dtype=torch.float32)
    config = triton.Config(dict(BLOCK_N=16, BLOCK_KW=8, PREFETCH=prefetch, FOLD=fold, LOOP_STAGES=stages),
                           num_warps=1, num_stages=stages)
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, "int4", "e2m1"), a_scale, w_packed, w_scale,
                                     a_element="int4", w_element="e2m1", out_dtype=torch.float32, config=config)
    assert_matches_twin(got, want)


def test_programmatic_dependent_launch_is_for_compiled_kernels_on_a_gpu():
    """The interpreter and the CPU launch the decode kernels plainly (their gdc calls are compiled out)."""
    from quant_kernels import pdl

    for kernel in pdl.PDL_KERNELS:
        assert not pdl.uses_pdl(torch.device("cpu"), kernel)
    assert pdl.pdl_flags(torch.device("cpu"), "gemv") == {"USE_GDC": False}


@pytest.mark.parametrize("mode, kernels", [("all", {"act_quant", "gemv", "kv_write", "attention"}),
                                           ("gemv", {"gemv"}), ("off", set()),
                                           ("attention, gemv", {"attention", "gemv"})])
def test_ptq_pdl_chooses_the_kernels_launched_as_pdl(monkeypatch, mode, kernels):
    """``PTQ_PDL``: all, the decode product only, none, or the kernels named in a comma-separated list."""
    from quant_kernels import pdl

    monkeypatch.setattr(pdl, "INTERPRET", False)
    monkeypatch.setattr(pdl, "_pdl_capable", lambda index: True)
    monkeypatch.setenv("PTQ_PDL", mode)
    cuda = torch.device("cuda", 0)
    assert {kernel for kernel in pdl.PDL_KERNELS if pdl.uses_pdl(cuda, kernel)} == kernels
    assert pdl.pdl_flags(cuda, "gemv") == ({"USE_GDC": True, "launch_pdl": True} if kernels else {"USE_GDC": False})


def test_ptq_pdl_refuses_an_unknown_mode_or_kernel(monkeypatch):
    from quant_kernels import pdl

    monkeypatch.setenv("PTQ_PDL", "yes")
    with pytest.raises(ValueError, match=r"PTQ_PDL='yes': choose one of all, gemv, off or a comma-separated list "
                                         r"of act_quant, gemv, kv_write, attention"):
        pdl.uses_pdl(torch.device("cpu"), "gemv")
    monkeypatch.setenv("PTQ_PDL", "gemv,fpx")
    with pytest.raises(ValueError, match=r"PTQ_PDL='gemv,fpx'"):
        pdl.uses_pdl(torch.device("cpu"), "gemv")
    monkeypatch.delenv("PTQ_PDL")
    with pytest.raises(ValueError, match=r"unknown kernel 'gemm': choose one of act_quant"):
        pdl.uses_pdl(torch.device("cpu"), "gemm")


def test_gemv_refuses_a_folded_config_for_several_rows():
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 2, 16, 64)
    config = triton.Config(dict(BLOCK_N=16, BLOCK_KW=8, PREFETCH=False, FOLD=4), num_warps=1, num_stages=1)
    with pytest.raises(ValueError, match="a folded accumulator \\(FOLD=4\\) is for one row, got M=2"):
        w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale,
                                   a_element="int4", w_element="int4", config=config)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_w4a4_matmul_dp4a_takes_packed_codes_of_the_weight_s_element(backend):
    """Both the decode kernel and its twin take packed activation codes against weights of their element, INT4 or
    E2M1 (the tensor-core kernel's A_PACKED form), as they take their dp4a bytes; a mixed pair is refused by name."""
    from quant_kernels.reference import dp4a_bytes

    for case in ("int4xint4", "e2m1xe2m1"):
        (a_packed, a_scale), (w_packed, w_scale), spec = quantized_operands(case, 1, 16, 64)
        kw = dict(a_element=spec["a_element"], w_element=spec["w_element"], backend=backend, out_dtype=torch.float32)
        assert torch.equal(quant_kernels.w4a4_matmul_dp4a(a_packed, a_scale, w_packed, w_scale, **kw),
                           quant_kernels.w4a4_matmul_dp4a(dp4a_bytes(a_packed, kw["a_element"], kw["w_element"]),
                                                          a_scale, w_packed, w_scale, **kw))
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xe2m1", 1, 16, 64)
    with pytest.raises(ValueError, match="packed activation codes \\(uint8, two a byte\\) take INT4 or E2M1"):
        quant_kernels.w4a4_matmul_dp4a(a_packed, a_scale, w_packed, w_scale, **{**kw, "a_element": "int4"})


def test_gemv_refuses_codes_that_are_not_bytes():
    from quant_kernels import w4a4_gemv

    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("int4xint4", 1, 16, 64)
    with pytest.raises(ValueError, match="a_bytes must be a 2-D int8 tensor of dp4a activation bytes"):
        w4a4_gemv.w4a4_gemv_triton(a_packed.to(torch.int16), a_scale, w_packed, w_scale, a_element="int4",
                                   w_element="int4")
    with pytest.raises(ValueError, match="a and w disagree on K"):
        w4a4_gemv.w4a4_gemv_triton(torch.zeros(1, 32, dtype=torch.int8), a_scale, w_packed, w_scale,
                                   a_element="int4", w_element="int4")
    with pytest.raises(ValueError, match="one byte per code: K must be even, got K=63"):
        w4a4_gemv.w4a4_gemv_triton(torch.zeros(1, 63, dtype=torch.int8), a_scale, w_packed, w_scale,
                                   a_element="int4", w_element="int4")


def test_dp4a_bytes_refuse_what_the_decode_kernel_cannot_pair():
    from quant_kernels.reference import dp4a_bytes

    with pytest.raises(ValueError, match="words of 8: K must be a multiple of 8, got K=36"):
        dp4a_bytes(torch.zeros(2, 18, dtype=torch.uint8), "int4", "int4")
    with pytest.raises(ValueError, match="unknown 4-bit element 'e3m2'"):
        dp4a_bytes(torch.zeros(2, 32, dtype=torch.uint8), "int4", "e3m2")


@pytest.mark.parametrize("kernel", ["w4a4_gemv", "fpx_row"])
def test_decode_configs_fit_their_registers_at_every_row_count(kernel):
    """The W4A4 decode kernel's and the FPx row kernel's configs, pruned per row count; prefetching at one row."""
    from quant_kernels import fpx_gemm, w4a4_gemv

    configs = {"w4a4_gemv": w4a4_gemv._gemv_autotuned, "fpx_row": fpx_gemm._fpx_row_autotuned}[kernel].configs
    for block_m in (1, 2, 4, 8):
        kept = w4a4_gemv.prune_decode_configs(configs, {"BLOCK_M": block_m})
        assert kept and all(block_m * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_KW"] / (32 * c.num_warps)
                            <= w4a4_gemv.MAX_ACC_PER_THREAD for c in kept)
        assert any(c.kwargs["PREFETCH"] for c in kept) == (block_m == 1)
        assert all(c.kwargs.get("FOLD", 1) == 1 for c in kept) or block_m == 1
        assert any(c.kwargs["LOOP_STAGES"] > 1 for c in kept)  # software-pipelined loops at every row count
        assert all(c.kwargs["LOOP_STAGES"] in (1, c.num_stages) and not (c.kwargs["LOOP_STAGES"] > 1
                                                                          and c.kwargs["PREFETCH"]) for c in kept)


def test_the_fpx_row_kernel_s_tensor_core_form_tunes_no_prefetching_twins():
    """The row kernel's tensor-core form and its interleaved high plane have no prefetching path: their tuner keeps
    the others only."""
    from quant_kernels import fpx_gemm

    configs = fpx_gemm._fpx_row_autotuned.configs
    common = {"BLOCK_M": 1, "KW": 512, "x_ptr": torch.zeros(1)}  # (a CPU tensor: no pinned config)
    plain = fpx_gemm._prune_row_configs(configs, {**common, "MMA": False, "INTERLEAVED": False})
    mma = fpx_gemm._prune_row_configs(configs, {**common, "MMA": True, "INTERLEAVED": False})
    assert any(c.kwargs["PREFETCH"] for c in plain) and mma
    assert mma == [c for c in plain if not c.kwargs["PREFETCH"]]
    interleaved = fpx_gemm._prune_row_configs(configs, {**common, "MMA": False, "INTERLEAVED": True})
    assert interleaved == mma


# ---------------------------------------------------------------------------
# The FP8 path: codes as E4M3 bytes, a row-wise scaled FP8 GEMM
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_unpack_fp8_holds_every_code_value(element):
    packed = torch.arange(256, dtype=torch.uint8).reshape(8, 32)  # every pair of codes
    want = code_values(element_named(element))[unpack(packed).long()]
    ref = quant_kernels.unpack_fp8(packed, element, backend="torch")
    assert ref.dtype == torch.float8_e4m3fn and torch.equal(ref.float(), want.float())
    got = quant_kernels.unpack_fp8(packed[:, 1:31], element, backend="triton")  # ragged: 30 bytes, 60 codes
    assert torch.equal(got.view(torch.uint8), ref[:, 2:62].view(torch.uint8))


@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "e2m1-tok"])
def test_triton_fp8_codes_equal_twin(case):
    (element, group, kind, clip), _ = ACT_CASES[case]
    x = activations(17, 192, element, group, torch.bfloat16)
    want_codes, want_scale = quant_kernels.quantize_activations(x, element, group, kind, clip, fp8_codes=True,
                                                                backend="torch")
    packed, _ = quantize_activations_ref(x, element, group, kind, clip)
    assert torch.equal(want_codes.float(), dequantize(packed, torch.ones(17, 1), element))
    codes, scale = quant_kernels.quantize_activations(x, element, group, kind, clip, fp8_codes=True, backend="triton")
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == (17, 192)
    assert torch.equal(codes.view(torch.uint8), want_codes.view(torch.uint8)) and torch.equal(scale, want_scale)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", ["int4xint4", "int4xe2m1", "e2m1xe2m1"])
def test_fp8_path_equals_the_packed_path(case, backend):
    """Same quantized product in bfloat16 (the row-wise FP8 GEMM's output and bias dtype; a bfloat16
    model's bias is bfloat16 already): within two roundings, the product's and the bias sum's."""
    a_el, _, _, w_el, _, _ = GEMM_CASES[case]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(33, 128, generator=gen, dtype=torch.bfloat16)
    bias = torch.randn(48, generator=gen).to(torch.bfloat16).float()
    w_packed, w_scale = quantize_activations_ref(torch.randn(48, 128, generator=gen) * 0.05, w_el, 0, "float")
    kw = dict(a_element=a_el, w_element=w_el, bias=bias, out_dtype=torch.bfloat16, backend=backend)
    out = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="fp8", **kw)
    a_packed, a_scale = quantize_activations_ref(x, a_el, 0, "float")
    want = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element=a_el, w_element=w_el, bias=bias,
                           out_dtype=torch.float32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, rtol=2.0**-7, atol=1e-5 * want.abs().max().item())
    packed_path = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="packed", **kw)
    torch.testing.assert_close(out.float(), packed_path.float(), rtol=2.0**-7, atol=1e-5 * want.abs().max().item())


def test_fp8_path_refusals():
    from quant_kernels.fp8_gemm import w4a4_matmul_fp8

    codes = torch.zeros(4, 24, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="the FP8 GEMM needs K and N multiples of 16, got K=24, N=4"):
        w4a4_matmul_fp8(codes, torch.ones(4, 1), codes, torch.ones(4, 1))
    with pytest.raises(ValueError, match="packed codes must be a 2-D uint8 tensor, got torch.int32"):
        quant_kernels.unpack_fp8(torch.zeros(4, 8, dtype=torch.int32), "int4", backend="triton")
    with pytest.raises(ValueError, match="unknown 4-bit element 'int8'"):
        quant_kernels.unpack_fp8(torch.zeros(4, 8, dtype=torch.uint8), "int8", backend="triton")


def test_w8a8_matmul_refuses_unquantized_activations():
    from quant_kernels.int8_gemm import w8a8_matmul

    with pytest.raises(ValueError, match="w8a8_matmul takes int8 activations .* got torch.float32"):
        w8a8_matmul(torch.zeros(2, 16), torch.ones(2, 1), torch.zeros(4, 16, dtype=torch.uint8), torch.ones(4, 1))


def int8_operands(m: int, n: int, k: int, w_element: str, seed: int = 3) -> tuple:
    """bfloat16 activations (M, K) and per-channel weights: packed INT4 codes or (N, K) INT8 two's complement
    bytes (as ``export`` writes them), with their scales and the weights' levels (N, K) as float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    w = torch.randn(n, k, generator=g) * 0.02
    if w_element == "int4":
        w_codes, w_scale = quantize_activations_ref(w, "int4", 0, "float")
        levels = decode(unpack(w_codes), element_named("int4"))
    else:
        quantizer = Quantizer(QuantSpec("int", 8, granularity="channel"))
        params = quantizer.fit(w)
        levels = quantizer.levels(w, params)
        w_codes, w_scale = levels.to(torch.int8).view(torch.uint8), params.scale.reshape(-1, 1)
    return x, w_codes, w_scale, levels.double()


@pytest.mark.parametrize("clip_ratio", [1.0, 0.9])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("w_element", ["int4", "int8"])
def test_int8_activation_kernel_writes_the_levels_as_dp4a_bytes(w_element, dtype, clip_ratio):
    """INT8 per-token levels (clipped ones reaching -128) as the decode kernel's bytes for INT4 or INT8 weights:
    the kernel equals the twin, and the twin's levels and scales are ``quantize_rows_int8``'s (W8A8's)."""
    from quant_kernels.int8_gemm import quantize_rows_int8
    from quant_kernels.reference import dp4a_values

    x = activations(5, 192, "int4", 0, dtype) * 3
    levels, scale = quantize_rows_int8(x, clip_ratio)
    want = quantize_activations_ref(x, "int8", 0, "float", clip_ratio, dp4a_for=w_element)
    assert torch.equal(dp4a_values(want[0], "int8", w_element), levels.float()) and torch.equal(want[1], scale)
    got = quant_kernels.quantize_activations(x, "int8", clip_ratio=clip_ratio, dp4a_for=w_element, backend="triton")
    assert got[0].dtype == torch.int8 and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert levels.abs().max() >= 127 and (clip_ratio == 1.0 or levels.min() == -128)


@pytest.mark.parametrize("prefetch, fold", [(False, 1), (True, 1), (False, 4)])
@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("w_element", ["int4", "int8"])
def test_int8_activations_on_the_decode_kernel_equal_the_exact_product(w_element, m, prefetch, fold, monkeypatch):
    """W4A8 and W8A8 on the decode kernel (ragged N, K of 25 words against 4-word steps; the one-row configs
    that prefetch or fold) and its twin: the exact integer product times the scales."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.int8_gemm import quantize_rows_int8
    from quant_kernels.reference import dp4a_order, w4a4_gemv_ref

    if m > 1 and (prefetch or fold > 1):
        pytest.skip("prefetching and folded accumulators are one-row configs")
    monkeypatch.setattr(w4a4_gemv, "INTERPRET_CONFIG", dict(w4a4_gemv.INTERPRET_CONFIG, PREFETCH=prefetch, FOLD=fold))
    x, w_codes, w_scale, w_levels = int8_operands(m, 37, 200, w_element)
    a, a_scale = quantize_rows_int8(x)
    bias = torch.randn(37)
    exact = (a.double() @ w_levels.t()) * a_scale.double() * w_scale.double().reshape(1, -1) + bias.double()
    kw = dict(a_element="int8", w_element=w_element, bias=bias, out_dtype=torch.float32)
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_order(a, w_element), a_scale, w_codes, w_scale, **kw)
    twin = w4a4_gemv_ref(dp4a_order(a, w_element), a_scale, w_codes, w_scale, **kw)
    for out in (got, twin):
        torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-6)
    linear = {"int4": quant_kernels.w4a8_linear, "int8": quant_kernels.w8a8_linear}[w_element]
    torch.testing.assert_close(linear(x, w_codes, w_scale, bias=bias, backend="torch").double(), exact, rtol=1e-6,
                               atol=1e-6)


def test_int8_activations_on_the_int8_prefill_kernel_equal_the_exact_product():
    """W4A8 above the decode kernels' rows (70): INT8 levels as INT4 weights' dp4a bytes on the tensor-core kernel
    tiled over M (the route ``w4a8_linear`` takes on a GPU at any number of rows), the exact product."""
    from quant_kernels.int8_gemm import quantize_rows_int8
    from quant_kernels.reference import dp4a_order

    x, w_codes, w_scale, w_levels = int8_operands(70, 37, 200, "int4")
    a, a_scale = quantize_rows_int8(x)
    bias = torch.randn(37)
    exact = (a.double() @ w_levels.t()) * a_scale.double() * w_scale.double().reshape(1, -1) + bias.double()
    got = quant_kernels.w4a4_matmul_dp4a(dp4a_order(a, "int4"), a_scale, w_codes, w_scale, a_element="int8",
                                         w_element="int4", bias=bias, out_dtype=torch.float32, backend="triton")
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-6)


def test_int8_activations_and_weights_refuse_what_the_kernels_cannot_take():
    x, w_codes, w_scale, _ = int8_operands(2, 16, 64, "int8")
    with pytest.raises(ValueError, match="INT8 activations are written as the decode kernel's dp4a bytes .* "
                                         "got dp4a_for=None"):
        quant_kernels.quantize_activations(x, "int8", backend="triton")
    with pytest.raises(ValueError, match="got dp4a_for='e2m1'"):
        quantize_activations_ref(x, "int8", dp4a_for="e2m1")
    a_bytes = torch.zeros(2, 64, dtype=torch.int8)
    with pytest.raises(ValueError, match="INT8 activations with INT4 or INT8 weights .* got int8 activations with "
                                         "e2m1 weights"):
        quant_kernels.w4a4_matmul_dp4a(a_bytes, torch.ones(2, 1), w_codes[:, :32], w_scale, a_element="int8",
                                       w_element="e2m1", backend="triton")
    with pytest.raises(ValueError, match="int8 weights for K=64 must be a 2-D byte tensor with 64 bytes a row, got "
                                         "torch.uint8 with shape \\(16, 32\\)"):
        quant_kernels.w4a4_matmul_dp4a(a_bytes, torch.ones(2, 1), w_codes[:, :32], w_scale, a_element="int8",
                                       w_element="int8", backend="triton")
    with pytest.raises(ValueError, match="w_scale must be a float tensor of shape \\(16, 1\\) \\(one scale a row"):
        quant_kernels.w4a4_matmul_dp4a(a_bytes, torch.ones(2, 1), w_codes, w_scale[:8], a_element="int8",
                                       w_element="int8", backend="torch")


def test_w4a4_linear_path_choice_and_refusals():
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("nvfp4", 4, 32, 64)
    x = torch.randn(300, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="unknown path"):
        quant_kernels.w4a4_linear(x, w_packed, w_scale, a_element="e2m1", w_element="e2m1", path="int4")
    with pytest.raises(ValueError, match="the int8 path takes INT4 or E2M1 weights, per-row float scales "
                                         "\\(groups 0\\) and K a multiple of 8, got e2m1 weights, groups 16/16, "
                                         "e4m3 scales, K=64"):
        quant_kernels.w4a4_linear(x, w_packed, w_scale, a_element="e2m1", w_element="e2m1", a_group=16, w_group=16,
                                  scale_kind="e4m3", out_dtype=torch.bfloat16, path="int8")
    with pytest.raises(ValueError, match="group multipliers must be \\(rows, groups\\) with the groups dividing K "
                                         "into even groups, got \\(4, 3\\) for 4 rows of K=64"):
        quant_kernels.unpack_fp8(torch.zeros(4, 32, dtype=torch.uint8), "e2m1", mult=torch.ones(4, 3), backend="triton")
    with pytest.raises(ValueError, match="fp8 path takes per-row scales"):
        quant_kernels.w4a4_linear(x, w_packed, w_scale, a_element="e2m1", w_element="e2m1", a_group=16, w_group=16,
                                  scale_kind="e4m3", out_dtype=torch.bfloat16, path="fp8")
    w4, s4 = quantize_activations_ref(torch.randn(32, 64), "int4", 0, "float")
    with pytest.raises(ValueError, match="bfloat16 output"):
        quant_kernels.w4a4_linear(x, w4, s4, a_element="int4", w_element="int4", out_dtype=torch.float16, path="fp8")
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        from quant_kernels.fp8_gemm import w4a4_matmul_fp8

        w4a4_matmul_fp8(x, s4, w4, s4)
    # Auto on the CPU twin: the packed path, which gives the exact fp32 product.
    out = quant_kernels.w4a4_linear(x, w4, s4, a_element="int4", w_element="int4", out_dtype=torch.float32)
    a4, as4 = quantize_activations_ref(x, "int4", 0, "float")
    assert torch.equal(out, w4a4_matmul_ref(a4, as4, w4, s4, a_element="int4", w_element="int4",
                                            out_dtype=torch.float32))


def _mxfp4_rows(spans: list[int], k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed E2M1 codes (rows, K // 2) and power-of-two scales per 32 (rows, K // 32): row r's largest group scale
    2^base, its smallest 2^(base - spans[r]) (its codes begin with 0.5, the finest value), the others between."""
    rows, groups = len(spans), k // 32
    packed = torch.randint(0, 256, (rows, k // 2), generator=gen, dtype=torch.uint8)
    exponents = torch.empty(rows, groups)
    for r, span in enumerate(spans):
        base = -127 + span if r == 0 else int(torch.randint(-20, 20, (1,), generator=gen))  # row 0 reaches 2^-127
        exponents[r] = base - torch.randint(0, span + 1, (groups,), generator=gen)
        exponents[r, 0], exponents[r, 1] = base, base - span
        packed[r, 16:18] = 0x11  # 0.5, 0.5 in the smallest group
    return packed, torch.pow(2.0, exponents)


def test_fold_multipliers_fold_mxfp4_scales_into_e4m3_values():
    """MXFP4's power-of-two group scales fold into E4M3 values times a scale per row: exact while a row's groups
    span at most 2^14 (the E2M1 value 0.5 of a group 2^14 below the largest is E4M3's smallest subnormal, 2^-9),
    E8M0's 2^-127 included; beyond that the smallest group's values round, by at most 2^-16 of the row's largest
    scale. The Triton twin writes the same bytes (ragged rows and K)."""
    from quant_kernels.fp8_gemm import FOLD_SHIFT, fold_multipliers

    spans = [2, 0, 3, 13, 14, 15, 20]
    packed, scale = _mxfp4_rows(spans, 224, torch.Generator().manual_seed(11))
    mult, row_scale = fold_multipliers(scale)
    assert torch.equal(mult * row_scale, scale) and torch.equal(mult.amax(dim=1), torch.full((7,), 2.0**FOLD_SHIFT))
    assert row_scale[0].item() == 2.0**-125 * 2.0**-FOLD_SHIFT  # a subnormal fp32 scale, exact
    folded = quant_kernels.unpack_fp8(packed, "e2m1", mult=mult, backend="torch")
    values, want = folded.float() * row_scale, dequantize(packed, scale, "e2m1", 32)
    for r, span in enumerate(spans):
        if span <= 14:
            assert torch.equal(values[r], want[r]), span
        else:
            error = (values[r] - want[r]).abs().max().item()
            assert 0 < error <= 2.0**-16 * scale[r].max().item(), span
    got = quant_kernels.unpack_fp8(packed, "e2m1", mult=mult, backend="triton")
    assert torch.equal(got.view(torch.uint8), folded.view(torch.uint8))
    assert torch.equal(fold_multipliers(torch.zeros(2, 3))[1], torch.ones(2, 1))  # zero rows keep scale 1


@pytest.mark.parametrize("encoded", [False, True])
def test_fp8_path_takes_mxfp4_folded(encoded):
    """MXFP4 W4A4 on the FP8 path (both sides' group scales folded, ``fp8_gemm``): the exact product within bfloat16
    rounding, with the bias and the residual; the Triton twin's folds give the same output; E8M0 weight scales as a
    checkpoint encodes them (uint8) give the same as their fp32 values."""
    gen = torch.Generator().manual_seed(17)
    x = (torch.randn(70, 256, generator=gen) * 3).to(torch.bfloat16)
    w_packed, w_scale = quantize_activations_ref(torch.randn(48, 256, generator=gen) * 0.05, "e2m1", 32, "e8m0")
    bias = torch.randn(48, generator=gen).to(torch.bfloat16).float()  # the FP8 GEMM adds a bfloat16 bias
    residual = torch.randn(70, 48, generator=gen).to(torch.bfloat16)
    scales = (torch.log2(w_scale) + 127).to(torch.uint8) if encoded else w_scale
    kw = dict(a_element="e2m1", w_element="e2m1", a_group=32, w_group=32, scale_kind="e8m0", bias=bias,
              out_dtype=torch.bfloat16, path="fp8")
    got = quant_kernels.w4a4_linear(x, w_packed, scales, backend="torch", **kw)
    a_packed, a_scale = quantize_activations_ref(x, "e2m1", 32, "e8m0")
    exact = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element="e2m1", w_element="e2m1", a_group=32,
                            w_group=32, bias=bias, out_dtype=torch.float32)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), exact, rtol=2.0**-7, atol=1e-5 * exact.abs().max().item())
    assert torch.equal(quant_kernels.w4a4_linear(x, w_packed, scales, backend="triton", **kw), got)
    assert torch.equal(quant_kernels.w4a4_linear(x, w_packed, scales, backend="torch", residual=residual, **kw),
                       residual + got)


def test_w4a4_linear_picks_its_path_by_element_and_rows(monkeypatch):
    """Auto on the Triton backend, bfloat16 out: INT4 weights take the int8 path from INT8_MIN_ROWS (the first row
    the tensor-core decode kernel leaves) to INT8_MAX_ROWS rows and the FP8 path above; E2M1 weights the int8 path
    up to E2M1_INT8_MAX_ROWS, the e4m3 path (the prefill launch on E4M3 planes, one dot a step) up to
    E2M1_E4M3_MAX_ROWS, then the FP8 path; ``default_path`` names the same paths (what the benchmarks time as the
    default)."""
    from quant_kernels.w4a4_gemv import TC_MAX_M
    from quant_kernels import fp8_gemm, w4a4_gemv

    taken, named = [], []
    monkeypatch.delenv("PTQ_E4M3_PATH", raising=False)
    monkeypatch.setattr(quant_kernels, "w4a4_matmul_dp4a", lambda *a, **k: taken.append("int8"))
    monkeypatch.setattr(w4a4_gemv, "w4a4_tc_prefill_triton", lambda a, *rest, **k: taken.append(
        "int8" if a.dtype == torch.int8 else ("e4m3", a.dtype, k["fp8_step_sums"])) or torch.zeros(1))
    monkeypatch.setattr(fp8_gemm, "w4a4_matmul_fp8", lambda *a, **k: taken.append("fp8") or torch.zeros(1))
    int8_most, e4m3_most = quant_kernels.E2M1_INT8_MAX_ROWS, quant_kernels.E2M1_E4M3_MAX_ROWS
    assert quant_kernels.INT8_MIN_ROWS == TC_MAX_M + 1
    first = quant_kernels.INT8_MIN_ROWS
    for element, rows in (("int4", (first, quant_kernels.FP8_MIN_ROWS, quant_kernels.INT8_MAX_ROWS,
                                    quant_kernels.INT8_MAX_ROWS + 1)),
                          ("e2m1", (first, int8_most, int8_most + 1, e4m3_most, e4m3_most + 1))):
        w, s = quantize_activations_ref(torch.randn(32, 64), element, 0, "float")
        for m in rows:
            quant_kernels.w4a4_linear(torch.randn(m, 64, dtype=torch.bfloat16), w, s, a_element=element,
                                      w_element=element, out_dtype=torch.bfloat16, backend="triton")
            named.append(quant_kernels.default_path(m, 32, 64, element, element))
    e4m3 = ("e4m3", torch.float8_e4m3fn, False)
    assert taken == ["int8", "int8", "int8", "fp8", "int8", "int8", e4m3, e4m3, "fp8"]
    assert named == ["int8", "int8", "int8", "fp8", "int8", "int8", "e4m3", "e4m3", "fp8"]
    assert [quant_kernels.default_path(first - 1, 32, 64, element, element) for element in ("int4", "e2m1")] == [
        "packed"] * 2  # the decode kernels' rows (``w4a4_linear`` hands them on from the packed path)
    assert quant_kernels.default_path(quant_kernels.FP8_MIN_ROWS, 32, 64, "int4", "int4", on_triton=False) == "packed"
    for device, paths in ((quant_kernels.UNBOUNDED_ROWS_DEVICES[0], ("int8", "e4m3")), ("NVIDIA H200", ("fp8",) * 2),
                          (None, ("fp8",) * 2)):
        assert tuple(quant_kernels.default_path(8192, 32, 64, element, element, device=device)
                     for element in ("int4", "e2m1")) == paths, device


def test_default_path_in_float16_keeps_the_tensor_core_paths(monkeypatch):
    """The FP8 path writes bfloat16 only; in float16 (and float32) INT4 weights keep the int8 path and E2M1 weights
    the int8 / e4m3 paths at every size from INT8_MIN_ROWS, where the FP8 path would have taken them in bfloat16;
    scales in groups and K not a multiple of 8 take the dequantized path in float16 and the packed one in float32,
    as do INT8 activations with E2M1 weights and FPx elements the int8 kernel does not unpack (which take the FP8
    path in bfloat16)."""
    monkeypatch.delenv("PTQ_E4M3_PATH", raising=False)
    first, h200 = quant_kernels.INT8_MIN_ROWS, "NVIDIA H200"
    for dtype in (torch.float16, torch.float32):
        path = functools.partial(quant_kernels.default_path, out_dtype=dtype, device=h200)
        assert [path(m, 32, 64, "int4", "int4") for m in (first, 8192)] == ["int8", "int8"]
        assert [path(m, 32, 64, "e2m1", "e2m1") for m in (first, quant_kernels.E2M1_INT8_MAX_ROWS + 1, 8192)] == [
            "int8", "e4m3", "e4m3"]
        assert path(8192, 32, 64, "e2m1", "int8") == path(8192, 32, 64, "e3m0", "e3m0") == "packed"
        assert path(first, 32, 64, "int4", "int4", a_group=16, w_group=16) == path(first, 32, 60, "int4", "int4") == \
            ("dequantized" if dtype == torch.float16 else "packed")
    bf16 = functools.partial(quant_kernels.default_path, device=h200)
    assert (bf16(8192, 32, 64, "int4", "int4"), bf16(8192, 32, 64, "e3m0", "e3m0")) == ("fp8", "fp8")
    assert bf16(8192, 30, 64, "int4", "int4") == "int8" and bf16(8192, 30, 64, "e2m1", "e2m1") == "e4m3"  # no fp8 fit


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("a_element", ["int4", "e2m1"])
@pytest.mark.parametrize("w_element", ["int4", "e2m1"])
def test_int8_path_equals_the_exact_product_above_the_decode_rows(w_element, a_element, backend):
    """INT4 and E2M1 weights on the int8 path at 70 rows (above TC_MAX_M: the tensor-core kernel tiled over M on the
    Triton backend, E2M1 as twice its values) with a bias, and with a residual: the exact integer sums scaled in
    another order than the twin's (within an ulp of float16), the residual added to the rounded product; with a
    norm tail, the next RMSNorm's codes of the product the kernel returns."""
    from quant_kernels.reference import NormTail, norm_tail_ref

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(70, 128, generator=gen, dtype=torch.float16)
    bias = torch.randn(48, generator=gen)
    residual = torch.randn(70, 48, generator=gen).to(torch.float16)
    w_packed, w_scale = quantize_activations_ref(torch.randn(48, 128, generator=gen) * 0.05, w_element, 0, "float")
    kw = dict(a_element=a_element, w_element=w_element, bias=bias, out_dtype=torch.float16, backend=backend)
    product = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="int8", **kw)
    a_packed, a_scale = quantize_activations_ref(x, a_element, 0, "float")
    assert_matches_twin(product, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, a_element=a_element,
                                                 w_element=w_element, bias=bias, out_dtype=torch.float32))
    out = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="int8", residual=residual, **kw)
    assert torch.equal(out, residual + product)
    tail = NormTail(weight=(torch.rand(48, generator=gen) + 0.5).to(torch.float16), eps=1e-5, element="int4",
                    clip_ratio=1.0, dp4a_for="int4")
    got = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="int8", norm_tail=tail, **kw)
    want = norm_tail_ref(product, tail)
    assert torch.equal(got[0], product) and torch.equal(got[1], want[0]) and torch.equal(got[2], want[1])


@pytest.mark.parametrize("m", [12, 70])
@pytest.mark.parametrize("a_element", ["int4", "e2m1"])
@pytest.mark.parametrize("w_element", ["int4", "e2m1"])
def test_e4m3_path_equals_the_int8_path(w_element, a_element, m):
    """The e4m3 path (E4M3 planes, the tensor-core kernel's one-dot FP8 form: the decode launch at 12 rows, the
    prefill one at 70) gives the int8 path's product bit for bit, with a bias and a residual, on the Triton backend
    and the reference one; INT8 activations are refused."""
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, 128, generator=gen, dtype=torch.bfloat16)
    bias = torch.randn(48, generator=gen)
    residual = torch.randn(m, 48, generator=gen).to(torch.bfloat16)
    w_packed, w_scale = quantize_activations_ref(torch.randn(48, 128, generator=gen) * 0.05, w_element, 0, "float")
    for backend in ("triton", "torch"):
        kw = dict(a_element=a_element, w_element=w_element, bias=bias, out_dtype=torch.bfloat16, backend=backend,
                  residual=residual)
        want = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="int8", **kw)
        assert torch.equal(quant_kernels.w4a4_linear(x, w_packed, w_scale, path="e4m3", **kw), want)
    with pytest.raises(ValueError, match="the e4m3 path takes INT4 or E2M1 weights and activations, .* got "
                                         f"{w_element} weights, int8 activations"):
        quant_kernels.w4a4_linear(x, w_packed, w_scale, path="e4m3", a_element="int8", w_element=w_element)


def test_prefill_tiles_of_256_rows_are_the_one_dot_form_s_own():
    """The autotuner's prefill candidates: the one-dot FP8 form (E4M3 planes, sums in wgmma) keeps every tile, 256
    activation rows included; the int8 and step-sum forms drop TC_PREFILL_ONE_DOT_CONFIGS' tiles."""
    from quant_kernels import w4a4_gemv

    configs = w4a4_gemv._tc_prefill_autotuned.configs
    assert len(configs) == len(w4a4_gemv.TC_PREFILL_CONFIGS) + len(w4a4_gemv.TC_PREFILL_ONE_DOT_CONFIGS)
    one_dot = dict(A_E4M3=True, FP8_STEP_SUMS=False)
    assert w4a4_gemv.prune_prefill_configs(configs, one_dot) == configs
    for form in (dict(A_E4M3=False, FP8_STEP_SUMS=True), dict(A_E4M3=True, FP8_STEP_SUMS=True)):
        kept = w4a4_gemv.prune_prefill_configs(configs, form)
        assert len(kept) == len(w4a4_gemv.TC_PREFILL_CONFIGS) and all(c.kwargs["BLOCK_M"] <= 128 for c in kept)


def test_auto_path_takes_e4m3_with_its_switch(monkeypatch):
    """``PTQ_E4M3_PATH=1``: the auto path's int8 and FP8 choices (from INT8_MIN_ROWS rows) become the e4m3 path, the
    prefill launch on E4M3 planes with the sums in wgmma; a value other than 0 or 1 is refused by name."""
    from quant_kernels import w4a4_gemv

    calls = []
    monkeypatch.setattr(w4a4_gemv, "w4a4_tc_prefill_triton",
                        lambda a, *rest, **k: calls.append((a.dtype, k.get("fp8_step_sums"))) or torch.zeros(1))
    monkeypatch.setattr(quant_kernels, "w4a4_matmul_dp4a", lambda *a, **k: calls.append("dp4a"))
    w, s = quantize_activations_ref(torch.randn(32, 64), "int4", 0, "float")
    kw = dict(a_element="int4", w_element="int4", out_dtype=torch.bfloat16, backend="triton")
    monkeypatch.setenv("PTQ_E4M3_PATH", "1")
    for m in (quant_kernels.FP8_MIN_ROWS, quant_kernels.INT8_MAX_ROWS + 1):
        quant_kernels.w4a4_linear(torch.randn(m, 64, dtype=torch.bfloat16), w, s, **kw)
    assert calls == [(torch.float8_e4m3fn, False)] * 2
    monkeypatch.setenv("PTQ_E4M3_PATH", "0")
    quant_kernels.w4a4_linear(torch.randn(quant_kernels.FP8_MIN_ROWS, 64, dtype=torch.bfloat16), w, s, **kw)
    assert calls[-1] == "dp4a"
    monkeypatch.setenv("PTQ_E4M3_PATH", "yes")
    with pytest.raises(ValueError, match="PTQ_E4M3_PATH='yes': choose 0 .* or 1"):
        quant_kernels.w4a4_linear(torch.randn(quant_kernels.FP8_MIN_ROWS, 64, dtype=torch.bfloat16), w, s, **kw)


def test_triton_gemm_public_api_bfloat16_out():
    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands("nvfp4", 17, 24, 64)
    out = quant_kernels.w4a4_matmul(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.bfloat16, backend="triton",
                                    **kw)
    assert out.dtype == torch.bfloat16 and out.shape == (17, 24)
    assert_matches_twin(out, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.bfloat16, **kw))


def test_triton_gemm_groups_that_are_not_powers_of_two():
    """Random codes and scales, a in groups of 48 and w in groups of 96: K steps of 16."""
    gen = torch.Generator().manual_seed(2)
    a_packed, w_packed = (torch.randint(0, 256, (rows, 96), generator=gen, dtype=torch.uint8) for rows in (9, 20))
    a_scale, w_scale = torch.rand(9, 4, generator=gen) + 0.1, torch.rand(20, 2, generator=gen) + 0.1
    kw = dict(a_element="int4", w_element="e2m1", a_group=48, w_group=96, out_dtype=torch.float32)
    out = quant_kernels.w4a4_matmul(a_packed, a_scale, w_packed, w_scale, backend="triton", **kw)
    assert_matches_twin(out, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, **kw))


@pytest.mark.parametrize("encoding, w_group", [("e4m3", 16), ("e8m0", 32)])
def test_w4a4_gemm_reads_encoded_weight_scales_as_their_fp32_values(encoding, w_group):
    """NVFP4's E4M3 weight scales with their rows' global scales and MXFP4's E8M0 bytes (0 among them, 2^-127), in
    the W4A4 GEMM unsplit and split along K, give bit for bit what their decoded fp32 values give, and the twin;
    the twin reads them as ``scale_values`` decodes them."""
    from quant_kernels.reference import scale_values

    gen = torch.Generator().manual_seed(w_group)
    k, n = 128, 24
    a_packed, w_packed = (torch.randint(0, 256, (rows, k // 2), generator=gen, dtype=torch.uint8) for rows in (9, n))
    a_scale = torch.rand(9, k // w_group, generator=gen) + 0.1
    if encoding == "e4m3":
        w_scale = (torch.rand(n, k // w_group, generator=gen) * 400 + 0.01).to(torch.float8_e4m3fn)
        global_scale = torch.rand(n, generator=gen) * 1e-3 + 1e-4
    else:
        w_scale, global_scale = torch.randint(110, 140, (n, k // w_group), generator=gen, dtype=torch.uint8), None
        w_scale[0, 0] = 0
    decoded = scale_values(w_scale, global_scale)
    kw = dict(a_element="e2m1", w_element="e2m1", a_group=w_group, w_group=w_group, out_dtype=torch.float32)
    want = w4a4_matmul_ref(a_packed, a_scale, w_packed, decoded, **kw)
    assert torch.equal(w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, w_global_scale=global_scale, **kw), want)
    for split_k in (1, 2):
        got = w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, w_global_scale=global_scale,
                                           split_k=split_k, **kw)
        assert torch.equal(got, w4a4_gemm.w4a4_matmul_triton(a_packed, a_scale, w_packed, decoded, split_k=split_k,
                                                             **kw))
        assert_matches_twin(got, want)
    with pytest.raises(ValueError, match="E4M3 scales .* need their rows' fp32 global scales"):
        quant_kernels.w4a4_matmul(a_packed, a_scale, w_packed, torch.ones(n, k // w_group).to(torch.float8_e4m3fn),
                                  backend="torch", **kw)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", ["nvfp4", "mxfp4", "int4-tok x int4-g128"])
def test_dequantized_path_is_the_fake_quantized_product(case, backend):
    """The dequantized path (groups, encoded scales): the activation codes dequantized into the output dtype, each
    value rounded once, then the weight-only product of the packed weight with the bias, the residual added after;
    within bfloat16's rounding of the activations of the exact product. NVFP4 weights bring E4M3 scales with their
    rows' global scales."""
    a_el, a_group, a_kind, w_el, w_group, w_kind = GEMM_CASES[case]
    gen = torch.Generator().manual_seed(a_group + w_group)
    m, n, k = 37, 24, 256
    x = (torch.randn(m, k, generator=gen) * 3).to(torch.bfloat16)
    w_packed, w_scale = quantize_activations_ref(torch.randn(n, k, generator=gen) * 0.05, w_el, w_group, w_kind)
    global_scale = None
    if case == "nvfp4":  # as the checkpoint encodes them
        global_scale = torch.rand(n, generator=gen) * 1e-3 + 1e-4
        w_scale = (w_scale / global_scale[:, None]).to(torch.float8_e4m3fn)
    bias, residual = torch.randn(n, generator=gen), torch.randn(m, n, generator=gen).to(torch.bfloat16)
    kw = dict(a_element=a_el, w_element=w_el, a_group=a_group, w_group=w_group, scale_kind=a_kind, bias=bias,
              out_dtype=torch.bfloat16, backend=backend, w_global_scale=global_scale)
    got = quant_kernels.w4a4_linear(x, w_packed, w_scale, path="dequantized", **kw)
    a_packed, a_scale = quantize_activations_ref(x, a_el, a_group, a_kind)
    x_q = dequantize(a_packed, a_scale, a_el, a_group).to(torch.bfloat16)
    want = quant_kernels.fpx_matmul(x_q, (w_packed,), w_scale, element=w_el, bits=4, group=w_group,
                                    bias=bias.to(torch.bfloat16), w_global_scale=global_scale, backend=backend)
    assert torch.equal(got, want)
    exact = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float32, bias=bias,
                            w_global_scale=global_scale, **{key: kw[key] for key in ("a_element", "w_element",
                                                                                     "a_group", "w_group")})
    torch.testing.assert_close(got.float(), exact, rtol=2.0**-6, atol=2.0**-7 * exact.abs().max().item())
    assert torch.equal(quant_kernels.w4a4_linear(x, w_packed, w_scale, path="dequantized", residual=residual, **kw),
                       residual + got)


def test_default_path_dequantizes_group_scaled_products():
    """NVFP4 and MXFP4 (and INT4 in groups of 128) W4A4 products take the dequantized path at every row count in
    bfloat16 and float16 on the Triton backend (MXFP4 in bfloat16 the FP8 path, folded, from MX_FP8_MIN_ROWS), in
    float32 and on the reference backend the packed one; per-row
    products the decode kernels take (at most INT8_MIN_ROWS - 1 rows) stay on the packed path, which hands them on."""
    for case in ("nvfp4", "mxfp4", "int4-tok x int4-g128"):
        a_el, a_group, a_kind, w_el, w_group, _ = GEMM_CASES[case]
        path = functools.partial(quant_kernels.default_path, n=4096, k=4096, w_element=w_el, a_element=a_el,
                                 a_group=a_group, w_group=w_group, scale_kind=a_kind)
        rows = (1, 64, quant_kernels.MX_FP8_MIN_ROWS - 1, 8192)
        folded = ["fp8"] if case == "mxfp4" else ["dequantized"]  # MXFP4 in bfloat16 from MX_FP8_MIN_ROWS
        assert [path(m, out_dtype=dtype) for m in rows for dtype in (torch.bfloat16, torch.float16)] == [
            "dequantized"] * 6 + folded + ["dequantized"], case
        assert path(quant_kernels.MX_FP8_MIN_ROWS) == folded[0], case
        assert {path(1, out_dtype=torch.float32), path(8192, on_triton=False)} == {"packed"}
    for element in ("int4", "e2m1"):
        assert quant_kernels.default_path(quant_kernels.INT8_MIN_ROWS - 1, 4096, 4096, element, element) == "packed"


def test_activation_tiles_tuned_on_a_gpu_fit_the_rows_and_registers():
    configs = act_quant._act_quant_autotuned.configs

    def pruned(m_bucket: int, had_block: int, block_k: int, group: int | None = None, amax_only: bool = False,
               prologue: int = 0):
        return act_quant._prune_tiles(configs, dict(M_BUCKET=m_bucket), HAD_BLOCK=had_block, BLOCK_K=block_k,
                                      GROUP=group or block_k, AMAX_ONLY=amax_only, PROLOGUE=prologue)

    per_token = pruned(4096, 0, 4096)
    assert {(c.kwargs["BLOCK_M"], c.kwargs["CHUNK"], c.kwargs["ROW_STEPS"]) for c in per_token} == {
        (1, 0, 1), (2, 0, 1), (4, 0, 1), (8, 0, 1), (1, 2048, 1), (2, 2048, 1), (4, 2048, 1),  # 4096-wide chunks:
        (1, 0, 4), (2, 0, 4), (1, 0, 16), (2, 0, 16)}                                          # the whole row
    # One warp a row up to ONE_WARP_MAX_M rows (at K = 4096, 128 elements a thread), two at any count.
    warps = {m: {c.num_warps for c in pruned(m, 0, 4096)} for m in (1, act_quant.ONE_WARP_MAX_M, 2048, 4096)}
    assert warps[1] >= {1, 2} and 1 in warps[act_quant.ONE_WARP_MAX_M] and 1 not in warps[2048] | warps[4096]
    assert 2 in warps[4096] and 1 not in {c.num_warps for c in pruned(1, 0, 16384)}
    # Row blocks walked in turn: plain x only, and no more rows than the bucket holds.
    assert {c.kwargs["ROW_STEPS"] for c in pruned(4, 0, 4096)} == {1, 4}
    assert {c.kwargs["ROW_STEPS"] for c in pruned(2, 0, 4096) + pruned(4096, 0, 4096, amax_only=True)
            + pruned(4096, 0, 4096, prologue=PROLOGUES["rms_norm"])
            + pruned(4096, 0, 4096, prologue=PROLOGUES["silu_mul"]) + pruned(4096, 128, 4096)} == {1}
    wide = pruned(4096, 0, 16384)
    assert {c.kwargs["CHUNK"] for c in wide} == {0, 2048, 4096}
    assert all(c.kwargs["BLOCK_M"] * (c.kwargs["CHUNK"] or 16384) <= 32768 for c in wide)
    rotated_wide = pruned(4096, 128, 16384)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["CHUNK"], c.num_warps) for c in rotated_wide] == [(1, 0, 4)]  # fixed tile
    rotated_groups = pruned(2, 128, 128, group=64)
    assert [(c.kwargs["BLOCK_M"], c.num_warps) for c in rotated_groups] == [(act_quant._tile(4096, 64, 128)[0], 4)]
    nvfp4_decode = pruned(2, 0, 128, group=16)
    assert {(c.kwargs["BLOCK_M"], c.kwargs["CHUNK"]) for c in nvfp4_decode} == {(1, 0)}
    nvfp4_prefill = pruned(4096, 0, 128, group=16)
    assert {c.kwargs["BLOCK_M"] for c in nvfp4_prefill} == {16, 32, 64}
    assert all(c.kwargs["CHUNK"] == 0 for c in nvfp4_prefill + pruned(4096, 0, 16384, group=16)
               + pruned(4096, 0, 16384, amax_only=True))  # chunks hold per-token scales only
    # An RMSNorm prologue needs its whole row at once; silu(gate) * up is elementwise and may be chunked.
    assert {c.kwargs["CHUNK"] for c in pruned(1, 0, 16384, prologue=PROLOGUES["rms_norm"])} == {0}
    assert {c.kwargs["CHUNK"] for c in pruned(1, 0, 16384, prologue=PROLOGUES["silu_mul"])} == {0, 2048, 4096}
    # Rows split among programs: plain per-token rows at decode, in chunks narrower than the row.
    assert not any(c.kwargs["SPLIT"] for c in per_token + pruned(8, 0, 16384) + pruned(1, 0, 16384, group=16)
                   + pruned(1, 0, 16384, prologue=PROLOGUES["silu_mul"]) + pruned(1, 128, 16384))
    assert {c.kwargs["CHUNK"] for c in pruned(4, 0, 16384) if c.kwargs["SPLIT"]} == set(act_quant.SPLIT_CHUNKS)
    assert {c.kwargs["CHUNK"] for c in pruned(1, 0, 1024) if c.kwargs["SPLIT"]} == {512}


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dp4a_for", [None, "int4", "e2m1"])
@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "e2m1-tok"])
def test_chunked_rows_equal_twin(case, dp4a_for, split, monkeypatch):
    """Per-token rows walked in 64-column chunks (the last one ragged at K = 200), twice, by one program or
    (split) read whole by each of K / 64 programs, which write one chunk each: codes, E4M3 bytes and dp4a bytes
    equal the twin's."""
    monkeypatch.setattr(act_quant, "INTERPRET_CHUNK", 64)
    monkeypatch.setattr(act_quant, "INTERPRET_SPLIT", split)
    (element, group, kind, clip), _ = ACT_CASES[case]
    for m, k in ((5, 200), (3, 256)):
        x = activations(m, k, element, group, torch.bfloat16, seed=k)
        if dp4a_for is None:
            want = quantize_activations_ref(x, element, group, kind, clip)
            got = act_quant.quantize_activations_triton(x, element, group, kind, clip)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            fp8 = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True)
            monkeypatch.setattr(act_quant, "INTERPRET_CHUNK", 0)
            whole = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True)
            monkeypatch.setattr(act_quant, "INTERPRET_CHUNK", 64)
            assert torch.equal(fp8[0].view(torch.uint8), whole[0].view(torch.uint8)) and torch.equal(fp8[1], whole[1])
        else:
            want = quantize_activations_ref(x, element, group, kind, clip, dp4a_for=dp4a_for)
            got = act_quant.quantize_activations_triton(x, element, group, kind, clip, dp4a_for=dp4a_for)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "e2m1-tok", "nvfp4", "mxfp4"])
def test_row_blocks_walked_in_turn_equal_twin(case, monkeypatch):
    """A program quantizing 3 row blocks in turn, the next one's load in flight (ROW_STEPS), ragged in M: packed
    codes and dp4a bytes equal the twin's, E4M3 bytes those of one block a program (NVFP4's amax launch keeps one
    block a program)."""
    monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", 3)
    (element, group, kind, clip), _ = ACT_CASES[case]
    for m, k in ((7, 4096), (70, 256)):  # one row a block (10 programs' worth: 3), 16 rows a block
        x = activations(m, k, element, group, torch.bfloat16, seed=m)
        want = quantize_activations_ref(x, element, group, kind, clip)
        got = act_quant.quantize_activations_triton(x, element, group, kind, clip)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        if group == 0:
            fp8 = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True)
            monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", 1)
            whole = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True)
            monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", 3)
            assert torch.equal(fp8[0].view(torch.uint8), whole[0].view(torch.uint8)) and torch.equal(fp8[1], whole[1])
            dp4a = act_quant.quantize_activations_triton(x, element, group, kind, clip, dp4a_for=element)
            assert torch.equal(dp4a[0], quantize_activations_ref(x, element, group, kind, clip, dp4a_for=element)[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nvfp4_with_a_calibrated_tensor_amax_equals_twin_and_static_quantizer(dtype):
    """A given tensor amax (``StaticTensorScale``) at, below and above x's own, ragged M: the kernel's codes and
    scales equal the twin's and decode to the static quantizer's fake quantization; other scale kinds and
    misshapen amaxes are refused."""
    from quant_layers import StaticTensorScale

    x = activations(7, 256, "e2m1", 16, dtype, seed=5)
    own = x.float().abs().amax()
    static = Quantizer(QuantSpec("nvfp", 4, static_tensor_scale=True))
    for amax in (own, own / 3, own * 5):
        want = quantize_activations_ref(x, "e2m1", 16, "e4m3", tensor_amax=amax)
        got = quant_kernels.quantize_activations(x, "e2m1", 16, "e4m3", tensor_amax=amax, backend="triton")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        values = decode(unpack(got[0]), E2M1).reshape(7, -1, 16) * got[1][:, :, None]
        assert torch.equal(values.reshape(x.shape), StaticTensorScale(static, amax)(x.float()))
    for kind, element, group, amax in (("float", "int4", 0, own), ("e4m3", "e2m1", 16, own.reshape(1, 1).double()),
                                       ("e4m3", "e2m1", 16, torch.stack([own, own]))):
        for backend in ("torch", "triton"):
            with pytest.raises(ValueError, match="a given tensor amax sets NVFP4's tensor scale"):
                quant_kernels.quantize_activations(x, element, group, kind, tensor_amax=amax, backend=backend)


def test_row_pieces_are_the_binary_digits_of_plain_per_token_rows():
    assert list(act_quant.row_pieces(14336, 0, 0, 0).values()) == [8192, 4096, 2048]
    assert list(act_quant.row_pieces(18944, 0, 0, 0).values()) == [16384, 2048, 512]  # Qwen2.5-7B's MLP
    assert list(act_quant.row_pieces(1536, 0, 0, 0).values()) == [1024, 512, 0]
    for k, group, hadamard, prologue in ((4096, 0, 0, 0), (11008, 0, 0, 0), (576, 0, 0, 0), (14336, 32, 0, 0),
                                         (14336, 0, 128, 0), (14336, 0, 0, PROLOGUES["silu_mul"])):
        assert set(act_quant.row_pieces(k, group, hadamard, prologue).values()) == {0}  # padded to a power of two


@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "e2m1-tok"])
def test_rows_held_in_power_of_two_pieces_equal_twin(case, monkeypatch):
    """Per-token rows of K = 3584 (2048 + 1024 + 512) and 6144 (4096 + 2048), one row a program, held as pieces
    (``row_pieces``), one block or three in turn, ragged in M, bfloat16 (loaded as words) and float16: packed codes,
    dp4a bytes and scales equal the twin's, E4M3 bytes its unpacked codes, E4M3 planes its dp4a bytes' values."""
    (element, group, kind, clip), _ = ACT_CASES[case]
    for k, dtype in ((3584, torch.bfloat16), (6144, torch.bfloat16), (3584, torch.float16)):
        assert act_quant._tile(k, 0, 0)[0] == 1 and act_quant.row_pieces(k, 0, 0, 0)["PIECE_A"] > 0
        x = activations(5, k, element, group, dtype, seed=k)
        want = quantize_activations_ref(x, element, group, kind, clip)
        want_dp4a = quantize_activations_ref(x, element, group, kind, clip, dp4a_for=element)
        want_fp8 = quant_kernels.quantize_activations(x, element, group, kind, clip, fp8_codes=True, backend="torch")
        want_planes = quantize_activations_ref(x, element, group, kind, clip, dp4a_for="int4")[0].float()
        for steps in (1, 3):
            monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", steps)
            got = act_quant.quantize_activations_triton(x, element, group, kind, clip)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            dp4a = act_quant.quantize_activations_triton(x, element, group, kind, clip, dp4a_for=element)
            assert torch.equal(dp4a[0], want_dp4a[0]) and torch.equal(dp4a[1], want_dp4a[1])
            fp8 = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True)
            assert torch.equal(fp8[0].view(torch.uint8), want_fp8[0].view(torch.uint8))
            planes = act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=True,
                                                           dp4a_for="int4")
            assert torch.equal(planes[0].view(torch.uint8), want_planes.to(torch.float8_e4m3fn).view(torch.uint8))


@pytest.mark.parametrize("case", ["e2m1-tok", "int4-g64", "mxfp4"])
def test_bfloat16_word_loads_and_unaligned_rows_equal_twin(case, monkeypatch):
    """Plain bfloat16 x loads as int32 words of element pairs (WORDS), one block or three in turn a program; rows
    that start at an odd element or have an odd stride cannot, and load element by element: all equal the twin."""
    (element, group, kind, clip), _ = ACT_CASES[case]
    x = activations(9, 256, element, group, torch.bfloat16, seed=3)
    odd_stride, odd_offset = torch.zeros(9, 257, dtype=torch.bfloat16), torch.zeros(9, 258, dtype=torch.bfloat16)
    odd_stride[:, :256], odd_offset[:, 1:257] = x, x
    for x in (x, odd_stride[:, :256], odd_offset[:, 1:257]):
        want = quantize_activations_ref(x, element, group, kind, clip)
        for steps in (1, 3):
            monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", steps)
            got = act_quant.quantize_activations_triton(x, element, group, kind, clip)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_autotune_k_steps_fit_the_scale_groups():
    """K steps cross no scale group, except 32-wide steps for odd multiples of 16, which split at 16."""
    configs = w4a4_gemm._w4a4_autotuned.configs
    nvfp4_decode = w4a4_gemm._prune_configs(configs, dict(M_BUCKET=16), A_GROUP=16, W_GROUP=16)
    assert nvfp4_decode and {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_K"]) for c in nvfp4_decode} == {(16, 32)}
    g128_prefill = w4a4_gemm._prune_configs(configs, dict(M_BUCKET=4096), A_GROUP=0, W_GROUP=128)
    assert all(c.kwargs["BLOCK_K"] <= 128 for c in g128_prefill)
    assert len({tuple(sorted(c.all_kwargs().items())) for c in g128_prefill}) == len(g128_prefill) > 4
    groups = [(0, 0), (48, 0), (32, 64), (0, 256), (16, 16), (16, 0)]
    assert [w4a4_gemm._k_step(128, *g) for g in groups] == [128, 32, 32, 128, 32, 32]


@pytest.mark.parametrize("a_group, w_group, k", [(16, 16, 48), (48, 0, 144), (0, 16, 80), (48, 32, 96)])
def test_k_steps_split_at_a_group_boundary(a_group, w_group, k):
    """Groups that are odd multiples of 16: 32-wide K steps split at 16, the last one past K (its scales unread)."""
    gen = torch.Generator().manual_seed(k)

    def operand(rows: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:  # random codes and scales
        codes = torch.randint(0, 256, (rows, k // 2), generator=gen, dtype=torch.uint8)
        return codes, torch.rand(rows, k // group if group else 1, generator=gen) + 0.5

    a, w = operand(5, a_group), operand(24, w_group)
    kw = dict(a_element="int4", w_element="e2m1", a_group=a_group, w_group=w_group, out_dtype=torch.float32)
    want = w4a4_matmul_ref(*a, *w, **kw)
    for split_k in (1, 2):
        assert_matches_twin(w4a4_gemm.w4a4_matmul_triton(*a, *w, split_k=split_k, **kw), want)


@pytest.mark.parametrize("case", ["int4-tok-clip0.9", "nvfp4"])
def test_real_quant_linear_equals_fake_quant_linear(case):
    """quantize_activations + w4a4_matmul (Triton) = F.linear of the fake-quantized input and weight."""
    (element, group, kind, clip), spec = ACT_CASES[case]
    gen = torch.Generator().manual_seed(1)
    x, bias = torch.randn(7, 64, generator=gen), torch.randn(24, generator=gen)
    weight = torch.randn(24, 64, generator=gen) * 0.1
    a_packed, a_scale = quant_kernels.quantize_activations(x, element, group, kind, clip, backend="triton")
    w_packed, w_scale = quantize_activations_ref(weight, element, group, kind)
    w_spec = spec if group else QuantSpec(format=spec.format, bits=4, exp_bits=spec.exp_bits, granularity="channel")
    out = quant_kernels.w4a4_matmul(a_packed, a_scale, w_packed, w_scale, a_element=element, w_element=element,
                                    a_group=group, w_group=group, bias=bias, out_dtype=torch.float32, backend="triton")
    want = F.linear(Quantizer(spec).fake_quantize(x), Quantizer(w_spec).fake_quantize(weight), bias)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5 * want.abs().max().item())


# ---------------------------------------------------------------------------
# Argument errors (both backends check before any work)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "shape, dtype, kwargs, message",
    [
        ((4, 33), torch.float32, dict(element="int4"), "even K"),
        ((4, 48), torch.float32, dict(element="int4", group_size=32), "does not divide K=48"),
        ((4, 64), torch.float32, dict(element="int4", group_size=24), "power of two"),
        ((4, 48), torch.float32, dict(element="int4", hadamard_block=32), "hadamard block 32 does not divide"),
        ((4, 64), torch.float32, dict(element="e2m1", group_size=32, scale_kind="e4m3"), "group_size=16"),
        ((4, 64), torch.float32, dict(element="int4", group_size=32, scale_kind="e8m0"), "element 'e2m1'"),
        ((4, 64), torch.float32, dict(element="int16"), "unknown 4-bit element"),
        ((4, 64), torch.float32, dict(element="int8"), "INT8 activations are written as the decode kernel's dp4a"),
        ((4, 64), torch.int32, dict(element="int4"), "float16, bfloat16 or float32"),
        ((2, 4, 64), torch.float32, dict(element="int4"), "2-D"),
        ((4, 64), torch.float32, dict(element="int4", group_size=16, dp4a_for="int4"), "per-token float scales"),
        ((4, 36), torch.float32, dict(element="int4", dp4a_for="int4"), "K a multiple of 8"),
        ((4, 64), torch.float32, dict(element="int4", dp4a_for="int8"), "INT8 weights with INT8 activations only"),
        ((4, 64), torch.float32, dict(element="int4", dp4a_for="int16"), "unknown 4-bit element 'int16'"),
        ((4, 64), torch.float32, dict(element="int4", dp4a_for="e2m1", fp8_codes=True), "INT4 weights. order of INT4"),
    ],
)
def test_quantize_activations_errors(backend, shape, dtype, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quant_kernels.quantize_activations(torch.zeros(shape, dtype=dtype), backend=backend, **kwargs)


def _gemm_args(**changes) -> dict:
    args = dict(a_packed=torch.zeros(3, 32, dtype=torch.uint8), a_scale=torch.ones(3, 1),
                w_packed=torch.zeros(5, 32, dtype=torch.uint8), w_scale=torch.ones(5, 1),
                a_element="int4", w_element="int4")
    args.update(changes)
    return args


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(a_packed=torch.zeros(3, 32, dtype=torch.int8)), "a_packed must be a 2-D uint8"),
        (dict(w_packed=torch.zeros(5, 16, dtype=torch.uint8)), "disagree on K: a_packed holds K=64, w_packed holds K=32"),
        (dict(w_group=48, w_scale=torch.ones(5, 1)), "w_group must be 0 .* multiple of 16 dividing K=64"),
        (dict(a_group=20, a_scale=torch.ones(3, 3)), "a_group must be 0 .* multiple of 16 dividing K=64"),
        (dict(w_group=32), r"w_scale must be a float tensor of shape \(5, 2\)"),
        (dict(bias=torch.zeros(4)), r"bias must be a float tensor of shape \(5,\)"),
        (dict(out_dtype=torch.int32), "out_dtype"),
        (dict(w_element="fp4"), "unknown 4-bit element"),
    ],
)
def test_w4a4_matmul_errors(backend, changes, message):
    with pytest.raises(ValueError, match=message):
        quant_kernels.w4a4_matmul(**_gemm_args(**changes), backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        quant_kernels.quantize_activations(torch.zeros(2, 16), "int4", backend="cuda")


def test_division_check_finds_the_reciprocal_division_exact_in_its_range(tmp_path, cli):
    """benchmarks/division_check.py: no wrong quotient for scales in [2^-96, 2^96), some below (where the
    kernel divides element by element), on a small sample."""
    done = cli("benchmarks/division_check.py", "--samples", "20000", "--out", str(tmp_path / "division"))
    assert done.returncode == 0, done.stderr
    import json

    cases = json.loads((tmp_path / "division.json").read_text())["cases"]
    assert [c["not_correctly_rounded"] for c in cases[:3]] == [0, 0, 0]
    assert cases[3]["not_correctly_rounded"] > 0


def test_act_quant_bench_refusals_and_baseline(tmp_path, cli):
    done = cli("benchmarks/act_quant_bench.py", "--formats", "int8", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "--formats takes" in done.stderr
    done = cli("benchmarks/act_quant_bench.py", "--shapes", "8192by4096", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "--shapes takes" in done.stderr
    done = cli("benchmarks/act_quant_bench.py", "--in_stream", "-1", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "--in_stream takes the calls per graph (0: off), got -1" in done.stderr
    if not torch.cuda.is_available():
        done = cli("benchmarks/act_quant_bench.py", "--out", str(tmp_path / "a"))
        assert done.returncode == 1 and "no CUDA device" in done.stderr
    from benchmarks.act_quant_bench import load_baseline

    baseline = load_baseline(act_quant.__file__)  # a copy of the current kernel, loaded as its own module
    x = activations(3, 64, "int4", 0, torch.bfloat16)
    got = baseline.quantize_activations_triton(x, "int4", 0, "float", 0.9)
    want = quantize_activations_ref(x, "int4", 0, "float", 0.9)
    assert baseline is not act_quant and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    from benchmarks.act_quant_bench import config_label

    names = act_quant._act_quant_autotuned.keys
    values = dict(K=14336, M_BUCKET=4096, GROUP=16384, ELEMENT_INT4=True, ELEMENT_INT8=False, HAD_BLOCK=0, OUT_FP8=True)
    key = tuple(values.get(name, 0) for name in names) + ("torch.bfloat16",)
    assert config_label(key, names) == "K 14336, M bucket 4096, int4, group 16384, E4M3 codes"


def test_act_quant_bench_pins_one_config_in_a_version():
    from benchmarks.act_quant_bench import load_baseline, pin_config

    copy = load_baseline(act_quant.__file__)  # pinned apart from the module the other tests use
    with pytest.raises(ValueError, match="NAME=int pairs"):
        pin_config(copy, "BLOCK_M=one")
    with pytest.raises(ValueError, match="every field of the kernel's configs once \\(and maxnreg at will\\): BLOCK_M, CHUNK, ROW_STEPS, SPLIT, "
                                         "num_warps; got BLOCK_M, num_warps"):
        pin_config(copy, "BLOCK_M=1,num_warps=4")
    pin_config(copy, "BLOCK_M=2,CHUNK=0,ROW_STEPS=4,SPLIT=0,num_warps=8")
    tuner = copy._act_quant_autotuned
    [config] = tuner.configs
    assert config.kwargs == dict(BLOCK_M=2, CHUNK=0, ROW_STEPS=4, SPLIT=False) and config.num_warps == 8
    assert tuner.early_config_prune is None and len(act_quant._act_quant_autotuned.configs) > 1
    pin_config(copy, "BLOCK_M=1,CHUNK=0,ROW_STEPS=1,SPLIT=0,num_warps=2,maxnreg=80")
    [config] = tuner.configs
    assert config.num_warps == 2 and config.maxnreg == 80


def test_act_quant_bench_times_each_pinned_config_as_a_version():
    from benchmarks.act_quant_bench import load_baseline, pinned_versions

    current = load_baseline(act_quant.__file__)  # stands in for the module, which the other tests use unpinned
    assert pinned_versions(current, act_quant.__file__, None, None) == [("current", current)]
    pins = "BLOCK_M=1,CHUNK=0,ROW_STEPS=1,SPLIT=0,num_warps=2; BLOCK_M=1,CHUNK=0,ROW_STEPS=1,SPLIT=0,num_warps=2,maxnreg=80"
    versions = pinned_versions(current, act_quant.__file__, act_quant.__file__, pins)
    labels = [label for label, _ in versions]
    assert labels == [f"{v} [{t.strip()}]" for t in pins.split(";") for v in ("current", "baseline")]
    modules = [module for _, module in versions]
    assert modules[0] is current and len({id(m) for m in modules}) == 4
    assert [m._act_quant_autotuned.configs[0].maxnreg for m in modules] == [None, None, 80, 80]
    with pytest.raises(ValueError, match="at least one config, got ' ; '"):
        pinned_versions(current, act_quant.__file__, None, " ; ")


def test_kernel_check_int8_decode_dry_run(tmp_path):
    """The GPU check of W4A8 / W8A8 runs end to end on the CPU (the interpreter's activation kernel, the torch
    product) and passes."""
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "int8_decode", "--out", prefix]) == 0
    assert "8 checks, 0 failed." in open(prefix + ".md").read()


def test_kernel_check_skip_resumes_after_the_checks_a_cut_run_did(tmp_path):
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "int8_decode", "--skip", "6", "--out", prefix]) == 0
    report = open(prefix + ".md").read()
    assert "2 checks, 0 failed." in report and report.count("| M5 N40 K256") == 2  # the last shape's W8A8 pair


@pytest.mark.parametrize("m, n, k", [(5, 40, 200), (16, 32, 256), (40, 24, 64)], ids=lambda v: str(v))
@pytest.mark.parametrize("a_element, w_element", [("int4", "int4"), ("e2m1", "int4"), ("int8", "int4"),
                                                  ("int4", "e2m1"), ("e2m1", "e2m1")])
def test_tensor_core_decode_kernel_equals_twin(a_element, w_element, m, n, k):
    """The tensor-core decode kernel: INT4 weights as int8 nibbles at the top of their bytes, E2M1 weights as
    FP8 E4M3 (their activation bytes moved to the nibbles' order in the kernel), one dot for each plane of dp4a
    bytes: ragged K (100 bytes against 32-byte steps) and N, a bias and a residual added after the product is
    rounded; every entry written. Its products are exact, as the twin's."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_order, w4a4_gemv_ref

    gen = torch.Generator().manual_seed(m + k)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    w_scale = torch.rand(n, 1, generator=gen) / 64 + 1e-3
    low, high = {"int4": (-8, 8), "e2m1": (-12, 13), "int8": (-128, 128)}[a_element]
    values = torch.randint(low, high, (m, k), generator=gen)
    if a_element == "e2m1":  # twice the E2M1 values
        grid = torch.tensor([0, 1, 2, 3, 4, 6, 8, 12])
        values = grid[values.abs().clamp(max=7)] * values.sign()
    a_bytes = dp4a_order(values.to(torch.int8), w_element)
    a_scale = torch.rand(m, 1, generator=gen) + 0.5
    kw = dict(a_element=a_element, w_element=w_element, bias=torch.randn(n, generator=gen), out_dtype=torch.bfloat16,
              residual=torch.randn(m, n, generator=gen).to(torch.bfloat16))
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    got = w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, out=out, tensor_cores=True, **kw)
    assert got is out and not out.isnan().any()
    assert torch.equal(got, w4a4_gemv_ref(a_bytes, a_scale, w_packed, w_scale, **kw))


def fixed_tc_product(a: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                     a_element: str, w_element: str, split_k: int, gen: torch.Generator, block_kb: int = 32,
                     warps: int = 4, block_n: int = 16) -> tuple[torch.Tensor, dict]:
    """The tensor-core decode kernel's bfloat16 product on a fixed tile of ``block_n`` weight rows and ``block_kb``
    bytes a step on ``warps`` warps, K split ``split_k`` ways, a random bias and residual added, into an output of
    NaNs that it must fill: (the product, the keyword arguments its twin takes)."""
    from quant_kernels import w4a4_gemv

    m, n = a.shape[0], w_packed.shape[0]
    kw = dict(a_element=a_element, w_element=w_element, bias=torch.randn(n, generator=gen), out_dtype=torch.bfloat16,
              residual=torch.randn(m, n, generator=gen).to(torch.bfloat16))
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    got = w4a4_gemv.w4a4_gemv_triton(a, a_scale, w_packed, w_scale, out=out, **kw, tensor_cores=True,
                                     config=triton.Config(dict(BLOCK_N=block_n, BLOCK_KB=block_kb, SPLIT_K=split_k),
                                                          num_warps=warps))
    assert got is out and not out.isnan().any()
    return got, kw


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("a_element, w_element", [("int4", "int4"), ("e2m1", "int4"), ("int4", "e2m1"),
                                                  ("e2m1", "e2m1")])
def test_tensor_core_decode_kernel_takes_e4m3_planes(a_element, w_element, split_k):
    """E4M3 activation planes (INT4 weights' order, ``dp4a_for="int4", fp8_codes=True``) at decode rows: the
    one-dot FP8 form, INT4 or E2M1 weights as E4M3 operands, K ragged (100 bytes against 32-byte steps) and split
    (3 slices: the last short), a bias and a residual: the twin's result bit for bit on the dp4a bytes of the same
    codes, as the twin gives on the planes themselves; the split-K buffer left zeroed; INT8 activations (kernel and
    twin), the CUDA-core kernel and a gated product refused."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_order, w4a4_gemv_ref

    m, n, k = 12, 40, 200
    gen = torch.Generator().manual_seed(split_k + k)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    w_scale = torch.rand(n, 1, generator=gen) / 64 + 1e-3
    values = torch.randint(-8, 8, (m, k), generator=gen) if a_element == "int4" else \
        torch.tensor([0, 1, 2, 3, 4, 6, 8, 12])[torch.randint(0, 8, (m, k), generator=gen)] * \
        (1 - 2 * torch.randint(0, 2, (m, k), generator=gen))
    planes = dp4a_order(values.to(torch.int8), "int4").float().to(torch.float8_e4m3fn)
    a_scale = torch.rand(m, 1, generator=gen) + 0.5
    got, kw = fixed_tc_product(planes, a_scale, w_packed, w_scale, a_element, w_element, split_k, gen)
    a_bytes = dp4a_order(values.to(torch.int8), w_element)
    want = w4a4_gemv_ref(a_bytes, a_scale, w_packed, w_scale, **kw)
    assert torch.equal(got, want)
    assert torch.equal(w4a4_gemv_ref(planes, a_scale, w_packed, w_scale, **kw), want)  # the twin takes planes too
    partial, counts = w4a4_gemv.split_k_buffer(planes.device, m, n)
    assert not partial.any() and not counts.any()
    for product in (w4a4_gemv.w4a4_gemv_triton, w4a4_gemv_ref):
        with pytest.raises(ValueError, match="E4M3 activation bytes hold INT4 or E2M1 activations .*, got int8"):
            product(planes, a_scale, w_packed, w_scale, **{**kw, "a_element": "int8"})
    with pytest.raises(ValueError, match="E4M3 activation planes take the tensor-core decode kernel"):
        w4a4_gemv.w4a4_gemv_triton(planes, a_scale, w_packed, w_scale, tensor_cores=False, **kw)


@pytest.mark.parametrize("two_acc", ["0", "1"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("split_k", [1, 3])
def test_tensor_core_decode_kernel_sums_int4_planes_in_one_or_two_accumulators(split_k, packed, two_acc,
                                                                                monkeypatch):
    """``PTQ_TC_TWO_ACC``: INT4 x INT4 on the int8 dots, dp4a bytes or packed codes, K ragged (100 bytes against
    32-byte steps) and split or not, a bias and a residual: the twin's result bit for bit with the odd nibbles' sums
    in one accumulator (0, the default) or their own (1); the switch reaches the kernel (for INT4 weights only, not
    on the E4M3 planes) and refuses other values."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes, w4a4_gemv_ref

    assert not w4a4_gemv.tc_two_accumulators_on()
    monkeypatch.setenv("PTQ_TC_TWO_ACC", two_acc)
    launched = []
    kernel = w4a4_gemv._tc_kernel_even
    monkeypatch.setattr(w4a4_gemv, "_tc_kernel_even", _RecordingLaunch(kernel, launched))
    gen = torch.Generator().manual_seed(split_k + 7)
    w_packed, a_packed, w_scale, a_scale = int4_decode_operands(gen)
    a = a_packed if packed else dp4a_bytes(a_packed, "int4", "int4")
    got, kw = fixed_tc_product(a, a_scale, w_packed, w_scale, "int4", "int4", split_k, gen)
    assert torch.equal(got, w4a4_gemv_ref(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale, **kw))
    assert [flags["TWO_ACC"] for flags in launched] == [two_acc == "1"]
    planes = dp4a_bytes(a_packed, "int4", "int4").float().to(torch.float8_e4m3fn)
    fixed_tc_product(planes, a_scale, w_packed, w_scale, "int4", "int4", split_k, gen)
    assert launched[-1]["TWO_ACC"] is False  # the one-dot FP8 form keeps its one fp32 accumulator
    monkeypatch.setenv("PTQ_TC_TWO_ACC", "2")
    with pytest.raises(ValueError, match="PTQ_TC_TWO_ACC='2': choose 0"):
        w4a4_gemv.tc_two_accumulators_on()


@pytest.mark.parametrize("two_acc", ["0", "1"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("split_k", [1, 3])
def test_tensor_core_decode_kernel_splits_a_narrow_tiles_steps_over_its_warps(split_k, packed, two_acc, monkeypatch):
    """``PTQ_TC_WARP_SPLIT=1``: a 16 x 64 tile on 2 warps (fewer than 16 weight rows a warp) takes each step's K in
    two slices, one a warp (WARP_K = 2, ``tc_warp_slices``), INT4 x INT4 on dp4a bytes or packed codes, K ragged
    (100 bytes against 64-byte steps) and split or not, one or two accumulators, a bias and a residual: the twin's
    result bit for bit; the E4M3 planes' FP8 dots keep WARP_K = 1."""
    from quant_kernels.reference import dp4a_bytes, w4a4_gemv_ref

    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "1")
    monkeypatch.setenv("PTQ_TC_TWO_ACC", two_acc)
    slices = recorded_warp_slices(monkeypatch)
    gen = torch.Generator().manual_seed(split_k + 11)
    w_packed, a_packed, w_scale, a_scale = int4_decode_operands(gen)
    a_bytes = dp4a_bytes(a_packed, "int4", "int4")
    for a in (a_packed if packed else a_bytes, a_bytes.float().to(torch.float8_e4m3fn)):
        got, kw = fixed_tc_product(a, a_scale, w_packed, w_scale, "int4", "int4", split_k, gen, block_kb=64, warps=2)
        assert torch.equal(got, w4a4_gemv_ref(a_bytes, a_scale, w_packed, w_scale, **kw))
    assert slices == [2, 1]


@pytest.mark.parametrize("w_element", ["int4", "e2m1"])
@pytest.mark.parametrize("block_n, block_kb, m", [(16, 64, 12), (32, 64, 20), (16, 128, 5)])
@pytest.mark.parametrize("split_k", [1, 3])
def test_tensor_core_decode_kernel_stacks_a_narrow_fp8_tiles_k_slices_into_a_warpgroup(w_element, block_n, block_kb,
                                                                                       m, split_k, monkeypatch):
    """``PTQ_TC_WARP_SPLIT=1`` on the one-dot FP8 form (E4M3 planes, INT4 or E2M1 weights): a tile of 16 or 32
    weight rows on 4 warps takes its K in 4 or 2 slices stacked as one warpgroup's 64 rows, the product's diagonal
    blocks summed; 12, 20 or 5 activation rows (one or two 16-row tiles' worth), K ragged (100 bytes) and split or
    not, a bias and a residual: the twin's result bit for bit."""
    from quant_kernels.reference import dp4a_order, w4a4_gemv_ref

    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "1")
    slices = recorded_warp_slices(monkeypatch)
    n, k = 40, 200
    gen = torch.Generator().manual_seed(split_k + m)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    values = torch.randint(-8, 8, (m, k), generator=gen).to(torch.int8)
    planes = dp4a_order(values, "int4").float().to(torch.float8_e4m3fn)
    w_scale, a_scale = torch.rand(n, 1, generator=gen) / 64 + 1e-3, torch.rand(m, 1, generator=gen) + 0.5
    got, kw = fixed_tc_product(planes, a_scale, w_packed, w_scale, "int4", w_element, split_k, gen,
                               block_n=block_n, block_kb=block_kb)
    assert torch.equal(got, w4a4_gemv_ref(dp4a_order(values, w_element), a_scale, w_packed, w_scale, **kw))
    assert slices == [64 // block_n]


def test_tensor_core_prefill_launch_splits_a_narrow_tiles_steps_over_its_warps(monkeypatch):
    """The prefill launch's int8 dots (E2M1 weights as twice their values) on a 16 x 16 x 64 tile of 2 warps under
    ``PTQ_TC_WARP_SPLIT=1``: WARP_K = 2, every fp32 output the exact product's over two row tiles, K ragged."""
    from quant_kernels import w4a4_gemv
    from quant_layers import packing

    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "1")
    slices = recorded_warp_slices(monkeypatch)
    m, n, k = 20, 40, 200
    gen = torch.Generator().manual_seed(5)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    levels = torch.randint(-8, 8, (m, k), generator=gen, dtype=torch.int8)
    planes = torch.cat([levels[:, 0::2], levels[:, 1::2]], dim=1).contiguous()  # INT4 weights' order
    a_scale, w_scale = torch.rand(m, 1, generator=gen) + 0.5, torch.rand(n, 1, generator=gen) + 0.5
    got = w4a4_gemv.w4a4_tc_prefill_triton(planes, a_scale, w_packed, w_scale, a_element="int4", w_element="e2m1",
                                           out_dtype=torch.float32, config=triton.Config(
                                               dict(BLOCK_N=16, BLOCK_M=16, BLOCK_KB=64, SPLIT_K=1, GROUP_M=1),
                                               num_warps=2))
    assert slices == [2]
    values = packing.decode(packing.unpack(w_packed), packing.element_named("e2m1"))
    assert torch.equal(got, (levels.float() @ values.t()) * a_scale * w_scale.t())


@pytest.mark.parametrize("args, slices", [
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=2), 2), (dict(BLOCK_N=32, BLOCK_KB=256, num_warps=4), 4),
    (dict(BLOCK_N=16, BLOCK_KB=128), 4),  # Triton's default 4 warps where the launch names none
    (dict(BLOCK_N=32, BLOCK_KB=256, num_warps=2), 1),  # 16 rows a warp: no warp repeats another's work
    (dict(BLOCK_N=16, BLOCK_KB=32, num_warps=2), 1),  # slices of 16 bytes: narrower than an int8 mma's K
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=4, W_E2M1=True, FP8_STEP_SUMS=True), 1),  # FP8 step sums: two dots
    # the one-dot FP8 form: slices stacking the tile into 16 rows a warp of whole warpgroups, at least 16 bytes each
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=4, A_E4M3=True), 4), (dict(BLOCK_N=32, BLOCK_KB=64, num_warps=4,
                                                                       A_E4M3=True), 2),
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=2, A_E4M3=True), 1), (dict(BLOCK_N=64, BLOCK_KB=256, A_E4M3=True), 1),
    (dict(BLOCK_N=16, BLOCK_KB=32, num_warps=4, A_E4M3=True), 1),
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=4, A_E4M3=True, A_PACKED=True), 1),
    (dict(BLOCK_N=16, BLOCK_KB=256, num_warps=4, A_E4M3=True, FP8_STEP_SUMS=True), 1)])
def test_tc_warp_slices_split_only_a_narrow_tiles_int8_or_one_fp8_dot(args, slices, monkeypatch):
    """WARP_K where PTQ_TC_WARP_SPLIT (on by default) splits a tile's steps; a narrow FP8 tile is taken only when it
    does; with the switch 0 nothing is split."""
    from quant_kernels import w4a4_gemv

    args = dict(dict(W_E2M1=False, A_E4M3=False, FP8_STEP_SUMS=False), **args)
    fp8 = args["W_E2M1"] or args["A_E4M3"]
    wide = w4a4_gemv.tc_config_fits(args["BLOCK_N"], args.get("num_warps", 4), fp8)
    monkeypatch.delenv("PTQ_TC_WARP_SPLIT", raising=False)
    assert w4a4_gemv.tc_warp_slices(args) == slices
    assert w4a4_gemv.tc_config_takes(args) == (wide or slices > 1) and (fp8 or wide)
    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "0")
    assert w4a4_gemv.tc_warp_slices(args) == 1 and w4a4_gemv.tc_config_takes(args) == wide
    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "yes")
    with pytest.raises(ValueError, match="PTQ_TC_WARP_SPLIT='yes': choose 1"):
        w4a4_gemv.tc_warp_slices(args)


def test_tensor_core_tuner_keeps_narrow_fp8_tiles_only_with_their_k_sliced(monkeypatch):
    """The one-dot FP8 form's pruning: 4-warp tiles of fewer than 16 weight rows a warp join the whole-warpgroup ones
    under PTQ_TC_WARP_SPLIT, the default (K sliced into the warpgroup's rows), and are dropped with it 0."""
    from quant_kernels import w4a4_gemv

    configs = w4a4_gemv._tc_autotuned.configs
    args = dict(w4a4_gemv.tc_decode_flags("e2m1", True, False), a_ptr=torch.empty(1))  # on the CPU: no pins
    narrow = [c for c in configs if c.num_warps % 4 == 0 and c.kwargs["BLOCK_N"] < 16 * c.num_warps]
    monkeypatch.delenv("PTQ_TC_WARP_SPLIT", raising=False)
    on = w4a4_gemv.prune_tc_configs(configs, args)
    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "0")
    off = w4a4_gemv.prune_tc_configs(configs, args)
    assert narrow and not [c for c in narrow if c in off] and on == [c for c in configs if c in off or c in narrow]


def int4_decode_operands(gen: torch.Generator, k: int = 200) -> tuple[torch.Tensor, ...]:
    """Random packed INT4 weights (40 rows), packed activation codes (12 rows), K codes (200: 100 bytes a row,
    ragged against 32- and 64-byte steps), and their per-row scales: (w_packed, a_packed, w_scale, a_scale)."""
    m, n = 12, 40
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    a_packed = torch.randint(0, 256, (m, k // 2), dtype=torch.uint8, generator=gen)
    return w_packed, a_packed, torch.rand(n, 1, generator=gen) / 64 + 1e-3, torch.rand(m, 1, generator=gen) + 0.5


def recorded_warp_slices(monkeypatch) -> list[int]:
    """The WARP_K the tensor-core kernel's heuristic gives each launch from now on, in launch order."""
    from quant_kernels import w4a4_gemv

    slices = []
    heuristics = w4a4_gemv._tc_kernel_even.values
    monkeypatch.setitem(heuristics, "WARP_K", lambda args, rule=heuristics["WARP_K"]: slices.append(rule(args))
                        or slices[-1])
    return slices


@pytest.mark.parametrize("tma", ["1", "host"])
@pytest.mark.parametrize("warps", [2, 4])
@pytest.mark.parametrize("split_k", [1, 3])
def test_tensor_core_decode_kernel_loads_int8_operands_by_tma(split_k, warps, tma, monkeypatch):
    """``PTQ_TC_TMA`` 1 and host: the int8 dots' weight tile and activation planes arrive through tensor
    descriptors (TMA, ``tc_tma_loads``) that each program makes or the launch builds on the host, INT4 x INT4 on
    dp4a bytes, 12 of a tile's 16 rows, 40 weight rows in 16-row tiles, K ragged (112 bytes against 64-byte steps)
    and split or not, on 2 warps (each its slice of a step's K) or 4, a bias and a residual: the twin's result bit
    for bit. Off by default; with the planes' offset not a multiple of 16 bytes (K = 200), packed codes or E4M3
    planes the copies load them."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes, w4a4_gemv_ref

    launched = []
    monkeypatch.setattr(w4a4_gemv, "_tc_kernel_even", _RecordingLaunch(w4a4_gemv._tc_kernel_even, launched))
    gen = torch.Generator().manual_seed(split_k + warps)
    w_packed, a_packed, w_scale, a_scale = int4_decode_operands(gen, k=224)
    ragged_w, ragged_a, ragged_w_scale, ragged_a_scale = int4_decode_operands(gen)
    a_bytes, ragged_bytes = dp4a_bytes(a_packed, "int4", "int4"), dp4a_bytes(ragged_a, "int4", "int4")
    # (the launch's activations, their dp4a bytes for the twin, weights, scales)
    cases = [(a_bytes, a_bytes, w_packed, a_scale, w_scale)] * 2 + [
        (ragged_bytes, ragged_bytes, ragged_w, ragged_a_scale, ragged_w_scale),
        (a_packed, a_bytes, w_packed, a_scale, w_scale),
        (a_bytes.float().to(torch.float8_e4m3fn), a_bytes, w_packed, a_scale, w_scale)]
    for i, (a, twin_bytes, w, a_s, w_s) in enumerate(cases):
        if i == 1:
            monkeypatch.setenv("PTQ_TC_TMA", tma)
        got, kw = fixed_tc_product(a, a_s, w, w_s, "int4", "int4", split_k, gen, block_kb=64, warps=warps)
        assert torch.equal(got, w4a4_gemv_ref(twin_bytes, a_s, w, w_s, **kw))
    mode = w4a4_gemv.TMA_HOST if tma == "host" else w4a4_gemv.TMA_DEVICE
    assert [kwargs["TMA"] for kwargs in launched] == [0, mode, 0, 0, 0]
    monkeypatch.setenv("PTQ_TC_TMA", "yes")
    with pytest.raises(ValueError, match="PTQ_TC_TMA='yes': choose 0 .* or 1 .* or host "):
        w4a4_gemv.tc_tma_mode()


def test_tma_descriptors_of_launches_in_a_row_never_share_memory(monkeypatch):
    """The tensor descriptors' memory (``_tma_scratch``, Triton's allocator under PTQ_TC_TMA=1): TMA_SCRATCH_SLOTS
    launches in a row each get a buffer of their own, kept (a programmatic dependent launch makes its descriptors
    while the kernel before it may still read its own), the next launch the first one's again, a larger request a
    larger buffer; each device its own ring."""
    from quant_kernels import w4a4_gemv

    device = [0]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: device[0])
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda size, dtype, device: empty(size, dtype=dtype))
    monkeypatch.setattr(w4a4_gemv, "_tma_slots", {})
    monkeypatch.setattr(w4a4_gemv, "_tma_launches", itertools.count())
    slots = w4a4_gemv.TMA_SCRATCH_SLOTS
    first = [w4a4_gemv._tma_scratch(256, 128, None) for _ in range(slots)]
    assert len({b.data_ptr() for b in first}) == slots and all(b.numel() == 256 for b in first)
    again = w4a4_gemv._tma_scratch(128, 128, None)
    assert again.data_ptr() == first[0].data_ptr() and again.numel() == 128
    grown = w4a4_gemv._tma_scratch(1024, 128, None)
    assert grown.numel() == 1024 and grown.data_ptr() not in {b.data_ptr() for b in first}
    device[0] = 1
    other = w4a4_gemv._tma_scratch(256, 128, None)
    assert other.data_ptr() not in {b.data_ptr() for b in first} and set(w4a4_gemv._tma_slots) == {0, 1}


class _RecordingLaunch:
    """A kernel whose launches go through, their keyword arguments recorded in ``launched``."""

    def __init__(self, kernel, launched: list):
        self.kernel, self.launched = kernel, launched

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launched.append(kwargs)
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("element", ["int4", "e2m1"])
@pytest.mark.parametrize("m, split_k", [(5, 1), (12, 3), (40, 2)])
def test_tensor_core_decode_kernel_takes_packed_codes(m, split_k, element):
    """Packed activation codes (uint8, two a byte) against weights of their element: both nibbles of each
    activation byte decoded as the weight's are (A_PACKED: INT4 moved up for the int8 dots, E2M1 to E4M3 for the
    one-dot FP8 form), every code pair (K = 256 columns of all 16 x 16), ragged K (100 bytes against 32-byte steps)
    split or not, ragged rows, a bias and a residual: the twin's result bit for bit, as on the dp4a bytes of the
    same codes; mixed pairs, 1-D codes, the CUDA-core kernel and a gated product refused."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes, w4a4_gemv_ref

    n, k = 40, 200
    gen = torch.Generator().manual_seed(m + split_k)
    codes = torch.arange(16, dtype=torch.uint8)
    pack = lambda c: c[..., 0::2] | (c[..., 1::2] << 4)  # noqa: E731
    w_packed = torch.cat([pack(codes.repeat(16)).reshape(1, 128)[:, :k // 2].repeat(n // 2, 1),
                          torch.randint(0, 256, (n - n // 2, k // 2), dtype=torch.uint8, generator=gen)])
    a_packed = torch.cat([pack(codes.repeat_interleave(16)).reshape(1, 128)[:, :k // 2],
                          torch.randint(0, 256, (m - 1, k // 2), dtype=torch.uint8, generator=gen)])
    w_scale = torch.rand(n, 1, generator=gen) / 64 + 1e-3
    a_scale = torch.rand(m, 1, generator=gen) + 0.5
    got, kw = fixed_tc_product(a_packed, a_scale, w_packed, w_scale, element, element, split_k, gen)
    want = w4a4_gemv_ref(dp4a_bytes(a_packed, element, element), a_scale, w_packed, w_scale, **kw)
    assert torch.equal(got, want)
    assert torch.equal(w4a4_gemv_ref(a_packed, a_scale, w_packed, w_scale, **kw), want)  # the twin takes them too
    assert torch.equal(w4a4_gemv.w4a4_gemv_triton(a_packed, a_scale, w_packed, w_scale, **kw), want)  # on its own
    partial, counts = w4a4_gemv.split_k_buffer(a_packed.device, m, n)
    assert not partial.any() and not counts.any()
    other = "e2m1" if element == "int4" else "int4"
    for product in (w4a4_gemv.w4a4_gemv_triton, w4a4_gemv_ref):
        for changed in ({"a_element": other}, {"w_element": other}):
            with pytest.raises(ValueError, match="packed activation codes .* against weights of their element"):
                product(a_packed, a_scale, w_packed, w_scale, **{**kw, **changed})
        with pytest.raises(ValueError, match=f"2-D tensor: got {element} activations with {element} weights, shape "
                                             "\\(100,\\)"):
            product(a_packed[0], a_scale, w_packed, w_scale, **kw)
    for refused in ({"tensor_cores": False}, {"gated": True}):
        with pytest.raises(ValueError, match="packed activation codes take the tensor-core decode kernel"):
            w4a4_gemv.w4a4_gemv_triton(a_packed, a_scale, w_packed, w_scale, **{**kw, "residual": None}, **refused)


@pytest.mark.parametrize("a_element, w_element", [("int4", "int4"), ("int4", "e2m1"), ("e2m1", "e2m1")])
def test_tensor_core_decode_kernel_decodes_every_code_pair(a_element, w_element):
    """All 16 x 16 code pairs (K = 256: each once), INT4's -8 and E2M1's -0 included, sum to the twin's values;
    each row also takes one code against every code at once, so a wrong weight decode shows in its own sum."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    codes = torch.arange(16, dtype=torch.uint8)
    a_codes, w_codes = codes.repeat_interleave(16), codes.repeat(16)
    pack = lambda c: (c[0::2] | (c[1::2] << 4)).reshape(1, -1)  # noqa: E731
    a_packed, w_packed = pack(a_codes).repeat(5, 1), torch.cat([pack(w_codes), pack(a_codes)]).repeat(8, 1)
    a_packed[1:] = torch.stack([pack(torch.full((256,), c, dtype=torch.uint8))[0] for c in (1, 6, 11, 15)])
    one = torch.ones(5, 1)
    kw = dict(a_element=a_element, w_element=w_element, out_dtype=torch.float32)
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, a_element, w_element), one, w_packed, torch.ones(16, 1),
                                     tensor_cores=True, **kw)
    assert torch.equal(got, w4a4_matmul_ref(a_packed, one, w_packed, torch.ones(16, 1), **kw))


@pytest.mark.parametrize("split_k, block_kb", [(1, 32), (3, 32), (4, 64)])
def test_tensor_core_decode_kernel_splits_k_exactly(split_k, block_kb):
    """Split-K: slices of K (the last short or empty: 100 bytes a plane) add exact int32 sums atomically, and
    the last program of each tile runs the one epilogue: the unsplit result bit for bit, the bias and residual
    added once, and the partial sums and counters left zeroed for the next product."""
    import triton

    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_order, w4a4_gemv_ref

    m, n, k = 12, 40, 200
    gen = torch.Generator().manual_seed(split_k)
    w_packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    w_scale = torch.rand(n, 1, generator=gen) / 64 + 1e-3
    a_bytes = dp4a_order(torch.randint(-8, 8, (m, k), generator=gen).to(torch.int8), "int4")
    a_scale = torch.rand(m, 1, generator=gen) + 0.5
    kw = dict(a_element="int4", w_element="int4", bias=torch.randn(n, generator=gen), out_dtype=torch.float16,
              residual=torch.randn(m, n, generator=gen).to(torch.float16))
    config = triton.Config(dict(BLOCK_N=16, BLOCK_KB=block_kb, SPLIT_K=split_k))
    got = w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, tensor_cores=True, config=config, **kw)
    assert torch.equal(got, w4a4_gemv_ref(a_bytes, a_scale, w_packed, w_scale, **kw))
    partial, counts = w4a4_gemv.split_k_buffer(a_bytes.device, m, n)
    assert not partial.any() and not counts.any()
    with pytest.raises(ValueError, match="BLOCK_N \\(at least 16\\), BLOCK_KB and SPLIT_K"):
        w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, tensor_cores=True,
                                   config=triton.Config(dict(BLOCK_N=16, BLOCK_KB=32)), **kw)


def test_tensor_core_configs_for_fp8_dots_fill_a_warpgroup(monkeypatch):
    """E2M1 weights (FP8 dots) and E4M3 activation planes keep the configs of whole warpgroups with 16 weight
    rows a warp, the wgmma tile, with PTQ_TC_WARP_SPLIT=0 (on, narrower tiles stack their K slices into one:
    ``test_tensor_core_tuner_keeps_narrow_fp8_tiles_only_with_their_k_sliced``); INT4 keeps all, those on fewer
    warps too."""
    from quant_kernels import w4a4_gemv

    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "0")
    configs = w4a4_gemv._tc_autotuned.configs
    args = dict(zip(w4a4_gemv.TC_TUNING_KEY, (16, 1024, 512, False, False, 16, True, False, False, False)),
                a_ptr=torch.zeros(1))
    kept = w4a4_gemv.prune_tc_configs(configs, args)
    assert 0 < len(kept) < len(configs)
    assert all(c.num_warps % 4 == 0 and c.kwargs["BLOCK_N"] >= 16 * c.num_warps for c in kept)
    assert any(c.num_warps < 4 and c.kwargs["BLOCK_N"] >= 16 * c.num_warps for c in configs)
    assert not w4a4_gemv.tc_config_fits(32, 2, True) and w4a4_gemv.tc_config_fits(32, 2, False)
    assert w4a4_gemv.prune_tc_configs(configs, args, W_E2M1=False, A_E4M3=True, A_E4M3_W_INT4=True) == kept
    assert w4a4_gemv.prune_tc_configs(configs, args, W_E2M1=False) == configs


def test_decode_kernels_take_their_rows(monkeypatch):
    """INT4 weights: the CUDA-core kernel below TC_MIN_M rows on a GPU, the tensor-core one up to TC_MAX_M (under
    the interpreter only above GEMV_MAX_M); E2M1 weights as INT4 ones (E2M1 x E2M1 at 12 rows equals the twin),
    with PTQ_TC_E2M1=0 as other weights: the CUDA-core kernel, up to GEMV_MAX_M."""
    from quant_kernels import w4a4_gemv
    from quant_kernels.reference import dp4a_bytes

    assert w4a4_gemv.TC_MIN_M <= w4a4_gemv.GEMV_MAX_M < w4a4_gemv.TC_MAX_M
    assert not w4a4_gemv.takes_tensor_cores(8, "int4") and w4a4_gemv.takes_tensor_cores(9, "int4")  # interpreter
    assert w4a4_gemv.takes_tensor_cores(9, "e2m1") and not w4a4_gemv.takes_tensor_cores(65, "int4")
    assert not w4a4_gemv.takes_tensor_cores(9, "int8") and not w4a4_gemv.gemv_fits(9, 64, 0, 0, "int8")
    assert w4a4_gemv.gemv_fits(64, 64, 0, 0, "int4") and w4a4_gemv.gemv_fits(64, 64, 0, 0, "e2m1")
    assert not w4a4_gemv.gemv_fits(9, 64, 0, 0)
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 9, 16, 64)
    kw = dict(a_element="int4", w_element="int4")
    a_bytes = dp4a_bytes(a_packed, "int4", "int4")
    got = w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, out_dtype=torch.float32, **kw)
    assert_matches_twin(got, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, out_dtype=torch.float32, **kw))
    with pytest.raises(ValueError, match="CUDA-core decode kernel takes 1 to 8 rows"):
        w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, tensor_cores=False, **kw)
    with pytest.raises(ValueError, match="takes INT4 weights, or E2M1 weights .* got int8 weights"):
        w4a4_gemv.w4a4_gemv_triton(a_bytes, a_scale, torch.zeros(16, 64, dtype=torch.int8), w_scale,
                                   a_element="int8", w_element="int8", tensor_cores=True)
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 65, 16, 64)
    with pytest.raises(ValueError, match=r"1 to 64 rows \(INT4 weights\)"):
        w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale, **kw)
    with pytest.raises(ValueError, match="tensor-core decode kernel takes 1 to 64 rows and K a multiple of 8, got "
                                         "M=65"):
        w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale,
                                   tensor_cores=True, **kw)
    assert w4a4_gemv.max_rows("e2m1") == w4a4_gemv.TC_MAX_M
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("e2m1xe2m1", 12, 16, 64)
    kw = dict(a_element="e2m1", w_element="e2m1", out_dtype=torch.float32)
    got = w4a4_gemv.w4a4_gemv_triton(dp4a_bytes(a_packed, "e2m1", "e2m1"), a_scale, w_packed, w_scale, **kw)
    assert_matches_twin(got, w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, **kw))
    monkeypatch.setenv("PTQ_TC_E2M1", "0")
    assert not w4a4_gemv.takes_tensor_cores(9, "e2m1") and not w4a4_gemv.gemv_fits(9, 64, 0, 0, "e2m1")
    assert w4a4_gemv.max_rows("e2m1") == w4a4_gemv.GEMV_MAX_M
    monkeypatch.setenv("PTQ_TC_E2M1", "2")
    with pytest.raises(ValueError, match="PTQ_TC_E2M1='2': choose 0"):
        w4a4_gemv.takes_tensor_cores(12, "e2m1")


def test_decode_rows_bench_needs_a_gpu_and_writes_its_table(cli, tmp_path):
    """benchmarks/decode_rows_bench.py: refused without a GPU before anything is written; its table gives each
    timed kernel's ratio to bf16 and the largest error."""
    from benchmarks.decode_rows_bench import markdown

    done = cli("benchmarks/decode_rows_bench.py", "--out", str(tmp_path / "rows"))
    assert done.returncode == 2 and "no GPU here" in done.stderr and not (tmp_path / "rows.json").exists()
    rows = [dict(n=4096, k=4096, m=8, bf16_ms=0.0155, linear_ms=0.0088, linear_kernel="tensor-core",
                 cuda_core_ms=0.0127, cuda_core_rel_err=1e-7, tensor_core_ms=0.0077, tensor_core_rel_err=3e-7,
                 tensor_core_e4m3_ms=0.0062, tensor_core_e4m3_rel_err=4e-7, linear_e4m3_ms=0.0081),
            dict(n=4096, k=4096, m=1, bf16_ms=0.0155, linear_ms=0.0068, linear_kernel="CUDA-core",
                 cuda_core_ms=0.0062, cuda_core_rel_err=1e-7)]
    text = markdown(dict(device="GPU", date="d", versions={}, command="c", l2_flush="write", rows=rows))
    assert "the L2 flushed by a write of 256 MiB before each" in text
    assert ("| 4096x4096 | 8 | 15.5 | 8.8 (1.76×) tensor-core | 12.7 (1.22×) | 7.7 (2.01×) | 6.2 (2.50×) | "
            "8.1 (1.91×) |") in text
    assert "| 4096x4096 | 1 | 15.5 | 6.8 (2.28×) CUDA-core | 6.2 (2.50×) | – | – | – |" in text
    assert "4.0e-07" in text


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_decode_rows_bench_sweeps_every_tensor_core_config_that_fits(element, monkeypatch):
    """decode_rows_bench's ``--tc_sweep`` rows: bf16 first, then each config of TC_CONFIGS that the launch takes
    (E2M1's on E4M3 planes, as on a GPU: whole warpgroups, or 4-warp tiles whose K slices stack into one), fastest
    first, each product equal to the twin's, the autotuner's pick marked; with a residual the same configs."""
    import quant_kernels
    from benchmarks import decode_rows_bench
    from quant_kernels import w4a4_gemv

    form = quant_kernels.decode_codes_form
    monkeypatch.setattr(quant_kernels, "decode_codes_form", lambda e, m, on_gpu: form(e, m, True))
    flags = w4a4_gemv.tc_decode_flags(element, element == "e2m1", False)
    fitting = [c for c in w4a4_gemv.TC_CONFIGS
               if w4a4_gemv.tc_config_takes(dict(flags, BLOCK_N=c[0], BLOCK_KB=c[1], num_warps=c[3]))]
    picked = fitting[-1]
    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: triton.Config(
        dict(BLOCK_N=picked[0], BLOCK_KB=picked[1], SPLIT_K=picked[2]), num_warps=picked[3], num_stages=picked[4]))
    times = iter(range(100, 0, -1))  # each call timed faster than the one before: the sweep's order reversed
    torch.manual_seed(0)
    rows = decode_rows_bench.config_sweep(64, 512, 16, lambda call: (call(), next(times) / 1e3)[1],
                                          torch.device("cpu"), element, residual=element == "e2m1")
    assert rows[0]["config"] == "bf16 x @ w.T" and len(rows) == 1 + len(fitting)
    assert 1 < len(fitting) < len(w4a4_gemv.TC_CONFIGS) if element == "e2m1" else len(fitting) == len(
        w4a4_gemv.TC_CONFIGS)
    assert {r["codes"] for r in rows} == {"E4M3 planes" if element == "e2m1" else "dp4a bytes"}
    assert [r["us"] for r in rows[1:]] == sorted(r["us"] for r in rows[1:]) and rows[1]["pick"]
    assert [r["pick"] for r in rows].count(True) == 1 and all(r["rel_err"] <= 1e-5 for r in rows)
    assert rows[1]["config"].startswith(f"BLOCK_N={picked[0]} BLOCK_KB={picked[1]} SPLIT_K={picked[2]} ")
    text = decode_rows_bench.sweep_markdown(dict(device="GPU", date="d", versions={}, command="c", timing="t",
                                                 l2_flush="read", element=element, rows=rows))
    residual = "yes" if element == "e2m1" else "no"
    split = ", K over warps" if rows[1]["warp_split"] else ""
    assert f"| 64x512 | 16 | {rows[1]['codes']} | {residual} | * {rows[1]['config']}{split} | " in text
    assert "tensor-core decode kernel's configs" in text and "`PINNED_TC_CONFIGS`'" in text


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_decode_rows_bench_sweeps_the_tensor_core_kernel_on_packed_codes(element, monkeypatch):
    """``--codes packed``: the tensor-core kernel's configs (E2M1's: whole warpgroups) on the activations' packed
    codes (A_PACKED), each product equal to the twin's, the rows named so; the CUDA-core kernel refused by name."""
    from benchmarks import decode_rows_bench
    from quant_kernels import w4a4_gemv

    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: (call(), None)[1])
    torch.manual_seed(0)
    rows = decode_rows_bench.config_sweep(64, 512, 16, lambda call: (call(), 1e-3)[1], torch.device("cpu"), element,
                                          packed=True)
    fitting = [c for c in w4a4_gemv.TC_CONFIGS if w4a4_gemv.tc_config_fits(c[0], c[3], element == "e2m1")]
    assert len(rows) == 1 + len(fitting) and {r["codes"] for r in rows} == {"packed codes"}
    assert all(r["rel_err"] <= 1e-5 for r in rows) and not any(r["pick"] for r in rows)
    with pytest.raises(ValueError, match="packed activation codes take the tensor-core kernel, not the CUDA-core"):
        decode_rows_bench.config_sweep(64, 512, 1, lambda call: 1e-3, torch.device("cpu"), element,
                                       kernel="cuda_core", packed=True)


def test_decode_rows_bench_times_extra_tensor_core_configs_beside_the_candidates(monkeypatch):
    """``--extra``: its tensor-core configs timed after TC_CONFIGS' (one already among them timed once), each
    product equal to the twin's, the ones outside the candidates marked ``+`` in the table."""
    from benchmarks import decode_rows_bench
    from quant_kernels import w4a4_gemv

    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: (call(), None)[1])
    extra = decode_rows_bench.extra_tc_configs(f"32,256,2,2,3;{','.join(map(str, w4a4_gemv.TC_CONFIGS[0]))};"
                                               "32,256,2,2,3", "int4")
    torch.manual_seed(0)
    rows = decode_rows_bench.config_sweep(64, 512, 16, lambda call: (call(), 1e-3)[1], torch.device("cpu"), "int4",
                                          extra=extra)
    assert len(rows) == 2 + len(w4a4_gemv.TC_CONFIGS) and all(r["rel_err"] <= 1e-5 for r in rows)
    outside = [r["config"] for r in rows if not r["candidate"]]
    assert outside == ["BLOCK_N=32 BLOCK_KB=256 SPLIT_K=2 warps=2 stages=3"]
    text = decode_rows_bench.sweep_markdown(dict(device="GPU", date="d", versions={}, command="c", timing="t",
                                                 l2_flush="read", element="int4", rows=rows))
    assert text.count("| + ") == 1 and f"| + {outside[0]} |" in text


def test_decode_rows_bench_times_the_configs_with_the_warp_split_switch_as_asked(monkeypatch):
    """``--warp_split``: 1 (the default) times every tensor-core config with PTQ_TC_WARP_SPLIT on, those with fewer
    than 16 weight rows a warp named as splitting K in the table; 0 every config with it off, none so named; ``both``'s
    second pass (split_only) only the configs it changes. Each product equals the twin's; the switch the caller had is
    back after; split_only on the CUDA-core kernel refused by name."""
    from benchmarks import decode_rows_bench
    from benchmarks.kernel_bench import described
    from quant_kernels import w4a4_gemv

    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: (call(), None)[1])
    monkeypatch.setenv("PTQ_TC_WARP_SPLIT", "0")
    switched = []
    monkeypatch.setattr(decode_rows_bench, "timed_configs", lambda *args, timed=decode_rows_bench.timed_configs: (
        switched.append(w4a4_gemv.tc_warp_split_on()), timed(*args))[1])
    narrow = {c for c in w4a4_gemv.TC_CONFIGS if c[0] < 16 * c[3] and c[1] % (32 * c[3]) == 0}
    torch.manual_seed(0)
    rows = {(split, only): decode_rows_bench.config_sweep(64, 512, 16, lambda call: (call(), 1e-3)[1],
                                                          torch.device("cpu"), "int4", warp_split=split,
                                                          split_only=only)
            for split, only in ((True, False), (False, False), (True, True))}
    assert switched == [True, False, True] and not w4a4_gemv.tc_warp_split_on()
    every = {described(triton.Config(dict(BLOCK_N=c[0], BLOCK_KB=c[1], SPLIT_K=c[2]), num_warps=c[3],
                                     num_stages=c[4])): c in narrow for c in w4a4_gemv.TC_CONFIGS}
    assert 0 < len(narrow) < len(every)
    assert {r["config"]: r["warp_split"] for r in rows[True, False][1:]} == every
    assert len(rows[False, False]) == 1 + len(every) and not any(r["warp_split"] for r in rows[False, False])
    assert len(rows[True, True]) == 1 + len(narrow) and all(r["warp_split"] for r in rows[True, True][1:])
    assert all(r["rel_err"] <= 1e-5 for r in sum(rows.values(), []))
    text = decode_rows_bench.sweep_markdown(dict(device="GPU", date="d", versions={}, command="c", timing="t",
                                                 l2_flush="read", element="int4", rows=sum(rows.values(), [])))
    assert text.count(", K over warps |") == 2 * len(narrow)
    with pytest.raises(ValueError, match="the warps splitting K take the tensor-core kernel, not the CUDA-core"):
        decode_rows_bench.config_sweep(64, 512, 1, lambda call: 1e-3, torch.device("cpu"), "int4",
                                       kernel="cuda_core", split_only=True)


def test_decode_rows_bench_times_narrow_e2m1_tiles_only_with_their_k_sliced(monkeypatch):
    """E2M1 on E4M3 planes (the linear's codes on a GPU): a tile of fewer than 16 weight rows a warp (a 4-warp
    ``--extra`` one, and TC_CONFIGS' narrow 4-warp ones) is timed only with PTQ_TC_WARP_SPLIT on, its K slices
    stacked into the warpgroup's rows, each product equal to the twin's; with it off only the whole-warpgroup
    tiles."""
    import quant_kernels
    from benchmarks import decode_rows_bench
    from quant_kernels import w4a4_gemv

    form = quant_kernels.decode_codes_form
    monkeypatch.setattr(quant_kernels, "decode_codes_form", lambda e, m, on_gpu: form(e, m, True))
    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: (call(), None)[1])
    extra = decode_rows_bench.extra_tc_configs("16,256,1,4,3", "e2m1")
    torch.manual_seed(0)
    rows = {split: decode_rows_bench.config_sweep(64, 512, 16, lambda call: (call(), 1e-3)[1], torch.device("cpu"),
                                                  "e2m1", extra=extra, warp_split=split) for split in (True, False)}
    wide = [c for c in w4a4_gemv.TC_CONFIGS if w4a4_gemv.tc_config_fits(c[0], c[3], True)]
    narrow = [c for c in w4a4_gemv.TC_CONFIGS if c[3] % 4 == 0 and c[0] < 16 * c[3]]
    assert len(rows[False]) == 1 + len(wide) and len(rows[True]) == 2 + len(wide) + len(narrow) and narrow
    assert [r["warp_split"] for r in rows[True]].count(True) == 1 + len(narrow)
    assert {r["codes"] for r in rows[True]} == {"E4M3 planes"} and all(r["rel_err"] <= 1e-5 for r in rows[True])
    assert [r["config"] for r in rows[True] if not r["candidate"]] == [
        "BLOCK_N=16 BLOCK_KB=256 SPLIT_K=1 warps=4 stages=3"]


@pytest.mark.parametrize("m", [1, 6])
def test_decode_rows_bench_sweeps_every_cuda_core_candidate(m, monkeypatch):
    """decode_rows_bench's ``--gemv_sweep`` rows: bf16 first, then every CUDA-core candidate its pruning keeps at M
    rows (the prefetching and folded ones at one row only), on dp4a bytes (also where the linear would write E4M3
    planes, as for the tensor cores' rows on a GPU), fastest first, each E2M1 product equal to the twin's, the
    autotuner's pick marked once."""
    import quant_kernels
    from benchmarks import decode_rows_bench
    from benchmarks.kernel_bench import described
    from quant_kernels import w4a4_gemv

    monkeypatch.setattr(quant_kernels, "decode_codes_form", lambda e, rows, on_gpu: ("int4", True))
    kept = w4a4_gemv.prune_decode_configs(w4a4_gemv._gemv_autotuned.configs, dict(BLOCK_M=triton.next_power_of_2(m)))
    assert (len(kept) < len(w4a4_gemv._gemv_autotuned.configs)) == (m > 1)
    picked = kept[len(kept) // 2]
    monkeypatch.setattr(decode_rows_bench, "tuned_pick", lambda call, kernel: (call(), picked)[1]
                        if kernel == "cuda_core" else None)
    times = iter(range(len(kept) + 1, 0, -1))
    torch.manual_seed(0)
    rows = decode_rows_bench.config_sweep(16, 256, m, lambda call: (call(), next(times) / 1e3)[1],
                                          torch.device("cpu"), "e2m1", kernel="cuda_core")
    assert rows[0]["config"] == "bf16 x @ w.T" and len(rows) == 1 + len(kept)
    assert {r["codes"] for r in rows} == {"dp4a bytes"} and {r["kernel"] for r in rows} == {"cuda_core"}
    assert [r["us"] for r in rows[1:]] == sorted(r["us"] for r in rows[1:])
    assert [r["pick"] for r in rows].count(True) == 1 and all(r["rel_err"] <= 1e-5 for r in rows)
    assert [r["config"] for r in rows if r["pick"]] == [described(picked)]
    text = decode_rows_bench.sweep_markdown(dict(device="GPU", date="d", versions={}, command="c", timing="t",
                                                 l2_flush="read", element="e2m1", kernel="cuda_core", rows=rows))
    assert "CUDA-core decode kernel's configs" in text and "`PINNED_GEMV_CONFIGS`'" in text


@pytest.mark.parametrize("flags, said", [
    (["--tc_sweep", "--ms", "1,16"], "--tc_sweep times the tensor-core decode kernel, which takes 5 to 64 rows on a "
                                     "GPU: got --ms 1,16"),
    (["--gemv_sweep", "--ms", "1,16"], "--gemv_sweep times the CUDA-core decode kernel, which takes 1 to 8 rows on a "
                                       "GPU: got --ms 1,16"),
    (["--gemv_sweep", "--tc_sweep", "--ms", "8"], "each time one kernel: choose one a run"),
    (["--gemv_sweep", "--codes", "both", "--ms", "1"], "--codes both sweeps the activations' packed codes on the "
                                                        "tensor-core kernel: give --tc_sweep"),
    (["--codes", "packed", "--ms", "16"], "--codes packed sweeps the activations' packed codes"),
    (["--gemv_sweep", "--extra", "32,256,2,2,3", "--ms", "1"], "--extra times tensor-core configs beside the "
                                                                "autotuner's: give --tc_sweep"),
    (["--tc_sweep", "--extra", "32,256,2", "--ms", "16"], "--extra: a tensor-core decode config is "
                                                           "BLOCK_N,BLOCK_KB,split_k,warps,stages"),
    (["--tc_sweep", "--extra", "16,256,2,2,3;24,256,1,2,3", "--ms", "16"], "--extra: 24,256,1,2,3: BLOCK_N must be "
                                                                            "a power of two of at least 16"),
    (["--tc_sweep", "--extra", "32,16,1,2,3", "--ms", "16"], "--extra: 32,16,1,2,3: BLOCK_N must be"),
    (["--tc_sweep", "--element", "e2m1", "--extra", "32,256,2,2,3", "--ms", "16"],
     "--extra: 32,256,2,2,3: E2M1 weights multiply on wgmma"),
    (["--gemv_sweep", "--warp_split", "0", "--ms", "1"], "--warp_split 0 sets how the tensor-core kernel's warps "
                                                          "share a step: give --tc_sweep")])
def test_decode_rows_bench_sweeps_only_its_kernels_rows(cli, tmp_path, flags, said):
    done = cli("benchmarks/decode_rows_bench.py", *flags, "--out", str(tmp_path / "sweep"))
    assert done.returncode == 2 and said in done.stderr
    assert not (tmp_path / "sweep.json").exists()


def test_tensor_core_decode_kernel_tiles_rows_over_its_third_grid_axis():
    """The tensor-core decode kernel launched over three tiles of 16 rows (the last ragged), as prefill_bench
    launches it, the tiles handed out in launch order and GROUP_M = 2 at a time: every fp32 output equals the exact
    product's (the interpreter's bfloat16 cast truncates)."""
    from benchmarks.prefill_bench import launch_tc, operands

    planes, packed, *_, a_scale, w_scale, want = operands(40, 32, 64, torch.device("cpu"),
                                                          torch.Generator().manual_seed(0))
    for group_m in (1, 2):
        out = torch.full((40, 32), float("nan"))
        launch_tc(planes, packed, a_scale, w_scale, out, (16, 16, 16, 4, 1, group_m))
        assert torch.equal(out, want)
    from quant_kernels.w4a4_gemv import w4a4_tc_prefill_triton

    tile = triton.Config(dict(BLOCK_N=16, BLOCK_M=16, BLOCK_KB=16, SPLIT_K=2, GROUP_M=1))
    with pytest.raises(ValueError, match="a prefill tile sets BLOCK_N, BLOCK_M, BLOCK_KB, SPLIT_K=1 and GROUP_M, got"):
        w4a4_tc_prefill_triton(planes, a_scale, packed, w_scale, a_element="int4", config=tile)
    with pytest.raises(ValueError, match="K a multiple of 8, got K=60"):
        w4a4_tc_prefill_triton(planes[:, :60], a_scale, packed[:, :30], w_scale, a_element="int4")


@pytest.mark.parametrize("form", ["int8", "e4m3", "e4m3_in_wgmma"])
def test_e2m1_weights_on_the_int8_prefill_kernel_take_every_byte(form):
    """Every packed E2M1 weight byte (256 of them, 16 rows of 16 bytes) as twice its two values on the int8 tensor
    cores, or (the activation bytes given as E4M3, each step's sums added in fp32 or accumulated in wgmma) as E4M3
    operands on the FP8 ones, against 70 rows of INT4 activation bytes in INT4 weights' order: fp32 outputs equal
    the exact product (the interpreter's FP8 sums are exact)."""
    from quant_kernels.w4a4_gemv import w4a4_tc_prefill_triton
    from quant_layers import packing

    gen = torch.Generator().manual_seed(3)
    levels = torch.randint(-8, 8, (70, 32), generator=gen, dtype=torch.int8)
    planes = torch.cat([levels[:, 0::2], levels[:, 1::2]], dim=1).contiguous()
    w_packed = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(16, 16)
    a_scale, w_scale = torch.rand(70, 1, generator=gen) + 0.5, torch.rand(16, 1, generator=gen) + 0.5
    values = packing.decode(packing.unpack(w_packed), packing.element_named("e2m1"))
    want = (levels.float() @ values.t()) * a_scale * w_scale.t()
    a_bytes = planes if form == "int8" else planes.float().to(torch.float8_e4m3fn)
    got = w4a4_tc_prefill_triton(a_bytes, a_scale, w_packed, w_scale, a_element="int4", w_element="e2m1",
                                 out_dtype=torch.float32, fp8_step_sums=form != "e4m3_in_wgmma")
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="E2M1 weights with INT4 or E2M1 activations, got e2m1 weights with int8"):
        w4a4_tc_prefill_triton(a_bytes, a_scale, w_packed, w_scale, a_element="int8", w_element="e2m1")
    if form != "int8":
        with pytest.raises(ValueError, match="E4M3 activation bytes hold INT4 or E2M1 activations .*, got int8"):
            w4a4_tc_prefill_triton(a_bytes, a_scale, w_packed, w_scale, a_element="int8", w_element="int4")


@pytest.mark.parametrize("step_sums", [True, False])
def test_int4_weights_on_e4m3_operands_take_every_byte(step_sums):
    """Every packed INT4 weight byte (256 of them) as E4M3 operands of its two levels times 2^-9 (v's sign at bit 7,
    |v| <= 8 below: the subnormals and the least normal), against 70 rows of E4M3 activation planes: fp32 outputs
    equal the exact product, and the byte map equals E4M3's own encoding of v times 2^-9."""
    from quant_kernels.w4a4_gemv import w4a4_tc_prefill_triton
    from quant_layers import packing

    gen = torch.Generator().manual_seed(4)
    levels = torch.randint(-8, 8, (70, 32), generator=gen, dtype=torch.int8)
    planes = torch.cat([levels[:, 0::2], levels[:, 1::2]], dim=1).float().to(torch.float8_e4m3fn)
    w_packed = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(16, 16)
    a_scale, w_scale = torch.rand(70, 1, generator=gen) + 0.5, torch.rand(16, 1, generator=gen) + 0.5
    values = packing.decode(packing.unpack(w_packed), packing.element_named("int4"))
    want = (levels.float() @ values.t()) * a_scale * w_scale.t()
    got = w4a4_tc_prefill_triton(planes, a_scale, w_packed, w_scale, a_element="int4", w_element="int4",
                                 out_dtype=torch.float32, fp8_step_sums=step_sums)
    assert torch.equal(got, want)
    nibbles = torch.arange(16)
    byte_map = torch.where(nibbles >= 8, 0x90 - nibbles, nibbles).to(torch.uint8)
    level = torch.where(nibbles >= 8, nibbles - 16, nibbles).float()
    assert torch.equal(byte_map.view(torch.float8_e4m3fn).float(), level * 2.0 ** -9)


@pytest.mark.parametrize("step_sums", [True, False])
@pytest.mark.parametrize("m, n, k", [(70, 24, 208), (16, 16, 256), (5, 40, 64)])
@pytest.mark.parametrize("element", ["e2m1", "int4"])
def test_4bit_weights_on_e4m3_operands_over_many_steps(element, m, n, k, step_sums):
    """E2M1 or INT4 weights against E4M3 activation planes over several K steps of the interpreter's 32-byte tile, K
    ragged (208 codes: three whole steps and 8 bytes), rows and weight rows ragged: each step's sums added in fp32
    (two dots) or one dot over both planes accumulating in wgmma both equal the exact product, the poisoned output
    wholly written."""
    from quant_kernels.w4a4_gemv import w4a4_tc_prefill_triton
    from quant_layers import packing

    gen = torch.Generator().manual_seed(m + n + k)
    levels = torch.randint(-8, 8, (m, k), generator=gen, dtype=torch.int8)
    planes = torch.cat([levels[:, 0::2], levels[:, 1::2]], dim=1).float().to(torch.float8_e4m3fn)
    w_packed = torch.randint(0, 256, (n, k // 2), generator=gen, dtype=torch.int32).to(torch.uint8)
    a_scale, w_scale = torch.rand(m, 1, generator=gen) + 0.5, torch.rand(n, 1, generator=gen) + 0.5
    values = packing.decode(packing.unpack(w_packed), packing.element_named(element))
    want = (levels.float() @ values.t()) * a_scale * w_scale.t()
    out = torch.full((m, n), float("nan"))
    got = w4a4_tc_prefill_triton(planes, a_scale, w_packed, w_scale, a_element="int4", w_element=element,
                                 out_dtype=torch.float32, out=out, fp8_step_sums=step_sums)
    assert got is out and torch.equal(got, want)


@pytest.mark.parametrize("tiling", [(0, False, 1), (64, False, 1), (64, True, 1), (0, False, 2)])
@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_dp4a_bytes_as_e4m3_are_the_dp4a_bytes_values(element, tiling, monkeypatch):
    """``dp4a_for="int4", fp8_codes=True``: the activation kernel (whole rows, chunks, rows split among programs,
    several row blocks a program) and its twin write the dp4a bytes' values (INT4 levels, twice the E2M1 values)
    as E4M3 bytes in the same order, zeros +0; other layouts are refused."""
    from quant_kernels import act_quant

    chunk, split, steps = tiling
    monkeypatch.setattr(act_quant, "INTERPRET_CHUNK", chunk)
    monkeypatch.setattr(act_quant, "INTERPRET_SPLIT", split)
    monkeypatch.setattr(act_quant, "INTERPRET_ROW_STEPS", steps)
    x = torch.randn(37, 256, dtype=torch.bfloat16)
    x[0, :8] = 0.0
    x[1, 3] = -1e-4 * x[1].abs().max()  # rounds to zero from below
    int8_bytes, scale = quant_kernels.quantize_activations(x, element, dp4a_for="int4", backend="torch")
    for backend in ("torch", "triton"):
        got, got_scale = quant_kernels.quantize_activations(x, element, dp4a_for="int4", fp8_codes=True,
                                                            backend=backend)
        assert got.dtype == torch.float8_e4m3fn and torch.equal(got_scale, scale)
        assert torch.equal(got.view(torch.uint8), int8_bytes.float().to(torch.float8_e4m3fn).view(torch.uint8))
    for bad in (dict(element="int4", dp4a_for="e2m1"), dict(element="int8", dp4a_for="int4")):
        with pytest.raises(ValueError, match="fp8_codes with dp4a_for writes INT4 weights' order of INT4 or E2M1"):
            quant_kernels.quantize_activations(x, bad["element"], dp4a_for=bad["dp4a_for"], fp8_codes=True)


def test_kernel_check_runs_the_int8_path_dry():
    """``kernel_check --only int8_linear`` on the CPU: the int8 path's linears (INT4 and E2M1 weights, each
    activation element) against the twins."""
    import tempfile

    from benchmarks.kernel_check import main

    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "check")
        assert main(["--cpu_dry_run", "--only", "int8_linear", "--out", prefix]) == 0
        text = open(prefix + ".md").read()
    assert "4 checks, 0 failed." in text and "| int8 path | e2m1-tok x int4-tok-clip0.9 | M70 N40 K200" in text


def test_kernel_check_runs_the_e4m3_path_dry(tmp_path):
    """``kernel_check --only e4m3_linear`` on the CPU: the e4m3 path's linears at decode rows (12) and prefill rows
    (70), INT4 and E2M1 weights, each activation element, against the twins."""
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "e4m3_linear", "--out", prefix]) == 0
    text = open(prefix + ".md").read()
    assert "8 checks, 0 failed." in text
    assert "| e4m3 path | e2m1-tok x int4-tok-clip0.9 | M12 N40 K200 -> bfloat16 |" in text
    assert "| e4m3 path | int4-tok-clip0.9 x e2m1-tok | M70 N40 K200 -> float16 |" in text
