"""SDPA attention whose single-token (decode) queries run grouped per K/V head on a flash-decoding kernel.

In grouped-query attention (Llama-3, Qwen2) ``g`` query heads share each K/V head. For a
single query token with a mask (a static cache always has one), transformers before 5.2x
repeats K and V ``g`` times before calling SDPA: on Llama-3-8B after 2048 tokens those
copies were a fifth of a CUDA-graph decode step on an H200
(``benchmarks/results/decode_profile_ungrouped_llama3_8b_h200.md``), and SDPA's own kernel,
which tiles queries, a quarter once they were gone (``decode_profile_llama3_8b_h200.md``).
Here the ``g`` query heads of a group become ``g`` query rows of its K/V head,
(b, H, 1, d) -> (b, H/g, g, d) (the mask of the one token, (b, 1, 1, L), holds for every
row), and ``quant_kernels.decode_attention`` splits the keys across programs (Triton on CUDA,
SDPA on the CPU). Everything else (prefill,
per-head or additive masks, options SDPA lacks) goes to transformers' own SDPA function.

A packed KV4 cache hands a decode step its K and V still packed
(``quant_layers.packed_kv_cache``); the same kernel then reads the 4-bit codes, scales and
zero points directly (``ptq::decode_attention_packed``) instead of the whole cache
dequantized to bf16 first.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

import quant_kernels
from quant_kernels.reference import NormTail, decode_attention_packed_problem, decode_attention_problem
from quant_layers.kv_cache import READS_PACKED

NAME = "sdpa_grouped"


@torch.library.custom_op("ptq::decode_attention", mutates_args=())
def decode_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
                     scale: float) -> torch.Tensor:
    """``quant_kernels.decode_attention`` as one opaque op for ``torch.compile`` (the kernel picks its split in
    Python)."""
    return quant_kernels.decode_attention(q, key, value, mask, scale)


@decode_attention.register_fake
def _(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
      scale: float) -> torch.Tensor:
    return torch.empty_like(q)


@torch.library.custom_op("ptq::decode_attention_packed", mutates_args=())
def decode_attention_packed(q: torch.Tensor, key_codes: torch.Tensor, key_scale: torch.Tensor,
                            key_zero: Optional[torch.Tensor], value_codes: torch.Tensor, value_scale: torch.Tensor,
                            value_zero: Optional[torch.Tensor], mask: Optional[torch.Tensor], scale: float,
                            key_element: str, value_element: str) -> torch.Tensor:
    """Decode attention over packed 4-bit K and V (``reference.decode_attention_packed_ref``) as one opaque op."""
    return quant_kernels.decode_attention_packed(q, (key_codes, key_scale, key_zero),
                                                 (value_codes, value_scale, value_zero), mask, scale,
                                                 key_element=key_element, value_element=value_element)


@decode_attention_packed.register_fake
def _(q: torch.Tensor, key_codes: torch.Tensor, key_scale: torch.Tensor, key_zero: Optional[torch.Tensor],
      value_codes: torch.Tensor, value_scale: torch.Tensor, value_zero: Optional[torch.Tensor],
      mask: Optional[torch.Tensor], scale: float, key_element: str, value_element: str) -> torch.Tensor:
    return torch.empty_like(q)


@torch.library.custom_op("ptq::decode_attention_codes", mutates_args=())
def decode_attention_codes(q: torch.Tensor, key: torch.Tensor, key_scale: Optional[torch.Tensor],
                           key_zero: Optional[torch.Tensor], value: torch.Tensor, value_scale: Optional[torch.Tensor],
                           value_zero: Optional[torch.Tensor], mask: Optional[torch.Tensor], scale: float,
                           key_element: str, value_element: str, element: str, clip_ratio: float,
                           dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``decode_attention`` (``key_scale`` None: K and V as values) or ``decode_attention_packed`` with o_proj's input
    quantization as its tail: (the output, its rows' per-token codes, ``quant_kernels.decode_codes_form``, and
    scales), one opaque op."""
    tail = NormTail(None, 0.0, element, clip_ratio, *quant_kernels.decode_codes_form(dp4a_for, q.shape[0], q.is_cuda))
    if key_scale is None:
        return quant_kernels.decode_attention(q, key, value, mask, scale, norm_tail=tail)
    return quant_kernels.decode_attention_packed(q, (key, key_scale, key_zero), (value, value_scale, value_zero), mask,
                                                 scale, key_element=key_element, value_element=value_element,
                                                 norm_tail=tail)


@decode_attention_codes.register_fake
def _(q: torch.Tensor, key: torch.Tensor, key_scale: Optional[torch.Tensor], key_zero: Optional[torch.Tensor],
      value: torch.Tensor, value_scale: Optional[torch.Tensor], value_zero: Optional[torch.Tensor],
      mask: Optional[torch.Tensor], scale: float, key_element: str, value_element: str, element: str,
      clip_ratio: float, dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = q.shape[0]
    return (torch.empty_like(q), quant_kernels.decode_codes_like(q, rows, q[0].numel(), dp4a_for),
            q.new_empty(rows, 1, dtype=torch.float32))


def grouped_sdpa_attention(module: nn.Module, query: torch.Tensor, key, value, attention_mask: torch.Tensor | None,
                           dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; query (b, H, q, d), key and value (b, H/g, L, d), or on a
    decode step from a packed KV4 cache its packed K and V (``packed_kv_cache._PackedTensor``)."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_length, dim = query.shape
    rows = query.reshape(batch, heads // groups, groups, dim) if q_length == 1 else query
    packed = not isinstance(key, torch.Tensor)
    problem = (decode_attention_packed_problem(rows, key.operand, value.operand, attention_mask, key.kernel_element,
                                               value.kernel_element) if packed
               else decode_attention_problem(rows, key, value, attention_mask))
    plain = (q_length != 1 or dropout or kwargs.get("softcap") is not None
             or kwargs.get("position_bias") is not None or kwargs.get("output_attentions", False)
             or problem is not None)
    if plain:
        if packed:
            key, value = key.dequantized(query.dtype), value.dequantized(query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = dim ** -0.5 if scaling is None else scaling
    o_proj = getattr(module, "o_proj", None)
    tail = getattr(o_proj, "input_codes_wanted", None)  # RealQuantLinear.want_input_codes
    if tail is not None:
        (k_parts, k_element), (v_parts, v_element) = (
            (t.operand, t.kernel_element) if packed else ((t, None, None), "") for t in (key, value))
        out, codes, scales = torch.ops.ptq.decode_attention_codes(
            rows, *k_parts, *v_parts, attention_mask, scale, k_element, v_element, tail.element, tail.clip_ratio,
            tail.dp4a_for)
        o_proj.provide_input_codes(codes, scales)
    elif packed:
        out = torch.ops.ptq.decode_attention_packed(rows, *key.operand, *value.operand, attention_mask, scale,
                                                    key.kernel_element, value.kernel_element)
    else:
        out = torch.ops.ptq.decode_attention(rows, key, value, attention_mask, scale)
    return out.reshape(batch, 1, heads, dim), None


setattr(grouped_sdpa_attention, READS_PACKED, True)


def use_grouped_decode_attention(model: nn.Module) -> bool:
    """Point a model on HF's SDPA attention at ``grouped_sdpa_attention``; returns whether it did.

    Call it before ``install_kv_quantization`` (which wraps whatever attention the model has).
    """
    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, grouped_sdpa_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(NAME)
    return True
