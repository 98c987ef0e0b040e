"""FlatQuant's learnable affine transforms: a Kronecker product of two small invertible matrices
with a per-channel scaling, applied online to a linear's input and folded inversely into its weight.

For an input dimension ``n = a * b`` (the most balanced factorisation, e.g. 576 = 24 x 24,
1536 = 32 x 48) the transform is ``x -> (x / s) (P1 ⊗ P2)``: viewing each token's ``x / s``
as an ``a x b`` matrix ``X``, that is ``P1^T X P2``, two small matmuls instead of one
``n x n``. The weight ``W`` of every linear reading ``x`` becomes
``(W * s) (P1 ⊗ P2)^-T``, i.e. per output row ``P1^-1 W_r P2^-T``, so ``x W^T`` is unchanged
while the transformed activations and weights are flatter and quantize better once the
factors are trained (``calib``: block by block, MSE to the full-precision block).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .rotation import random_orthogonal_matrix


def balanced_factors(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a * b = n``, ``a <= b`` and ``a`` the largest divisor of ``n`` not above ``sqrt(n)``."""
    if n < 1:
        raise ValueError(f"a Kronecker transform needs a positive dimension, got {n}")
    a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return a, n // a


class KroneckerAffine(nn.Module):
    """``x -> (x / s) (P1 ⊗ P2)``, learnable; identity at initialisation.

    ``diag=False`` drops the per-channel scaling ``s``. Parameters are kept in float32
    (float64 if asked) whatever the model's dtype; inputs are transformed in at least float32.
    """

    def __init__(self, size: int, diag: bool = True, factors: tuple[int, int] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        a, b = factors or balanced_factors(size)
        if a * b != size:
            raise ValueError(f"factors {a} x {b} do not multiply to the dimension {size}")
        self.size, self.factors = size, (a, b)
        self.left = nn.Parameter(torch.eye(a, dtype=dtype))
        self.right = nn.Parameter(torch.eye(b, dtype=dtype))
        self.diag = nn.Parameter(torch.ones(size, dtype=dtype)) if diag else None

    def extra_repr(self) -> str:
        a, b = self.factors
        return f"size={self.size}, factors={a}x{b}, diag={self.diag is not None}"

    def _work_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.promote_types(torch.promote_types(x.dtype, torch.float32), self.left.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = self._work_dtype(x)
        y = x.to(work)
        if self.diag is not None:
            y = y / self.diag.to(work)
        a, b = self.factors
        y = self.left.to(work).T @ y.reshape(*y.shape[:-1], a, b) @ self.right.to(work)
        return y.reshape(x.shape).to(x.dtype)

    def fold_into_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``(W * s) (P1 ⊗ P2)^-T`` for a weight ``(out, size)`` that reads this transform's input."""
        if weight.shape[-1] != self.size:
            raise ValueError(f"weight with {weight.shape[-1]} inputs cannot take a transform of size {self.size}")
        work = self._work_dtype(weight)
        w = weight.to(work)
        if self.diag is not None:
            w = w * self.diag.to(work)
        a, b = self.factors
        left_inv = torch.linalg.inv(self.left.to(work))
        right_inv = torch.linalg.inv(self.right.to(work))
        w = left_inv @ w.reshape(-1, a, b) @ right_inv.T
        return w.reshape(weight.shape).to(weight.dtype)

    @torch.no_grad()
    def init_random_orthogonal(self, seed: int) -> None:
        """Both factors Haar-random orthogonal (seeds ``2 * seed`` and ``2 * seed + 1``).

        Their Kronecker product is orthogonal too, so the start is a random rotation that
        already spreads outlier channels, as FlatQuant starts; training then departs from it.
        """
        self.left.copy_(random_orthogonal_matrix(self.factors[0], 2 * seed).to(self.left.dtype))
        self.right.copy_(random_orthogonal_matrix(self.factors[1], 2 * seed + 1).to(self.right.dtype))

    @torch.no_grad()
    def init_diag_smoothquant(self, act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> None:
        """SmoothQuant's scaling ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (per input channel)."""
        if self.diag is None:
            raise ValueError("this transform has no per-channel scaling (diag=False)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"--diag_alpha must be in [0, 1], got {alpha}")
        s = act_absmax.float().clamp(min=1e-5).pow(alpha) / weight_absmax.float().clamp(min=1e-5).pow(1 - alpha)
        self.diag.copy_(s.to(self.diag.dtype))


def head_matrix_start(size: int, seed: int | None) -> torch.Tensor:
    """A per-head transform's starting matrix: identity (``seed`` None: a restore overwrites
    it) or Haar-random orthogonal; float32, contiguous (safetensors saves it)."""
    start = torch.eye(size, dtype=torch.float64) if seed is None else random_orthogonal_matrix(size, seed)
    return start.float().contiguous()


class KeyTransform(nn.Module):
    """FlatQuant's K transform, one learnable invertible ``head_dim x head_dim`` matrix ``P`` per layer.

    Applied online after RoPE as an attention ``qk_transform``: keys ``k -> k P`` (what the
    cache stores and quantizes), queries ``q -> q P^-T``, so ``q k^T`` is unchanged.
    """

    def __init__(self, head_dim: int, seed: int | None = None) -> None:
        super().__init__()
        self.size = head_dim
        self.weight = nn.Parameter(head_matrix_start(head_dim, seed))

    def _times(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        return (x.to(work) @ m.to(device=x.device, dtype=work)).to(x.dtype)

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        return self._times(keys, self.weight)

    def query(self, queries: torch.Tensor) -> torch.Tensor:
        return self._times(queries, torch.linalg.inv(self.weight.to(torch.float64)).T)


class ValueTransform(nn.Module):
    """FlatQuant's per-head transform of V: ``v -> v P`` in every head (one ``P``, head_dim square).

    Folded offline on both sides: into v_proj's rows (``W_h -> P^T W_h``, ``b_h -> P^T b_h``)
    and into o_proj's columns of every query head (``W_o[:, h] -> W_o[:, h] P^-T``), so the
    V cache holds (and quantizes) ``v P`` while the block's output is unchanged.
    """

    def __init__(self, head_dim: int, seed: int | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.matrix = nn.Parameter(head_matrix_start(head_dim, seed))

    def fold_rows(self, w: torch.Tensor) -> torch.Tensor:
        """v_proj's weight ``(heads * d, in)`` or bias ``(heads * d,)``: each head's rows times ``P^T``."""
        p = self.matrix.to(w.dtype)
        shape = w.shape
        heads = w.reshape(-1, self.head_dim, *shape[1:])
        return torch.einsum("ji,hj...->hi...", p, heads).reshape(shape)

    def fold_columns(self, w: torch.Tensor) -> torch.Tensor:
        """o_proj's weight ``(out, heads * d)``: each head's columns times ``P^-T``."""
        p_inv = torch.linalg.inv(self.matrix.to(torch.float64)).to(w.dtype)
        return (w.reshape(w.shape[0], -1, self.head_dim) @ p_inv.T).reshape(w.shape)
