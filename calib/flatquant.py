"""FlatQuant's block-wise training of affine transforms and clipping (issue 6, first part).

For one decoder block: every group of linears that reads the same input (q/k/v, o_proj,
gate/up, down_proj) gets one ``KroneckerAffine`` transform (identity factors, SmoothQuant
per-channel scaling), each linear a learnable weight clip (LWC, per output channel) and a
learnable activation clip (LAC, per tensor). They are trained with AdamW and a cosine
schedule to minimise the MSE between the full-precision block's output and the
transformed, fake-quantized block's output; then the transforms are folded into the
weights (their activation side stays online as ``input_transform``) and the weights are
quantized with their trained clip ranges (or left for GPTQ). ``calib.layerwise`` runs it
block by block (method ``flatquant``); K and V are fake-quantized during training with a
straight-through gradient, so the q/k/v transform also learns from the KV-cache error.

Under torchrun each rank holds a ``Shard`` of the windows; a training step covers the same
``cali_bsz`` consecutive windows as in a single process, each rank runs the ones it holds,
and the gradients (weighted by each rank's share of the step) and the loss are summed over
ranks, so every rank takes the same optimizer step a single process would.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from calib import distributed
from quant_layers import QuantLinear, Quantizer
from quant_layers.clipping import LearnableClipQuantizer
from transforms.flatquant import KeyTransform, KroneckerAffine, ValueTransform


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
    weight_method: str = "rtn"  # after training: "rtn" (at the learned clip) or "gptq"
    amp: bool = True  # bfloat16 autocast for the training forward on CUDA (--deactive_amp turns it off)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.cali_bsz < 1 or self.flat_lr <= 0:
            raise ValueError(f"--epochs and --cali_bsz must be at least 1 and --flat_lr positive, got "
                             f"{self.epochs}, {self.cali_bsz}, {self.flat_lr}")
        if self.weight_method not in ("rtn", "gptq"):
            raise ValueError(f"FlatQuant quantizes weights with rtn or gptq after training, got {self.weight_method!r}")
        if not 0.0 <= self.diag_alpha <= 1.0:
            raise ValueError(f"--diag_alpha must be in [0, 1], got {self.diag_alpha}")


class TrainableLinear(nn.Module):
    """A ``QuantLinear`` during training: ``Q_a(T(x)) @ Q_w(fold_T(W)).T``, differentiable in T and the clips.

    ``value``/``value_side``: v_proj (``"rows"``) or o_proj (``"columns"``) also folds the
    block's ``ValueTransform``.
    """

    def __init__(self, linear: QuantLinear, transform: KroneckerAffine | None, config: FlatQuantConfig,
                 value: ValueTransform | None = None, value_side: str | None = None) -> None:
        super().__init__()
        self.linear = linear
        self.transform = transform
        self.value, self.value_side = value, value_side
        device = linear.weight.device
        self.weight_clip = self._clip(linear.weight_quantizer, linear.weight, config.lwc, config.clip_init, device)
        self.act_clip = self._clip(linear.act_quantizer, None, config.lac, config.clip_init, device)

    @staticmethod
    def _clip(quantizer: Quantizer | None, weight: torch.Tensor | None, learn: bool, init: float,
              linear_device: torch.device) -> LearnableClipQuantizer | None:
        if quantizer is None:
            return None
        rows = quantizer.grouped(weight).shape[0] if weight is not None else 1
        clip = LearnableClipQuantizer(quantizer, rows=rows, init_ratio=init if learn else 1.0)
        clip.to(linear_device).requires_grad_(learn)
        return clip

    def folded_weight(self) -> torch.Tensor:
        """The weight with the transform folded in, in float32 (float64 for a float64 model)."""
        w = self.linear.weight
        w = w.to(torch.promote_types(w.dtype, torch.float32))
        if self.value is not None:
            w = self.value.fold_rows(w) if self.value_side == "rows" else self.value.fold_columns(w)
        return w if self.transform is None else self.transform.fold_into_weight(w)

    def folded_bias(self) -> torch.Tensor | None:
        b = self.linear.bias
        if b is None or self.value is None or self.value_side != "rows":
            return b
        return self.value.fold_rows(b.to(torch.promote_types(b.dtype, torch.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In float32 or wider; the output in the input's dtype, as the linear's would be."""
        y = x.to(torch.promote_types(x.dtype, torch.float32))
        if self.transform is not None:
            y = self.transform(y)
        if self.act_clip is not None:
            y = self.act_clip(y)
        w = self.folded_weight()
        if self.weight_clip is not None:
            w = self.weight_clip(w)
        w = w.to(y.dtype)
        bias = self.folded_bias()
        return F.linear(y, w, None if bias is None else bias.to(y.dtype)).to(x.dtype)

    @torch.no_grad()
    def finalize(self, quantize_weight: bool = True) -> QuantLinear:
        """Fold the trained transform and clips into the ``QuantLinear`` and return it.

        ``quantize_weight=False`` leaves the folded weight in full precision (for GPTQ).
        """
        linear = self.linear
        w = self.folded_weight()
        bias = self.folded_bias()
        if bias is not None and bias is not linear.bias:
            linear.bias.copy_(bias.to(linear.bias.dtype))
        if self.transform is not None:
            self.transform.requires_grad_(False)
            linear.input_transform = self.transform
        if self.weight_clip is not None and quantize_weight:
            quantizer = linear.weight_quantizer
            grouped = quantizer.grouped(w)
            params = self.weight_clip.params(grouped)
            linear.set_quantized_weight(quantizer.quantize_with(grouped, params).reshape(w.shape).to(linear.weight.dtype),
                                        params)
        else:
            linear.weight.copy_(w.to(linear.weight.dtype))
        if self.act_clip is not None:
            set_act_clip(linear, float(self.act_clip.ratios()[0].item()))
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
    for name in names:  # over every rank's windows
        distributed.all_reduce_(maxima[name], "max")
    return maxima


