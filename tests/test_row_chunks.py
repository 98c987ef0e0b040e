"""quant_kernels.in_row_chunks: row-wise products too large for the kernels' 32-bit offsets run in chunks of rows
and give the unchunked results (the limit lowered so that tiny models cross it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quant_kernels
from benchmarks.bench_model import FP6, INT4, INT8, NVFP4, random_real_linear
from models.fused_decoder_layer import quantize_rows, rms_norm_quantize, silu_mul_quantize


def test_in_row_chunks_splits_the_rows_only_above_the_limit(monkeypatch):
    monkeypatch.setattr(quant_kernels, "MAX_ROW_CHUNK_ELEMENTS", 10)
    assert quant_kernels.row_chunk_rows(4) == 2 and quant_kernels.row_chunk_rows(11) == 1
    seen = []

    def compute(x, scale, missing):
        seen.append(x.shape[0])
        assert missing is None
        return x * scale, x.sum(1)

    x, scale = torch.arange(20.0).view(5, 4), torch.arange(5.0).view(5, 1)
    out, sums = quant_kernels.in_row_chunks(compute, (x, scale, None), 4)
    assert seen == [2, 2, 1]
    assert torch.equal(out, x * scale) and torch.equal(sums, x.sum(1))
    seen.clear()
    assert torch.equal(quant_kernels.in_row_chunks(lambda x, scale, _: x * scale, (x[:2], scale[:2], None), 4),
                       x[:2] * scale[:2])
    assert quant_kernels.in_row_chunks(lambda y: y, (x,), 2) is x  # up to the limit: one call on the tensors given


def _linear(weight, act, bias: bool = True):
    torch.manual_seed(0)
    return random_real_linear(nn.Linear(64, 192, bias=bias), weight, act, torch.Generator().manual_seed(1))


def _close_codes(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Codes of products that differ by fp32 rounding (the CPU's matmul rounds by its row count): a code may flip
    at a rounding boundary, rows out of place change most of them."""
    return got.shape == want.shape and (got.view(torch.uint8) != want.view(torch.uint8)).float().mean() < 0.02


def _in_chunks(monkeypatch, rows: int = 3, width: int = 192) -> dict:
    """Lower the limit to ``rows`` rows of ``width``; count the chunks computed."""
    monkeypatch.setattr(quant_kernels, "MAX_ROW_CHUNK_ELEMENTS", rows * width)
    counts = {"chunks": 0}
    chunked = quant_kernels.in_row_chunks

    def counted(compute, row_tensors, width):
        def counted_compute(*rows):
            counts["chunks"] += 1
            return compute(*rows)
        return chunked(counted_compute, row_tensors, width)

    monkeypatch.setattr(quant_kernels, "in_row_chunks", counted)
    return counts


@pytest.mark.parametrize("weight,act", [(INT4, INT4), (NVFP4, NVFP4), (FP6, None), (INT8, INT8)],
                         ids=["w4a4", "nvfp4", "fp6", "w8a8"])
