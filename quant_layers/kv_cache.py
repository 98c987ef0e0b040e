"""KV-cache fake quantization (and the online Q/K rotation) through HF's attention registry.

Keys and values are quantized where attention reads them: after RoPE (and after
Qwen3's k_norm), per KV head, before any GQA repetition, which is exactly the tensor a
KV cache stores. We register wrapped versions of the model's attention function and
point the model at them; each attention module carries its own quantizers and, when a
rotation transform is fused, a ``qk_transform`` applied to Q and K first: ``K -> K M``
and ``Q -> qk_transform.query(Q) = Q M^-T`` (``M`` itself for a rotation), so Q K^T is
unchanged and K is cached and quantized in the transformed basis.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

from .quantizer import Quantizer

PREFIX = "kvquant_"


# Set on K and V that a packed KV4 cache returns: already rotated and quantized when stored.
PACKED_MARK = "from_packed_kv_cache"
# Set (True) on an attention function that reads a decode step's K and V packed (``models.attention``).
READS_PACKED = "reads_packed_kv"


def is_packed(kv) -> bool:
    """Whether attention got this K or V from a ``PackedKVCache``: dequantized and marked, or on a decode
    step still packed (not a tensor: ``packed_kv_cache._PackedTensor``)."""
    return not isinstance(kv, torch.Tensor) or getattr(kv, PACKED_MARK, False)


def _wrap(base: Callable) -> Callable:
    reads_packed = getattr(base, READS_PACKED, False)

    def attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        packed = is_packed(key)
        qk_transform = getattr(module, "qk_transform", None)
        if qk_transform is not None:
            query = qk_transform.query(query)
            if not packed:
                key = qk_transform(key)
        probe = getattr(module, "attention_probe", None)
        if not isinstance(key, torch.Tensor) and (probe is not None or not reads_packed):
            key, value = key.dequantized(query.dtype), value.dequantized(query.dtype)
        if probe is not None:  # calibration reads Q, K, V as the cache would hold them (may stop the forward)
            probe(module, query, key, value, attention_mask, kwargs)
        kq: Quantizer | None = getattr(module, "key_quantizer", None)
        vq: Quantizer | None = getattr(module, "value_quantizer", None)
        if kq is not None and not packed:
            key = kq(key)
        if vq is not None and not packed:
            value = vq(value)
        return base(module, query, key, value, attention_mask, **kwargs)

    return attention


def _base_attention(name: str) -> Callable:
    if name == "eager":
        return eager_attention_forward
    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    raise ValueError(f"KV-cache quantization cannot wrap attention implementation {name!r}")


def install_kv_quantization(
    model: nn.Module,
    attention_modules: list[nn.Module],
    key_quantizer: Quantizer | None,
    value_quantizer: Quantizer | None,
) -> None:
    """Quantize K and V in every given attention module from now on."""
    if key_quantizer is None and value_quantizer is None:
        return
    for attn in attention_modules:
        attn.key_quantizer = key_quantizer
        attn.value_quantizer = value_quantizer
    install_attention_wrapper(model)


def install_attention_wrapper(model: nn.Module) -> None:
    """Point the model at the wrapped attention function (idempotent)."""
    current = model.config._attn_implementation or "eager"
    if current.startswith(PREFIX):
        return
    name = PREFIX + current
    AttentionInterface.register(name, _wrap(_base_attention(current)))
    # The wrapped name needs the base's mask function too: transformers builds no mask at all
    # for a name it has none for, which made eager attention attend to later tokens and a
    # static cache's decode attend to its unwritten slots.
    if current in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[current])
    model.set_attn_implementation(name)

