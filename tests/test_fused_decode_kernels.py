"""The activation kernel's prologues (RMSNorm, silu(gate) * up) and the decode kernel's residual epilogue
against their twins, under ``TRITON_INTERPRET=1`` (set before the kernels are imported, as in
tests/test_kernels.py)."""

from __future__ import annotations

import os
import types

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRMSNorm  # noqa: E402

import quant_kernels  # noqa: E402
from quant_kernels.reference import quantize_activations_ref, rms_norm_quantize_ref, silu_mul_quantize_ref  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def rows(m: int, k: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.linspace(0.1, 4.0, m)[:, None]
    x[0, 3] = 40.0  # an outlier sets the row's scale
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_twin_is_hf_rms_norm_then_the_activation_twin(dtype):
    x = rows(3, 64, dtype)
    norm = LlamaRMSNorm(64, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 64))
    codes, scales, normed = rms_norm_quantize_ref(x, norm.weight.detach(), 1e-5, "int4", 0.9, "int4")
    assert torch.equal(normed, norm(x))
    want = quantize_activations_ref(norm(x), "int4", 0, "float", 0.9, dp4a_for="int4")
    assert torch.equal(codes, want[0]) and torch.equal(scales, want[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("element,dp4a_for", [("int4", "int4"), ("e2m1", "e2m1"), ("int4", None)])
def test_rms_norm_kernel_equals_twin(element, dp4a_for, dtype):
    """Ragged M, K not a power of two (its row padded in the tile), an outlier, one row of zeros.

    The mean of squares is summed in another order than torch's: the normalised rows agree to an ulp of fp32
    before their rounding to x's dtype (so at most an ulp of it, rarely), and the codes and scales are exactly
    the twin quantizer's of the kernel's own normalised rows."""
    x = rows(5, 96, dtype)
    x[2] = 0
    weight = torch.linspace(0.5, 1.5, 96).to(dtype)
    codes, scales, normed = quant_kernels.rms_norm_quantize(x, weight, 1e-6, element, 0.9, dp4a_for=dp4a_for,
                                                            backend="triton")
    want = rms_norm_quantize_ref(x, weight, 1e-6, element, 0.9, dp4a_for)
    ulp = {torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    torch.testing.assert_close(normed.float(), want[2].float(), rtol=ulp, atol=0)
    if dtype != torch.float32:  # an fp32 row off by an ulp rounds to the same half value but rarely
        assert (normed != want[2]).float().mean() < 0.05
    again = quantize_activations_ref(normed, element, 0, "float", 0.9, dp4a_for=dp4a_for)
    assert torch.equal(codes, again[0]) and torch.equal(scales, again[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("element,dp4a_for", [("int4", "int4"), ("e2m1", "int4"), ("e2m1", None)])
def test_silu_mul_kernel_equals_twin(element, dp4a_for, dtype):
    x = rows(3, 2 * 80, dtype, seed=1)
    got = quant_kernels.silu_mul_quantize(x, element, 1.0, dp4a_for=dp4a_for, backend="triton")
    want = silu_mul_quantize_ref(x, element, 1.0, dp4a_for)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_silu_mul_kernel_walks_wide_rows_in_chunks(monkeypatch):
    """Rows wider than a chunk (the per-token path that reads a row twice) compute the product both times."""
    from quant_kernels import act_quant

    monkeypatch.setattr(act_quant, "INTERPRET_CHUNK", 64)
    x = rows(2, 2 * 256, torch.bfloat16, seed=2)
    got = quant_kernels.silu_mul_quantize(x, "int4", 0.9, dp4a_for="int4", backend="triton")
    want = silu_mul_quantize_ref(x, "int4", 0.9, "int4")
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_norm_and_silu_mul_kernels_write_e4m3_planes(element):
    """``fp8_codes`` with dp4a_for 'int4': the E4M3 planes of the tensor-core decode kernel's one-dot form, the same
    values in the same order as the dp4a bytes (``reference.e4m3_planes``), kernel and twin alike."""
    from quant_kernels.reference import e4m3_planes

    x = rows(5, 96, torch.bfloat16)
    weight = torch.linspace(0.5, 1.5, 96).to(torch.bfloat16)
    bytes_, scales, _ = quant_kernels.rms_norm_quantize(x, weight, 1e-6, element, 0.9, dp4a_for="int4",
                                                        backend="triton")
    wide = rows(3, 2 * 96, torch.bfloat16, seed=1)
    silu_bytes, silu_scales = quant_kernels.silu_mul_quantize(wide, element, 0.9, dp4a_for="int4", backend="triton")
    for backend in ("triton", "torch"):
        planes, got_scales, _ = quant_kernels.rms_norm_quantize(x, weight, 1e-6, element, 0.9, dp4a_for="int4",
                                                                fp8_codes=True, backend=backend)
        assert planes.dtype == torch.float8_e4m3fn and torch.equal(planes.float(), e4m3_planes(bytes_).float())
        assert torch.equal(got_scales, scales)
        planes, got_scales = quant_kernels.silu_mul_quantize(wide, element, 0.9, dp4a_for="int4", fp8_codes=True,
                                                             backend=backend)
        assert torch.equal(planes.float(), silu_bytes.float()) and torch.equal(got_scales, silu_scales)
        with pytest.raises(ValueError, match="fp8_codes with dp4a_for"):
            quant_kernels.rms_norm_quantize(x, weight, 1e-6, element, dp4a_for="e2m1", fp8_codes=True,
                                            backend=backend)
        with pytest.raises(ValueError, match="fp8_codes with dp4a_for"):
            quant_kernels.silu_mul_quantize(wide, element, dp4a_for="e2m1", fp8_codes=True, backend=backend)


def test_decode_codes_form_gives_e2m1_weights_e4m3_planes_at_the_tensor_core_rows(monkeypatch):
    """On a GPU, E2M1 weights at the tensor-core decode kernel's rows take E4M3 planes (dp4a_for 'int4'), other
    rows and INT4 weights their dp4a bytes; off a GPU always the bytes; ``PTQ_E2M1_PLANES=0`` keeps the bytes, a
    value other than 0 or 1 is refused. The fake results take the same dtype."""
    from quant_kernels.w4a4_gemv import TC_MAX_M, takes_tensor_cores

    tc_rows = [m for m in range(1, TC_MAX_M + 2) if takes_tensor_cores(m, "e2m1")]
    assert tc_rows and tc_rows[-1] == TC_MAX_M
    form = quant_kernels.decode_codes_form
    for m in range(1, TC_MAX_M + 2):
        assert form("e2m1", m, True) == (("int4", True) if m in tc_rows else ("e2m1", False))
        assert form("e2m1", m, False) == ("e2m1", False) and form("int4", m, True) == ("int4", False)
    x = torch.ones(2, 8)
    assert quant_kernels.decode_codes_like(x, tc_rows[0], 16, "e2m1").dtype == torch.int8  # x on the CPU
    monkeypatch.setenv("PTQ_E2M1_PLANES", "0")
    assert form("e2m1", tc_rows[0], True) == ("e2m1", False)
    monkeypatch.setenv("PTQ_E2M1_PLANES", "yes")
    with pytest.raises(ValueError, match="PTQ_E2M1_PLANES='yes'"):
        form("e2m1", tc_rows[0], True)


@pytest.mark.parametrize("change,message", [
    (dict(weight=torch.ones(8)), r"RMSNorm weight must be a \(64,\) tensor"),
    (dict(weight=torch.ones(64, dtype=torch.float16)), "of the activations' dtype"),
    (dict(x=torch.ones(2, 3, 64)), "activations must be 2-D"),
    (dict(dp4a_for="int5"), "int5"),
])
def test_rms_norm_quantize_refuses_bad_arguments(change, message):
    args = {**dict(x=torch.ones(2, 64), weight=torch.ones(64), dp4a_for="int4"), **change}
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match=message):
            quant_kernels.rms_norm_quantize(args["x"], args["weight"], 1e-6, "int4", dp4a_for=args["dp4a_for"],
                                            backend=backend)


def test_silu_mul_quantize_refuses_an_odd_width():
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match="gate and up side by side"):
            quant_kernels.silu_mul_quantize(torch.ones(2, 63), "int4", backend=backend)


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 3])
def test_gemv_adds_the_residual_to_the_rounded_product(m, out_dtype):
    """``residual + linear(x)`` as an HF layer computes it: the product rounded to the output dtype, then the
    sum rounded again (the twin is exactly that); the kernel's fp32 sums may differ in order only."""
    from tests.test_kernels import assert_matches_twin, quantized_operands

    from quant_kernels.reference import dp4a_bytes, w4a4_matmul_ref

    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", m, 40, 128)
    residual = (torch.randn(m, 40, generator=torch.Generator().manual_seed(5)) * 4).to(out_dtype)
    a_bytes = dp4a_bytes(a_packed, "int4", "int4")
    args = dict(a_element="int4", w_element="int4", out_dtype=out_dtype)
    want = quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, residual=residual, backend="torch",
                                          **args)
    product = w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, **args)
    assert torch.equal(want, residual + product)
    got = quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, residual=residual, backend="triton",
                                         **args)
    assert_matches_twin(got, want)


