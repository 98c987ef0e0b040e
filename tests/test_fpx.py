"""FPx weight-only formats: codes, bit-plane packing, the torch twin and the Triton GEMM.

As in ``test_kernels``, ``TRITON_INTERPRET=1`` is set before the kernels are imported so
that the Triton kernel runs on CPU.
"""

from __future__ import annotations

import collections
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import quant_kernels  # noqa: E402
from quant_kernels import dequant, fpx_gemm, fpx_placement  # noqa: E402
from quant_kernels.reference import dequantized_product_excess, fpx_matmul_ref, fpx_weight  # noqa: E402
from quant_layers import FPFormat, QuantSpec, Quantizer, fp_format  # noqa: E402
from quant_layers.packing import (  # noqa: E402
    ELEMENT_OF, code_values, decode, element_named, encode, pack, pack_planes, unpack_planes,
)

FPX = ["e3m2", "e2m3", "e2m2", "e3m1", "e2m1", "e3m0"]
# Every finite FP element of 4 to 6 bits the kernel takes (E5M0's 2^16 is not a float16).
KERNEL_ELEMENTS = [name for name, fmt in ELEMENT_OF.items()
                   if isinstance(fmt, FPFormat) and fmt.bits in (4, 5, 6) and name != "e5m0"]
# The weights the FPx kernels take: those FP elements and INT4 levels (per-channel W4A16).
KERNEL_WEIGHTS = FPX + ["int4"]


def test_kernel_is_built_for_the_interpreter():
    assert fpx_gemm.INTERPRET, "kernels were imported before TRITON_INTERPRET=1 was set"


# ---------------------------------------------------------------------------
# Codes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ELEMENT_OF if not n.startswith("int")])
def test_code_values_are_the_grid(name):
    fmt = element_named(name)
    values = code_values(fmt)
    assert fmt == fp_format(fmt.exp_bits, fmt.man_bits) and values.shape == (2**fmt.bits,)
    assert torch.equal(values.unique().double(), fmt.grid())
    half = 2 ** (fmt.bits - 1)
    assert torch.equal(values[half:], -values[:half]) and (values[1:half] > values[: half - 1]).all()


def test_hand_checked_codes():
    e3m2, e2m3 = code_values(element_named("e3m2")), code_values(element_named("e2m3"))
    # E3M2, bias 3: s eee mm.
    assert e3m2[0b0_000_01] == 0.0625  # subnormal: 2^(1-3) * 1/4
    assert e3m2[0b0_001_00] == 0.25  # 2^(1-3) * 1
    assert e3m2[0b0_100_01] == 2.5  # 2^(4-3) * 1.25
    assert e3m2[0b0_111_11] == 28.0  # 2^(7-3) * 1.75, the largest
    assert e3m2[0b1_011_10] == -1.5  # -(2^0 * 1.5)
    # E2M3, bias 1: s ee mmm.
    assert e2m3[0b0_00_001] == 0.125  # subnormal: 2^0 * 1/8
    assert e2m3[0b0_00_111] == 0.875  # subnormal: 7/8
    assert e2m3[0b0_01_000] == 1.0
    assert e2m3[0b0_11_111] == 7.5  # 2^2 * 1.875, the largest
    assert e2m3[0b1_10_100] == -3.0  # -(2^1 * 1.5)
    # E3M1 (bias 3): 0 111 1 = 2^4 * 1.5; E2M2 (bias 1): 0 11 11 = 2^2 * 1.75; E3M0: 0 001 = 2^-2.
    assert code_values(element_named("e3m1"))[0b01111] == 24.0
    assert code_values(element_named("e2m2"))[0b01111] == 7.0
    assert code_values(element_named("e3m0")).tolist()[:8] == [0, 0.25, 0.5, 1, 2, 4, 8, 16]


@pytest.mark.parametrize("name", list(ELEMENT_OF))
def test_encode_decode_round_trip_every_code(name):
    fmt = element_named(name)
    codes = torch.arange(2**fmt.bits, dtype=torch.uint8)
    values = decode(codes, fmt)
    positive_zero = codes.clone()
    if not name.startswith("int"):
        positive_zero[2 ** (fmt.bits - 1)] = 0  # negative zero encodes as code 0
    assert torch.equal(encode(values, fmt), positive_zero)
    assert torch.equal(encode(values.bfloat16(), fmt), positive_zero)  # every value is exact in bfloat16


def test_encode_refuses_values_off_the_grid_and_formats_without_codes():
    with pytest.raises(ValueError, match="quantize the tensor first"):
        encode(torch.tensor([0.1]), element_named("e3m2"))
    with pytest.raises(ValueError, match="quantize the tensor first"):
        encode(torch.tensor([32.0]), element_named("e3m2"))
    for fmt in [fp_format(4, 3), fp_format(5, 2), FPFormat(3, 2, bias=2.5)]:
        with pytest.raises(ValueError, match="codes exist for int4, int8 and for FP elements"):
            code_values(fmt)
    with pytest.raises(ValueError, match="unknown element 'e4m3'"):
        element_named("e4m3")


# ---------------------------------------------------------------------------
# Bit planes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 5, 6])
def test_planes_round_trip_every_code(bits):
    gen = torch.Generator().manual_seed(bits)
    for _ in range(5):
        length = 8 * int(torch.randint(8, 40, (1,), generator=gen))
        codes = torch.randint(0, 2**bits, (3, length), generator=gen, dtype=torch.uint8)
        codes[0, : 2**bits] = torch.arange(2**bits)
        planes = pack_planes(codes, bits)
        assert all(p.dtype == torch.uint8 for p in planes)
        assert sum(p.numel() for p in planes) * 8 == codes.numel() * bits  # exactly n bits per weight
        assert torch.equal(planes[0], pack(codes & 0xF))
        assert torch.equal(unpack_planes(planes, bits, length), codes)


def test_plane_layout():
    codes = torch.tensor([[0b100000, 0b010000, 0b110000, 0b000001, 0, 0, 0, 0b111111]], dtype=torch.uint8)
    low, high = pack_planes(codes, 6)
    assert low.tolist() == [[0x00, 0x10, 0x00, 0xF0]] and high.tolist() == [[0b00_11_01_10, 0b11_00_00_00]]
    low, high = pack_planes(torch.tensor([[16, 0, 16, 0, 0, 0, 0, 31]], dtype=torch.uint8), 5)
    assert low.tolist() == [[0, 0, 0, 0xF0]] and high.tolist() == [[0b1000_0101]]
    (plane,) = pack_planes(torch.tensor([[1, 2, 15, 0]]), 4)
    assert plane.tolist() == [[0x21, 0x0F]]


@pytest.mark.parametrize("bits, length, multiple", [(5, 12, 8), (6, 6, 4), (4, 3, 2)])
def test_planes_need_whole_bytes(bits, length, multiple):
    with pytest.raises(ValueError, match=f"multiple of {multiple}, got {length}"):
        pack_planes(torch.zeros(2, length, dtype=torch.uint8), bits)
    with pytest.raises(ValueError, match=f"multiple of {multiple}, got {length}"):
        unpack_planes(pack_planes(torch.zeros(2, 8, dtype=torch.uint8), bits), bits, length)


def test_plane_errors():
    with pytest.raises(ValueError, match="4-, 5-, 6- or 8-bit codes, got bits=7"):
        pack_planes(torch.zeros(8, dtype=torch.uint8), 7)
    with pytest.raises(ValueError, match=r"5-bit codes lie in \[0, 31\]"):
        pack_planes(torch.full((8,), 32, dtype=torch.uint8), 5)
    low, high = pack_planes(torch.zeros(2, 16, dtype=torch.uint8), 6)
    with pytest.raises(ValueError, match="have 2 plane"):
        unpack_planes((low,), 6, 16)
    with pytest.raises(ValueError, match="2-bit plane of 16 6-bit codes is uint8 with last dimension 4"):
        unpack_planes((low, high[:, :2]), 6, 16)


# ---------------------------------------------------------------------------
# The twin against fake quantization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FPX)
def test_twin_is_fake_quantized_linear(name):
    fmt = element_named(name)
    gen = torch.Generator().manual_seed(fmt.bits)
    weight, x, bias = torch.randn(24, 64, generator=gen) * 0.05, torch.randn(5, 64, generator=gen), torch.randn(24)
    weight[3] = 0  # a zero row: scale 0
    quantizer = Quantizer(QuantSpec("fp", fmt.bits, exp_bits=fmt.exp_bits, granularity="channel"))
    scale = quantizer.fit(quantizer.grouped(weight)).scale
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    planes = pack_planes(encode(fmt.round(weight / safe), fmt), fmt.bits)
    w_fq = quantizer.fake_quantize(weight)
    assert torch.equal(fpx_weight(planes, scale, name, fmt.bits, 64), w_fq)
    out = fpx_matmul_ref(x, planes, scale, element=name, bits=fmt.bits, bias=bias)
    want = F.linear(x, w_fq, bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6 * want.abs().max().item())


def test_auto_backend_on_cpu_is_the_twin_and_keeps_leading_dimensions():
    x, planes, scale, bias = operands("e3m2", 6, 40, 64, torch.bfloat16)
    out = quant_kernels.fpx_matmul(x.reshape(2, 3, 64), planes, scale, element="e3m2", bits=6, bias=bias)
    assert out.shape == (2, 3, 40) and out.dtype == torch.bfloat16
    assert torch.equal(out.reshape(6, 40), fpx_matmul_ref(x, planes, scale, element="e3m2", bits=6, bias=bias))


# ---------------------------------------------------------------------------
# Triton against the twin
# ---------------------------------------------------------------------------


