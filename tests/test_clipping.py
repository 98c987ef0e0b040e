"""Learnable clipping (LWC / LAC): forward equals the quantizer's at that ratio; training lowers the error."""

from __future__ import annotations

import pytest
import torch

from quant_layers.clipping import LearnableClipQuantizer
from quant_layers.quantizer import QuantSpec, Quantizer

SPECS = [QuantSpec("int", 4, granularity="channel"), QuantSpec("int", 4, granularity="channel", symmetric=False),
         QuantSpec("fp", 4, exp_bits=2, granularity="channel"), QuantSpec("nvfp", 4)]


def heavy_tailed(rows: int = 16, cols: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) / torch.rand(rows, cols, generator=g).clamp(min=0.05)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_forward_is_the_quantizer_at_the_ratio(spec):
    w = heavy_tailed()
    rows = Quantizer(spec).grouped(w).shape[0]
    learnable = LearnableClipQuantizer(Quantizer(spec), rows=rows, init_ratio=0.9)
    reference = Quantizer(QuantSpec(**{**spec.to_dict(), "clip_ratio": 0.9})).fake_quantize(w)
    assert torch.allclose(learnable(w), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[2]], ids=lambda s: s.label)
def test_trained_ratios_beat_the_best_single_ratio(spec):
    """Per-channel ratios trained by the straight-through gradient beat a grid search over one shared ratio."""
    w = heavy_tailed()
    grid = min((Quantizer(QuantSpec(**{**spec.to_dict(), "clip_ratio": r / 100})).fake_quantize(w) - w).pow(2).mean()
               for r in range(50, 101))
    learnable = LearnableClipQuantizer(Quantizer(spec), rows=w.shape[0], init_ratio=0.98)
    optimizer = torch.optim.Adam(learnable.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss = (learnable(w) - w).pow(2).mean()
        loss.backward()
        optimizer.step()
    assert (learnable(w) - w).pow(2).mean() < grid


def test_gradient_reaches_both_ends_of_an_asymmetric_range():
    w = heavy_tailed()
    learnable = LearnableClipQuantizer(Quantizer(SPECS[1]), rows=w.shape[0], init_ratio=0.9)
    (learnable(w) - w).pow(2).mean().backward()
    assert learnable.theta_max.grad.abs().sum() > 0 and learnable.theta_min.grad.abs().sum() > 0


def test_one_ratio_per_tensor_for_activations():
    x = heavy_tailed(8, 32)
    lac = LearnableClipQuantizer(Quantizer(QuantSpec("int", 4, granularity="token")), rows=1, init_ratio=0.9)
    reference = Quantizer(QuantSpec("int", 4, granularity="token", clip_ratio=0.9)).fake_quantize(x)
    assert torch.allclose(lac(x), reference, rtol=1e-5, atol=1e-5)


def test_initial_ratio_must_be_a_clip_ratio():
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="in \\(0, 1\\]"):
            LearnableClipQuantizer(Quantizer(SPECS[0]), init_ratio=bad)
    w = heavy_tailed()
    frozen = LearnableClipQuantizer(Quantizer(SPECS[0]), rows=w.shape[0], init_ratio=1.0)
    assert torch.equal(frozen(w), Quantizer(SPECS[0]).fake_quantize(w))
