"""Observers: how a quantizer picks its range from the data.

``minmax`` uses the observed extremes. ``mse`` shrinks them by a grid of factors and
keeps, per group, the factor with the least squared quantization error (the clipping
search GPTQ and FP-Quant use for weights).
"""

from __future__ import annotations

from typing import Callable

import torch

OBSERVERS = ("minmax", "mse")
MSE_GRID = 100
MSE_MAX_SHRINK = 0.8


def mse_shrink_search(
    xg: torch.Tensor,
    quantize_with_ratio: Callable[[torch.Tensor], torch.Tensor],
    grid: int = MSE_GRID,
    max_shrink: float = MSE_MAX_SHRINK,
) -> torch.Tensor:
    """Per-group shrink factor in [1 - max_shrink, 1] minimising ||x - q(x)||^2.

    ``quantize_with_ratio(r)`` fake-quantizes the grouped tensor ``xg`` (groups x elems)
    with its range multiplied by ``r`` (a scalar tensor); returns factors (groups x 1).
    """
    best_err = torch.full((xg.shape[0], 1), float("inf"), dtype=xg.dtype, device=xg.device)
    best_ratio = torch.ones_like(best_err)
    for i in range(int(max_shrink * grid) + 1):
        ratio = torch.tensor(1.0 - i / grid, dtype=xg.dtype, device=xg.device)
        err = (quantize_with_ratio(ratio) - xg).pow(2).sum(dim=-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, ratio, best_ratio)
    return best_ratio
