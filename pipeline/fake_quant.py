"""Turn a loaded model into its fake-quantized twin, as a recipe says."""

from __future__ import annotations

from torch import nn

from configs import QuantRecipe
from models import ArchAdapter
from quant_layers import QuantLinear, Quantizer, ensure_quant_linear, install_kv_quantization


def attach_quantizers(model: nn.Module, adapter: ArchAdapter, recipe: QuantRecipe) -> list[QuantLinear]:
    """Wrap every decoder linear (and lm_head if asked) in ``QuantLinear`` and quantize K/V.

    Linears a transform already wrapped (for an online rotation) get their quantizers set.
    Weights are not touched here: the calibration algorithm quantizes them. Returns the
    wrapped layers. Embeddings and (by default) lm_head stay in high precision.
    """
    wq = Quantizer(recipe.weight) if recipe.weight is not None else None
    aq = Quantizer(recipe.activation) if recipe.activation is not None else None
    wrapped = []
    if wq is not None or aq is not None:
        for layer in adapter.decoder_layers(model):
            for name in adapter.linear_names():
                qlinear = ensure_quant_linear(layer, name)
                qlinear.weight_quantizer, qlinear.act_quantizer = wq, aq
                wrapped.append(qlinear)
        if recipe.quantize_lm_head:
            adapter.untie_lm_head(model)  # quantizing a tied lm_head must not quantize the embeddings
            head_weight, head_act = recipe.lm_head_weight, recipe.lm_head_activation
            qhead = QuantLinear(adapter.lm_head(model), None if head_weight is None else Quantizer(head_weight),
                                None if head_act is None else Quantizer(head_act))
            model.lm_head = qhead
            wrapped.append(qhead)
    head_dim = adapter.head_dim(model.config)
    install_kv_quantization(
        model,
        [adapter.attention(layer) for layer in adapter.decoder_layers(model)],
        Quantizer(recipe.key, head_dim) if recipe.key is not None else None,
        Quantizer(recipe.value, head_dim) if recipe.value is not None else None,
    )
    return wrapped