@triton.jit
def _decode_kernel(codes_ptr, out_ptr, n, EXP_BITS: tl.constexpr, MAN_BITS: tl.constexpr, EXP_BIAS: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    codes = tl.load(codes_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + offs, fpx_placement._decode(codes, EXP_BITS, MAN_BITS, EXP_BIAS), mask=offs < n)


@pytest.mark.parametrize("name", KERNEL_ELEMENTS + ["int4"])
def test_kernel_decodes_every_code(name):
    fmt = element_named(name)
    codes = torch.arange(2**fmt.bits, dtype=torch.int32)
    out = torch.empty(codes.shape)
    exp_bits, man_bits, exp_bias = fpx_gemm.kernel_fields(name, fmt.bits)
    _decode_kernel[(1,)](codes, out, codes.numel(), EXP_BITS=exp_bits, MAN_BITS=man_bits, EXP_BIAS=exp_bias, BLOCK=64)
    assert torch.equal(out, code_values(fmt))
    assert torch.equal(out.half().float(), out)  # exact in float16 (and bfloat16: at most 6 significant bits)


def operands(name: str, m: int, n: int, k: int, dtype: torch.dtype, seed: int = 0) -> tuple:
    """x, planes of uniformly random codes (every value, subnormals, -0), scales, bias."""
    bits = element_named(name).bits
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (n, k), generator=gen, dtype=torch.uint8)
    x = torch.randn(m, k, generator=gen).to(dtype)
    scale = (torch.rand(n, 1, generator=gen) + 0.5) * 0.02
    return x, pack_planes(codes, bits), scale, torch.randn(n, generator=gen)


def assert_matches_twin(out: torch.Tensor, want: torch.Tensor) -> None:
    """fp32 accumulation in another order, scale applied after the sum: 1e-5 of the output's
    magnitude, plus one ulp of a half out dtype."""
    rtol = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[out.dtype]
    torch.testing.assert_close(out.float(), want.float(), rtol=rtol, atol=1e-5 * want.float().abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("k", [64, 192])
@pytest.mark.parametrize("name", KERNEL_WEIGHTS)
def test_triton_equals_twin(name, k, dtype):
    bits = element_named(name).bits
    for m in (1, 3, 17):
        x, planes, scale, bias = operands(name, m, 40, k, dtype, seed=m * k)
        want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias)
        poisoned = torch.full((m, 40), float("nan"), dtype=dtype)
        out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, out=poisoned)
        assert out is poisoned and not out.isnan().any()  # every entry written
        assert_matches_twin(out, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["e3m2", "e2m2", "e2m1"])
def test_prefill_rows_multiply_the_dequantized_weight(name, dtype, monkeypatch):
    """From DEQUANT_MIN_M rows of half-precision x (out and bias of its dtype) the product is x times the weight
    dequantized into x's dtype, by torch.mm (the fake-quantized model's linear; within the weight's and the output's
    rounding of the twin); below it, or with an fp32 out or bias, the tile kernel; a forced one takes only x's dtype."""
    monkeypatch.setattr(fpx_gemm, "DEQUANT_MIN_M", 12)
    bits = element_named(name).bits
    x, planes, scale, bias = operands(name, 12, 40, 64, dtype, seed=5)
    bias = bias.to(dtype)
    calls = []
    dequantize = dequant.dequantize_triton
    monkeypatch.setattr(dequant, "dequantize_triton", lambda *a, **kw: calls.append(1) or dequantize(*a, **kw))
    poisoned = torch.full((12, 40), float("nan"), dtype=dtype)
    got = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, out=poisoned)
    weight = fpx_weight(planes, scale, name, bits, 64)
    assert calls and got is poisoned and torch.equal(got, torch.addmm(bias, x, weight.to(dtype).T))
    assert dequantized_product_excess(got, x, planes, scale, name, bits, bias) <= 1
    wrong = got.clone()
    wrong[3, 7] += 0.25  # outputs of about 1 here, whose roundings are a few hundredths
    assert dequantized_product_excess(wrong, x, planes, scale, name, bits, bias) > 1
    calls.clear()
    for rows, changes in ((11, {}), (12, dict(out_dtype=torch.float32)), (12, dict(bias=bias.float()))):
        fpx_gemm.fpx_matmul_triton(x[:rows], planes, scale, element=name, bits=bits, **{"bias": bias, **changes})
    assert not calls
    with pytest.raises(ValueError, match="multiplied by torch.mm in x's dtype"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, out_dtype=torch.float32,
                                   dequantize=True)


def tile_config(monkeypatch, name: str, k: int, **config) -> int:
    """Set the interpreter's tile config entries ``config`` for this test; skip FP5 with K not a multiple of 8 (its
    1-bit plane holds whole bytes); returns the element's bits."""
    for key, value in config.items():
        monkeypatch.setitem(fpx_gemm.INTERPRET_CONFIG, key, value)
    bits = element_named(name).bits
    if bits == 5 and k % 8:
        pytest.skip("FP5 bit planes hold whole bytes of the 1-bit plane: K a multiple of 8")
    return bits


@pytest.mark.parametrize("swap", [False, True], ids=["", "swapped"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("k", [64, 200, 36])
@pytest.mark.parametrize("name", KERNEL_WEIGHTS)
def test_paired_tile_kernel_equals_twin(name, k, dtype, swap, monkeypatch):
    """The tensor-core kernel's PAIRED path: every code placed two at a time from 32-bit words, one dot per code
    position, the weight the dots' second operand or (swapped) their first; ragged K (200 against 32-wide steps);
    K = 36 (no whole words) takes the spread path instead."""
    bits = tile_config(monkeypatch, name, k, PAIRED=True, SWAP_AB=swap)
    for m in (1, 3, 17):
        x, planes, scale, bias = operands(name, m, 40, k, dtype, seed=k + m)
        want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias)
        poisoned = torch.full((m, 40), float("nan"), dtype=dtype)
        out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, out=poisoned,
                                         row_kernel=False)
        assert out is poisoned and not out.isnan().any()
        assert_matches_twin(out, want)


@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize("swap", [False, True], ids=["", "swapped"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["e3m2", "e2m2", "e2m1", "int4"])
def test_paired_tile_kernel_on_whole_tiles_equals_twin(name, dtype, swap, split_k, monkeypatch):
    """Whole tiles (N = 48 against 16-row tiles, K = 128 against 32-wide steps times the split): the PAIRED loop
    loads the weight words unmasked (EVEN) and masks x by row only; bfloat16 x places the codes as bfloat16 values.
    Every output equals the twin's, rows ragged (1 and 17 of 16-row tiles)."""
    bits = tile_config(monkeypatch, name, 128, PAIRED=True, SWAP_AB=swap, SPLIT_K=split_k)
    assert fpx_gemm._tile_even(dict(N=48, K=128, **fpx_gemm.INTERPRET_CONFIG))
    for m in (1, 17):
        x, planes, scale, bias = operands(name, m, 48, 128, dtype, seed=m + split_k)
        out = torch.full((m, 48), float("nan"), dtype=dtype)
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, out=out, row_kernel=False)
        assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias))


@pytest.mark.parametrize("prefetch, stages", [(True, 1), (False, 1), (False, 3)],
                         ids=["prefetch", "no-prefetch", "pipelined"])
@pytest.mark.parametrize("k", [64, 200])
@pytest.mark.parametrize("name", KERNEL_WEIGHTS)
def test_row_kernel_equals_twin(name, k, prefetch, stages, monkeypatch):
    """The decode kernel (CUDA cores): every code, ragged K (200 against 32-wide steps), bf16 x, one row with
    the next step's words loaded before or after a step's arithmetic (or by a software-pipelined loop on a GPU),
    and 3 and 8 rows."""
    monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, "PREFETCH", prefetch)
    monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, "LOOP_STAGES", stages)
    for m in (1, 3, 8) if prefetch or stages > 1 else (1,):
        row_kernel_outputs(name, m, k, seed=k + m)


