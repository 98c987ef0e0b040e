"""Static NVFP4 activation tensor scales: each linear input's absmax over the calibration windows.

A linear whose activation spec asks for a static tensor scale (``QuantSpec.static_tensor_scale``) quantizes its
input with the input's own absmax until this runs; afterwards with the largest absmax its (rotated) input took over
the calibration windows, through ``StaticTensorScale``. While observing, those linears' activation quantization is
off (ModelOpt's max calibration observes so too); weights, other activations and K/V stay as the recipe quantized
them, so the observed inputs carry the upstream quantization as evaluation will see it.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from quant_layers import QuantLinear, Quantizer, StaticTensorScale


def static_scale_linears(model: nn.Module) -> dict[str, QuantLinear]:
    """The linears whose activation quantizer waits for a calibrated tensor scale, by module name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, QuantLinear) and isinstance(m.act_quantizer, Quantizer)
            and m.act_quantizer.spec.static_tensor_scale}


class _AbsmaxObserver:
    """Stands in for a linear's activation quantizer while it is observed: keeps the largest absmax of the inputs it
    is handed (on their device) and passes them on unquantized."""

    def __init__(self) -> None:
        self.amax: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        seen = x.abs().amax().float()
        self.amax = seen if self.amax is None else torch.maximum(self.amax, seen)  # a NaN stays NaN: refused
        return x


@torch.no_grad()
def calibrate_static_tensor_scales(model: nn.Module, windows: torch.Tensor, batch_size: int = 1) -> dict[str, float]:
    """Observe every ``static_scale_linears`` input over ``windows`` ((n, seqlen) token ids) and install its
    ``StaticTensorScale``; returns each linear's absmax. Refuses an input whose absmax is not finite or is zero
    (no scale can be calibrated from it)."""
    linears = static_scale_linears(model)
    if not linears:
        return {}
    if batch_size < 1:
        raise ValueError(f"--calib_batch_size must be at least 1, got {batch_size}")
    quantizers = {name: m.act_quantizer for name, m in linears.items()}
    observers = {name: _AbsmaxObserver() for name in linears}
    device = next(model.parameters()).device
    try:
        for name, m in linears.items():
            m.act_quantizer = observers[name]  # sees the input after the linear's online transform
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="static tensor scales", leave=False):
            model(windows[start:start + batch_size].to(device))
    finally:
        for name, m in linears.items():
            m.act_quantizer = quantizers[name]
    amax = {name: torch.zeros(()) if observer.amax is None else observer.amax.cpu()  # None: no window seen
            for name, observer in observers.items()}
    bad = {name: float(v) for name, v in amax.items() if not torch.isfinite(v) or v == 0}
    if bad:
        raise ValueError(f"no static tensor scale can be calibrated from inputs whose absmax is zero or not finite: "
                         f"{bad}; calibrate on other data (--calib_dataset, --nsamples) or drop "
                         f"--a_static_tensor_scale")
    for name, m in linears.items():
        m.act_quantizer = StaticTensorScale(quantizers[name], amax[name]).to(m.weight.device)
    return {name: float(v) for name, v in amax.items()}
