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
    amax = {name: torch.zeros((), dtype=torch.float32) for name in linears}
    quantizers = {name: m.act_quantizer for name, m in linears.items()}

    def observe(name: str):
        def hook(module: QuantLinear, args: tuple) -> None:
            seen = module.transformed_input(args[0]).abs().amax().float().cpu()
            amax[name] = torch.maximum(amax[name], seen)  # a NaN stays NaN: refused below
        return hook

    handles = [m.register_forward_pre_hook(observe(name)) for name, m in linears.items()]
    device = next(model.parameters()).device
    try:
        for m in linears.values():
            m.act_quantizer = None
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="static tensor scales", leave=False):
            model(windows[start:start + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        for name, m in linears.items():
            m.act_quantizer = quantizers[name]
    bad = {name: float(v) for name, v in amax.items() if not torch.isfinite(v) or v == 0}
    if bad:
        raise ValueError(f"no static tensor scale can be calibrated from inputs whose absmax is zero or not finite: "
                         f"{bad}; calibrate on other data (--calib_dataset, --nsamples) or drop "
                         f"--a_static_tensor_scale")
    for name, m in linears.items():
        m.act_quantizer = StaticTensorScale(quantizers[name], amax[name]).to(m.weight.device)
    return {name: float(v) for name, v in amax.items()}