def row_kernel_outputs(name: str, m: int, k: int, seed: int) -> list[tuple[dict, torch.Tensor]]:
    """The row kernel on random bfloat16 rows (N = 40), into a bfloat16 output with a bias and a float32 one
    without, each written whole and checked against the twin: (the call's arguments, its output) each."""
    bits = element_named(name).bits
    x, planes, scale, bias = operands(name, m, 40, k, torch.bfloat16, seed=seed)
    results = []
    for out_dtype, b in ((torch.bfloat16, bias), (torch.float32, None)):
        call = dict(x=x, planes=planes, w_scale=scale, element=name, bits=bits, bias=b, out_dtype=out_dtype,
                    row_kernel=True)
        want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=b, out_dtype=out_dtype)
        poisoned = torch.full((m, 40), float("nan"), dtype=out_dtype)
        out = fpx_gemm.fpx_matmul_triton(**call, out=poisoned)
        assert out is poisoned and not out.isnan().any()
        assert_matches_twin(out, want)
        results.append((call, out))
    return results


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("group", [16, 32, 48, 128])
@pytest.mark.parametrize("name", ["int4", "e2m1"])
def test_row_kernel_takes_scales_in_groups(name, group, dtype, monkeypatch):
    """INT4 and E2M1 weights with a scale per ``group`` codes along K (GPTQ's 128, NVFP4's 16, MXFP4's 32, and 48,
    whose groups straddle steps): the row kernel, each word's sums times its group's scale, at 1, 3 and 8 rows with
    steps of a group, less and more (a quarter of a group, two groups), one row also split along K and prefetching,
    equals the twin; by default (the interpreter gives the row kernel no rows) the tensor-core kernel, within the
    dequantized weight's roundings."""
    k, n = 384, 40
    gen = torch.Generator().manual_seed(group)
    planes = pack_planes(torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8), 4)
    scale = (torch.rand(n, k // group, generator=gen) + 0.5) * 0.02
    spec = dict(element=name, bits=4, group=group)
    wide = triton.next_power_of_2(group // 4)  # words a step: at least two groups
    for m, config in ((1, None), (3, None), (8, None), (1, dict(BLOCK_KW=2, PREFETCH=True, SPLIT_K=2)),
                      (1, dict(BLOCK_KW=wide)), (3, dict(BLOCK_KW=wide)), (8, dict(BLOCK_KW=2))):
        for key, value in {**fpx_gemm.INTERPRET_ROW_CONFIG, **(config or {})}.items():
            monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, key, value)
        x = torch.randn(m, k, generator=gen).to(dtype)
        got = fpx_gemm.fpx_matmul_triton(x, planes, scale, row_kernel=True, **spec)
        assert_matches_twin(got, fpx_matmul_ref(x, planes, scale, **spec))
        monkeypatch.undo()
    x = torch.randn(5, k, generator=gen).to(dtype)
    got = quant_kernels.fpx_matmul(x, planes, scale, **spec, backend="triton")
    if dtype == torch.float32:
        assert_matches_twin(got, fpx_matmul_ref(x, planes, scale, **spec))
    else:
        assert dequantized_product_excess(got, x, planes, scale, name, 4, group=group) <= 1
    configs = fpx_gemm._fpx_row_group_autotuned.configs  # on a GPU: every config takes every group
    assert len(fpx_gemm._prune_row_group_configs(configs, dict(GROUP=16, KW=512, BLOCK_M=1))) == len(configs)
    with pytest.raises(ValueError, match="groups of scales take packed INT4 or E2M1 codes"):
        fpx_gemm.fpx_matmul_triton(x, pack_planes(torch.zeros(n, k, dtype=torch.uint8), 6), scale, element="e3m2",
                                   bits=6, group=group)
    for backend in ("torch", "triton"):  # a word's eight codes share a scale in both kernels
        with pytest.raises(ValueError, match="groups of scales of a multiple of 8 codes .* got groups of 4"):
            quant_kernels.fpx_matmul(x, planes, torch.ones(n, k // 4), **{**spec, "group": 4}, backend=backend)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("name, group", [("int4", 128), ("e2m1", 16), ("int4", 48), ("e2m1", 32)])
def test_tensor_core_kernel_takes_scales_in_groups(name, group, dtype):
    """INT4 and E2M1 weights with a scale per ``group`` codes on the tensor-core kernel's PAIRED tiles, unswapped,
    swapped and split along K, at 1, 5 and 17 rows (ragged N, K steps that straddle groups). Where a step lies in one
    group its sums are scaled: fp32 out equals the twin. Otherwise each weight times its group's scale is rounded
    once to x's dtype, the weight ``dequantize_weight`` writes, then summed in fp32: fp32 out equals x times that
    weight to fp32 summation order (a weight left unrounded misses by far more), and fp32 x equals the twin. Scales
    run from 0.01 to 123 (E2M1 weights up to 737: past 24 the fp32 placement times the scale would overflow without
    the shift, and fp16 tiles lift the scaled codes back before the dot). An unpaired config is refused."""
    k, n = 384, 40
    gen = torch.Generator().manual_seed(group + len(name))
    planes = pack_planes(torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8), 4)
    scale = (torch.rand(n, k // group, generator=gen) + 0.5) * 0.02
    scale[::3, 1::2] *= 2.0**12
    spec = dict(element=name, bits=4, group=group)
    weight = quant_kernels.dequantize_weight(planes, scale, **spec, dtype=dtype).float()
    tiles = [None] + [triton.Config(dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, PAIRED=True, SWAP_AB=swap, SPLIT_K=split))
                      for bn, bk, swap, split in ((32, 128, False, 1), (16, 64, True, 2), (16, 256, True, 1))]
    forms = set()
    for m in (1, 5, 17):
        x = torch.randn(m, k, generator=gen).to(dtype)
        twin = fpx_matmul_ref(x, planes, scale, out_dtype=torch.float32, **spec)
        rounded = x.float() @ weight.T
        for config in tiles:
            got = fpx_gemm.fpx_matmul_triton(x, planes, scale, row_kernel=False, config=config,
                                             out_dtype=torch.float32, **spec)
            step_scaled = group % (config.kwargs if config else fpx_gemm.INTERPRET_CONFIG)["BLOCK_K"] == 0
            forms.add(step_scaled)
            if step_scaled or dtype == torch.float32:
                assert_matches_twin(got, twin)
            if not step_scaled:
                bound = 1e-6 * (x.float().abs() @ weight.abs().T).max().item()
                torch.testing.assert_close(got, rounded, rtol=0, atol=bound)
    assert forms == ({True, False} if group in (32, 128) else {False})
    unpaired = triton.Config(dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, PAIRED=False, SWAP_AB=False, SPLIT_K=1))
    with pytest.raises(ValueError, match="scales in groups take the tensor-core kernel's PAIRED path"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, row_kernel=False, config=unpaired, **spec)


def encoded_scales(encoding: str, n: int, groups: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random group scales as NVFP4 (E4M3, with an fp32 global scale a row, as fused linears' rows differ) or MXFP4
    (E8M0 biased exponents, 0 among them) checkpoints encode them."""
    if encoding == "e4m3":
        block = (torch.rand(n, groups, generator=gen) * 400 + 0.01).to(torch.float8_e4m3fn)
        return block, torch.rand(n, generator=gen) * 1e-4 + 1e-5
    exponents = torch.randint(117, 134, (n, groups), generator=gen, dtype=torch.uint8)  # 2^-10 to 2^6
    exponents[0, 0] = 0
    return exponents, None


@pytest.mark.parametrize("encoding, group", [("e4m3", 16), ("e4m3", 32), ("e8m0", 32), ("e8m0", 16)])
def test_kernels_read_encoded_group_scales_as_their_fp32_values(encoding, group):
    """NVFP4's E4M3 scales with their rows' global scales and MXFP4's E8M0 bytes, read by the row kernel (1, 3 and
    8 rows), the tensor-core kernel (a step inside one group, steps of several, swapped and split) and the
    dequantizing kernel, give bit for bit what their decoded fp32 values (``reference.scale_values``) give, in each
    x dtype; except bfloat16 x (and fp16 x on E4M3 scales) on the tensor cores in steps of several groups, where
    each weight is exact (its codes' value times its scale in bfloat16 or fp16) and the product the twin's, closer
    than on fp32 scales.
    Finite with MXFP4 scales up to 2^6, in every x dtype (fp16 tiles lift their scaled codes before the dot); E8M0's
    0 is 2^-127 (fp32 subnormal), 127 is 1."""
    from quant_kernels.reference import scale_values

    k, n = 256, 40
    gen = torch.Generator().manual_seed(group + len(encoding))
    planes = pack_planes(torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8), 4)
    raw, global_scale = encoded_scales(encoding, n, k // group, gen)
    decoded = scale_values(raw, global_scale)
    assert decoded.dtype == torch.float32 and decoded.shape == raw.shape
    if encoding == "e8m0":
        assert decoded[0, 0].item() == 2.0**-127
        assert scale_values(torch.tensor([127, 128], dtype=torch.uint8)).tolist() == [1.0, 2.0]
    else:
        assert torch.equal(decoded, raw.float() * global_scale[:, None])
    spec = dict(element="e2m1", bits=4, group=group)
    tiles = [triton.Config(dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, PAIRED=True, SWAP_AB=swap, SPLIT_K=split))
             for bn, bk, swap, split in ((32, group, False, 1), (32, 128, False, 1), (16, 64, True, 2))]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for m in (1, 3, 8):
            x = torch.randn(m, k, generator=gen).to(dtype)
            calls = [dict(row_kernel=True)] + [dict(row_kernel=False, config=config) for config in tiles]
            for call in calls:
                got = fpx_gemm.fpx_matmul_triton(x, planes, raw, w_global_scale=global_scale, **spec, **call,
                                                 out_dtype=torch.float32)
                assert got.isfinite().all(), call
                word_scaled = not call["row_kernel"] and group % call["config"].kwargs["BLOCK_K"] != 0
                valued = dtype == torch.bfloat16 or dtype == torch.float16 and encoding == "e4m3"
                if valued and word_scaled:
                    # each weight exact in x's dtype (codes times their scale), the global scale after the sums:
                    # the twin's product to fp32 summation order, where fp32 scales round each weight to x's dtype
                    twin = fpx_matmul_ref(x, planes, raw, w_global_scale=global_scale, **spec,
                                          out_dtype=torch.float32)
                    assert_matches_twin(got, twin)
                    rounded = fpx_gemm.fpx_matmul_triton(x, planes, scale_values(raw, global_scale), **spec, **call,
                                                         out_dtype=torch.float32)
                    if encoding == "e4m3":  # E4M3 times a global scale: rounded where the fp32 scales are used
                        assert (rounded - twin).abs().max() > (got - twin).abs().max(), call
                    else:  # powers of two: the same exact weights either way
                        assert torch.equal(got, rounded), call
                else:
                    want = fpx_gemm.fpx_matmul_triton(x, planes, scale_values(raw, global_scale), **spec, **call,
                                                      out_dtype=torch.float32)
                    assert torch.equal(got, want), call
        got = quant_kernels.dequantize_weight(planes, raw, **spec, dtype=dtype, global_scale=global_scale,
                                              backend="triton")
        assert torch.equal(got, quant_kernels.dequantize_weight(planes, decoded, **spec, dtype=dtype,
                                                                backend="triton"))
    twin = fpx_matmul_ref(x, planes, raw, w_global_scale=global_scale, **spec)
    assert torch.equal(twin, fpx_matmul_ref(x, planes, decoded, **spec))
    for call in calls:  # (fp32 x) the twin to fp32 summation order, scales up to 2^6 included
        assert_matches_twin(fpx_gemm.fpx_matmul_triton(x, planes, raw, w_global_scale=global_scale, **spec, **call),
                            twin)


def test_encoded_group_scales_are_checked():
    """E4M3 scales without their rows' global scales, a global scale beside fp32 or E8M0 scales, and encoded scales
    one a channel are refused on both backends with what to pass instead."""
    k, n = 64, 8
    planes = pack_planes(torch.zeros(n, k, dtype=torch.uint8), 4)
    x = torch.randn(2, k)
    e4m3 = torch.ones(n, k // 16).to(torch.float8_e4m3fn)
    spec = dict(element="e2m1", bits=4, group=16)
    for backend in ("torch", "triton"):
        call = dict(backend=backend, **spec)
        with pytest.raises(ValueError, match=r"E4M3 scales \(NVFP4's\) need their rows' fp32 global scales, shape "
                                             r"\(8,\), got None"):
            quant_kernels.fpx_matmul(x, planes, e4m3, **call)
        with pytest.raises(ValueError, match="need their rows' fp32 global scales, shape .* got torch.float32 with "
                                             r"shape \(1,\)"):
            quant_kernels.fpx_matmul(x, planes, e4m3, w_global_scale=torch.ones(1), **call)
        for scale in (torch.ones(n, k // 16), torch.full((n, k // 16), 127, dtype=torch.uint8)):
            with pytest.raises(ValueError, match="a global scale multiplies E4M3 scales .* only"):
                quant_kernels.fpx_matmul(x, planes, scale, w_global_scale=torch.ones(n), **call)
        with pytest.raises(ValueError, match="e8m0 scales .* come in groups along K"):
            quant_kernels.fpx_matmul(x, planes, torch.full((n,), 127, dtype=torch.uint8), element="e2m1", bits=4,
                                     backend=backend)
        with pytest.raises(ValueError, match="must be a float tensor"):
            quant_kernels.fpx_matmul(x, planes, torch.ones(n, k // 16, dtype=torch.int32), **call)


@pytest.mark.parametrize("split, prefetch, k", [(2, True, 64), (3, False, 200), (4, True, 200), (4, False, 48)],
                         ids=["2-prefetch", "3-ragged", "4-prefetch-ragged", "4-one-empty-slice"])
@pytest.mark.parametrize("name", ["e3m2", "e2m2", "e2m1"])  # splitting K is alike for INT4, tested above
def test_row_kernel_split_k_equals_twin(name, split, prefetch, k, monkeypatch):
    """SPLIT_K slices of the words a tile, their sums added by the tile's last program: every code, ragged K (the
    last slice short; K = 48 leaves the fourth slice no step), 1, 3 and 8 rows, bias or none, the tensor-core form;
    the tile counters are zero again after every product, and a product run twice is the same bit for bit."""
    from quant_kernels import w4a4_gemv

    monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, "SPLIT_K", split)
    monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, "PREFETCH", prefetch)
    for m, mma in ((1, "0"), (1, "1"), (3, "0"), (8, "0")):
        monkeypatch.setenv("PTQ_FPX_MMA", mma)
        for call, out in row_kernel_outputs(name, m, k, seed=k + m + split):
            assert torch.equal(fpx_gemm.fpx_matmul_triton(**call), out)
            assert not w4a4_gemv.split_k_buffer(out.device, 0, 0, 1)[0].any()  # the whole buffer, counters too


def assert_gated_matches_twin(out: torch.Tensor, want: torch.Tensor) -> None:
    """silu(gate) * up of products rounded to a half dtype: a product's sum in another order may round to the
    neighbouring value, which moves the output by a few ulps of it."""
    rtol = {torch.float32: 1e-5, torch.float16: 2.0**-8, torch.bfloat16: 2.0**-5}[out.dtype]
    torch.testing.assert_close(out.float(), want.float(), rtol=rtol, atol=1e-5 * want.float().abs().max().item())


@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("name, group", [("e3m2", 0), ("e2m3", 0), ("e3m1", 0), ("int4", 0), ("e2m1", 16)],
                         ids=["e3m2", "e2m3", "e3m1", "int4", "e2m1-g16"])
def test_row_kernel_gated_equals_twin(name, group, split, monkeypatch):
    """``gated``: weight rows of an MLP's gate (36, ragged against the 8-row half tiles) then its up, and the row
    kernel's epilogue writes silu(gate) * up (M, 36) at 1 and 3 rows, bfloat16, float16 and float32 out, split along
    K or not, scales per channel or in groups: every output written, equal to the twin (silu of gate's rows times
    up's, not up's times gate's), the split counters zero again."""
    from quant_kernels import w4a4_gemv

    monkeypatch.setitem(fpx_gemm.INTERPRET_ROW_CONFIG, "SPLIT_K", split)
    bits = element_named(name).bits
    for m in (1, 3):
        x, planes, scale, _ = operands(name, m, 72, 128, torch.bfloat16, seed=m + split)
        if group:
            scale = scale.expand(72, 128 // group) * torch.linspace(0.5, 2.0, 128 // group)
        spec = dict(element=name, bits=bits, group=group)
        for out_dtype in (torch.bfloat16, torch.float16, torch.float32):
            poisoned = torch.full((m, 36), float("nan"), dtype=out_dtype)
            out = fpx_gemm.fpx_matmul_triton(x, planes, scale, **spec, out_dtype=out_dtype, row_kernel=True,
                                             gated=True, out=poisoned)
            assert out is poisoned and not out.isnan().any()
            want = fpx_matmul_ref(x, planes, scale, **spec, out_dtype=out_dtype, gated=True)
            product = fpx_matmul_ref(x, planes, scale, **spec, out_dtype=out_dtype)
            assert torch.equal(want, F.silu(product[:, :36]) * product[:, 36:])
            assert_gated_matches_twin(out, want)
            assert not w4a4_gemv.split_k_buffer(out.device, 0, 0, 1)[0].any()


def test_weight_planes_keep_no_weight_and_schemes_parse_once():
    """``real_linear.weight_planes`` holds no reference to a weight once its caller lets go (a cache there would keep
    every model's weights alive), while the custom op's schemes string is parsed once (``parse_schemes``)."""
    import gc
    import weakref

    from quant_layers.real_linear import RealQuantScheme, parse_schemes, schemes_key, weight_planes

    low, high = torch.zeros(4, 8, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.uint8)
    assert weight_planes(low, None) == (low,) and weight_planes(low, high) == (low, high)
    gone = weakref.ref(low)
    del low
    gc.collect()
    assert gone() is None
    key = schemes_key(RealQuantScheme("e3m2", bits=6), None)
    assert parse_schemes(key) is parse_schemes(key)


def test_gated_product_on_every_path(monkeypatch):
    """Where the row kernel does not gate (its tensor-core and interleaved forms, the tensor-core kernel, the
    dequantized weight) the result is ``silu_mul_ref`` of that path's product, into ``out`` when given;
    ``quant_kernels.fpx_matmul`` keeps x's leading dimensions; an odd N is refused."""
    from quant_kernels.reference import silu_mul_ref

    x, planes, scale, _ = operands("e3m2", 1, 48, 64, torch.bfloat16, seed=3)
    x5, planes5, scale5, _ = operands("e2m2", 1, 48, 64, torch.bfloat16, seed=4)
    fp6, fp5 = dict(element="e3m2", bits=6), dict(element="e2m2", bits=5)
    monkeypatch.setenv("PTQ_FPX_MMA", "1")
    assert not fpx_gemm._row_gates(1, 48, torch.bfloat16, 6, 0)
    for operands_of, call in (((x, planes, scale), dict(**fp6, row_kernel=True)),
                              ((x, planes, scale), dict(**fp6, row_kernel=False)),
                              ((x, planes, scale), dict(**fp6, dequantize=True)),
                              ((x5, planes5, scale5), dict(**fp5, row_kernel=True))):  # FP5's row: interleaved
        out = torch.full((1, 24), float("nan"), dtype=torch.bfloat16)
        assert fpx_gemm.fpx_matmul_triton(*operands_of, **call, gated=True, out=out) is out
        assert torch.equal(out, silu_mul_ref(fpx_gemm.fpx_matmul_triton(*operands_of, **call)))
        monkeypatch.delenv("PTQ_FPX_MMA", raising=False)
    assert quant_kernels.fpx_gates_in_product(x, planes, bits=6)  # the twin
    assert not quant_kernels.fpx_gates_in_product(x, planes, bits=6, backend="triton")  # the interpreter: no row kernel
    monkeypatch.setattr(fpx_gemm, "INTERPRET", False)  # as a GPU picks: decode rows of the fp32 forms only
    assert fpx_gemm.gates_in_kernel(1, 48, 64, torch.bfloat16, 6, 0)
    assert fpx_gemm.gates_in_kernel(4, 48, 64, torch.float16, 6, 0)
    assert not fpx_gemm.gates_in_kernel(5, 48, 64, torch.bfloat16, 6, 0)  # the tensor-core kernel's rows
    assert not fpx_gemm.gates_in_kernel(1, 48, 64, torch.bfloat16, 5, 0)  # FP5's row: interleaved
    assert fpx_gemm.gates_in_kernel(1, 46, 64, torch.bfloat16, 5, 0)  # (not where N is no whole words of rows)
    monkeypatch.setenv("PTQ_FPX_MMA", "1")
    assert not fpx_gemm.gates_in_kernel(1, 48, 64, torch.bfloat16, 6, 0)
    monkeypatch.undo()
    want = fpx_matmul_ref(x, planes, scale, **fp6, gated=True)
    batched = x.expand(2, 3, 64)
    got = quant_kernels.fpx_matmul(batched, planes, scale, **fp6, gated=True, backend="triton")
    assert got.shape == (2, 3, 24)
    assert_gated_matches_twin(got[1, 2:], want)
    odd = pack_planes(torch.zeros(47, 64, dtype=torch.uint8), 6)
    with pytest.raises(ValueError, match="N must be even, got N=47"):
        quant_kernels.fpx_matmul(x, odd, scale[:47], element="e3m2", bits=6, gated=True)


def test_a_fixed_config_replaces_the_interpreter_s():
    """``config`` replaces the interpreter's config of the kernel that runs (a split row config, a swapped tile, as a
    GPU check forces them); one that names too little, splits K too far or swaps off the PAIRED path is refused,
    naming what it needs."""
    x, planes, scale, bias = operands("e3m2", 1, 40, 128, torch.bfloat16, seed=5)
    want = fpx_matmul_ref(x, planes, scale, element="e3m2", bits=6, bias=bias)
    fixed = triton.Config(dict(BLOCK_N=8, BLOCK_KW=4, PREFETCH=False, LOOP_STAGES=1, SPLIT_K=4))
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, bias=bias, row_kernel=True,
                                     config=fixed)
    assert_matches_twin(out, want)
    tile = triton.Config(dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=64, PAIRED=True, SWAP_AB=True, SPLIT_K=1))
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, bias=bias, config=tile)
    assert_matches_twin(out, want)
    for config, row_kernel, message in (
        (fixed, None, "tensor-core kernel's config: it names"),
        (triton.Config(dict(BLOCK_N=8, BLOCK_KW=2)), True, "row kernel's config: it names"),
        (triton.Config({**fixed.kwargs, "SPLIT_K": 9}), True, "SPLIT_K 1 to 8"),
        (triton.Config({**fixed.kwargs, "BLOCK_N": 4}), True, "BLOCK_N at least 8"),
        (triton.Config({**tile.kwargs, "PAIRED": False}), None, "SWAP_AB takes the PAIRED path"),
        (triton.Config({k: v for k, v in tile.kwargs.items() if k != "SPLIT_K"}), None, "it names"),
        (triton.Config({**tile.kwargs, "SPLIT_K": 5}), False, "tensor-core kernel's SPLIT_K 1 to 4"),
    ):
        with pytest.raises(ValueError, match=message):
            fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, row_kernel=row_kernel,
                                       config=config)
    x36, planes36, scale36, _ = operands("e3m2", 2, 8, 36, torch.bfloat16)
    with pytest.raises(ValueError, match="PAIRED takes K a multiple of 8; got K=36"):
        fpx_gemm.fpx_matmul_triton(x36, planes36, scale36, element="e3m2", bits=6,
                                   config=triton.Config({**tile.kwargs, "SWAP_AB": False}))


@pytest.mark.parametrize("split, paired, swap, k", [(2, True, True, 128), (3, True, False, 200), (4, False, False, 200),
                                                    (4, True, True, 48)],
                         ids=["2-swapped", "3-paired-ragged", "4-spread-ragged", "4-swapped-empty-slices"])
@pytest.mark.parametrize("name", ["e3m2", "e2m2", "e2m1"])  # splitting K is alike for INT4, tested above
def test_tile_kernel_split_k_equals_twin(name, split, paired, swap, k, monkeypatch):
    """The tensor-core kernel with K split among SPLIT_K programs a tile (decode batches), the slices' sums added by
    the tile's last program: every code, ragged K (the last slice short; K = 48 in 32-wide steps leaves slices with
    no step), 1, 5 and 17 rows (two row tiles), bias or none, swapped, paired or spread; the counters are zero again
    after each product and a product run twice is the same bit for bit."""
    from quant_kernels import w4a4_gemv

    bits = tile_config(monkeypatch, name, k, SPLIT_K=split, PAIRED=paired, SWAP_AB=swap)
    for m in (1, 5, 17):
        x, planes, scale, bias = operands(name, m, 40, k, torch.bfloat16, seed=k + m + split)
        for b in (bias, None):
            call = dict(x=x, planes=planes, w_scale=scale, element=name, bits=bits, bias=b, row_kernel=False)
            poisoned = torch.full((m, 40), float("nan"), dtype=torch.bfloat16)
            out = fpx_gemm.fpx_matmul_triton(**call, out=poisoned)
            assert out is poisoned and not out.isnan().any()
            assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=b))
            assert torch.equal(fpx_gemm.fpx_matmul_triton(**call), out)
            assert not w4a4_gemv.split_k_buffer(out.device, 0, 0, 1)[0].any()  # the whole buffer, counters too


