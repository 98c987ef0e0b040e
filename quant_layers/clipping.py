"""Fake quantization with a learnable clipping range (FlatQuant's LWC for weights, LAC for activations).

The observed range of each scale group is multiplied by ``sigmoid(θ)`` (one ``θ`` per
group row, e.g. per output channel, or one per tensor), the scale follows from it through
the ``Quantizer``'s own encoding, and rounding is straight-through: the forward pass is the
quantizer's fake quantization at that clip ratio, the backward pass lets the reconstruction
error reach ``θ`` through the scale. Asymmetric INT learns the top and bottom of the range
apart, as LWC does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .quantizer import QuantParams, Quantizer


def _logit(ratio: float) -> float:
    """sigmoid's inverse; 1.0 (no clipping, for a frozen clip) maps to +inf."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"an initial clip ratio must be in (0, 1], got {ratio}")
    return math.inf if ratio == 1.0 else math.log(ratio / (1 - ratio))


def round_ste(values: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` forward, identity backward (the straight-through estimator)."""
    return values + (rounded - values).detach()


class LearnableClipQuantizer(nn.Module):
    """``quantizer``'s fake quantization with learnable clip ratios ``sigmoid(θ)``.

    ``rows``: how many ``θ`` (one per scale-group row of ``quantizer.grouped(x)``, e.g. the
    output channels of a per-channel weight); 1 shares one ratio across the tensor.
    """

    def __init__(self, quantizer: Quantizer, rows: int = 1, init_ratio: float = 0.98) -> None:
        super().__init__()
        self.quantizer = quantizer
        logit = _logit(init_ratio)
        self.theta_max = nn.Parameter(torch.full((rows, 1), logit))
        self.theta_min = None if quantizer.spec.symmetric else nn.Parameter(torch.full((rows, 1), logit))

    def ratios(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The current clip ratios (top, and bottom for asymmetric INT)."""
        low = None if self.theta_min is None else torch.sigmoid(self.theta_min)
        return torch.sigmoid(self.theta_max), low

    def params(self, grouped: torch.Tensor) -> QuantParams:
        """Scales (and zero points) of ``grouped`` rows at the current ratios, differentiable in ``θ``."""
        q = self.quantizer
        top, bottom = self.ratios()
        if self.theta_min is None:
            amax = grouped.abs().amax(dim=-1, keepdim=True)
            return QuantParams(q.scales(amax * top, grouped.abs().amax()))
        lo = grouped.amin(dim=-1, keepdim=True).clamp(max=0) * bottom
        hi = grouped.amax(dim=-1, keepdim=True).clamp(min=0) * top
        scale = (hi - lo) / q.element.max_level
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return QuantParams(scale, round_ste(-lo / safe, torch.round(-lo / safe)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        grouped = q.grouped(x)
        params = self.params(grouped)
        safe = torch.where(params.scale > 0, params.scale, torch.ones_like(params.scale))
        # Straight-through the rounding only: the saturation keeps its true (zero) slope, so a
        # clipped value pulls its scale up (as in LSQ) instead of down.
        if params.zero is None:
            top = q.element.max_value
            unrounded = (grouped / safe).clamp(-top, top)
        else:
            unrounded = (grouped / safe + params.zero).clamp(q.element.min_level, q.element.max_level)
        detached = QuantParams(params.scale.detach(), None if params.zero is None else params.zero.detach())
        levels = round_ste(unrounded, q.levels(grouped, detached))
        return q.dequantize(levels, params).reshape(x.shape).to(x.dtype)
