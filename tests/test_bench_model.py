"""benchmarks/bench_model.py: the static-cache decoder its CUDA-graph timing replays."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from benchmarks.bench_model import StaticDecoder


def test_static_decoder_decodes_like_the_dynamic_cache(tinystories_dir):
    """Token and position updated in place, the cache static: the same greedy tokens as HF's dynamic cache."""
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    decoder = StaticDecoder(model, ids, steps=8)
    decoder.warm_up()  # as before a capture: must leave no trace
    got = torch.cat([decoder.step().clone() for _ in range(8)], dim=1)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        token = model(ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        want = []
        for _ in range(8):
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
            want.append(token)
    want = torch.cat(want, dim=1)
    assert len(set(want.flatten().tolist())) > 4  # a real continuation, not one repeated token
    assert torch.equal(got, want)