def test_gemv_refuses_a_residual_of_another_shape_or_dtype():
    from tests.test_kernels import quantized_operands

    from quant_kernels.reference import dp4a_bytes

    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 2, 40, 128)
    a_bytes = dp4a_bytes(a_packed, "int4", "int4")
    for residual in (torch.zeros(2, 41), torch.zeros(2, 40, dtype=torch.float16)):
        for backend in ("triton", "torch"):
            with pytest.raises(ValueError, match="the residual must be a"):
                quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, a_element="int4", w_element="int4",
                                               out_dtype=torch.float32, residual=residual, backend=backend)


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("case,m", [("int4xint4", 1), ("int4xint4", 3), ("e2m1xe2m1", 2)])
def test_gated_gemv_writes_silu_of_gate_times_up(case, m, out_dtype):
    """The gated epilogue's silu(gate) * up is that of the kernel's own plain product's halves, and the twin's
    is an HF MLP's ``act_fn(gate) * up`` of the twin's product; every output written (NaN-poisoned ``out``)."""
    from tests.test_kernels import assert_matches_twin, quantized_operands

    from quant_kernels.reference import dp4a_bytes
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands(case, m, 2 * 44, 128)
    a_el, w_el = kw["a_element"], kw["w_element"]
    a_bytes = dp4a_bytes(a_packed, a_el, w_el)
    args = dict(a_element=a_el, w_element=w_el, out_dtype=out_dtype)
    plain = quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, backend="torch", **args)
    want = quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, gated=True, backend="torch", **args)
    assert torch.equal(want, torch.nn.functional.silu(plain[:, :44]) * plain[:, 44:])
    poisoned = torch.full((m, 44), float("nan"), dtype=out_dtype)
    got = w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, gated=True, out=poisoned, **args)
    assert got is poisoned and not got.isnan().any()
    assert_matches_twin(got, want)
    # The kernel's own fp32 products, rounded by torch (the interpreter's cast to bfloat16 truncates).
    own = w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, **{**args, "out_dtype": torch.float32}).to(out_dtype)
    from_own = torch.nn.functional.silu(own[:, :44]) * own[:, 44:]
    assert_matches_twin(got, from_own)  # silu's fp32 division and exp may round an ulp apart, then the half rarely
    if out_dtype != torch.float32:  # rounded to a half dtype, the fp32 ulps rarely show
        assert (got != from_own).float().mean() < 0.05


