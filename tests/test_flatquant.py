"""FlatQuant's Kronecker affine transforms: factorisation, exactness of the fold, SmoothQuant init."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from models.adapter import adapter_for
from quant_layers import ensure_quant_linear
from transforms.flatquant import KroneckerAffine, balanced_factors


@pytest.mark.parametrize("n, factors", [(576, (24, 24)), (1536, (32, 48)), (4096, (64, 64)), (14336, (112, 128)),
                                        (3584, (56, 64)), (7, (1, 7))])
def test_balanced_factors(n, factors):
    assert balanced_factors(n) == factors


def test_bad_dimensions_are_refused():
    with pytest.raises(ValueError, match="positive dimension"):
        balanced_factors(0)
    with pytest.raises(ValueError, match="do not multiply"):
        KroneckerAffine(12, factors=(3, 5))
    with pytest.raises(ValueError, match="cannot take a transform of size 12"):
        KroneckerAffine(12).fold_into_weight(torch.zeros(4, 10))


def randomized(size: int, seed: int, dtype=torch.float64) -> KroneckerAffine:
    """A transform with random invertible factors and random positive scaling (as training would leave it)."""
    g = torch.Generator().manual_seed(seed)
    t = KroneckerAffine(size, dtype=dtype)
    with torch.no_grad():
        t.left.add_(0.3 * torch.randn(t.left.shape, generator=g, dtype=dtype))
        t.right.add_(0.3 * torch.randn(t.right.shape, generator=g, dtype=dtype))
        t.diag.copy_(torch.rand(size, generator=g, dtype=dtype) * 1.5 + 0.5)
    return t


def test_transform_is_the_kronecker_product():
    t = randomized(12, 0)
    x = torch.randn(5, 12, dtype=torch.float64)
    dense = torch.diag(1 / t.diag) @ torch.kron(t.left, t.right)
    assert torch.allclose(t(x), x @ dense, atol=1e-12)


def test_fold_keeps_the_linear_output():
    t = randomized(24, 1)
    x, w = torch.randn(7, 24, dtype=torch.float64), torch.randn(5, 24, dtype=torch.float64)
    assert torch.allclose(t(x) @ t.fold_into_weight(w).T, x @ w.T, atol=1e-10)


def test_transformed_model_equals_the_original(tiny_models):
    """Transforms before q/k/v (shared), o_proj, gate/up (shared) and down_proj, folded: the same logits."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float64).eval()
    adapter = adapter_for(model.config)
    ids = torch.randint(0, 2048, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(ids).logits
        original = {k: v.clone() for k, v in model.named_parameters()}
        for i, layer in enumerate(adapter.decoder_layers(model)):
            for j, group in enumerate(adapter.sequential_groups()):
                first = layer.get_submodule(group[0])
                transform = randomized(first.in_features, seed=10 * i + j)
                for name in group:
                    linear = ensure_quant_linear(layer, name)
                    linear.weight.copy_(transform.fold_into_weight(linear.weight))
                    linear.input_transform = transform
        transformed = model(ids).logits
    error = (transformed - reference).abs().max() / reference.abs().max()
    assert error <= 1e-4, error
    params = dict(model.named_parameters())
    changed = [k for k, v in original.items() if not torch.allclose(params[k], v, atol=1e-3)]
    assert len(changed) == 14  # every decoder linear's weight was transformed


def test_smoothquant_initialisation():
    t = KroneckerAffine(4)
    t.init_diag_smoothquant(torch.tensor([4.0, 1.0, 9.0, 16.0]), torch.tensor([1.0, 4.0, 1.0, 1.0]), alpha=0.5)
    assert torch.allclose(t.diag, torch.tensor([2.0, 0.5, 3.0, 4.0]))
    with pytest.raises(ValueError, match="diag_alpha"):
        t.init_diag_smoothquant(torch.ones(4), torch.ones(4), alpha=1.5)


def _block_setup(tiny_models, recipe):
    """Block 0 of the tiny Llama, its full-precision outputs on random inputs, and a runner."""
    from pipeline.fake_quant import attach_quantizers

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(8, 16, model.config.hidden_size, generator=g)
    position_embeddings = model.model.rotary_emb(hidden, torch.arange(16)[None])
    block = adapter.decoder_layers(model)[0]

    def run(start: int, end: int) -> torch.Tensor:
        out = block(hidden[start:end], position_embeddings=position_embeddings, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():
        targets = run(0, 8)
    attach_quantizers(model, adapter, recipe)
    return block, adapter, run, targets



def test_training_lowers_the_block_output_error_below_rtn(tiny_models):
    from calib.flatquant import FlatQuantConfig, train_block
    from calib.rtn import quantize_linear_rtn
    from configs.recipe import QuantRecipe
    from quant_layers.quantizer import QuantSpec

    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"))
    block, adapter, run, targets = _block_setup(tiny_models, recipe)
    rtn_block, _, rtn_run, _ = _block_setup(tiny_models, recipe)
    for name in adapter.linear_names():
        quantize_linear_rtn(rtn_block.get_submodule(name))
    with torch.no_grad():
        rtn_error = torch.nn.functional.mse_loss(rtn_run(0, 8), targets).item()

    report = train_block(block, adapter.sequential_groups(), run, targets,
                         FlatQuantConfig(epochs=20, cali_bsz=4))
    assert report["last_epoch_loss"] < report["first_epoch_loss"]
    with torch.no_grad():
        flat_error = torch.nn.functional.mse_loss(run(0, 8), targets).item()
    assert flat_error < rtn_error, (flat_error, rtn_error)
    down = block.get_submodule("mlp.down_proj")
    assert isinstance(down.input_transform, KroneckerAffine) and down.weight_params is not None
    assert not any(p.requires_grad for p in down.input_transform.parameters())


def test_flatquant_config_and_block_refusals(tiny_models):
    from calib.flatquant import FlatQuantConfig, train_block
    from configs.recipe import QuantRecipe
    from quant_layers.quantizer import QuantSpec
    from transforms.rotation import HadamardRotation

    with pytest.raises(ValueError, match="--epochs and --cali_bsz"):
        FlatQuantConfig(epochs=0)
    with pytest.raises(ValueError, match="--diag_alpha"):
        FlatQuantConfig(diag_alpha=2.0)
    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"))
    block, adapter, run, targets = _block_setup(tiny_models, recipe)
    block.get_submodule("mlp.down_proj").input_transform = HadamardRotation(384, block=128)
    with pytest.raises(ValueError, match="already has an online transform"):
        train_block(block, adapter.sequential_groups(), run, targets, FlatQuantConfig(epochs=1))


def test_every_learned_tensor_lives_on_the_blocks_device(tiny_models):
    """The meta device stands in for CUDA: nothing FlatQuant learns may be built on the CPU beside it."""
    from calib.flatquant import AttentionPath, FlatQuantConfig, _build_trainables
    from configs.recipe import QuantRecipe
    from quant_layers.quantizer import QuantSpec

    spec = QuantSpec("int", 4, granularity="channel")
    recipe = QuantRecipe(weight=spec, activation=QuantSpec("int", 4, granularity="token"))
    block, adapter, _, _ = _block_setup(tiny_models, recipe)
    block.to("meta")
    attention = AttentionPath("self_attn", "self_attn.v_proj", "self_attn.o_proj", block.self_attn.head_dim)
    trainables = _build_trainables(block, adapter.sequential_groups(), FlatQuantConfig(), None, 0, attention)
    devices = {name: p.device.type for t in trainables.values() for name, p in t.named_parameters()}
    assert devices and set(devices.values()) == {"meta"}, {n: d for n, d in devices.items() if d != "meta"}
