"""Orthogonal rotations of one dimension, as modules: ``x -> x @ M`` on the last dim.

Every transform class (``--transform_class``) is built from these. A rotation is applied
to activations online (a module in the forward pass) and folded into weights offline
through the same ``forward``, so the two sides can never disagree:

* a linear that reads a rotated input gets ``W' = W M`` = ``rotation(W)``;
* a linear whose output is rotated gets ``W' = M^T W`` = ``rotation(W.T).T``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .hadamard import block_hadamard_transform, hadamard_transform, has_hadamard, largest_power_of_two_block

TRANSFORM_CLASSES = ("identity", "hadamard", "random_orthogonal", "block_hadamard")
DEFAULT_BLOCK_SIZE = 128  # FP-Quant's default --hadamard_group_size


class Rotation(nn.Module):
    """An orthogonal ``size x size`` matrix ``M`` applied to the last dimension."""

    size: int

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``M`` itself (for tests and small sizes)."""
        return self(torch.eye(self.size, dtype=dtype))

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """The queries' side of a Q/K transform: for an orthogonal ``M``, ``M`` itself."""
        return self(x)


class HadamardRotation(Rotation):
    """``M = diag(s) H^T / sqrt(b)``, with ``H`` a full (``block=None``) or block-diagonal Hadamard.

    ``s`` is an optional random +-1 vector (QuaRot's randomized Hadamard).
    """

    def __init__(self, size: int, block: int | None = None, signs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.size = size
        self.block = None if block == size else block
        if signs is not None:
            self.register_buffer("signs", signs)
        else:
            self.signs = None

    def extra_repr(self) -> str:
        kind = "full" if self.block is None else f"block={self.block}"
        return f"size={self.size}, {kind}, random_signs={self.signs is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.signs is not None:
            x = x * self.signs.to(device=x.device, dtype=x.dtype)
        if self.block is None:
            return hadamard_transform(x)
        return block_hadamard_transform(x, self.block)


class DenseRotation(Rotation):
    """An explicit orthogonal matrix (random orthogonal); computed in at least float32."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.size = matrix.shape[0]
        self.register_buffer("weight", matrix)

    def extra_repr(self) -> str:
        return f"size={self.size}, dense"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        return (x.to(work) @ self.weight.to(device=x.device, dtype=work)).to(x.dtype)


def random_orthogonal_matrix(size: int, seed: int) -> torch.Tensor:
    """Haar-random orthogonal matrix (QR of a Gaussian, signs fixed by R's diagonal), float64."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64, generator=gen))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_signs(size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (size,), generator=gen).to(torch.float64) * 2 - 1


def hadamard_block(size: int, what: str, *, block: int | None = None, fallback: int | None = None) -> int | None:
    """Block for a Hadamard rotation of ``size``: None (full) or a block that divides it.

    ``block`` forces blocks of that size (capped at ``size``). Otherwise a full Hadamard
    is used where one exists, else blocks of ``fallback`` (default: the largest power of
    two dividing ``size``), with a warning.
    """
    if block is None:
        if has_hadamard(size):
            return None
        block = fallback or largest_power_of_two_block(size)
        if block < 2:
            raise ValueError(
                f"no Hadamard rotation exists for the {what} dimension {size}: it has no Hadamard matrix "
                f"and is odd, so no block-diagonal Hadamard divides it; use --transform_class "
                f"random_orthogonal or identity"
            )
        warnings.warn(
            f"no full Hadamard matrix of order {size} ({what}); using a block-diagonal Hadamard with "
            f"blocks of {block}. Pass --hadamard_group_size to choose the block.",
            stacklevel=3,
        )
    chosen = min(block, size)
    if size % chosen or not has_hadamard(chosen):
        raise ValueError(
            f"--hadamard_group_size {block} cannot rotate the {what} dimension {size}: a block must "
            f"divide {size} and have a Hadamard matrix; choose a power of two dividing {size} "
            f"(largest: {largest_power_of_two_block(size)})"
        )
    return None if chosen == size else chosen


def rotation_block(transform: str, size: int, what: str, group_size: int | None) -> int | None:
    """The Hadamard block (None = full) ``transform`` uses for a dimension of ``size``."""
    if transform == "block_hadamard":
        return hadamard_block(size, what, block=group_size or DEFAULT_BLOCK_SIZE)
    if transform == "hadamard":
        return hadamard_block(size, what, fallback=group_size)
    if transform == "random_orthogonal":
        return hadamard_block(size, what)
    raise ValueError(f"unknown transform class {transform!r}: choose one of {', '.join(TRANSFORM_CLASSES)}")


def check_rotation(transform: str, size: int, what: str, group_size: int | None, online: bool) -> None:
    """``make_rotation``'s errors without building anything or warning: for checks before loading."""
    if transform == "random_orthogonal" and not online:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rotation_block(transform, size, what, group_size)


def make_rotation(
    transform: str, size: int, what: str, *, seed: int, group_size: int | None = None, online: bool = False
) -> Rotation:
    """The rotation a transform class uses for one dimension.

    ``online`` rotations (down_proj input, Q/K after RoPE) run in the forward pass: they
    are plain Hadamards for ``hadamard`` and ``random_orthogonal`` alike (SpinQuant's R3/R4)
    and block Hadamards for ``block_hadamard``. Offline ones are fused into weights:
    randomized Hadamard, Haar-random orthogonal, or randomized block Hadamard.
    """
    if transform == "random_orthogonal" and not online:
        return DenseRotation(random_orthogonal_matrix(size, seed))
    block = rotation_block(transform, size, what, group_size)
    return HadamardRotation(size, block, None if online else random_signs(size, seed))


def orthogonality_error(rotation: Rotation) -> float:
    """max |M M^T - I| (for tests and sanity checks)."""
    m = rotation.matrix(torch.float64)
    return float((m @ m.T - torch.eye(rotation.size, dtype=torch.float64)).abs().max())


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DenseRotation",
    "HadamardRotation",
    "Rotation",
    "TRANSFORM_CLASSES",
    "check_rotation",
    "hadamard_block",
    "make_rotation",
    "orthogonality_error",
    "random_orthogonal_matrix",
    "random_signs",
    "rotation_block",
]
