"""W8A8: INT8 activations per token times INT8 weights per output channel.

The activations are quantized by the fake-quantization code itself (``Quantizer`` with an
INT8 per-token spec), so the real and the simulated model round alike. The integer product
runs on cuBLAS's int8 GEMM (``torch._int_mm``, exact int32 sums) on CUDA where it applies
(more than 16 rows, K and N multiples of 8); elsewhere, and on the CPU, the same integers
are multiplied in fp32. The per-token and per-channel scales and the bias follow in fp32.
"""

from __future__ import annotations

import torch

from quant_layers.quantizer import QuantSpec, Quantizer


def quantize_rows_int8(x: torch.Tensor, clip_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (int8 levels (M, K), fp32 scales (M, 1)): symmetric per-token absmax, as fake quantization."""
    quantizer = Quantizer(QuantSpec("int", 8, granularity="token", clip_ratio=clip_ratio))
    xf = x.float()
    params = quantizer.fit(xf)
    return quantizer.levels(xf, params).to(torch.int8), params.scale.reshape(-1, 1)


def w8a8_matmul(a: torch.Tensor, a_scale: torch.Tensor, w_codes: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(M, N) = (a * a_scale) @ (w * w_scale).T (+ bias); ``w_codes`` are (N, K) two's complement bytes."""
    m, k = a.shape
    n = w_codes.shape[0]
    if a.dtype != torch.int8 or w_codes.shape[1] != k or w_codes.dtype not in (torch.uint8, torch.int8):
        raise ValueError(f"w8a8_matmul takes int8 activations (M, K) and byte weight codes (N, K), got {a.dtype} "
                         f"{tuple(a.shape)} and {w_codes.dtype} {tuple(w_codes.shape)}")
    w = w_codes.view(torch.int8)
    if a.is_cuda and m > 16 and k % 8 == 0 and n % 8 == 0:
        product = torch._int_mm(a, w.t()).float()
    else:
        product = a.float() @ w.float().t()
    out = product * a_scale.float() * w_scale.float().reshape(1, n)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)
