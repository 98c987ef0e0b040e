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