@dataclass(frozen=True)
class AttentionPath:
    """Where a block's attention parts are: the module (for K's transform), v_proj and o_proj (for V's)."""

    attention: str
    v_proj: str
    o_proj: str
    head_dim: int


def _seed(block_seed: int, slot: int) -> int:
    """Seed of one random start in a block: slots 0..3 the groups, 8 V's transform, 9 K's."""
    return 16 * block_seed + slot


def _build_trainables(block: nn.Module, groups: tuple[tuple[str, ...], ...], config: FlatQuantConfig,
                      absmax: dict[str, torch.Tensor] | None, seed: int = 0,
                      attention: AttentionPath | None = None) -> dict[str, nn.Module]:
    """One transform per group, clips per linear; with ``attention`` and --cali_trans, V's and K's transforms.

    With ``absmax`` (a fresh start) the factors start random orthogonal (seeded) and the
    scaling at SmoothQuant's; without (a restore) they start at identity, to be overwritten.
    K's transform is keyed ``<attention>.qk_transform``; the rest by linear name.
    """
    trainables: dict[str, nn.Module] = {}
    value, sides = None, {}
    if attention is not None and config.cali_trans:
        attn = block.get_submodule(attention.attention)
        if getattr(attn, "qk_transform", None) is not None:
            raise ValueError(f"{attention.attention} already has an online Q/K transform: FlatQuant learns its own "
                             f"(use --transform_class identity)")
        device = block.get_submodule(attention.v_proj).weight.device
        fresh = absmax is not None
        value = ValueTransform(attention.head_dim, _seed(seed, 8) if fresh else None).to(device)
        sides = {attention.v_proj: "rows", attention.o_proj: "columns"}
        trainables[f"{attention.attention}.qk_transform"] = KeyTransform(
            attention.head_dim, _seed(seed, 9) if fresh else None).to(device)
    for index, group in enumerate(groups):
        first: QuantLinear = block.get_submodule(group[0])
        if first.input_transform is not None:
            raise ValueError(f"{group[0]} already has an online transform: FlatQuant learns its own (use "
                             f"--transform_class identity)")
        transform = None
        if config.cali_trans or config.add_diag:
            transform = KroneckerAffine(first.in_features, diag=config.add_diag).to(first.weight.device)
            transform.left.requires_grad_(config.cali_trans)
            transform.right.requires_grad_(config.cali_trans)
            if config.cali_trans and absmax is not None:
                transform.init_random_orthogonal(_seed(seed, index))
            if config.add_diag and absmax is not None:
                weight_max = torch.stack([block.get_submodule(n).weight.detach().abs().amax(0).float() for n in group])
                transform.init_diag_smoothquant(absmax[group[0]], weight_max.amax(0), config.diag_alpha)
        for name in group:
            side = sides.get(name)
            trainables[name] = TrainableLinear(block.get_submodule(name), transform, config,
                                               value if side else None, side)
    return trainables


