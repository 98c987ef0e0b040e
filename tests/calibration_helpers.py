"""What several calibration test modules share: a recipe, and the state a calibration learned."""

import torch

from configs.recipe import QuantRecipe
from quant_layers.linear import QuantLinear
from quant_layers.quantizer import QuantSpec

# FlatQuant's W4A4KV4: INT4 weights per channel, activations per token, K/V asymmetric per head.
FLATQUANT_W4A4KV4 = QuantRecipe(
    weight=QuantSpec("int", 4, granularity="channel"),
    activation=QuantSpec("int", 4, granularity="token"),
    key=QuantSpec("int", 4, granularity="head", symmetric=False),
    value=QuantSpec("int", 4, granularity="head", symmetric=False),
    method="flatquant",
)


def learned_state(model) -> dict[str, torch.Tensor]:
    """Parameters (transforms included) and each linear's activation clip ratio."""
    out = {k: v.detach().clone() for k, v in model.named_parameters()}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear) and m.act_quantizer is not None:
            out[f"{name}.act_clip_ratio"] = torch.tensor(m.act_quantizer.spec.clip_ratio)
    return out
