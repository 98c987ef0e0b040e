"""FlatQuant's block-wise training of affine transforms and clipping (issue 6, first part).

For one decoder block: every group of linears that reads the same input (q/k/v, o_proj,
gate/up, down_proj) gets one ``KroneckerAffine`` transform (identity factors, SmoothQuant
per-channel scaling), each linear a learnable weight clip (LWC, per output channel) and a
learnable activation clip (LAC, per tensor). They are trained with AdamW and a cosine
schedule to minimise the MSE between the full-precision block's output and the
transformed, fake-quantized block's output; then the transforms are folded into the
weights (their activation side stays online as ``input_transform``) and the weights are
quantized with their trained clip ranges. Not wired to the layer-by-layer runner yet.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from quant_layers import QuantLinear, Quantizer
from quant_layers.clipping import LearnableClipQuantizer
from transforms.flatquant import KroneckerAffine


@dataclass(frozen=True)
class FlatQuantConfig:
    """FlatQuant's training knobs, named as its flags are."""

    epochs: int = 15
    flat_lr: float = 5e-3
    cali_bsz: int = 4
    cali_trans: bool = True  # learn the Kronecker transforms
    add_diag: bool = True  # learn the per-channel scaling
    lwc: bool = True  # learnable weight clipping
    lac: bool = True  # learnable activation clipping
    diag_alpha: float = 0.3  # SmoothQuant exponent of the scaling's initial value
    clip_init: float = 0.98  # initial clip ratio of LWC / LAC (sigmoid of the parameter)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.cali_bsz < 1 or self.flat_lr <= 0:
            raise ValueError(f"--epochs and --cali_bsz must be at least 1 and --flat_lr positive, got "
                             f"{self.epochs}, {self.cali_bsz}, {self.flat_lr}")
        if not 0.0 <= self.diag_alpha <= 1.0:
            raise ValueError(f"--diag_alpha must be in [0, 1], got {self.diag_alpha}")


class TrainableLinear(nn.Module):
    """A ``QuantLinear`` during training: ``Q_a(T(x)) @ Q_w(fold_T(W)).T``, differentiable in T and the clips."""

    def __init__(self, linear: QuantLinear, transform: KroneckerAffine | None, config: FlatQuantConfig) -> None:
        super().__init__()
        self.linear = linear
        self.transform = transform
        self.weight_clip = self._clip(linear.weight_quantizer, linear.weight, config.lwc, config.clip_init)
        self.act_clip = self._clip(linear.act_quantizer, None, config.lac, config.clip_init)

    @staticmethod
    def _clip(quantizer: Quantizer | None, weight: torch.Tensor | None, learn: bool,
              init: float) -> LearnableClipQuantizer | None:
        if quantizer is None:
            return None
        rows = quantizer.grouped(weight).shape[0] if weight is not None else 1
        clip = LearnableClipQuantizer(quantizer, rows=rows, init_ratio=init if learn else 1.0)
        clip.requires_grad_(learn)
        return clip

    def folded_weight(self) -> torch.Tensor:
        w = self.linear.weight.float()
        return w if self.transform is None else self.transform.fold_into_weight(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x.float())
        if self.act_clip is not None:
            x = self.act_clip(x)
        w = self.folded_weight()
        if self.weight_clip is not None:
            w = self.weight_clip(w)
        bias = None if self.linear.bias is None else self.linear.bias.float()
        return F.linear(x.float(), w, bias)

    @torch.no_grad()
    def finalize(self) -> QuantLinear:
        """Fold the trained transform and clips into the ``QuantLinear`` and return it."""
        linear = self.linear
        w = self.folded_weight()
        if self.transform is not None:
            self.transform.requires_grad_(False)
            linear.input_transform = self.transform
        if self.weight_clip is not None:
            quantizer = linear.weight_quantizer
            grouped = quantizer.grouped(w)
            params = self.weight_clip.params(grouped)
            linear.set_quantized_weight(quantizer.quantize_with(grouped, params).reshape(w.shape).to(linear.weight.dtype),
                                        params)
        else:
            linear.weight.copy_(w.to(linear.weight.dtype))
        if self.act_clip is not None:
            ratio = float(self.act_clip.ratios()[0].item())
            spec = dataclasses.replace(linear.act_quantizer.spec, clip_ratio=min(ratio, 1.0))
            linear.act_quantizer = Quantizer(spec, linear.act_quantizer.head_dim)
        return linear


def _input_absmax(block: nn.Module, names: list[str], run: Callable[[int, int], torch.Tensor], samples: int,
                  batch: int) -> dict[str, torch.Tensor]:
    """Per-channel absolute maximum of each named linear's input over the calibration samples."""
    maxima: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            maxima[name] = x if name not in maxima else torch.maximum(maxima[name], x)
        return hook

    handles = [block.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        with torch.no_grad():
            for start in range(0, samples, batch):
                run(start, min(start + batch, samples))
    finally:
        for h in handles:
            h.remove()
    return maxima


def train_block(block: nn.Module, groups: tuple[tuple[str, ...], ...], run: Callable[[int, int], torch.Tensor],
                targets: torch.Tensor, config: FlatQuantConfig) -> dict:
    """Train and fold FlatQuant's transforms and clips for one block, in place.

    ``groups``: linears that share an input (the adapter's ``sequential_groups()``);
    ``run(start, end)``: the block's output for calibration samples ``start:end`` (its
    inputs are the full-precision ones); ``targets``: the full-precision block's outputs.
    Returns the mean loss of the first and of the last epoch.
    """
    samples = targets.shape[0]
    names = [n for group in groups for n in group]
    absmax = _input_absmax(block, names, run, samples, config.cali_bsz)
    trainables: dict[str, TrainableLinear] = {}
    for group in groups:
        first: QuantLinear = block.get_submodule(group[0])
        if first.input_transform is not None:
            raise ValueError(f"{group[0]} already has an online transform: FlatQuant learns its own (use "
                             f"--transform_class identity)")
        transform = None
        if config.cali_trans or config.add_diag:
            transform = KroneckerAffine(first.in_features, diag=config.add_diag).to(first.weight.device)
            transform.left.requires_grad_(config.cali_trans)
            transform.right.requires_grad_(config.cali_trans)
            if config.add_diag:
                weight_max = torch.stack([block.get_submodule(n).weight.detach().abs().amax(0).float() for n in group])
                transform.init_diag_smoothquant(absmax[group[0]], weight_max.amax(0), config.diag_alpha)
        for name in group:
            trainables[name] = TrainableLinear(block.get_submodule(name), transform, config)
    _swap(block, trainables)
    try:
        params = {id(p): p for t in trainables.values() for p in t.parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(list(params.values()), lr=config.flat_lr, weight_decay=0.0)
        steps = config.epochs * math.ceil(samples / config.cali_bsz)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.flat_lr * 1e-3)
        epoch_losses = []
        for _ in range(config.epochs):
            total = 0.0
            for start in range(0, samples, config.cali_bsz):
                end = min(start + config.cali_bsz, samples)
                loss = F.mse_loss(run(start, end).float(), targets[start:end].float())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * (end - start)
            epoch_losses.append(total / samples)
    finally:
        _swap(block, {name: t.finalize() for name, t in trainables.items()})
    return {"first_epoch_loss": epoch_losses[0], "last_epoch_loss": epoch_losses[-1]}


def _swap(block: nn.Module, modules: dict[str, nn.Module]) -> None:
    for name, module in modules.items():
        block.set_submodule(name, module)
