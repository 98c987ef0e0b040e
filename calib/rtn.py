"""Round-to-nearest weight quantization: every weight onto its quantizer's grid, no data."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from quant_layers import QuantLinear


@torch.no_grad()
def quantize_linear_rtn(module: QuantLinear) -> None:
    """Round one linear's weight onto its quantizer's grid, in place."""
    quantizer = module.weight_quantizer
    grouped = quantizer.grouped(module.weight.data)
    params = quantizer.fit(grouped)
    q = quantizer.quantize_with(grouped, params).reshape(module.weight.shape)
    module.set_quantized_weight(q.to(module.weight.dtype), params)


@torch.no_grad()
def quantize_weights_rtn(model: nn.Module) -> int:
    """Fake-quantize, in place, the weight of every ``QuantLinear`` that has a weight quantizer.

    Returns how many layers were quantized.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantLinear) and m.weight_quantizer is not None]
    for module in tqdm(layers, desc="RTN weights", leave=False):
        quantize_linear_rtn(module)
    return len(layers)
