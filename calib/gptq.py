"""GPTQ (Frantar et al., 2022): quantize a weight column by column, spreading each
column's rounding error onto the columns not yet quantized through the inverse Hessian
of the layer's reconstruction loss ||W X^T - Q X^T||^2.

Written from the paper. Every format goes through ``Quantizer``: ``fit`` picks a group's
scales once (from the weights as GPTQ has updated them when the group is reached, or up
front with ``static_groups``) and ``quantize_with`` rounds one column at a time with
them, so INT (sym/asym), FP ExMy, NVFP4 (E4M3 block scales times one fp32 tensor scale
from the whole weight) and MXFP (E8M0 block scales) all work the same way.

``HessianAccumulator`` gathers H = 2/N sum x x^T from a layer's inputs; the layer-by-layer
runner feeds it and calls ``gptq_quantize``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from quant_layers.quantizer import QuantParams, Quantizer

logger = logging.getLogger(__name__)

HESSIAN_DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_DAMP_ESCALATIONS = 6
# Damping tried first when the configured one is zero (percdamp=0) and Cholesky fails.
MIN_RELATIVE_DAMP = 1e-6


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ's knobs (one per driver flag)."""

    block_size: int = 128  # lazy-batch block width (--gptq_block_size)
    percdamp: float = 0.01  # damping as a fraction of mean(diag(H)) (--percdamp)
    act_order: bool = False  # process columns by decreasing diag(H) (--act_order)
    static_groups: bool = False  # fit every group's scales up front from the unquantized weight
    hessian_dtype: str = "float32"  # or "float64"

    def __post_init__(self) -> None:
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"GPTQ block size must be a positive integer, got {self.block_size!r}")
        if not isinstance(self.percdamp, (int, float)) or not 0.0 <= self.percdamp < float("inf"):
            raise ValueError(f"GPTQ damping (percdamp) must be a finite number >= 0, got {self.percdamp!r}")
        if self.hessian_dtype not in HESSIAN_DTYPES:
            raise ValueError(
                f"unknown Hessian dtype {self.hessian_dtype!r}: choose one of {', '.join(HESSIAN_DTYPES)}"
            )

    @property
    def torch_hessian_dtype(self) -> torch.dtype:
        return HESSIAN_DTYPES[self.hessian_dtype]