@pytest.mark.parametrize("change,message", [
    (dict(n=87), "an even N"),
    (dict(residual=True), "no residual"),
])
def test_gated_gemv_refuses_what_it_cannot_gate(change, message):
    from tests.test_kernels import quantized_operands

    from quant_kernels.reference import dp4a_bytes

    n = change.get("n", 88)
    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 2, n, 128)
    out_dtype = change.get("out_dtype", torch.bfloat16)
    residual = torch.zeros(2, n, dtype=out_dtype) if change.get("residual") else None
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match=message):
            quant_kernels.w4a4_matmul_dp4a(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale,
                                           a_element="int4", w_element="int4", out_dtype=out_dtype, residual=residual,
                                           gated=True, backend=backend)


def test_gated_gemv_refuses_the_tensor_cores():
    from tests.test_kernels import quantized_operands

    from quant_kernels.reference import dp4a_bytes
    from quant_kernels.w4a4_gemv import takes_gated, w4a4_gemv_triton

    (a_packed, a_scale), (w_packed, w_scale), _ = quantized_operands("int4xint4", 16, 88, 128)
    assert not takes_gated(16, "int4") and takes_gated(1, "int4")
    with pytest.raises(ValueError, match="CUDA-core decode kernel"):
        w4a4_gemv_triton(dp4a_bytes(a_packed, "int4", "int4"), a_scale, w_packed, w_scale, a_element="int4",
                         w_element="int4", out_dtype=torch.bfloat16, gated=True)