def _learned(trainables: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The learned tensors themselves, by ``<linear or module>.<parameter>`` (not the wrapped weights)."""
    return {f"{name}.{key}": value for name, t in trainables.items()
            for key, value in t.state_dict(keep_vars=True).items() if not key.startswith("linear.")}


def trainable_state(trainables: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """What training learned, by linear: transform factors and scaling, clip parameters (CPU copies)."""
    return {key: value.detach().to("cpu").clone().contiguous() for key, value in _learned(trainables).items()}


def _load_trainable_state(trainables: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    learned = _learned(trainables)
    expected = set(learned)
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"saved FlatQuant matrices do not match this block and recipe (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}): train again without --reload_matrix, or pass the "
                         f"--matrix_path of a run with the same model and flags")
    with torch.no_grad():
        for key, param in learned.items():
            param.copy_(state[key].to(param.device, param.dtype))


@contextmanager
def straight_through_kv(block: nn.Module) -> Iterator[None]:
    """K/V fake quantization with an identity gradient inside ``block`` (rounding has none)."""
    saved = []
    for m in block.modules():
        for attr in ("key_quantizer", "value_quantizer"):
            q = getattr(m, attr, None)
            if q is not None:
                saved.append((m, attr, q))
    try:
        for m, attr, q in saved:
            setattr(m, attr, _StraightThrough(q))
        yield
    finally:
        for m, attr, q in saved:
            setattr(m, attr, q)


class _StraightThrough:
    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.quantizer(x) - x).detach()


def train_block(block: nn.Module, groups: tuple[tuple[str, ...], ...], run: Callable[[int, int], torch.Tensor],
                targets: torch.Tensor, config: FlatQuantConfig, saved: dict[str, torch.Tensor] | None = None,
                seed: int = 0, attention: AttentionPath | None = None,
                shard: distributed.Shard | None = None) -> dict:
    """Train (or, given ``saved``, restore) and fold FlatQuant's transforms and clips for one block, in place.

    ``groups``: linears that share an input (the adapter's ``sequential_groups()``);
    ``run(start, end)``: the block's output for calibration samples ``start:end`` (its
    inputs are the full-precision ones); ``targets``: the full-precision block's outputs.
    Weights are quantized at the learned clip unless ``config.weight_method`` is ``gptq``.
    ``seed`` draws the factors' random orthogonal start. ``attention`` adds, with
    ``cali_trans``, V's per-head transform (folded into v_proj and o_proj) and K's (online,
    the attention's ``qk_transform``). ``shard``: which of all the windows ``targets`` (and
    ``run``'s local indices) are, under torchrun; default all of them.
    Returns the mean loss of the first and the last epoch (None when restored) and
    ``state``, what was learned (``trainable_state``), for ``saved`` next time.
    """
    samples = targets.shape[0]
    shard = shard or distributed.Shard(samples)
    names = [n for group in groups for n in group]
    absmax = None if saved is not None else _input_absmax(block, names, run, samples, config.cali_bsz)
    trainables = _build_trainables(block, groups, config, absmax, seed, attention)
    linears = {name: t for name, t in trainables.items() if isinstance(t, TrainableLinear)}
    _swap(block, trainables)  # the linears, and K's transform as the attention's qk_transform
    epoch_losses: list[float] = [math.nan]
    try:
        if saved is not None:
            _load_trainable_state(trainables, saved)
        else:
            epoch_losses = _train(trainables, run, targets, config, shard)
        state = trainable_state(trainables)
    finally:
        _swap(block, {name: t.finalize(config.weight_method == "rtn") for name, t in linears.items()})
        for name, t in trainables.items():
            if name not in linears:
                t.requires_grad_(False)
    restored = saved is not None
    return {"first_epoch_loss": None if restored else epoch_losses[0],
            "last_epoch_loss": None if restored else epoch_losses[-1], "state": state}


def _train(trainables: dict[str, nn.Module], run: Callable[[int, int], torch.Tensor], targets: torch.Tensor,
           config: FlatQuantConfig, shard: distributed.Shard) -> list[float]:
    """AdamW + cosine on the MSE to the targets of all ranks' windows; the mean loss of every epoch.

    A step covers global windows ``start:end``; this rank runs those it holds (maybe none)
    and scales its batch-mean loss by its share of the step, so the summed gradient is the
    gradient of the step's mean over all its windows.
    """
    params = list({id(p): p for t in trainables.values() for p in t.parameters() if p.requires_grad}.values())
    if not params:
        return [math.nan]
    optimizer = torch.optim.AdamW(params, lr=config.flat_lr, weight_decay=0.0)
    steps = config.epochs * math.ceil(shard.total / config.cali_bsz)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.flat_lr * 1e-3)
    amp = config.amp and targets.device.type == "cuda"
    epoch_losses = []
    for _ in range(config.epochs):
        total = 0.0
        for start in range(0, shard.total, config.cali_bsz):
            end = min(start + config.cali_bsz, shard.total)
            lo, hi = shard.local(start, end)
            optimizer.zero_grad()
            loss = torch.zeros((), device=params[0].device)
            if hi > lo:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    out = run(lo, hi)
                wide = torch.promote_types(out.dtype, torch.float32)  # float64 stays float64
                loss = F.mse_loss(out.to(wide), targets[lo:hi].to(wide)) * ((hi - lo) / (end - start))
                loss.backward()
            loss = _sum_over_ranks(params, loss.detach())
            optimizer.step()
            schedule.step()
            total += loss.item() * (end - start)
        epoch_losses.append(total / shard.total)
    return epoch_losses


def _sum_over_ranks(params: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum every parameter's gradient and the loss over ranks, in one all-reduce; returns the loss.

    A rank that ran no window this step contributes zeros; a parameter no rank has a
    gradient for keeps none (AdamW then skips it, as in a single process).
    """
    if distributed.world_size() == 1:
        return loss
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = params[0].device
    # The sum in the widest gradient dtype (float32 at least): a float64 run's gradients rounded to float32 here
    # made two ranks train block 0 measurably apart from one process (5e-5 of its last loss).
    dtype = functools.reduce(torch.promote_types, [g.dtype for g in grads], torch.float32)
    present = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
    flat = distributed.all_reduce_(torch.cat([g.reshape(-1).to(device, dtype) for g in grads]
                                             + [present, loss.reshape(1).to(device, dtype)]))
    offset = 0
    for p, g, seen in zip(params, grads, flat[-len(params) - 1 : -1].tolist()):
        size = g.numel()
        p.grad = flat[offset : offset + size].view_as(g).to(g.dtype).clone() if seen else None
        offset += size
    return flat[-1]


def attach_transforms(block: nn.Module, groups: tuple[tuple[str, ...], ...], config: FlatQuantConfig,
                      attention: AttentionPath | None = None) -> None:
    """Give a fresh block the online transforms a FlatQuant-calibrated one has (identity values).

    Resuming loads a finished block's saved parameters into the model's block, which must
    first have the same modules. (V's transform is folded into weights: nothing to attach.)
    """
    if attention is not None and config.cali_trans:
        key = KeyTransform(attention.head_dim).requires_grad_(False)
        block.get_submodule(attention.attention).qk_transform = key.to(block.get_submodule(attention.v_proj).weight.device)
    if not (config.cali_trans or config.add_diag):
        return
    for group in groups:
        first: QuantLinear = block.get_submodule(group[0])
        transform = KroneckerAffine(first.in_features, diag=config.add_diag).to(first.weight.device)
        transform.requires_grad_(False)
        for name in group:
            block.get_submodule(name).input_transform = transform


def set_act_clip(linear: QuantLinear, ratio: float) -> None:
    """Fix a linear's activation clip ratio (LAC's learned one) in its quantizer's spec."""
    if linear.act_quantizer is not None:
        spec = dataclasses.replace(linear.act_quantizer.spec, clip_ratio=min(ratio, 1.0))
        linear.act_quantizer = Quantizer(spec, linear.act_quantizer.head_dim)


def _swap(block: nn.Module, modules: dict[str, nn.Module]) -> None:
    for name, module in modules.items():
        block.set_submodule(name, module)
