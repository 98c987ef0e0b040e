"""The packed KV4 cache: decoding from packed codes equals decoding the fake-quantized model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from calib.rtn import quantize_weights_rtn
from configs.recipe import QuantRecipe
from models.adapter import adapter_for
from models.decoding import cache_kwargs
from pipeline.fake_quant import attach_quantizers
from quant_layers.packed_kv_cache import PackedKVCache, StaticPackedKVCache
from quant_layers.quantizer import QuantSpec
from transforms import apply_transform

KV4 = dict(key=QuantSpec("int", 4, granularity="head"), value=QuantSpec("int", 4, granularity="head", symmetric=False))


def quantized(path: str, recipe: QuantRecipe):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    apply_transform(model, adapter, recipe.transform, seed=0)
    attach_quantizers(model, adapter, recipe)
    quantize_weights_rtn(model)
    return model


def greedy(model, ids, cache=None):
    out = model.generate(ids, max_new_tokens=20, do_sample=False, **cache_kwargs(model, cache), output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.scores)


def w4a4kv4_and_prompt(path: str, transform: str) -> tuple:
    """The TinyStories model at W4A4KV4 (INT4, V asymmetric) and a tokenized prompt."""
    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"), transform=transform, **KV4)
    ids = AutoTokenizer.from_pretrained(path)("Once upon a time there was", return_tensors="pt").input_ids
    return quantized(path, recipe), ids


def loaded_w4a4kv4(path: str, out_dir) -> torch.nn.Module:
    """The TinyStories model at W4A4KV4 exported real-quantized and loaded back (RealQuantLinears)."""
    from export import export_quantized, load_quantized

    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"), **KV4)
    saved = export_quantized(quantized(path, recipe), AutoTokenizer.from_pretrained(path), recipe, str(out_dir / "ckpt"))
    return load_quantized(saved)[0]


def assert_same_decode(got: tuple, want: tuple) -> None:
    """Greedy (tokens, scores): the same tokens, scores within 1e-4 of their magnitude."""
    assert torch.equal(got[0], want[0])  # token by token
    assert (got[1] - want[1]).abs().max() <= 1e-4 * want[1].abs().max()


@pytest.mark.parametrize("transform", ["identity", "hadamard"])
def test_decode_from_packed_codes_equals_fake_quantized_decode(transform, tinystories_dir):
    model, ids = w4a4kv4_and_prompt(tinystories_dir, transform)
    cache = PackedKVCache(model)
    assert_same_decode(greedy(model, ids, cache), greedy(model, ids))
    # What the cache holds: uint8 codes (half a byte per element) and one fp32 scale (and zero) per head and token.
    layer = cache.layers[0]
    tokens = ids.shape[1] + 19
    assert layer.packed_keys.codes.dtype == torch.uint8 and layer.get_seq_length() == tokens
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    fp32_bytes = 2 * config.num_key_value_heads * tokens * head_dim * 4
    assert layer.nbytes < fp32_bytes / 4


def test_packed_cache_needs_a_kv4_recipe(tinystories_dir):
    with pytest.raises(ValueError, match="K and V are quantized"):
        PackedKVCache(quantized(tinystories_dir, QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"))))
    eight = QuantRecipe(key=QuantSpec("int", 8, granularity="head"), value=QuantSpec("int", 8, granularity="head"))
    with pytest.raises(ValueError, match="4-bit codes"):
        PackedKVCache(quantized(tinystories_dir, eight))


@pytest.mark.parametrize("transform", ["identity", "hadamard"])
def test_static_packed_cache_decodes_like_the_growing_one(transform, tinystories_dir):
    """The CUDA-graph-ready cache: fixed buffers written in place, the same tokens and logits."""
    model, ids = w4a4kv4_and_prompt(tinystories_dir, transform)
    length = ids.shape[1] + 24
    cache = StaticPackedKVCache(model, max_cache_len=length)
    assert_same_decode(greedy(model, ids, cache), greedy(model, ids, PackedKVCache(model)))
    layer = cache.layers[0]
    assert layer.packed_keys.codes.shape[-2] == length and layer.get_seq_length() == ids.shape[1] + 19
    with pytest.raises(ValueError, match="do not fit; build it with a larger max_cache_len"):
        greedy(model, ids, StaticPackedKVCache(model, max_cache_len=ids.shape[1] + 5))


def test_kv_quantized_attention_stays_causal_with_eager_attention(tinystories_dir):
    """The wrapped attention keeps the base's mask: eager attention with K/V quantized equals SDPA's,
    and a token's logits do not depend on later tokens."""
    ids = torch.tensor([[1, 80, 147, 201, 282, 81, 248, 197, 402, 402]])
    changed = ids.clone()
    changed[0, -1] = 7
    logits = {}
    for impl in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32,
                                                     attn_implementation=impl).eval()
        attach_quantizers(model, adapter_for(model.config), QuantRecipe(**KV4))
        with torch.no_grad():
            logits[impl] = model(ids).logits
            prefix = model(changed).logits[:, :-1]
        torch.testing.assert_close(prefix, logits[impl][:, :-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=0, atol=1e-4)