def test_kernel_check_forces_the_split_row_and_swapped_tile_configs(tmp_path):
    """``kernel_check --only fpx_split,fpx_swap`` runs the row kernel with its split configs and the tensor-core
    kernel with swapped (and split) tiles fixed (the interpreter's small cases here, as a GPU runs the Llama-3-8B
    ones) and every check passes."""
    import json

    from benchmarks.kernel_check import DRY_FPX_SPLIT, DRY_FPX_SWAP, main

    assert main(["--cpu_dry_run", "--only", "fpx_split,fpx_swap", "--out", str(tmp_path / "fixed")]) == 0
    checks = json.loads((tmp_path / "fixed.json").read_text())["checks"]
    assert len(checks) == len(DRY_FPX_SPLIT) + len(DRY_FPX_SWAP) and all(c["ok"] for c in checks)
    assert sum(" row " in c["case"] and "split" in c["case"] for c in checks) == len(DRY_FPX_SPLIT)
    assert sum(" tile " in c["case"] and "split" in c["case"] for c in checks) == 1
    assert sum("swapped" in c["case"] for c in checks) == len(DRY_FPX_SWAP)


def test_kernel_check_runs_the_gated_products(tmp_path):
    """``kernel_check --only fpx_gated``: the row kernel's gated products against silu(gate) * up of its ungated
    ones, every case passing."""
    import json

    from benchmarks.kernel_check import DRY_FPX_GATED, main

    assert main(["--cpu_dry_run", "--only", "fpx_gated", "--out", str(tmp_path / "gated")]) == 0
    checks = json.loads((tmp_path / "gated.json").read_text())["checks"]
    assert len(checks) == len(DRY_FPX_GATED) and all(c["ok"] and "gated" in c["case"] for c in checks)


