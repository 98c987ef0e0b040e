"""Formats against hand-computed grids, ties, saturation, block-scale encodings, bounds."""

from __future__ import annotations

import math

import pytest
import torch

from quant_layers import E2M1, E4M3, FPFormat, IntFormat, QuantSpec, Quantizer, fp_format
from quant_layers.formats import e8m0_scale

POS = {
    (2, 1): [0, 0.5, 1, 1.5, 2, 3, 4, 6],
    (3, 0): [0, 0.25, 0.5, 1, 2, 4, 8, 16],
    (1, 2): [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5],
    (2, 2): [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7],
    (3, 1): [0, 0.125, 0.25, 0.375, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24],
}


def symmetric(pos):
    return sorted({-v for v in pos} | set(pos))


@pytest.mark.parametrize("em", sorted(POS))
def test_small_fp_grids_by_hand(em):
    assert fp_format(*em).grid().tolist() == symmetric(POS[em])


@pytest.mark.parametrize(
    "em, count, max_value, min_subnormal",
    [((2, 3), 63, 7.5, 0.125), ((3, 2), 63, 28.0, 0.0625), ((4, 3), 253, 448.0, 2**-9), ((5, 2), 247, 57344.0, 2**-16)],
)
def test_wider_fp_grids(em, count, max_value, min_subnormal):
    fmt = fp_format(*em)
    grid = fmt.grid()
    assert len(grid) == count and fmt.max_value == max_value == grid.max().item()
    assert grid[grid > 0].min().item() == min_subnormal


@pytest.mark.parametrize("fmt, torch_dtype, scale", [(E4M3, torch.float8_e4m3fn, 100.0), (fp_format(5, 2), torch.float8_e5m2, 1e4)])
def test_fp8_rounding_matches_torch_casts(fmt, torch_dtype, scale):
    x = torch.randn(200_000, dtype=torch.float32) * scale
    x = x[x.abs() < fmt.max_value]
    assert torch.equal(fmt.round(x), x.to(torch_dtype).float())


def test_round_half_to_even():
    # E2M1 ties: 0.25 (0|0.5), 0.75 (0.5|1), 1.25 (1|1.5), 1.75 (1.5|2), 2.5 (2|3), 3.5 (3|4), 5 (4|6)
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, -0.25])
    assert E2M1.round(x).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -4.0, -0.0]
    assert IntFormat(4).round(torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5])).tolist() == [0, 2, 2, 0, -2]


def test_saturation_and_int_ranges():
    assert E2M1.round(torch.tensor([7.0, 100.0, -1e9])).tolist() == [6.0, 6.0, -6.0]
    assert E4M3.round(torch.tensor([470.0, 1e6])).tolist() == [448.0, 448.0]
    assert IntFormat(4).grid().tolist() == list(range(-8, 8)) and IntFormat(4).max_value == 7
    assert IntFormat(4, signed=False).grid().tolist() == list(range(16))
    assert IntFormat(8).round(torch.tensor([200.0, -200.0])).tolist() == [127, -128]


def test_explicit_bias_and_max_value():
    shifted = FPFormat(2, 1, bias=2)  # one more than the default bias: the grid halves
    assert shifted.grid().tolist() == [v / 2 for v in E2M1.grid().tolist()]
    fmt = FPFormat.with_max_value(2, 1, 10.0)
    assert math.isclose(fmt.max_value, 10.0) and math.isclose(fmt.effective_bias, 1 + math.log2(0.6))
    x = torch.linspace(-12, 12, 1001)
    assert torch.allclose(fmt.round(x), E2M1.round(x * 0.6) / 0.6)


@pytest.mark.parametrize("bad", [(0, 3), (4, 4), (2, -1)])
def test_invalid_fp_formats(bad):
    with pytest.raises(ValueError, match="1\\+E\\+M <= 8"):
        FPFormat(*bad)


