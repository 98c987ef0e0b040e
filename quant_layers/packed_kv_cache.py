"""A KV cache that holds K and V as packed 4-bit codes plus scales (the run-time KV4 cache).

Fake quantization (``kv_cache.py``) keeps the cache in full precision and quantizes every
cached key and value again at each step. ``PackedKVCache`` stores what a real KV4 cache
stores: each new token's K (after the attention's online rotation) and V are quantized
once, per KV head, with the attention module's own quantizers, and kept as codes (two per
byte) with their scales and zero points. Attention reads them dequantized
(dequantize-then-SDPA). The dequantized tensors carry a mark that tells the attention
wrapper not to rotate or quantize them again, so the logits equal the fake-quantized
model's. One exception: NVFP4 K/V take their fp32 tensor scale from each appended chunk
(the prompt, then each token), where the fake-quantized model recomputes it over the
whole cache at every step; per-token and per-group scales are the same either way.

    cache = PackedKVCache(model)
    model.generate(**inputs, past_key_values=cache)
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from .kv_cache import PACKED_MARK
from .packing import decode, encode, pack, unpack
from .quantizer import QuantParams, Quantizer


class _PackedTensor:
    """One growing tensor (batch, heads, tokens, head_dim) stored as packed codes and params."""

    def __init__(self, quantizer: Quantizer) -> None:
        if quantizer.element.bits != 4:
            raise ValueError(f"the packed KV cache stores 4-bit codes, got {quantizer.spec.label}: quantize K/V to "
                             f"4 bits (e.g. --k_bits 4 --v_bits 4) or use the fake-quantized cache")
        self.quantizer = quantizer
        self.codes: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None

    def append(self, x: torch.Tensor) -> None:
        q = self.quantizer
        grouped = q.grouped(x)
        params = q.fit(grouped)
        codes = pack(encode(q.levels(grouped, params), q.element).reshape(*x.shape[:-1], -1))
        shape = (*x.shape[:-1], -1)
        scale = params.scale.reshape(shape)
        zero = None if params.zero is None else params.zero.reshape(shape)
        if self.codes is None:
            self.codes, self.scale, self.zero = codes, scale, zero
            return
        self.codes = torch.cat([self.codes, codes], dim=-2)
        self.scale = torch.cat([self.scale, scale], dim=-2)
        if zero is not None:
            self.zero = torch.cat([self.zero, zero], dim=-2)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        levels = decode(unpack(self.codes), self.quantizer.element)
        group = self.quantizer.spec.group_length(levels.shape[-1], self.quantizer.head_dim)
        grouped = levels.reshape(*self.scale.shape, group)
        params = QuantParams(self.scale[..., None], None if self.zero is None else self.zero[..., None])
        return self.quantizer.dequantize(grouped, params).reshape(levels.shape).to(dtype)

    @property
    def nbytes(self) -> int:
        parts = [t for t in (self.codes, self.scale, self.zero) if t is not None]
        return sum(t.numel() * t.element_size() for t in parts)


class PackedKVLayer(DynamicLayer):
    """One attention layer's packed K and V."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        key_quantizer = getattr(attention, "key_quantizer", None)
        value_quantizer = getattr(attention, "value_quantizer", None)
        if key_quantizer is None or value_quantizer is None:
            raise ValueError("the packed KV cache needs a model whose K and V are quantized (a KV4 recipe, e.g. "
                             "--k_bits 4 --v_bits 4)")
        self.qk_transform = getattr(attention, "qk_transform", None)
        self.packed_keys = _PackedTensor(key_quantizer)
        self.packed_values = _PackedTensor(value_quantizer)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.qk_transform is not None:
            key_states = self.qk_transform(key_states)
        self.packed_keys.append(key_states)
        self.packed_values.append(value_states)
        keys = self.packed_keys.dequantized(self.dtype)
        values = self.packed_values.dequantized(self.dtype)
        setattr(keys, PACKED_MARK, True)
        setattr(values, PACKED_MARK, True)
        return keys, values

    def get_seq_length(self) -> int:
        codes = self.packed_keys.codes
        return 0 if codes is None else codes.shape[-2]

    @property
    def nbytes(self) -> int:
        return self.packed_keys.nbytes + self.packed_values.nbytes


class PackedKVCache(Cache):
    """A cache for ``model.generate`` / ``model(...)`` whose layers store packed 4-bit K and V."""

    def __init__(self, model: nn.Module) -> None:
        from models import adapter_for  # late: models imports quant_layers

        adapter = adapter_for(model.config)
        super().__init__(layers=[PackedKVLayer(adapter.attention(layer)) for layer in adapter.decoder_layers(model)])

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes, scales and zero points of every layer."""
        return sum(layer.nbytes for layer in self.layers)
