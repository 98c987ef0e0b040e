"""A KV cache that holds K and V as packed 4-bit codes plus scales (the run-time KV4 cache).

Fake quantization (``kv_cache.py``) keeps the cache in full precision and quantizes every
cached key and value again at each step. ``PackedKVCache`` stores what a real KV4 cache
stores: each new token's K (after the attention's online rotation) and V are quantized
once, per KV head, with the attention module's own quantizers, and kept as codes (two per
byte) with their scales and zero points. Attention reads them dequantized
(dequantize-then-SDPA), or on decode steps packed (below). The dequantized tensors carry
a mark that tells the attention wrapper not to rotate or quantize them again, so the
logits equal the fake-quantized model's. One exception: NVFP4 K/V take their fp32 tensor scale from each appended chunk
(the prompt, then each token), where the fake-quantized model recomputes it over the
whole cache at every step; per-token and per-group scales are the same either way.

    cache = PackedKVCache(model)
    model.generate(**inputs, **cache_kwargs(model, cache))  # models.decoding: cache= or past_key_values=

``StaticPackedKVCache(model, max_cache_len)`` is its static twin (HF's ``StaticLayer``
bookkeeping): packed buffers of ``max_cache_len`` tokens allocated at the first update and
written in place, so that a decode step can be captured in a CUDA graph. Attention then
reads all ``max_cache_len`` positions; the mask hides the unwritten ones. On a GPU (or with
``fused_write=True``) it writes K and V with one Triton kernel (``quant_kernels.kv_write``, the op
``ptq::write_kv4``) where both quantizers are min-max INT4 (symmetric or not) or E2M1 per
token, head or group; the torch path below is that kernel's twin.

On a decode step (one new token) both caches hand attention their K and V as they are
stored (the ``_PackedTensor`` objects, not tensors) when the decode-attention kernel reads
their elements: INT4, INT4 under zero points, E2M1, with any scale group (the scales are
stored decoded, in fp32, so NVFP4 and MXFP4 read the same way). The grouped decode
attention (``models.attention``) then runs that kernel on the codes: dequantizing the whole
static cache before every step cost a tenth of a Llama-3-8B W4A4KV4 step. Any other
attention gets them dequantized by the wrapper (``kv_cache``); a prefill always does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer, StaticLayer

from .formats import NumberFormat
from .kv_cache import PACKED_MARK
from .packing import code_values, decode, encode, pack, unpack
from .quantizer import QuantParams, Quantizer


class _PackedTensor:
    """One growing tensor (batch, heads, tokens, head_dim) stored as packed codes and params."""

    def __init__(self, quantizer: Quantizer) -> None:
        if quantizer.element.bits != 4:
            raise ValueError(f"the packed KV cache stores 4-bit codes, got {quantizer.spec.label}: quantize K/V to "
                             f"4 bits (e.g. --k_bits 4 --v_bits 4) or use the fake-quantized cache")
        self.quantizer = quantizer
        self.table = code_values(quantizer.element)  # the codes' values (encode and decode look them up)
        from quant_kernels.reference import PACKED_KV_ELEMENTS, packed_kv_element  # late: it imports quant_layers

        # The decode-attention kernel's name for the element, None when it cannot read it packed.
        self.kernel_element = next((name for name in PACKED_KV_ELEMENTS
                                    if packed_kv_element(name) == quantizer.element), None)
        # The same name when the K/V write kernel can also quantize like this quantizer (min-max scales per row or
        # group, no NVFP4 / MXFP4 scale encodings), else None.
        spec = quantizer.spec
        self.write_element = (self.kernel_element if spec.format in ("int", "fp") and spec.observer == "minmax"
                              and spec.granularity != "tensor" else None)
        self.codes: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (batch, heads, tokens, head_dim) -> its packed codes, scales and zero points along the tokens."""
        q = self.quantizer
        self.table = self.table.to(x.device)  # moved once: later calls find it there (no copy)
        grouped = q.grouped(x)
        params = q.fit(grouped)
        levels = q.levels(grouped, params)  # on the grid by construction: no check (it would sync the host)
        codes = pack(encode(levels, q.element, check=False, table=self.table).reshape(*x.shape[:-1], -1))
        shape = (*x.shape[:-1], -1)
        return codes, params.scale.reshape(shape), None if params.zero is None else params.zero.reshape(shape)

    def append(self, x: torch.Tensor) -> None:
        codes, scale, zero = self._quantize(x)
        if self.codes is None:
            self.codes, self.scale, self.zero = codes, scale, zero
            return
        self.codes = torch.cat([self.codes, codes], dim=-2)
        self.scale = torch.cat([self.scale, scale], dim=-2)
        if zero is not None:
            self.zero = torch.cat([self.zero, zero], dim=-2)

    def allocate(self, x: torch.Tensor, length: int) -> None:
        """Zeroed buffers of ``length`` tokens for tensors shaped like x (B, H, T, D), unless already there."""
        if self.codes is not None:
            return
        self.table = self.table.to(x.device)  # the K/V write kernel fills these buffers without _quantize
        group = self.quantizer.spec.group_length(x.shape[-1], self.quantizer.head_dim) or x.shape[-1]
        groups = x.shape[-1] // group
        self.codes = torch.zeros((*x.shape[:-2], length, x.shape[-1] // 2), dtype=torch.uint8, device=x.device)
        self.scale = torch.zeros((*x.shape[:-2], length, groups), dtype=torch.float32, device=x.device)
        self.zero = None if self.quantizer.spec.symmetric else torch.zeros_like(self.scale)

    def write(self, positions: torch.Tensor, x: torch.Tensor, length: int) -> None:
        """Quantize x into token slots ``positions`` of buffers ``length`` tokens long (zeros at first)."""
        codes, scale, zero = self._quantize(x)
        self.allocate(x, length)
        self.codes.index_copy_(-2, positions, codes)
        self.scale.index_copy_(-2, positions, scale)
        if zero is not None:
            self.zero.index_copy_(-2, positions, zero)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_codes(self.codes, self.scale, self.zero, self.quantizer.element, dtype, self.table)

    @property
    def operand(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(codes, scales, zero points), as the decode-attention kernel reads them (``reference.PackedOperand``)."""
        return self.codes, self.scale, self.zero

    @property
    def nbytes(self) -> int:
        parts = [t for t in (self.codes, self.scale, self.zero) if t is not None]
        return sum(t.numel() * t.element_size() for t in parts)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, element: NumberFormat,
                     dtype: torch.dtype, table: torch.Tensor | None = None) -> torch.Tensor:
    """(..., D) values of packed codes (..., D // 2) under scales and zero points (..., D // group):
    ``Quantizer.dequantize`` per group in fp32, then ``dtype``; what the packed cache hands attention.
    ``table``: ``code_values(element)`` on the codes' device (``packing.decode``)."""
    levels = decode(unpack(codes), element, table)
    params = QuantParams(scale.float()[..., None], None if zero is None else zero.float()[..., None])
    return Quantizer.dequantize(levels.reshape(*scale.shape, -1), params).reshape(levels.shape).to(dtype)


def _packed_pair(attention: nn.Module) -> tuple[_PackedTensor, _PackedTensor]:
    """Empty packed K and V for an attention module whose K and V are quantized."""
    key_quantizer = getattr(attention, "key_quantizer", None)
    value_quantizer = getattr(attention, "value_quantizer", None)
    if key_quantizer is None or value_quantizer is None:
        raise ValueError("the packed KV cache needs a model whose K and V are quantized (a KV4 recipe, e.g. "
                         "--k_bits 4 --v_bits 4)")
    return _PackedTensor(key_quantizer), _PackedTensor(value_quantizer)


def _for_attention(keys: _PackedTensor, values: _PackedTensor, tokens: int, dtype: torch.dtype) -> tuple:
    """What attention reads after ``tokens`` new ones: on a decode step K and V packed, when the kernel reads
    both (``is_packed`` tells the attention wrapper); else dequantized and marked, so that the wrapper neither
    rotates nor quantizes them again."""
    if tokens == 1 and keys.kernel_element and values.kernel_element:
        return keys, values
    keys_dequantized, values_dequantized = keys.dequantized(dtype), values.dequantized(dtype)
    setattr(keys_dequantized, PACKED_MARK, True)
    setattr(values_dequantized, PACKED_MARK, True)
    return keys_dequantized, values_dequantized


class PackedKVLayer(DynamicLayer):
    """One attention layer's packed K and V."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.qk_transform = getattr(attention, "qk_transform", None)
        self.packed_keys, self.packed_values = _packed_pair(attention)

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
        return _for_attention(self.packed_keys, self.packed_values, key_states.shape[-2], self.dtype)

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


@torch.library.custom_op("ptq::write_kv4", mutates_args=("key_codes", "key_scale", "key_zero", "value_codes",
                                                        "value_scale", "value_zero"))
def write_kv4(key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor, key_codes: torch.Tensor,
              key_scale: torch.Tensor, key_zero: Optional[torch.Tensor], value_codes: torch.Tensor,
              value_scale: torch.Tensor, value_zero: Optional[torch.Tensor], key_element: str, value_element: str,
              key_clip: float, value_clip: float) -> None:
    """``quant_kernels.kv_write.write_kv4_triton`` as one opaque op for ``torch.compile``."""
    from quant_kernels.kv_write import write_kv4_triton  # late: kernels import quant_layers

    write_kv4_triton(key, value, positions, (key_codes, key_scale, key_zero), (value_codes, value_scale, value_zero),
                     key_element, value_element, key_clip, value_clip)


@write_kv4.register_fake
def _(key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor, key_codes: torch.Tensor,
      key_scale: torch.Tensor, key_zero: Optional[torch.Tensor], value_codes: torch.Tensor, value_scale: torch.Tensor,
      value_zero: Optional[torch.Tensor], key_element: str, value_element: str, key_clip: float,
      value_clip: float) -> None:
    return None


class StaticPackedKVLayer(StaticLayer):
    """One attention layer's packed K and V in buffers of ``max_cache_len`` tokens, written in place.

    ``fused_write``: write K and V with the Triton kernel where it can (None: on a GPU); on a CPU that needs
    ``TRITON_INTERPRET=1`` (the tests)."""

    def __init__(self, attention: nn.Module, max_cache_len: int, fused_write: bool | None = None) -> None:
        super().__init__(max_cache_len)
        self.qk_transform = getattr(attention, "qk_transform", None)
        self.packed_keys, self.packed_values = _packed_pair(attention)
        self.fused_write = fused_write

    def _writes_fused(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        """Whether this update takes the K/V write kernel (decided from shapes and specs only: no host sync); the
        buffers are allocated first when it may."""
        from quant_kernels.kv_write import kv4_write_problem  # late: kernels import quant_layers

        keys, values = self.packed_keys, self.packed_values
        if not (keys.write_element and values.write_element and (self.fused_write or (
                self.fused_write is None and key_states.is_cuda))):
            return False
        keys.allocate(key_states, self.max_cache_len)
        values.allocate(value_states, self.max_cache_len)
        return kv4_write_problem(key_states, value_states, keys.operand, values.operand) is None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch_size, self.num_heads = key_states.shape[:2]
        self.k_head_dim, self.v_head_dim = key_states.shape[-1], value_states.shape[-1]
        self.cumulative_length = self.cumulative_length.to(self.device)
        self.is_initialized = True  # the packed buffers are allocated by the first write

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.qk_transform is not None:
            key_states = self.qk_transform(key_states)
        tokens = key_states.shape[-2]
        capturing = torch.compiler.is_compiling() or (key_states.is_cuda and torch.cuda.is_current_stream_capturing())
        if not capturing:  # reading the count syncs, which a captured or compiled step cannot
            cached = int(self.cumulative_length)
            if cached + tokens > self.max_cache_len:
                raise ValueError(f"the static packed KV cache holds {self.max_cache_len} tokens: {cached} cached "
                                 f"plus {tokens} new do not fit; build it with a larger max_cache_len")
        positions = torch.arange(tokens, device=self.device) + self.cumulative_length
        self.cumulative_length.add_(tokens)
        keys, values = self.packed_keys, self.packed_values
        if self._writes_fused(key_states, value_states):
            write_kv4(key_states, value_states, positions, *keys.operand, *values.operand, keys.write_element,
                      values.write_element, keys.quantizer.spec.clip_ratio, values.quantizer.spec.clip_ratio)
        else:
            keys.write(positions, key_states, self.max_cache_len)
            values.write(positions, value_states, self.max_cache_len)
        return _for_attention(keys, values, tokens, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.packed_keys.nbytes + self.packed_values.nbytes


class StaticPackedKVCache(Cache):
    """``PackedKVCache`` with static buffers of ``max_cache_len`` tokens (CUDA-graph decode); ``fused_write`` as
    ``StaticPackedKVLayer``'s."""

    def __init__(self, model: nn.Module, max_cache_len: int, fused_write: bool | None = None) -> None:
        from models import adapter_for  # late: models imports quant_layers

        adapter = adapter_for(model.config)
        super().__init__(layers=[StaticPackedKVLayer(adapter.attention(layer), max_cache_len, fused_write)
                                 for layer in adapter.decoder_layers(model)])

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes, scales and zero points of every layer's buffers."""
        return sum(layer.nbytes for layer in self.layers)