def test_nvfp4_scales_are_e4m3_times_tensor_scale():
    torch.manual_seed(0)
    x = torch.randn(4, 64)
    x[0, :16] *= 50  # one loud group
    q = Quantizer(QuantSpec("nvfp", 4))
    tensor_amax = x.abs().amax()
    global_scale = tensor_amax / (448 * 6)
    groups = x.reshape(-1, 16)
    block = groups.abs().amax(-1, keepdim=True) / 6 / global_scale
    block_e4m3 = block.to(torch.float8_e4m3fn).float()
    assert block.max().item() == pytest.approx(448.0)
    expected = E2M1.round(groups / (block_e4m3 * global_scale)) * block_e4m3 * global_scale
    assert torch.allclose(q(x), expected.reshape(x.shape))
    # every dequantized group is an E2M1 value times its group scale
    scales = q.scales(groups.abs().amax(-1, keepdim=True), tensor_amax)
    assert torch.allclose(scales, block_e4m3 * global_scale)


def test_mxfp4_scales_are_powers_of_two_with_floor():
    amax = torch.tensor([[6.0], [7.9], [8.0], [0.1], [1e-40]])
    scales = e8m0_scale(amax, E2M1)
    # floor(log2 amax) - 2 (E2M1's emax): 6 -> 2^0, 7.9 -> 2^0 (saturates to 6), 8 -> 2^1
    assert scales[:3].flatten().tolist() == [1.0, 1.0, 2.0]
    assert scales[3].item() == 2.0 ** (math.floor(math.log2(0.1)) - 2)
    assert scales[4].item() == 2.0**-127  # clamped to E8M0's smallest scale
    x = torch.tensor([[7.9] + [0.0] * 31])
    assert Quantizer(QuantSpec("mxfp", 4))(x)[0, 0].item() == 6.0


@pytest.mark.parametrize("spec", [
    QuantSpec("int", 4), QuantSpec("int", 8, granularity="group", group_size=32), QuantSpec("int", 4, symmetric=False),
    QuantSpec("fp", 4), QuantSpec("fp", 8, exp_bits=4, granularity="tensor"), QuantSpec("fp", 6, exp_bits=2),
])
def test_round_trip_error_bounds(spec):
    torch.manual_seed(1)
    x = torch.randn(16, 128) * torch.rand(16, 1) * 10
    q = Quantizer(spec)
    out = q(x)
    g = q.grouped(x)
    err = (q.grouped(out) - g).abs()
    if spec.format == "int" and spec.symmetric:
        step = g.abs().amax(-1, keepdim=True) / q.element.max_value
        assert (err <= step / 2 + 1e-6).all()
    elif spec.format == "int":
        step = (g.amax(-1, keepdim=True).clamp(min=0) - g.amin(-1, keepdim=True).clamp(max=0)) / 15
        assert (err <= step / 2 + 1e-5).all()
    else:
        # relative error of normal values is at most half an ulp: 2^-(M+1)
        man = spec.bits - 1 - spec.exp_bits
        scale = g.abs().amax(-1, keepdim=True) / q.element.max_value
        smallest_normal = 2.0 ** (1 - (2 ** (spec.exp_bits - 1) - 1)) * scale
        normal = g.abs() >= smallest_normal
        assert (err[normal] <= g.abs()[normal] * 2.0 ** -(man + 1) + 1e-6).all()
    # quantizing twice changes nothing
    assert torch.allclose(q(out), out, atol=1e-6)


def test_granularities_shape_and_distinct_scales():
    x = torch.randn(3, 5, 64)
    for spec, nscales in [
        (QuantSpec("int", 4, granularity="tensor"), 1),
        (QuantSpec("int", 4, granularity="token"), 15),
        (QuantSpec("int", 4, granularity="group", group_size=16), 60),
        (QuantSpec("int", 4, granularity="head"), 15 * 2),
    ]:
        q = Quantizer(spec, head_dim=32)
        assert q.grouped(x).shape[0] == nscales
        assert q(x).shape == x.shape and q(x).dtype == x.dtype