def norm_tail_problem(case: str, m: int, n: int, out_dtype: torch.dtype, element: str, dp4a_for: str) -> tuple:
    """dp4a activation bytes, weights, a residual, and the next RMSNorm (a weight with a zero and an outlier)."""
    from tests.test_kernels import quantized_operands

    from quant_kernels.reference import NormTail, dp4a_bytes

    (a_packed, a_scale), (w_packed, w_scale), kw = quantized_operands(case, m, n, 128)
    a_bytes = dp4a_bytes(a_packed, kw["a_element"], kw["w_element"])
    residual = rows(m, n, out_dtype, seed=1)
    weight = torch.linspace(0.25, 2.0, n)
    weight[5], weight[7] = 0.0, 9.0
    tail = NormTail(weight.to(out_dtype), 1e-5, element, 0.9, dp4a_for)
    args = dict(a_element=kw["a_element"], w_element=kw["w_element"], out_dtype=out_dtype, residual=residual)
    return (a_bytes, a_scale, w_packed, w_scale), args, tail


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("case,m,element,dp4a_for", [("int4xint4", 1, "int4", "int4"), ("int4xint4", 3, "e2m1", "int4"),
                                                     ("e2m1xe2m1", 2, "e2m1", "e2m1"), ("e2m1xe2m1", 4, "int4", "e2m1")])
def test_norm_tail_writes_the_next_norms_codes(case, m, element, dp4a_for, out_dtype):
    """The decode kernel's last program (of 11 here: N = 88, 8 rows a program, padded to 128 in the tail)
    quantizes the next RMSNorm of the product plus residual: the codes and scales the activation kernel writes for
    the kernel's own output, its counter back at zero; the twin's output is the plain product's, its codes the
    RMSNorm twin's of that."""
    from tests.test_kernels import assert_matches_twin

    from quant_kernels.reference import rms_norm_quantize_ref
    from quant_kernels.w4a4_gemv import split_k_buffer, w4a4_gemv_triton

    operands, args, tail = norm_tail_problem(case, m, 88, out_dtype, element, dp4a_for)
    norm = (tail.weight, tail.eps, tail.element, tail.clip_ratio)
    want, want_codes, want_scales = quant_kernels.w4a4_matmul_dp4a(*operands, norm_tail=tail, backend="torch",
                                                                   **args)
    assert torch.equal(want, quant_kernels.w4a4_matmul_dp4a(*operands, backend="torch", **args))
    twin_codes, twin_scales, _ = rms_norm_quantize_ref(want, *norm, dp4a_for)
    assert torch.equal(want_codes, twin_codes) and torch.equal(want_scales, twin_scales)
    out, codes, scales = w4a4_gemv_triton(*operands, norm_tail=tail, **args)
    assert_matches_twin(out, want)
    assert torch.equal(out, w4a4_gemv_triton(*operands, **args))
    two_launches = quant_kernels.rms_norm_quantize(out, *norm, dp4a_for=dp4a_for, backend="triton")
    assert codes.shape == (m, 88) and codes.dtype == torch.int8 and scales.shape == (m, 1)
    assert torch.equal(codes, two_launches[0]) and torch.equal(scales, two_launches[1])
    assert split_k_buffer(out.device, m, 88)[1][0] == 0


