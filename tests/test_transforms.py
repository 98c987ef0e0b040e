"""Rotations fused into models: exactness, online parts, fallbacks and errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from configs import QuantRecipe, RunConfig
from conftest import TINYSTORIES
from models import adapter_for
from quant_layers import QuantLinear, install_kv_quantization
from transforms import apply_transform, check_transform, make_rotation
from transforms.hadamard import get_hadamard, has_hadamard
from transforms.rotation import DenseRotation, HadamardRotation, orthogonality_error

ROTATIONS = ["hadamard", "random_orthogonal", "block_hadamard"]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _check_exact(path, transform, dtype, group_size=None):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    ids = torch.randint(0, min(model.config.vocab_size, 2000), (2, 24), generator=torch.Generator().manual_seed(0))
    ref = _logits(model, ids)
    apply_transform(model, adapter_for(model.config), transform, seed=1, group_size=group_size)
    # HF's RMSNorm computes in float32 even for float64 models, so float64 agrees to ~1e-7.
    assert _rel_err(_logits(model, ids), ref) <= (1e-4 if dtype == torch.float64 else 1e-3)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("transform", ROTATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rotation_is_exact_on_random_models(tiny_models, family, transform, dtype):
    model = _check_exact(tiny_models[family], transform, dtype, 32 if transform == "block_hadamard" else None)
    layer = adapter_for(model.config).decoder_layers(model)[0]
    assert isinstance(layer.mlp.down_proj, QuantLinear) and layer.mlp.down_proj.input_transform is not None
    assert layer.self_attn.qk_transform is not None
    assert torch.all(layer.input_layernorm.weight == 1)


@pytest.mark.parametrize("transform", ROTATIONS)
def test_rotation_is_exact_on_tinystories(transform):
    _check_exact(TINYSTORIES, transform, torch.float64)
    _check_exact(TINYSTORIES, transform, torch.float32)


def test_tied_embeddings_are_untied(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float64)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    emb = model.model.embed_tokens.weight.detach().clone()
    apply_transform(model, adapter_for(model.config), "hadamard")
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.tie_word_embeddings is False
    assert not torch.allclose(model.model.embed_tokens.weight, emb)


def test_smollm2_shapes_are_exact(tmp_path):
    """SmolLM2-135M's non-power-of-two widths (hidden 576 = 36*16, MLP 1536 = 12*128), two layers."""
    config = AutoConfig.for_model(
        "llama", vocab_size=512, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=256,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a full Hadamard exists for every SmolLM2 width: no fallback
        _check_exact(str(tmp_path), "hadamard", torch.float64)
    _check_exact(str(tmp_path), "block_hadamard", torch.float32, 32)


def test_keys_are_quantized_in_the_rotated_basis(tiny_models):
    """The K/V quantizer sees K rotated per head by the online Hadamard (R3), after RoPE."""
    seen = {}

    def spy(tag):
        def record(x):
            seen.setdefault(tag, x.clone())
            return x
        return record

    ids = torch.randint(0, 2000, (1, 16), generator=torch.Generator().manual_seed(0))
    for tag, transform in (("plain", "identity"), ("rotated", "hadamard")):
        model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float64).eval()
        adapter = adapter_for(model.config)
        apply_transform(model, adapter, transform)
        install_kv_quantization(model, [adapter.attention(adapter.decoder_layers(model)[0])], spy(tag), None)
        _logits(model, ids)
    head_dim = seen["plain"].shape[-1]
    expected = seen["plain"] @ get_hadamard(head_dim).T / head_dim**0.5
    assert torch.allclose(seen["rotated"], expected, atol=1e-6)


@pytest.mark.parametrize("size", [64, 96, 576, 1536])
def test_rotations_are_orthogonal_and_match_their_matrix(size):
    x = torch.randn(3, size, dtype=torch.float64)
    for rotation in (make_rotation("hadamard", size, "hidden", seed=0),
                     make_rotation("hadamard", size, "hidden", seed=0, online=True),
                     make_rotation("block_hadamard", size, "hidden", seed=0, group_size=32),
                     make_rotation("random_orthogonal", size, "hidden", seed=0)):
        assert orthogonality_error(rotation) < 1e-12
        assert torch.allclose(rotation(x), x @ rotation.matrix(), atol=1e-12)


def test_rotation_kinds_and_seeds():
    assert isinstance(make_rotation("random_orthogonal", 64, "hidden", seed=0), DenseRotation)
    assert isinstance(make_rotation("random_orthogonal", 64, "head_dim", seed=0, online=True), HadamardRotation)
    block = make_rotation("block_hadamard", 256, "hidden", seed=0, group_size=16)
    assert block.block == 16 and block.signs is not None
    assert make_rotation("block_hadamard", 64, "head_dim", seed=0).block is None  # 128 capped at 64: full
    a, b = (make_rotation("hadamard", 64, "hidden", seed=s).matrix() for s in (0, 1))
    assert not torch.equal(a, b)
    assert torch.equal(a, make_rotation("hadamard", 64, "hidden", seed=0).matrix())


def test_missing_hadamard_falls_back_to_blocks_with_a_warning():
    size = 376  # 8 * 47: no construction reaches it
    assert not has_hadamard(size)
    with pytest.warns(UserWarning, match="no full Hadamard matrix of order 376"):
        rotation = make_rotation("hadamard", size, "intermediate", seed=0, online=True)
    assert rotation.block == 8
    with pytest.warns(UserWarning):
        assert make_rotation("hadamard", size, "intermediate", seed=0, group_size=4, online=True).block == 4


@pytest.mark.parametrize(
    "transform,size,group,match",
    [
        ("hadamard", 45, None, "no Hadamard rotation exists for the hidden dimension 45"),
        ("block_hadamard", 128, 48, "--hadamard_group_size 48 cannot rotate the hidden dimension 128"),
        ("block_hadamard", 96, 64, "choose a power of two dividing 96"),
    ],
)
def test_unrotatable_sizes_are_clear_errors(transform, size, group, match):
    with pytest.raises(ValueError, match=match):
        make_rotation(transform, size, "hidden", seed=0, group_size=group)


def test_checks_run_before_loading(tiny_models):
    config = AutoConfig.from_pretrained(tiny_models["llama"])
    config.intermediate_size = 385
    adapter = adapter_for(config)
    with pytest.raises(ValueError, match="intermediate dimension 385"):
        check_transform("hadamard", config, adapter, None)
    check_transform("identity", config, adapter, None)
    cfg = RunConfig(model=tiny_models["llama"], seqlen=128,
                    quant=QuantRecipe(transform="block_hadamard", hadamard_group_size=48))
    with pytest.raises(ValueError, match="cannot rotate the hidden dimension 128"):
        cfg.check_model(AutoConfig.from_pretrained(tiny_models["llama"]), adapter)


def test_recipe_validates_transform_flags():
    with pytest.raises(ValueError, match="applies to --transform_class hadamard or block_hadamard"):
        QuantRecipe(transform="identity", hadamard_group_size=64)
    with pytest.raises(ValueError, match="at least 2"):
        QuantRecipe(transform="block_hadamard", hadamard_group_size=1)
    assert QuantRecipe(transform="block_hadamard").transform_label == "block_hadamard128"
    assert QuantRecipe(transform="hadamard").label == "fp-hadamard"