def test_kernel_check_runs_the_dequantized_prefill_path(tmp_path):
    """``kernel_check --only fpx_dequantized,dequant,fpx_groups``: the dequantizing kernel's FPx weights and the
    prefill product, packed INT4 / E2M1 weights in groups (NVFP4's and MXFP4's encoded scales too, NVFP4's with fp16
    rows) and their products on the tensor-core kernel and the dequantized weight, checked, every case passing (the
    interpreter's small ones)."""
    import json

    from benchmarks.kernel_check import DRY_DEQUANT, DRY_FPX_DEQUANTIZED, DRY_FPX_GROUPS, main

    assert main(["--cpu_dry_run", "--only", "fpx_dequantized,dequant,fpx_groups", "--out",
                 str(tmp_path / "dequantized")]) == 0
    checks = json.loads((tmp_path / "dequantized.json").read_text())["checks"]
    assert len(checks) == len(DRY_FPX_DEQUANTIZED) + len(DRY_DEQUANT) + len(DRY_FPX_GROUPS)
    assert all(c["ok"] for c in checks)
    assert sum("weight equal" in c["case"] for c in checks) == len(DRY_FPX_DEQUANTIZED)
    cases = [c["case"] for c in checks[-len(DRY_FPX_GROUPS):]]
    # (the interpreter gives the row kernel no rows)
    assert [case.rsplit(" (", 1)[1] for case in cases] == ["tensor cores)", "tensor cores)", "dequantized)",
                                                            "tensor cores)", "tensor cores)", "tensor cores)"]
    assert cases[-3:] == ["e2m1 g16 E4M3 scales (tensor cores)", "e2m1 g32 E8M0 scales (tensor cores)",
                          "e2m1 g16 E4M3 scales (tensor cores)"]
    assert [c["shape"].rsplit(" ", 1)[1] for c in checks[-3:]] == ["bfloat16", "bfloat16", "float16"]


def test_row_split_configs_only_where_slices_are_long():
    """The autotuner's split configs survive pruning where every slice has at least two steps."""
    configs = fpx_gemm._fpx_row_autotuned.configs

    def splits(n: int, kw: int) -> set:
        kept = fpx_gemm._prune_row_configs(configs, dict(N=n, KW=kw, BLOCK_M=1, MMA=False, INTERLEAVED=False,
                                                         x_ptr=torch.zeros(1)))  # (a CPU tensor: no pinned config)
        return {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_KW"], c.kwargs["SPLIT_K"])
                for c in kept if c.kwargs["SPLIT_K"] > 1}

    assert (32, 128, 2) in splits(4096, 512) and (32, 64, 4) in splits(4096, 512)
    assert (64, 64, 4) in splits(28672, 512) and (64, 64, 8) in splits(4096, 1792)
    assert (64, 64, 8) not in splits(4096, 512) and not splits(4096, 64)
    assert all(512 >= 2 * split * bkw for _, bkw, split in splits(4096, 512))
    assert not any(c.kwargs["SPLIT_K"] > fpx_gemm.ROW_MAX_SPLIT_K for c in configs)
    assert min(c.kwargs["BLOCK_N"] for c in configs) == fpx_gemm.ROW_MIN_BLOCK_N


def test_interleaved_high_plane_layout():
    """``interleave_high`` against hand-made words: FP6 rows 2p and 2p + 1 byte by byte (low bytes, then high bytes),
    FP5 rows 4p .. 4p + 3 nibble by nibble; the top bit lands as an int32's sign; rows that do not fill whole words
    are refused."""
    fp6 = torch.tensor([[0x1234, 0x00FF], [0x5678, -256]], dtype=torch.int16)  # -256: 0xFF00
    assert fpx_gemm.interleave_high(fp6, 6).tolist() == [[0x56127834, 0xFF0000FF - 2**32]]
    fp5 = torch.tensor([[0x21], [0x43], [0x65], [0x87]], dtype=torch.uint8)
    assert fpx_gemm.interleave_high(fp5, 5).tolist() == [[0x86427531 - 2**32]]
    assert fpx_gemm.high_rows(6) == 2 and fpx_gemm.high_rows(5) == 4
    with pytest.raises(ValueError, match="multiple of 4 rows, got 6"):
        fpx_gemm.interleave_high(torch.zeros(6, 2, dtype=torch.uint8), 5)