@pytest.mark.parametrize("case,m", [("int4xint4", 1), ("e2m1xe2m1", 3)])
def test_norm_tail_without_a_norm_quantizes_the_product(case, m):
    """A NormTail whose weight is None: the last program quantizes the product plus residual as it is, the
    codes and scales the activation kernel writes for it; the twin's are the reference quantizer's."""
    import dataclasses

    from quant_kernels.reference import quantize_activations_ref
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    operands, args, tail = norm_tail_problem(case, m, 88, torch.bfloat16, "int4", "e2m1")
    tail = dataclasses.replace(tail, weight=None)
    out, codes, scales = w4a4_gemv_triton(*operands, norm_tail=tail, **args)
    want = quant_kernels.quantize_activations(out, "int4", 0, "float", 0.9, dp4a_for="e2m1", backend="triton")
    assert torch.equal(out, w4a4_gemv_triton(*operands, **args))
    assert torch.equal(codes, want[0]) and torch.equal(scales, want[1])
    twin, twin_codes, twin_scales = quant_kernels.w4a4_matmul_dp4a(*operands, norm_tail=tail, backend="torch", **args)
    want = quantize_activations_ref(twin, "int4", 0, "float", 0.9, 0, "e2m1")
    assert torch.equal(twin_codes, want[0]) and torch.equal(twin_scales, want[1])


@pytest.mark.parametrize("m", [3, 12])
def test_norm_tail_of_e4m3_planes_is_left_to_the_activation_kernel(m):
    """A tail with ``fp8_codes`` (E4M3 planes, dp4a_for 'int4'): the CUDA-core kernel (3 rows under the interpreter)
    does not run it in its last program but leaves it, as the tensor-core one (12 rows) does, to the activation
    kernel: the planes ``rms_norm_quantize`` writes of the output; the twin's, ``norm_tail_ref``'s of its own."""
    import dataclasses

    from quant_kernels.reference import norm_tail_ref
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton

    operands, args, tail = norm_tail_problem("e2m1xe2m1", m, 88, torch.bfloat16, "e2m1", "int4")
    tail = dataclasses.replace(tail, fp8_codes=True)
    out, codes, scales = w4a4_gemv_triton(*operands, norm_tail=tail, **args)
    assert torch.equal(out, w4a4_gemv_triton(*operands, **args))
    want = quant_kernels.rms_norm_quantize(out, tail.weight, tail.eps, "e2m1", 0.9, dp4a_for="int4", fp8_codes=True,
                                           backend="triton")
    assert codes.dtype == torch.float8_e4m3fn and torch.equal(codes.float(), want[0].float())
    assert torch.equal(scales, want[1])
    twin, twin_codes, twin_scales = quant_kernels.w4a4_matmul_dp4a(*operands, norm_tail=tail, backend="torch", **args)
    want = norm_tail_ref(twin, tail)
    assert twin_codes.dtype == torch.float8_e4m3fn and torch.equal(twin_codes.float(), want[0].float())
    assert torch.equal(twin_scales, want[1])


