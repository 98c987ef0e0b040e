"""SDPA attention whose single-token (decode) queries run grouped per K/V head on a flash-decoding kernel.

In grouped-query attention (Llama-3, Qwen2) ``g`` query heads share each K/V head. For a
single query token with a mask (a static cache always has one), transformers before 5.2x
repeats K and V ``g`` times before calling SDPA: on Llama-3-8B after 2048 tokens those
copies were a fifth of a CUDA-graph decode step on an H200
(``benchmarks/results/decode_profile_ungrouped_llama3_8b_h200.md``), and SDPA's own kernel,
which tiles queries, a quarter once they were gone (``decode_profile_llama3_8b_h200.md``).
Here the ``g`` query heads of a group become ``g`` query rows of its K/V head,
(b, H, 1, d) -> (b, H/g, g, d) (the mask of the one token, (b, 1, 1, L), holds for every
row), and ``kernels.decode_attention`` splits the keys across programs (Triton on CUDA,
SDPA on the CPU). Everything else (prefill,
per-head or additive masks, options SDPA lacks) goes to transformers' own SDPA function.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

import kernels
from kernels.reference import decode_attention_problem

NAME = "sdpa_grouped"


@torch.library.custom_op("ptq::decode_attention", mutates_args=())
def decode_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
                     scale: float) -> torch.Tensor:
    """``kernels.decode_attention`` as one opaque op for ``torch.compile`` (the kernel picks its split in Python)."""
    return kernels.decode_attention(q, key, value, mask, scale)


@decode_attention.register_fake
def _(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
      scale: float) -> torch.Tensor:
    return torch.empty_like(q)


def grouped_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; query (b, H, q, d), key and value (b, H/g, L, d)."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_length, dim = query.shape
    rows = query.reshape(batch, heads // groups, groups, dim) if q_length == 1 else query
    plain = (q_length != 1 or dropout or kwargs.get("softcap") is not None
             or kwargs.get("position_bias") is not None or kwargs.get("output_attentions", False)
             or decode_attention_problem(rows, key, value, attention_mask) is not None)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.ops.ptq.decode_attention(rows, key, value, attention_mask, dim ** -0.5 if scaling is None else scaling)
    return out.reshape(batch, 1, heads, value.shape[-1]), None


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
