"""The weight dequantizing kernel (``quant_kernels.dequant``) against ``reference.packed_weight``, under
``TRITON_INTERPRET=1`` (set before the kernels are imported, as in ``test_kernels``)."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import quant_kernels  # noqa: E402
from quant_kernels import dequant  # noqa: E402
from quant_kernels.reference import packed_weight  # noqa: E402
from quant_layers.packing import ELEMENT_OF, FPFormat, element_named, pack_planes  # noqa: E402

FPX_ELEMENTS = [name for name, fmt in ELEMENT_OF.items()
                if isinstance(fmt, FPFormat) and fmt.bits in (4, 5, 6) and name != "e5m0"]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def every_code(n: int, k: int, bits: int) -> torch.Tensor:
    """(n, k) codes in which every row holds each of the 2^bits codes."""
    return ((torch.arange(n * k) * 7 + torch.arange(n * k) // k) % 2**bits).reshape(n, k).to(torch.uint8)


def scales(n: int, groups: int, seed: int) -> torch.Tensor:
    return torch.rand(n, groups, generator=torch.Generator().manual_seed(seed)) * 0.3 + 0.01


def test_kernel_is_built_for_the_interpreter():
    assert dequant.triton.knobs.runtime.interpret, "kernels were imported before TRITON_INTERPRET=1 was set"


@pytest.mark.parametrize("name", FPX_ELEMENTS)
def test_fpx_weights_are_the_twin_s_rounded_once(name):
    """Every code of an FPx element (K ragged against the 128-column tile, N against the 32-row one) times its row's
    scale, rounded to nearest once in each dtype: the twin's fp32 weight cast, bit for bit (bfloat16 rounded by hand,
    the interpreter's cast truncating)."""
    bits = element_named(name).bits
    n, k = 40, 136 if bits == 5 else 132
    planes, scale = pack_planes(every_code(n, k, bits), bits), scales(n, 1, n)
    for dtype in DTYPES:
        got = dequant.dequantize_triton(planes, scale, element=name, bits=bits, dtype=dtype)
        assert got.dtype == dtype and torch.equal(got, packed_weight(planes, scale, name, bits).to(dtype))


@pytest.mark.parametrize("group", [0, 16, 32, 64, 48, 192])
@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_packed_4_bit_weights_per_row_and_per_group(element, group):
    """INT4 (two's complement, -8 included) and E2M1 codes, every one in each row, times per-row or per-group
    scales (NVFP4's 16, MXFP4's 32: each group's scale loaded once a tile; 48 and 192, which the kernel's 128-column
    tiles do not hold whole: a scale an element), K and N ragged: the twin's weight in each dtype, the twin itself
    the codes' values times their scales."""
    n, k = 36, 192
    codes = every_code(n, k, 4)
    planes = pack_planes(codes, 4)
    scale = scales(n, k // group if group else 1, group + 3)
    values = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1.0]) if element == "int4" else \
        torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
    want = values[codes.long()] * (scale.repeat_interleave(group, dim=1) if group else scale)
    assert torch.equal(packed_weight(planes, scale, element, 4, group), want)
    for dtype in DTYPES:
        got = quant_kernels.dequantize_weight(planes, scale, element=element, group=group, dtype=dtype,
                                              backend="triton")
        assert torch.equal(got, want.to(dtype))


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("change, message", [
    (dict(element="e3m0", group=16), "groups of scales take packed INT4 or E2M1 codes and divide K=64"),
    (dict(group=48), "divide K=64, got int4 in groups of 48"),
    (dict(scale=torch.ones(8, 3)), r"scales must be a float tensor of shape \(8, 4\), got"),
    (dict(group=0), r"shape \(8,\) or \(8, 1\)"),
    (dict(bits=6), "element int4 has 4-bit codes, got bits=6"),
    (dict(planes=(torch.zeros(8, 32, dtype=torch.int8),)), "planes.0. must be the uint8 4-bit plane"),
])
def test_refusals_name_the_problem(backend, change, message):
    args = dict(planes=(torch.zeros(8, 32, dtype=torch.uint8),), scale=torch.ones(8, 4), element="int4", bits=4,
                group=16)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        quant_kernels.dequantize_weight(args.pop("planes"), args.pop("scale"), **args, backend=backend)