def test_interleaved_high_plane_switch(monkeypatch):
    """``PTQ_FPX_INTERLEAVE``: FP5 rows read the interleaved plane by default, FP6 rows their own words; 0 turns it
    off; anything else is refused, naming the choices."""
    assert fpx_gemm.row_interleave_on(5) and not fpx_gemm.row_interleave_on(6)
    monkeypatch.setenv("PTQ_FPX_INTERLEAVE", "0")
    assert not fpx_gemm.row_interleave_on(5)
    monkeypatch.setenv("PTQ_FPX_INTERLEAVE", "yes")
    with pytest.raises(ValueError, match="PTQ_FPX_INTERLEAVE='yes': choose 1 .*5-bit codes"):
        fpx_gemm.row_interleave_on(5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("k", [128, 200])
@pytest.mark.parametrize("name", KERNEL_WEIGHTS)
def test_swapped_tiles_in_both_placements_equal_twin(name, k, dtype, monkeypatch):
    """``PTQ_FPX_LANE``: swapped tiles of bfloat16 or fp16 rows place each thread's codes 2p and 2p + 1 of a word in
    the dot's register pairs by default (``_lane_tile``; FP6's high words two a load where K is a multiple of 16), or
    in K order with 0 (``_valued_tile``); both equal the twin on whole and ragged tiles, split or not; anything else
    is refused, naming the choices."""
    bits = tile_config(monkeypatch, name, k, PAIRED=True, SWAP_AB=True, SPLIT_K=2)
    assert fpx_gemm.tile_lane_on()
    x, planes, scale, bias = operands(name, 17, 48, k, dtype, seed=k)
    want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias)
    for lane in ("1", "0"):
        monkeypatch.setenv("PTQ_FPX_LANE", lane)
        out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, row_kernel=False)
        assert_matches_twin(out, want)
    monkeypatch.setenv("PTQ_FPX_LANE", "pairs")
    with pytest.raises(ValueError, match="PTQ_FPX_LANE='pairs': choose 1 .*register pairs"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, row_kernel=False)
    launches = []  # the flags each setting launches the kernel with
    monkeypatch.setattr(fpx_gemm, "_fpx_kernel", collections.defaultdict(lambda: lambda *a, **kw: launches.append(kw)))
    for lane in ("1", "0"):
        monkeypatch.setenv("PTQ_FPX_LANE", lane)
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, row_kernel=False)
    assert [kw["LANE_PAIRS"] for kw in launches] == [True, False]
    assert {kw["HIGH_WORD_PAIRS"] for kw in launches} == {bits == 6 and k % 16 == 0}


def test_interleaved_high_plane_is_kept_until_the_plane_changes():
    """The row kernel's interleaved plane is computed once per high plane, and again after the plane is written in
    place (a checkpoint loaded into the same buffers), so a product never reads a stale layout."""
    _, planes, _, _ = operands("e3m2", 1, 8, 64, torch.bfloat16, seed=3)
    high = planes[1]
    first = fpx_gemm.interleaved_high(high, 6)
    assert fpx_gemm.interleaved_high(high, 6) is first
    high.copy_(torch.roll(high, 1, dims=1))
    second = fpx_gemm.interleaved_high(high, 6)
    assert second is not first and not torch.equal(second, first)
    assert torch.equal(second, fpx_gemm.interleave_high(high.view(torch.int16), 6))


def test_a_plane_made_in_inference_mode_takes_its_own_words():
    """A high plane made under torch.inference_mode counts no in-place writes, so an FP5 row leaves the interleaved
    plane (which could go stale) for the plane's own words: no error, the twin's products, nothing kept."""
    with torch.inference_mode():
        x, planes, scale, bias = operands("e2m2", 1, 48, 64, torch.bfloat16, seed=4)
    kept = len(fpx_gemm._interleaved_planes)
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e2m2", bits=5, bias=bias, row_kernel=True)
    assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element="e2m2", bits=5, bias=bias))
    assert len(fpx_gemm._interleaved_planes) == kept


@pytest.mark.parametrize("interleaved", [(5,), ()], ids=["fp5", "none"])
@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("name", ["e3m2", "e2m3", "e2m2", "e3m1", "int4"])
def test_row_kernel_whole_tiles_equal_twin(name, split, interleaved, monkeypatch):
    """One row whose tiles are all whole (EVEN: N a multiple of BLOCK_N, each slice whole steps), on the high plane
    interleaved across rows (FP5 by default) or on its own words: the loop's activation loads (and
    on the interleaved plane its weight loads) unmasked, the products equal to the twin."""
    monkeypatch.setattr(fpx_gemm, "INTERLEAVED_BITS", interleaved)
    bits = element_named(name).bits
    config = triton.Config(dict(BLOCK_N=16, BLOCK_KW=4, PREFETCH=False, LOOP_STAGES=1, SPLIT_K=split))
    assert fpx_gemm._row_even(dict(N=48, KW=32, **config.kwargs))
    x, planes, scale, bias = operands(name, 1, 48, 256, torch.bfloat16, seed=11 + split)
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, row_kernel=True,
                                     config=config)
    assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias))


def test_row_capped_configs_reach_the_tuner_and_a_fixed_launch():
    """The register-capped row configs are among the tuner's candidates with their cap (and pruned like the others);
    a fixed config's cap reaches its launch, and under the interpreter such a config equals the twin."""
    capped = [c for c in fpx_gemm._fpx_row_autotuned.configs if c.maxnreg]
    plain = dict(N=4096, BLOCK_M=1, MMA=False, INTERLEAVED=False, x_ptr=torch.zeros(1))
    assert len(capped) == len(fpx_gemm.ROW_CAPPED_CONFIGS) and {c.maxnreg for c in capped} == {80}
    kept = fpx_gemm._prune_row_configs(fpx_gemm._fpx_row_autotuned.configs, dict(KW=512, **plain))
    assert sum(1 for c in kept if c.maxnreg) == len(capped)
    kept = fpx_gemm._prune_row_configs(fpx_gemm._fpx_row_autotuned.configs, dict(KW=128, **plain))
    assert all(c.kwargs["SPLIT_K"] == 1 for c in kept if c.maxnreg)  # 64-word steps split 2 need 256 words
    fixed = triton.Config(dict(BLOCK_N=8, BLOCK_KW=4, PREFETCH=False, LOOP_STAGES=1, SPLIT_K=2), num_warps=2,
                          num_stages=1, maxnreg=80)
    assert fpx_gemm.launch_options(fixed) == dict(num_warps=2, num_stages=1, maxnreg=80)
    assert "maxnreg" not in fpx_gemm.launch_options(triton.Config(fixed.kwargs))
    x, planes, scale, bias = operands("e2m3", 1, 40, 128, torch.bfloat16, seed=9)
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e2m3", bits=6, bias=bias, row_kernel=True,
                                     config=fixed)
    assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element="e2m3", bits=6, bias=bias))


@pytest.mark.parametrize("k", [64, 200])
@pytest.mark.parametrize("name", FPX)
def test_row_kernel_tensor_core_form_equals_twin(name, k, monkeypatch):
    """PTQ_FPX_MMA=1: one bfloat16 row takes the row kernel's tensor-core form (rows in pairs, placed codes scaled
    to their values as bfloat16 pairs, ``_quad_mma``; under the interpreter its per-element sums): every code,
    ragged K, an odd N (the last pair's second row masked); fp32 x keeps the fp32 form."""
    monkeypatch.setenv("PTQ_FPX_MMA", "1")
    calls = []
    kernel = fpx_gemm._fpx_row_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                calls.append(kwargs["MMA"])
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(fpx_gemm, "_fpx_row_kernel", Spy())
    bits = element_named(name).bits
    for dtype in (torch.bfloat16, torch.float32):
        x, planes, scale, bias = operands(name, 1, 39, k, dtype, seed=k)
        want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, bias=bias)
        poisoned = torch.full((1, 39), float("nan"), dtype=dtype)
        out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, bias=bias, out=poisoned,
                                         row_kernel=True)
        assert out is poisoned and not out.isnan().any()
        assert_matches_twin(out, want)
    assert calls == [True, False]


def test_row_kernel_tensor_core_flag_is_checked(monkeypatch):
    x, planes, scale, _ = operands("e3m2", 1, 16, 64, torch.bfloat16)
    monkeypatch.setenv("PTQ_FPX_MMA", "yes")
    with pytest.raises(ValueError, match="PTQ_FPX_MMA='yes': choose 0"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, row_kernel=True)