@pytest.mark.parametrize("change,message", [
    (dict(gated=True), "gated product"),
    (dict(weight=torch.ones(40, dtype=torch.bfloat16)), r"RMSNorm weight must be a \(88,\)"),
    (dict(weight=torch.ones(88)), "RMSNorm weight must be"),
    (dict(element="nvfp4"), "element 'int4' or 'e2m1'"),
    (dict(dp4a_for="e4m3"), "e4m3"),
    (dict(fp8_codes=True, dp4a_for="e2m1"), "fp8_codes with dp4a_for"),
])
def test_norm_tail_refuses_what_it_cannot_normalise(change, message):
    import dataclasses

    operands, args, tail = norm_tail_problem("int4xint4", 2, 88, torch.bfloat16, "int4", "int4")
    gated = change.pop("gated", False)
    tail = dataclasses.replace(tail, **change)
    if gated:
        args["residual"] = None
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match=message):
            quant_kernels.w4a4_matmul_dp4a(*operands, norm_tail=tail, gated=gated, backend=backend, **args)


def test_kernel_check_runs_the_fused_decode_checks(tmp_path):
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "fused_decode", "--out", prefix]) == 0
    table = open(prefix + ".md").read()
    assert table.count("| fused decode |") == 4 and "4 checks, 0 failed." in table


def test_kernel_check_bound_keeps_the_products_own_rounding():
    """A bfloat16 product an ulp off the twin's, mostly cancelled by its residual: an ulp of the product, not of
    the sum, is what the rounding allows; twice the product's ulp off the sum's bound stays a failure."""
    from benchmarks.kernel_check import close

    product = torch.tensor([1.0, 8.0], dtype=torch.bfloat16)
    residual = torch.tensor([0.5, -7.75], dtype=torch.bfloat16)
    want = residual + product  # 1.5, 0.25
    ulp_off = residual + torch.tensor([1.0, 8.0625], dtype=torch.bfloat16)  # the product's neighbour above 8
    assert not close(ulp_off, want)[0]
    assert close(ulp_off, want, rounded_before=product)[0]
    far_off = residual + torch.tensor([1.0, 8.125], dtype=torch.bfloat16)
    assert not close(far_off, want, rounded_before=product)[0]


def _row_candidates(configs: list, args: dict) -> list:
    """The FPx row kernel's candidates for one row on the fp32 form, unpinned: those whose split fits, as many
    accumulators a thread as the decode configs may hold."""
    from quant_kernels import fpx_gemm, w4a4_gemv

    fitting = [c for c in configs if fpx_gemm.split_fits(args["KW"], c.kwargs["BLOCK_KW"], c.kwargs["SPLIT_K"])]
    return w4a4_gemv.prune_decode_configs(fitting, args)


def test_fp6_row_pins_are_shared_by_both_fp6_elements():
    """FP6 E2M3 keeps E3M2's one-row picks on every pinned device and shape: the same words
    through the same loop; a gated product keeps the ungated one's (the same programs' tiles)."""
    from quant_kernels import fpx_gemm

    for device, pins in fpx_gemm.PINNED_ROW_CONFIGS.items():
        e3m2 = {key[:3] + key[4:]: pick for key, pick in pins.items() if key[2:4] == (6, 2)}
        e2m3 = {key[:3] + key[4:]: pick for key, pick in pins.items() if key[2:4] == (6, 3)}
        assert e3m2 and e2m3 == e3m2, device
        gate = fpx_gemm.ROW_TUNING_KEY.index("GATED")
        assert all(pins[key[:gate] + (True,) + key[gate + 1:]] == pick for key, pick in pins.items()), device


@pytest.mark.parametrize("pin", [(16, 256, False, 4, 1, 8, 2), (4, 128, False, 1, 3, 4, 3),
                                 (4, 128, False, 1, 1, 4, 3)])
def test_pinned_cuda_core_decode_config_may_fold_or_pipeline(monkeypatch, pin):
    """A CUDA-core decode pin names FOLD and LOOP_STAGES too: a folded or a pipelined pick is kept alone, and the
    pipelined 4 x 128 is told from the plain one of the same tile, warps and stages."""
    from quant_kernels import w4a4_gemv

    key = (1, 4096, 512, True, False, 1, False, False)
    monkeypatch.setattr(w4a4_gemv, "PINNED_GEMV_CONFIGS", {"NVIDIA H100 80GB HBM3": {key: pin}})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "NVIDIA H100 80GB HBM3")
    args = {**dict(zip(w4a4_gemv.GEMV_TUNING_KEY, key)), "a_ptr": types.SimpleNamespace(device=torch.device("cuda"))}
    kept = w4a4_gemv.prune_gemv_configs(w4a4_gemv._gemv_autotuned.configs, args)
    assert [(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_KW"], c.kwargs["PREFETCH"], c.kwargs["FOLD"],
             c.kwargs["LOOP_STAGES"], c.num_warps, c.num_stages) for c in kept] == [pin]


