"""RealQuantLinear.decode_product: decode rows quantized by traced torch ops, then the decode kernel's op.

A compiled decode step on a GPU takes this path (``quantizes_in_graph``) so that inductor fuses the
activation quantization into the rows' producer; its result must be the ordinary forward's, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from quant_layers import real_linear
from quant_layers.real_linear import RealQuantLinear, RealQuantScheme

PAIRS = [("int4", "int4"), ("e2m1", "e2m1"), ("int4", "e2m1")]  # (activation, weight)


def random_linear(a_element: str, w_element: str, bias: bool, k: int = 256, n: int = 48) -> RealQuantLinear:
    g = torch.Generator().manual_seed(0)
    layer = RealQuantLinear(k, n, bias, RealQuantScheme(w_element), RealQuantScheme(a_element, clip_ratio=0.9),
                            dtype=torch.bfloat16)
    layer.qweight.copy_(torch.randint(0, 256, layer.qweight.shape, generator=g, dtype=torch.uint8))
    layer.weight_scale.copy_(torch.rand(layer.weight_scale.shape, generator=g) * 0.02 + 1e-3)
    if bias:
        layer.bias.copy_(torch.randn(n, generator=g))
    return layer


@pytest.mark.parametrize("a_element,w_element", PAIRS)
@pytest.mark.parametrize("rows", [1, 3])
def test_decode_product_equals_the_forward(a_element, w_element, rows):
    layer = random_linear(a_element, w_element, bias=rows == 3)
    x = (torch.randn(rows, 1, 256) * 2).to(torch.bfloat16)
    want = layer(x)
    got = layer.decode_product(x)
    assert got.shape == want.shape == (rows, 1, 48) and got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_decode_product_compiles_whole_and_equals_eager():
    """The quantization traces into the graph and the decode op is one opaque call (its fake gives the shape)."""
    layer = random_linear("int4", "int4", bias=False)
    x = torch.randn(1, 1, 256).to(torch.bfloat16)
    torch._dynamo.reset()
    compiled = torch.compile(layer.decode_product, fullgraph=True)
    assert torch.equal(compiled(x), layer.decode_product(x))


def test_cpu_forward_keeps_the_activation_op_under_compile(monkeypatch):
    """Only GPU rows are quantized in the graph: a compiled CPU forward never takes decode_product."""
    layer = random_linear("e2m1", "e2m1", bias=False)

    def refuse(*args, **kwargs):
        raise AssertionError("decode_product taken on the CPU")

    monkeypatch.setattr(layer, "decode_product", refuse)
    x = torch.randn(1, 1, 256).to(torch.bfloat16)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(layer, fullgraph=True)(x), layer(x))
    assert real_linear.QUANTIZE_DECODE_IN_GRAPH
    assert not real_linear.quantizes_in_graph(x, layer.weight_scheme, layer.act_scheme, 256)