class HessianAccumulator:
    """Running H = 2/N sum_n x_n x_n^T over every input row a linear layer sees."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = in_features
        self.device = torch.device(device)
        self.dtype = dtype
        self.hessian = torch.zeros(in_features, in_features, device=self.device, dtype=dtype)
        self.nsamples = 0

    def add_batch(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (shape ``(..., in_features)``, any float dtype)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has last dimension {x.shape[-1]}, expected in_features={self.in_features}"
            )
        rows = x.detach().reshape(-1, self.in_features).to(device=self.device, dtype=self.dtype)
        n = rows.shape[0]
        if n == 0:
            return
        total = self.nsamples + n
        # H_total = (N_old H_old + 2 sum x x^T) / N_total, kept as a running average.
        self.hessian.mul_(self.nsamples / total).addmm_(rows.T, rows, alpha=2.0 / total)
        self.nsamples = total


@dataclass
class GPTQStats:
    damp: float  # the damping actually used (absolute, added to diag)
    escalations: int  # how many times damping had to be raised because Cholesky failed
    loss: float  # GPTQ's accumulated weighted error sum((w - q)^2 / d^2) / 2
    seconds: float


def gptq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, quantizer: Quantizer, config: GPTQConfig,
    tensor_amax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GPTQStats]:
    """Return the fake-quantized weight (same shape, dtype and device as ``weight``); does not modify its inputs.

    ``tensor_amax`` (NVFP4's tensor scale source) defaults to the whole weight's absolute
    maximum; a ``(rows, 1)`` column gives each row its own, which lets linears that share
    a Hessian be stacked into one call with the result each would get alone.
    """
    q, stats, _ = gptq_quantize_with_params(weight, hessian, quantizer, config, tensor_amax)
    return q, stats


def gptq_quantize_with_params(
    weight: torch.Tensor, hessian: torch.Tensor, quantizer: Quantizer, config: GPTQConfig,
    tensor_amax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GPTQStats, QuantParams]:
    """``gptq_quantize`` that also returns the scales it used, in ``quantizer.grouped(weight)`` order.

    ``quantizer.quantize_with(quantizer.grouped(q), params)`` reproduces ``q`` exactly (in
    float32), which is what an exporter of real-quantized weights needs: GPTQ's scales
    are fitted from updated weights and need not equal those RTN would fit from ``q``.
    """
    start = time.perf_counter()
    if weight.dim() != 2:
        raise ValueError(f"GPTQ quantizes 2-D weights (out_features, in_features), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(
            f"Hessian of shape {tuple(hessian.shape)} does not match the weight's {cols} input features"
        )
    group = quantizer.spec.group_length(cols, quantizer.head_dim)
    quantizer.spec.check_dimension(cols, "weight input", quantizer.head_dim)

    device = weight.device
    W = weight.detach().to(dtype=torch.float32, copy=True)
    H = hessian.detach().to(device=device, dtype=config.torch_hessian_dtype, copy=True)
    if not torch.isfinite(H).all():
        raise ValueError("the Hessian has non-finite entries: check the calibration inputs for inf/NaN")

    # Inputs that never fire carry no information: any value works, GPTQ zeroes them.
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    # NVFP4's fp32 tensor scale comes from the whole weight, once.
    if tensor_amax is None:
        tensor_amax = W.abs().amax()
    else:
        tensor_amax = tensor_amax.to(device=device, dtype=torch.float32)
    ngroups = 1 if group == 0 else cols // group
    params: list[QuantParams | None] = [None] * ngroups
    if group == 0:
        params[0] = quantizer.fit(W.reshape(1, -1), tensor_amax)
    elif config.static_groups or ngroups == 1:
        for k in range(ngroups):
            params[k] = quantizer.fit(W[:, k * group : (k + 1) * group], tensor_amax)

    if config.act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    else:
        perm = torch.arange(cols, device=device)
    inv_perm = torch.argsort(perm)
    # Original group of the column at each (permuted) position; plain ints, no device syncs.
    group_of = [0] * cols if group == 0 else [c // group for c in perm.tolist()]

    Hinv, damp, escalations = _upper_cholesky_of_inverse(H, config.percdamp)
    Hinv = Hinv.to(torch.float32)

    Q = torch.zeros_like(W)
    loss = torch.zeros((), device=device, dtype=torch.float32)
    for i1 in range(0, cols, config.block_size):
        i2 = min(i1 + config.block_size, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        pivots = Hinv1.diagonal().tolist()  # one sync per block, not per column
        for i in range(i2 - i1):
            k = group_of[i1 + i]
            if params[k] is None:
                # First column of this group reached: fit from the group's current weights,
                # i.e. W as of the block start minus this block's updates so far.
                positions = inv_perm[k * group : (k + 1) * group]
                current = W[:, positions] - Err1[:, :i] @ Hinv[i1 : i1 + i, positions]
                params[k] = quantizer.fit(current, tensor_amax)
            w = W1[:, i : i + 1]
            q = quantizer.quantize_with(w, params[k])
            Q1[:, i : i + 1] = q
            err = (w - q) / pivots[i]
            Err1[:, i : i + 1] = err
            W1[:, i:] -= err * Hinv1[i : i + 1, i:]
        Q[:, i1:i2] = Q1
        loss += Err1.pow(2).sum() / 2  # sum (w - q)^2 / d^2 / 2
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    Q = Q[:, inv_perm].to(weight.dtype)
    stats = GPTQStats(
        damp=float(damp), escalations=escalations, loss=float(loss), seconds=time.perf_counter() - start
    )
    return Q, stats, _grouped_params(params)


def _upper_cholesky_of_inverse(H: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float, int]:
    """Upper Cholesky factor of (H + damp I)^-1, raising ``damp`` tenfold while it fails.

    ``H`` is damped in place. Returns the factor, the damping used and the escalations.
    """
    diag = torch.diagonal(H)
    mean_diag = float(diag.mean())
    if not mean_diag > 0:
        raise ValueError(f"the Hessian's mean diagonal is {mean_diag}: it must be positive (is H = 2/N X^T X?)")
    damp = percdamp * mean_diag
    added = 0.0
    escalations = 0
    while True:
        diag += damp - added
        added = damp
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0 and torch.isfinite(U).all():
                return U, damp, escalations
        if escalations == MAX_DAMP_ESCALATIONS:
            raise RuntimeError(
                f"GPTQ: Cholesky factorisation failed even with damping {damp:.3g} "
                f"({damp / mean_diag:.3g} x mean diag(H)) after {escalations} escalations; "
                "the Hessian is badly conditioned: use more calibration samples or a larger --percdamp"
            )
        new_damp = damp * 10 if damp > 0 else MIN_RELATIVE_DAMP * mean_diag
        logger.warning(
            "GPTQ: Cholesky factorisation failed with damping %.3g (%.3g x mean diag(H)); retrying with %.3g",
            damp, damp / mean_diag, new_damp,
        )
        damp = new_damp
        escalations += 1


def _grouped_params(params: list[QuantParams | None]) -> QuantParams:
    """Per-group params (each ``(rows or 1, 1)``) laid out as ``Quantizer.grouped`` rows."""
    assert all(p is not None for p in params)
    scale = torch.cat([p.scale for p in params], dim=1).reshape(-1, 1)
    zero = None
    if params[0].zero is not None:
        zero = torch.cat([p.zero for p in params], dim=1).reshape(-1, 1)
    tensor_scale = params[0].tensor_scale
    if tensor_scale is not None and tensor_scale.numel() > 1:  # one per row: lay it out like the scales
        tensor_scale = torch.cat([p.tensor_scale.expand_as(p.scale) for p in params], dim=1).reshape(-1, 1)
    return QuantParams(scale, zero, tensor_scale)


def split_params(params: QuantParams, rows: list[int]) -> list[QuantParams]:
    """Grouped-row params of stacked weights, split back into each weight's share."""
    def parts(t: torch.Tensor | None) -> list[torch.Tensor | None]:
        if t is None:
            return [None] * len(rows)
        return list(t.split(rows)) if t.numel() > 1 else [t] * len(rows)

    return [QuantParams(s, z, g) for s, z, g in zip(parts(params.scale), parts(params.zero), parts(params.tensor_scale))]