@pytest.mark.parametrize("kernel", ["gemv", "tc", "fpx_row"])
def test_pinned_decode_configs_replace_tuning_on_their_device_and_key(monkeypatch, kernel):
    """Every pinned config (the CUDA-core and the tensor-core decode kernel's, the FPx row kernel's) is one of the
    kernel's candidates that survive pruning; on its device and key the pruning keeps it alone, elsewhere (another
    key, another device, PTQ_PINNED_CONFIGS=0) every candidate; a bad setting is named."""
    from quant_kernels import fpx_gemm, w4a4_gemv

    tuner, prune, pins, key_names, unpinned, other_key, pointer = {
        "gemv": (w4a4_gemv._gemv_autotuned, w4a4_gemv.prune_gemv_configs, w4a4_gemv.PINNED_GEMV_CONFIGS,
                 w4a4_gemv.GEMV_TUNING_KEY, w4a4_gemv.prune_decode_configs,
                 (1, 1024, 512, True, False, 1, False, False), "a_ptr"),
        "tc": (w4a4_gemv._tc_autotuned, w4a4_gemv.prune_tc_configs, w4a4_gemv.PINNED_TC_CONFIGS,
               w4a4_gemv.TC_TUNING_KEY, None, (8, 1024, 2048, False, False, 16, False, False, False, False),
               "a_ptr"),
        "fpx_row": (fpx_gemm._fpx_row_autotuned, fpx_gemm._prune_row_configs, fpx_gemm.PINNED_ROW_CONFIGS,
                    fpx_gemm.ROW_TUNING_KEY, _row_candidates, (6144, 512, 5, 2, 1, False, False, False), "x_ptr"),
    }[kernel]
    configs = tuner.configs
    a = types.SimpleNamespace(device=torch.device("cuda"))  # pins are looked up for CUDA devices only

    def every_candidate(args: dict) -> list:
        if unpinned is not None:
            return unpinned(configs, args)
        return [c for c in configs if w4a4_gemv.tc_config_takes({**args, **c.kwargs, "num_warps": c.num_warps})]

    def launch_args(key: tuple) -> dict:
        """The key's values as the launch passes them; the tensor-core launch's FP8 step sums where not E4M3 planes
        (``tc_decode_flags``)."""
        args = {**dict(zip(key_names, key)), pointer: a}
        return {**args, "FP8_STEP_SUMS": not args["A_E4M3"]} if kernel == "tc" else args

    for device, pinned in pins.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device, name=device: name)
        for key in pinned:
            args = launch_args(key)
            kept = prune(configs, args)
            assert len(kept) == 1, (device, key)
            monkeypatch.setenv("PTQ_PINNED_CONFIGS", "0")
            assert prune(configs, args) == every_candidate(args)
            monkeypatch.delenv("PTQ_PINNED_CONFIGS")
        other = launch_args(other_key)
        assert prune(configs, other) == every_candidate(other)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "NVIDIA A100-SXM4-80GB")
    args = launch_args(next(iter(pins["NVIDIA H200"])))
    assert len(prune(configs, args)) > 1
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "NVIDIA H200")
    assert len(prune(configs, {**args, pointer: torch.zeros(1)})) > 1  # a CPU tensor (the interpreter): no pins
    monkeypatch.setenv("PTQ_PINNED_CONFIGS", "yes")
    with pytest.raises(ValueError, match="PTQ_PINNED_CONFIGS='yes': choose 1"):
        prune(configs, args)
