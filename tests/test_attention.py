"""Grouped decode attention: the same tokens and logits as transformers' SDPA, without per-head K/V copies."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, StaticCache

import models.attention as attention
from models.attention import NAME, use_grouped_decode_attention
from models.decoding import cache_kwargs


def gqa_model() -> AutoModelForCausalLM:
    config = LlamaConfig(vocab_size=97, hidden_size=128, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.no_grad()
def static_decode(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Logits of a prefill and ``steps`` greedy single-token steps from a static cache (it has a mask)."""
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + steps + 3)
    positions = torch.arange(ids.shape[1])
    logits = [model(ids, **cache_kwargs(model, cache), cache_position=positions).logits[:, -1]]
    for step in range(steps):
        token = logits[-1].argmax(-1, keepdim=True)
        position = torch.tensor([ids.shape[1] + step])
        logits.append(model(token, **cache_kwargs(model, cache), cache_position=position).logits[:, -1])
    return torch.stack(logits, 1)


def test_grouped_decode_equals_sdpa_and_skips_the_copies(monkeypatch):
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    model = gqa_model()
    want = static_decode(model, ids, steps=5)
    assert use_grouped_decode_attention(model) and model.config._attn_implementation == NAME
    plain_calls = []
    plain = attention.sdpa_attention_forward
    monkeypatch.setattr(attention, "sdpa_attention_forward",
                        lambda module, query, *args, **kwargs: plain_calls.append(query.shape[2])
                        or plain(module, query, *args, **kwargs))
    got = static_decode(model, ids, steps=5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # Only the prefill (7 query tokens, once per layer) took transformers' function.
    assert plain_calls == [7, 7]


def test_only_sdpa_models_are_switched():
    model = gqa_model()
    model.set_attn_implementation("eager")
    assert not use_grouped_decode_attention(model) and model.config._attn_implementation == "eager"