@pytest.mark.parametrize("magnitude", [1e-6, 1e4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("name", ["e3m2", "e2m3", "e2m1", "int4"])
def test_row_kernel_keeps_small_and_large_activations(name, dtype, magnitude):
    """The row kernel scales x by a power of two so that subnormal codes' products stay exact: tiny and
    large activations (fp16's range, and fp32) must still match the twin."""
    bits = element_named(name).bits
    x, planes, scale, _ = operands(name, 1, 24, 128, torch.float32, seed=7)
    x = (x * magnitude).to(dtype)
    want = fpx_matmul_ref(x, planes, scale, element=name, bits=bits, out_dtype=torch.float32)
    out = fpx_gemm.fpx_matmul_triton(x, planes, scale, element=name, bits=bits, out_dtype=torch.float32,
                                     row_kernel=True)
    assert want.abs().max() > 0
    assert_matches_twin(out, want)


def test_row_kernel_takes_up_to_eight_rows_and_whole_words_only():
    x, planes, scale, _ = operands("e3m2", 9, 16, 64, torch.bfloat16)
    with pytest.raises(ValueError, match="1 to 8 activation rows and K a multiple of 8, got 9 rows"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, row_kernel=True)
    x, planes, scale, _ = operands("e3m2", 1, 16, 36, torch.bfloat16)  # the planes take K = 36, 32-bit words do not
    with pytest.raises(ValueError, match="K a multiple of 8, got 1 rows and K=36"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, row_kernel=True)



@pytest.mark.parametrize("name, k", [("e3m2", 36), ("e2m2", 40), ("e2m1", 34)])
def test_triton_ragged_k_bfloat16_public_api(name, k):
    """K not a multiple of the 32-wide K step; bf16 x, fp32 out, no bias, (N, 1) scales."""
    bits = element_named(name).bits
    x, planes, scale, _ = operands(name, 5, 24, k, torch.bfloat16, seed=k)
    out = quant_kernels.fpx_matmul(x, planes, scale, element=name, bits=bits, out_dtype=torch.float32, backend="triton")
    assert out.dtype == torch.float32 and out.shape == (5, 24)
    assert_matches_twin(out, fpx_matmul_ref(x, planes, scale, element=name, bits=bits, out_dtype=torch.float32))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_tokens(backend):
    x, planes, scale, _ = operands("e2m3", 0, 8, 32, torch.float16)
    assert quant_kernels.fpx_matmul(x, planes, scale, element="e2m3", bits=6, backend=backend).shape == (0, 8)


def test_autotune_configs_fit_the_m_bucket(monkeypatch):
    configs = fpx_gemm._fpx_autotuned.configs
    decode = fpx_gemm._prune_configs(configs, dict(M_BUCKET=fpx_gemm._m_bucket(1), K=4096))
    assert decode and {c.kwargs["BLOCK_M"] for c in decode} == {16}
    unsplit = [c for c in configs if not c.kwargs["SWAP_AB"] and c.kwargs["SPLIT_K"] == 1]
    assert fpx_gemm._prune_configs(configs, dict(M_BUCKET=fpx_gemm._m_bucket(129), K=4096)) == unsplit
    assert all(c.kwargs["BLOCK_K"] % 8 == 0 for c in configs)  # whole bytes of the 1-bit plane
    assert all(c.kwargs["BLOCK_K"] // 8 >= 16 for c in configs if c.kwargs["PAIRED"])  # each dot's K, words
    assert any(c.kwargs["PAIRED"] for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=4096)))
    assert not any(c.kwargs["PAIRED"] for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=4100)))
    assert all(c.kwargs["PAIRED"] for c in configs if c.kwargs["SWAP_AB"])
    assert any(c.kwargs["SWAP_AB"] for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=64, K=4096)))
    swapped_128 = [c for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=128, K=4096)) if c.kwargs["SWAP_AB"]]
    assert max(c.kwargs["BLOCK_M"] for c in swapped_128) == 128  # up to SWAP_MAX_M rows, a tile of that height
    # the taller swapped tiles split K too (too few programs of them on N = 4096 otherwise)
    assert {(c.kwargs["BLOCK_M"], c.kwargs["SPLIT_K"]) for c in swapped_128} >= {(64, 2), (64, 4), (128, 2)}
    assert not any(c.kwargs["SWAP_AB"] for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=256, K=4096)))
    # split tiles at decode batches, where every slice has two steps
    split = [c for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=4096)) if c.kwargs["SPLIT_K"] > 1]
    assert {c.kwargs["SPLIT_K"] for c in split} == {2, 4} and any(not c.kwargs["SWAP_AB"] for c in split)
    assert not any(c.kwargs["SPLIT_K"] > 1 for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=256)))
    assert max(c.kwargs["SPLIT_K"] for c in configs) == fpx_gemm.TILE_MAX_SPLIT_K
    monkeypatch.setenv("PTQ_FPX_SWAP", "0")  # the unswapped tiles only
    assert not any(c.kwargs["SWAP_AB"] for c in fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=4096)))
    monkeypatch.setenv("PTQ_FPX_SWAP", "on")
    with pytest.raises(ValueError, match="PTQ_FPX_SWAP='on': choose 0"):
        fpx_gemm._prune_configs(configs, dict(M_BUCKET=16, K=4096))


# ---------------------------------------------------------------------------
# Argument errors (both backends check before any work)
# ---------------------------------------------------------------------------


def _fpx_args(**changes) -> dict:
    x, planes, scale, _ = operands("e3m2", 3, 8, 64, torch.float16)
    args = dict(x=x, planes=planes, w_scale=scale, element="e3m2", bits=6)
    args.update(changes)
    return args


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(x=torch.zeros(3, 64, dtype=torch.int32)), "float16, bfloat16 or float32"),
        (dict(element="int8", bits=8), "INT4 or FP elements of 4, 5 or 6 bits"),
        (dict(element="e5m0", bits=6), "FP elements of 4, 5 or 6 bits whose values fit float16"),
        (dict(element="e4m3", bits=8), "unknown element 'e4m3'"),
        (dict(bits=5), "element e3m2 has 6-bit codes, got bits=5"),
        (dict(planes=pack_planes(torch.zeros(8, 64, dtype=torch.uint8), 6)[:1]), r"2 bit plane\(s\)"),
        (dict(planes=(torch.zeros(8, 32, dtype=torch.int8), torch.zeros(8, 16, dtype=torch.uint8))),
         r"planes\[0\] must be the uint8 4-bit plane"),
        (dict(planes=pack_planes(torch.zeros(8, 128, dtype=torch.uint8), 6)), r"shape \(N, K\*4/8\) = \(8, 32\)"),
        (dict(planes=(torch.zeros(8, 32, dtype=torch.uint8), torch.zeros(7, 16, dtype=torch.uint8))),
         r"planes\[1\] must be the uint8 2-bit plane of shape \(N, K\*2/8\) = \(8, 16\)"),
        (dict(x=torch.zeros(3, 60, dtype=torch.float16), element="e2m2", bits=5), "positive multiple of 8, got K=60"),
        (dict(w_scale=torch.ones(8, 2)), r"w_scale must be a float tensor of shape \(8,\) or \(8, 1\)"),
        (dict(bias=torch.zeros(4)), r"bias must be a float tensor of shape \(8,\)"),
        (dict(out_dtype=torch.int32), "out_dtype"),
    ],
)
def test_fpx_matmul_errors(backend, changes, message):
    with pytest.raises(ValueError, match=message):
        quant_kernels.fpx_matmul(**_fpx_args(**changes), backend=backend)


def test_int4_weight_only_runs_on_the_fpx_kernels(monkeypatch):
    """A W4A16 linear of INT4 weights, per channel or in groups, multiplies through ``fpx_matmul`` (the FPx kernels
    place INT4 levels, in groups too), the twin's product."""
    from quant_layers.real_linear import RealQuantLinear, RealQuantScheme

    calls = []
    fpx_matmul = quant_kernels.fpx_matmul
    monkeypatch.setattr(quant_kernels, "fpx_matmul",
                        lambda *a, **kw: calls.append((kw["element"], kw["group"])) or fpx_matmul(*a, **kw))
    gen = torch.Generator().manual_seed(4)
    for scheme, routed in ((RealQuantScheme("int4"), [("int4", 0)]), (RealQuantScheme("int4", group=32),
                                                                       [("int4", 32)])):
        calls.clear()
        linear = RealQuantLinear(64, 24, False, scheme, None, torch.float32)
        linear.qweight.copy_(torch.randint(0, 256, linear.qweight.shape, generator=gen, dtype=torch.uint8))
        linear.weight_scale.copy_(torch.rand(linear.weight_scale.shape, generator=gen) + 0.1)
        x = torch.randn(3, 64, generator=gen)
        weight = quant_kernels.dequantize_weight((linear.qweight,), linear.weight_scale, element="int4",
                                                 group=scheme.group)
        assert torch.allclose(linear(x), x @ weight.T, rtol=1e-5, atol=1e-5) and calls == routed


def test_w4a4_kernels_still_take_only_int4_and_e2m1():
    with pytest.raises(ValueError, match="unknown 4-bit element 'e3m2'"):
        quant_kernels.quantize_activations(torch.zeros(2, 16), "e3m2")


def test_fpx_refuses_an_output_it_cannot_write():
    x, planes, scale, _ = operands("e3m2", 2, 16, 64, torch.float32)
    with pytest.raises(ValueError, match=r"out must be a \(2, 16\) torch.float32 tensor with unit column stride"):
        fpx_gemm.fpx_matmul_triton(x, planes, scale, element="e3m2", bits=6, out=torch.empty(16, 2).t())


def test_kernel_bench_names_a_tuned_config():
    import triton

    from benchmarks.kernel_bench import described

    assert described(None) == ""
    config = triton.Config(dict(BLOCK_N=32, BLOCK_KW=128), num_warps=8, num_stages=2)
    assert described(config) == "BLOCK_N=32 BLOCK_KW=128 warps=8 stages=2"


def test_fpx_row_sweep_refuses_bad_configs_and_shapes_before_writing(cli, tmp_path):
    """benchmarks/fpx_row_sweep.py: a malformed --extra config, a --gated shape not among --shapes, an element the FPx
    kernels do not take, or no GPU are refused before anything is written; its table marks the pinned config."""
    from benchmarks.fpx_row_sweep import markdown, parse_configs

    out = str(tmp_path / "sweep")
    done = cli("benchmarks/fpx_row_sweep.py", "--extra", "64,64,8,2,0", "--out", out)
    assert done.returncode == 2 and "an FPx row config is BLOCK_N,BLOCK_KW,warps,stages,prefetch,split_k" in done.stderr
    done = cli("benchmarks/fpx_row_sweep.py", "--extra", "64,64,8,2,0,4;48,64,8,2,0,9,1,80", "--out", out)
    assert done.returncode == 2 and ("--extra: config 48,64,8,2,0,9,1,80: BLOCK_N 48 (a power of two, at least 8); "
                                     "split_k 9 (1 to 8)") in done.stderr
    done = cli("benchmarks/fpx_row_sweep.py", "--shapes", "4096x4096", "--gated", "4096x4096,28672x4096", "--out",
               out)
    assert done.returncode == 2 and "--gated names shapes that --shapes does not: 28672x4096" in done.stderr
    done = cli("benchmarks/fpx_row_sweep.py", "--element", "e4m3", "--out", out)
    assert done.returncode == 2 and "argument --element: invalid choice: 'e4m3'" in done.stderr
    done = cli("benchmarks/fpx_row_sweep.py", "--out", out)
    assert done.returncode == 2 and "no GPU here" in done.stderr and not (tmp_path / "sweep.json").exists()
    config, capped = parse_configs("32,128,4,2,1,2;64,64,8,3,0,4,2,80")
    assert config.kwargs == dict(BLOCK_N=32, BLOCK_KW=128, PREFETCH=True, LOOP_STAGES=1, SPLIT_K=2)
    assert (config.num_warps, config.num_stages, config.maxnreg) == (4, 2, None)
    assert (capped.kwargs["LOOP_STAGES"], capped.num_stages, capped.maxnreg) == (2, 3, 80)
    rows = [dict(shape="4096x4096", config="BLOCK_N=64 warps=8", pick=True, us=9.87, gb_s=1268.4, x_bf16=1.784,
                 rel_err=2e-3)]
    text = markdown(dict(device="GPU", date="d", versions={}, timing="t, in a stream", command="c", element="e3m2",
                         rows=rows))
    assert "| 4096x4096 | * BLOCK_N=64 warps=8 | 9.9 | 1268 | 1.78 | 2.0e-03 |" in text
    assert "one-row FPx kernel's configs in a stream: e3m2 at 1 row\n" in text and "the pinned pick" in text
    text = markdown(dict(device="GPU", date="d", versions={}, timing="t", command="c", element="e3m2", rows=rows,
                         kernel="tile", rows_m=128))
    assert "tile kernel's configs as lone CUDA-graph replays: e3m2 at 128 rows" in text
    assert "the autotuner's pick" in text and "| x bf16 | error |" in text and "bf16 activations." in text
    text = markdown(dict(device="GPU", date="d", versions={}, timing="t", command="c", element="e3m2", rows=rows,
                         kernel="tile", rows_m=128, dtype="fp16"))
    assert "| x fp16 | error |" in text and "fp16 activations." in text and "bf16" not in text


