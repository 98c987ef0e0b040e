"""Fuse a rotation transform into a model (QuaRot / SpinQuant computational invariance).

For a pre-norm decoder with RMSNorm, rotating the residual stream by an orthogonal
``R1`` changes nothing once the norms' scales are folded into the linears that follow
them: ``RMSNorm(x R1) = RMSNorm(x) R1``. On top of the residual rotation:

* ``R2`` per head between v_proj and o_proj (attention mixes tokens, not head dims);
* ``R3`` online on Q and K after RoPE, so K is cached and quantized rotated;
* ``R4`` online on down_proj's input, its inverse folded into down_proj's weight.

All weights are updated in float64 and cast back. Everything goes through the
architecture adapter; Qwen3's q_norm/k_norm sit between q/k_proj and RoPE, where no
rotation is placed, so they stay exact untouched.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from models import ArchAdapter
from quant_layers import ensure_quant_linear, install_attention_wrapper

from .rotation import Rotation, check_rotation, make_rotation

log = logging.getLogger(__name__)


@torch.no_grad()
def _update(param: torch.Tensor, fn) -> None:
    param.data = fn(param.data.to(torch.float64)).to(param.dtype).contiguous()


def _rotate_input(linear: nn.Module, rotation: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``W <- W M``: the linear now reads ``x M``."""
    _update(linear.weight, rotation)


def _rotate_output(linear: nn.Module, rotation: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``W <- M^T W``, ``b <- b M``: the linear now writes ``y M``."""
    _update(linear.weight, lambda w: rotation(w.T).T)
    if linear.bias is not None:
        _update(linear.bias, rotation)


def _per_head(rotation: Rotation, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply a head_dim rotation to every head of a ``(..., heads * head_dim)`` tensor."""
    hd = rotation.size

    def apply(x: torch.Tensor) -> torch.Tensor:
        return rotation(x.reshape(*x.shape[:-1], width // hd, hd)).reshape(x.shape)

    return apply


@torch.no_grad()
def fold_norm(norm: nn.Module, readers: list[nn.Module]) -> None:
    """Fold an RMSNorm's scale into the linears reading its output and set it to ones."""
    scale = norm.weight.data.to(torch.float64)
    for linear in readers:
        _update(linear.weight, lambda w: w * scale)
    norm.weight.data.fill_(1.0)


def _rotated_dims(config, adapter: ArchAdapter) -> list[tuple[int, str, bool]]:
    """(size, name, online) of every rotation ``apply_transform`` builds."""
    head_dim = adapter.head_dim(config)
    return [(config.hidden_size, "hidden", False), (head_dim, "head_dim", False),
            (config.intermediate_size, "intermediate", True), (head_dim, "head_dim", True)]


def check_transform(transform: str, config, adapter: ArchAdapter, group_size: int | None) -> None:
    """Raise before loading if a dimension cannot be rotated by this transform class."""
    if transform == "identity":
        return
    for size, what, online in _rotated_dims(config, adapter):
        check_rotation(transform, size, what, group_size, online)


@torch.no_grad()
def apply_transform(
    model: nn.Module, adapter: ArchAdapter, transform: str, *, seed: int = 0, group_size: int | None = None
) -> None:
    """Fuse ``transform`` (a ``TRANSFORM_CLASSES`` name) into ``model`` in place."""
    if transform == "identity":
        return
    config = model.config
    hidden, head_dim = config.hidden_size, adapter.head_dim(config)
    layers = adapter.decoder_layers(model)

    adapter.untie_lm_head(model)
    for layer in layers:
        for norm, readers in adapter.norm_readers(layer):
            fold_norm(norm, readers)
    fold_norm(adapter.final_norm(model), [adapter.lm_head(model)])

    r1 = make_rotation(transform, hidden, "hidden", seed=seed, group_size=group_size)
    _update(adapter.embeddings(model).weight, r1)
    _rotate_input(adapter.lm_head(model), r1)
    for i, layer in enumerate(layers):
        for linear in adapter.residual_readers(layer):
            _rotate_input(linear, r1)
        for linear in adapter.residual_writers(layer):
            _rotate_output(linear, r1)

        r2 = make_rotation(transform, head_dim, "head_dim", seed=seed + 1 + i, group_size=group_size)
        v_proj, o_proj = (layer.get_submodule(path) for path in adapter.attention_linears[2:4])
        _rotate_output(v_proj, _per_head(r2, v_proj.out_features))
        _rotate_input(o_proj, _per_head(r2, o_proj.in_features))

        down_path = adapter.mlp_linears[-1]
        r4 = make_rotation(transform, layer.get_submodule(down_path).in_features, "intermediate",
                           seed=seed, group_size=group_size, online=True)
        _rotate_input(layer.get_submodule(down_path), r4)
        ensure_quant_linear(layer, down_path).input_transform = r4

        adapter.attention(layer).qk_transform = make_rotation(transform, head_dim, "head_dim", seed=seed, group_size=group_size,
                                          online=True)
    install_attention_wrapper(model)
    log.info("fused %s rotation into %d layers (hidden %d: %s)", transform, len(layers), hidden, r1.extra_repr())