def test_real_quant_products_in_row_chunks_give_the_unchunked_product(weight, act, monkeypatch):
    """(2, 20, 64) x (192, 64) plus a residual, in chunks of 3 rows: the unchunked product to fp32 rounding. NVFP4's
    dynamic tensor scale is all the rows' (a chunk's own would move every scale of the other chunks)."""
    linear = _linear(weight, act)
    generator = torch.Generator().manual_seed(2)
    x, residual = torch.randn(2, 20, 64, generator=generator), torch.randn(2, 20, 192, generator=generator)
    args = (x, linear.qweight, getattr(linear, "qweight_high", None), linear.weight_scale, linear.bias, residual,
            linear.schemes, None, getattr(linear, "weight_global_scale", None))
    want = torch.ops.ptq.real_quant_matmul(*args)
    counts = _in_chunks(monkeypatch)
    got = torch.ops.ptq.real_quant_matmul(*args)
    assert counts["chunks"] == 14  # 40 rows in chunks of 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_w4a4_products_with_norm_tails_and_on_codes_in_row_chunks(monkeypatch):
    """The W4A4 products that also quantize the next norm (on x, and on x's codes) and the decode products on
    codes, in chunks of 3 rows: the unchunked outputs to fp32 rounding, their codes to a flip at a boundary."""
    linear = _linear(INT4, INT4, bias=False)
    generator = torch.Generator().manual_seed(3)
    x, residual = torch.randn(2, 20, 64, generator=generator), torch.randn(2, 20, 192, generator=generator)
    norm = torch.rand(192, generator=generator) + 0.5
    a_bytes, a_scale = quant_kernels.quantize_activations(x.view(40, 64), "int4", dp4a_for="int4")
    calls = {
        "matmul_norm": lambda: torch.ops.ptq.real_quant_matmul_norm(
            x, linear.qweight, linear.weight_scale, None, residual, norm, 1e-6, linear.schemes, "int4", 1.0, "int4"),
        "matmul_norm_on_codes": lambda: torch.ops.ptq.real_quant_matmul_norm(
            x, linear.qweight, linear.weight_scale, None, residual, norm, 1e-6, linear.schemes, "int4", 1.0, "int4",
            a_bytes, a_scale),
        "gemv": lambda: (torch.ops.ptq.real_quant_gemv(a_bytes, a_scale, linear.qweight, linear.weight_scale, None,
                                                       residual.view(40, 192), torch.float32, linear.schemes),),
        "gemv_norm": lambda: torch.ops.ptq.real_quant_gemv_norm(
            a_bytes, a_scale, linear.qweight, linear.weight_scale, None, residual.view(40, 192), torch.float32,
            linear.schemes, norm, 1e-6, "int4", 1.0, "int4")}
    wanted = {name: call() for name, call in calls.items()}
    counts = _in_chunks(monkeypatch)
    for name, call in calls.items():
        before = counts["chunks"]
        got = call()
        assert counts["chunks"] - before == 14, name
        torch.testing.assert_close(got[0], wanted[name][0], rtol=1e-5, atol=1e-5)
        if len(got) > 1:
            assert _close_codes(got[1], wanted[name][1]), name
            torch.testing.assert_close(got[2], wanted[name][2], rtol=1e-5, atol=1e-7)


def test_nvfp4_product_with_a_norm_tail_in_row_chunks_takes_all_the_rows_tensor_scale(monkeypatch):
    """NVFP4 activations in the product that quantizes the next norm, in chunks of 3 rows: the unchunked output to
    fp32 rounding, as in ``real_quant_matmul`` (the dynamic tensor scale is all the rows', not a chunk's)."""
    linear = _linear(NVFP4, NVFP4, bias=False)
    generator = torch.Generator().manual_seed(5)
    x, residual = torch.randn(2, 20, 64, generator=generator), torch.randn(2, 20, 192, generator=generator)
    x[1, 7] *= 50  # one row's absmax sets the tensor scale
    norm = torch.rand(192, generator=generator) + 0.5

    def call():
        return torch.ops.ptq.real_quant_matmul_norm(x, linear.qweight, linear.weight_scale, None, residual, norm,
                                                    1e-6, linear.schemes, "e2m1", 1.0, "e2m1", None, None,
                                                    linear.weight_global_scale)

    want = call()
    counts = _in_chunks(monkeypatch)
    got = call()
    assert counts["chunks"] == 14
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_decode_layer_quantizers_in_row_chunks_give_the_unchunked_codes(monkeypatch):
    """The fused decoder layer's row-wise quantizers (RMSNorm, silu(gate) * up, plain rows) in chunks: the
    unchunked codes, scales and norms exactly."""
    generator = torch.Generator().manual_seed(4)
    x, gate_up, weight = (torch.randn(40, 64, generator=generator), torch.randn(40, 192, generator=generator),
                          torch.rand(64, generator=generator) + 0.5)
    calls = {"rms_norm": lambda: rms_norm_quantize(x, weight, 1e-6, "int4", 1.0, "int4"),
             "silu_mul": lambda: silu_mul_quantize(gate_up, "int4", 1.0, "int4"),
             "rows": lambda: quantize_rows(x, "int4", 1.0, "int4")}
    wanted = {name: call() for name, call in calls.items()}
    counts = _in_chunks(monkeypatch, rows=3, width=64)
    for name, call in calls.items():
        before = counts["chunks"]
        got = call()
        assert counts["chunks"] - before == (14 if name != "silu_mul" else 40), name  # 192 wide: one row a chunk
        assert all(torch.equal(g, w) for g, w in zip(got, wanted[name])), name