def test_mse_observer_never_worse_than_minmax():
    torch.manual_seed(2)
    w = torch.randn(64, 256)
    w[:, 0] *= 20  # outliers make clipping pay
    for fmt in ("int", "fp", "nvfp"):
        mm = Quantizer(QuantSpec(fmt, 4, granularity="channel"))
        mse = Quantizer(QuantSpec(fmt, 4, granularity="channel", observer="mse"))
        assert (mse(w) - w).pow(2).sum() <= (mm(w) - w).pow(2).sum()
    mm = Quantizer(QuantSpec("int", 4))
    mse = Quantizer(QuantSpec("int", 4, observer="mse"))
    assert (mse(w) - w).pow(2).sum() < 0.9 * (mm(w) - w).pow(2).sum()


def test_half_precision_inputs_keep_dtype():
    x = torch.randn(8, 32, dtype=torch.bfloat16)
    out = Quantizer(QuantSpec("nvfp", 4))(x)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="int9"), "unknown format 'int9'"),
    (dict(format="int", bits=9), "2 to 8 bits"),
    (dict(format="int", bits=1), "2 to 8 bits"),
    (dict(format="fp", bits=4, exp_bits=4), "between 1 and 3 exponent bits"),
    (dict(format="fp", bits=9), "3 to 8 bits"),
    (dict(format="nvfp", bits=8), "NVFP4 is 4-bit"),
    (dict(format="nvfp", bits=4, granularity="group", group_size=32), "groups of 16"),
    (dict(format="mxfp", bits=5), "4, 6 or 8 bits"),
    (dict(format="fp", bits=4, symmetric=False), "only defined for int"),
    (dict(format="int", bits=4, granularity="group"), "positive group size"),
    (dict(format="int", bits=4, observer="percentile"), "unknown observer"),
    (dict(format="int", bits=4, clip_ratio=1.5), "clip ratio"),
])
def test_bad_specs_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_group_that_does_not_divide_is_an_error():
    spec = QuantSpec("int", 4, granularity="group", group_size=100)
    with pytest.raises(ValueError, match="group size 100 does not divide the weight dimension 576"):
        spec.check_dimension(576, "weight")


@pytest.mark.parametrize("fmt, block", [("nvfp", 16), ("mxfp", 32)])
def test_block_formats_take_per_head_kv_flags_as_their_blocks(fmt, block):
    spec = QuantSpec(fmt, 4, granularity="head")
    assert (spec.granularity, spec.group_size) == ("group", block)
    with pytest.raises(ValueError, match=f"groups of {block}"):
        QuantSpec(fmt, 4, granularity="tensor")


def test_scales_are_correctly_rounded_divisions():
    """Scales divide by the element's max (CUDA would multiply by a rounded reciprocal: an ulp off)."""
    from quant_layers.quantizer import true_divide

    amax = torch.rand(4096) * 100
    for divisor in (6.0, 7.0, 15.0, 2688.0):
        exact = (amax.double() / divisor).float()  # float64 quotient rounded once: the correctly rounded one
        assert torch.equal(true_divide(amax, divisor), exact)
        # A GPU (eager, or compiled by inductor) may multiply by the float64 reciprocal instead: the same result.
        assert torch.equal((amax.double() * (1 / divisor)).float(), exact)
        assert torch.equal((amax.bfloat16().double() * (1 / divisor)).bfloat16(),
                           (amax.bfloat16().double() / divisor).bfloat16())
    spec = QuantSpec(format="int", bits=4, granularity="token")
    x = torch.randn(64, 32)
    scale = Quantizer(spec).fit(Quantizer(spec).grouped(x)).scale
    assert torch.equal(scale.flatten(), (x.abs().amax(dim=1).double() / 7.0).float())