def test_fpx_row_sweep_refuses_bad_tile_sweeps_before_writing(cli, tmp_path):
    """benchmarks/fpx_row_sweep.py --kernel tile: a malformed tile config, one the kernel refuses at a shape's K, too
    many rows for the row kernel, a gated shape or a negative --in_stream are refused before anything is written;
    the tile configs parse in GPU_SPLIT_CONFIGS' order."""
    from benchmarks.fpx_row_sweep import parse_tile_configs

    out = str(tmp_path / "sweep")
    tile = ("benchmarks/fpx_row_sweep.py", "--kernel", "tile", "--rows", "128", "--out", out)
    done = cli(*tile, "--extra", "128,64,128,4,3,1,1")
    assert done.returncode == 2 and "a tile config is BLOCK_M,BLOCK_N,BLOCK_K,warps,stages,paired" in done.stderr
    done = cli(*tile, "--extra", "128,64,128,4,3,1,1,4;96,64,64,4,3,1,0,5,300")
    assert done.returncode == 2 and ("--extra: config 96,64,64,4,3,1,0,5,300: BLOCK_M 96 (a power of two, at least "
                                     "16); BLOCK_K 64 (a power of two, at least 16; 128 when paired and not swapped "
                                     "(eight dots of 16 a step)); split_k 5 (1 to 4); maxnreg 300 (0 for none, or 24 "
                                     "to 255)") in done.stderr
    done = cli(*tile, "--extra", "64,64,128,4,3,0,1,2")
    assert done.returncode == 2 and "config 64,64,128,4,3,0,1,2: swap_ab 1 (0, or 1 when paired)" in done.stderr
    done = cli(*tile, "--extra", "64,64,128,4,3,1,1,2", "--shapes", "4096x4100")
    assert done.returncode == 2 and "PAIRED takes K a multiple of 8; got K=4100" in done.stderr
    done = cli(*tile, "--shapes", "28672x4096", "--gated", "28672x4096")
    assert done.returncode == 2 and "the tile kernel does not gate in its epilogue" in done.stderr
    done = cli("benchmarks/fpx_row_sweep.py", "--rows", "16", "--out", out)
    assert done.returncode == 2 and "--rows takes 1 to 8 for the row kernel" in done.stderr
    done = cli(*tile, "--in_stream", "-1")
    assert done.returncode == 2 and "--in_stream takes 0 (lone replays) or more" in done.stderr
    done = cli(*tile, "--dtype", "fp32")
    assert done.returncode == 2 and "argument --dtype: invalid choice: 'fp32'" in done.stderr
    done = cli(*tile, "--extra", "128,64,128,4,3,1,1,4,168")
    assert done.returncode == 2 and "no GPU here" in done.stderr and not (tmp_path / "sweep.json").exists()
    config, = parse_tile_configs("128,64,128,4,3,1,1,4,168")
    assert config.kwargs == dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, PAIRED=True, SWAP_AB=True, SPLIT_K=4)
    assert (config.num_warps, config.num_stages, config.maxnreg) == (4, 3, 168)
    assert parse_tile_configs("16,32,128,4,4,0,0,2")[0].maxnreg is None


def test_fpx_row_sweep_times_each_config_that_fits_on_the_interpreter():
    """bench_shape() on the CPU (the interpreter, a stand-in timer): bf16 first, then each config whose K slices
    have two steps or more once (a repeated one once), fastest first, each output the twin's; gated shapes too."""
    from benchmarks.fpx_row_sweep import bench_shape, parse_configs

    extra = parse_configs("16,16,2,2,0,2;16,16,2,2,0,2;16,32,2,2,0,2;32,16,4,2,1,1")
    for gated in (False, True):
        times = iter([0.004, 0.002, 0.001])  # bf16, then the configs that run, in order
        rows = bench_shape(64, 512, gated, "e3m2", False, extra, lambda call: (call(), next(times))[1],
                           torch.device("cpu"))
        # K = 512 is 64 words: 16 x 32 split 2 would leave one step a slice
        assert [r["config"].split(" PREFETCH")[0] for r in rows] == [
            "bf16 torch.matmul", "BLOCK_N=32 BLOCK_KW=16", "BLOCK_N=16 BLOCK_KW=16"]
        assert rows[0]["x_bf16"] == 1.0 and rows[1]["x_bf16"] == pytest.approx(4.0) and not rows[1]["pick"]
        assert rows[1]["shape"] == ("64x512 gated" if gated else "64x512")
        assert all(r["rel_err"] < 1e-2 for r in rows)


def test_fpx_row_sweep_times_tile_configs_on_the_interpreter(monkeypatch):
    """bench_shape(tile=True) on the CPU: bf16 first, then each tile config whose K slices have two steps or more once,
    fastest first, each output the twin's at a ragged row count, the autotuner's pick marked; with tuner_configs the
    candidates are those the autotuner keeps at those rows."""
    from benchmarks import fpx_row_sweep
    from benchmarks.fpx_row_sweep import bench_shape, parse_tile_configs, tile_candidates

    extra = parse_tile_configs("16,16,32,4,3,0,0,1;16,16,32,4,3,0,0,1;16,32,64,4,3,1,1,2;16,16,256,4,3,0,0,2")
    monkeypatch.setattr(fpx_row_sweep, "tuned_pick", lambda call: (call(), extra[2])[1])
    times = iter([0.004, 0.002, 0.001])  # bf16, the pick, then the other configs that run, in order
    rows = bench_shape(64, 512, False, "e3m2", False, extra, lambda call: (call(), next(times))[1],
                       torch.device("cpu"), rows=20, tile=True)
    # K = 512 in 256-wide steps split 2 leaves one step a slice
    assert [r["config"].split(" PAIRED")[0] for r in rows] == [
        "bf16 torch.matmul", "BLOCK_M=16 BLOCK_N=16 BLOCK_K=32", "BLOCK_M=16 BLOCK_N=32 BLOCK_K=64"]
    assert [r["pick"] for r in rows] == [False, False, True] and rows[1]["x_bf16"] == pytest.approx(4.0)
    assert all(r["rel_err"] < 1e-2 for r in rows)
    times, dtypes = iter([0.003, 0.001]), []  # fp16 x: torch.matmul in fp16, then the pick
    rows = bench_shape(64, 512, False, "e3m2", False, [], lambda call: (dtypes.append(call().dtype), next(times))[1],
                       torch.device("cpu"), rows=20, tile=True, dtype="fp16")
    assert [r["config"].split(" PAIRED")[0] for r in rows] == ["fp16 torch.matmul", "BLOCK_M=16 BLOCK_N=32 BLOCK_K=64"]
    assert dtypes == [torch.float16, torch.float16]  # both timed on fp16 x (the kernel writes x's dtype)
    assert rows[1]["x_bf16"] == pytest.approx(3.0) and rows[1]["rel_err"] < 1e-2
    pruned = fpx_gemm._prune_configs(fpx_gemm._fpx_autotuned.configs, dict(M_BUCKET=fpx_gemm._m_bucket(128), K=4096))
    tuned = tile_candidates(128, 4096, True, extra[:1], None)
    assert len(tuned) == len(pruned) + 1 and any(c.kwargs["SWAP_AB"] for c in tuned)
    assert tile_candidates(128, 4096, False, [], extra[2]) == [extra[2]]
    assert tile_candidates(128, 4096, False, [], None) == []


def test_fpx_row_sweep_marks_the_pick_of_the_element_it_times(monkeypatch):
    """The sweep's pinned pick is the one ``PINNED_ROW_CONFIGS`` holds for the timed element's bits and mantissa on
    this GPU: FP6 E3M2's and E2M3's (which share them), none for FP5 or off a GPU."""
    from benchmarks.fpx_row_sweep import pinned_fields

    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    pick = fpx_gemm._FP6_ROW_PICKS["NVIDIA H100 80GB HBM3"][(4096, 512)]
    assert pinned_fields(4096, 512, "e3m2", False, gpu) == pick == pinned_fields(4096, 512, "e2m3", True, gpu)
    assert pinned_fields(4096, 512, "e2m2", False, gpu) is None
    assert pinned_fields(4096, 512, "e3m2", False, gpu, rows=2) is None  # the pins are one row's
    assert pinned_fields(4096, 512, "e3m2", False, torch.device("cpu")) is None
