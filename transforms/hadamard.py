"""Hadamard matrices of many orders, built in code, and a fast normalised apply.

A Hadamard matrix ``H`` of order ``n`` has entries +-1 and ``H @ H.T == n * I``.
Every matrix here is derived by construction (nothing is tabulated):

* Sylvester: orders ``2**k``.
* Paley I: order ``q + 1`` for a prime power ``q = 3 (mod 4)``.
* Paley II: order ``2 (q + 1)`` for a prime power ``q = 1 (mod 4)``.
  Both Paley constructions use the quadratic character of GF(q); for
  ``q = p**k`` with ``k > 1`` (25, 27, 49, 343, ...) the field is built as
  polynomials over GF(p) modulo an irreducible polynomial found by search.
* Goethals-Seidel: orders 156 = 4*39 and 172 = 4*43, which are not Paley
  orders.  Four circulant +-1 matrices of order 39 (43) are found by a
  meet-in-the-middle search over sequences that are constant on the orbits of
  a small multiplicative subgroup of Z_39 (Z_43); this takes well under a
  second.
* Kronecker products: ``H_a (x) H_b`` has order ``a * b``.

Orders are planned as ``n = M * 2**k`` where ``M`` (the "base") is 1 or a
product of Paley / Goethals-Seidel orders, choosing the smallest ``M``; the
matrix is ``H_n = H_M (x) H_{2**k}`` (base first, Sylvester last).  Orders
``n = 2 (mod 4)`` with ``n > 2`` and odd ``n > 1`` can never be Hadamard;
other orders (e.g. 188 = 4*47) are simply not reachable by these
constructions.  For those, use a block-diagonal Hadamard with a power-of-two
block (``block_hadamard_transform`` / ``--hadamard_group_size``).

Convention: rotating a row vector ``x`` by ``H_n`` means ``x @ H_n.T``;
``hadamard_transform(x)`` returns ``x @ H_n.T / sqrt(n)`` on the last
dimension and ``hadamard_transform(x, inverse=True)`` returns
``x @ H_n / sqrt(n)``, its inverse.  The two coincide when ``H_n`` is
symmetric (Sylvester, Paley II), but not in general (Paley I,
Goethals-Seidel).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch

__all__ = [
    "block_hadamard_transform",
    "get_hadamard",
    "goethals_seidel_hadamard",
    "hadamard_order_plan",
    "hadamard_transform",
    "has_hadamard",
    "largest_power_of_two_block",
    "paley_i_hadamard",
    "paley_ii_hadamard",
    "resolve_hadamard_size",
    "sylvester_hadamard",
]

# Goethals-Seidel orders 4*v -> (v, generator of the multiplicative subgroup of
# Z_v whose orbits the four circulant sequences are constant on).  The
# generators were chosen by running the same search over every cyclic subgroup
# of the units of Z_v: <35> has order 6 in Z_39, <41> has order 7 in Z_43.
_GOETHALS_SEIDEL_ORDERS: dict[int, tuple[int, int]] = {156: (39, 35), 172: (43, 41)}


# ---------------------------------------------------------------------------
# Small number theory and finite fields
# ---------------------------------------------------------------------------


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def largest_power_of_two_block(n: int) -> int:
    """Largest power of two dividing ``n`` (1 for odd ``n``)."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return n & -n


@lru_cache(maxsize=None)
def _prime_power(q: int) -> tuple[int, int] | None:
    """Return ``(p, k)`` with ``q == p**k`` for a prime ``p``, else None."""
    if q < 2:
        return None
    p = next((d for d in range(2, math.isqrt(q) + 1) if q % d == 0), q)
    k = 0
    while q % p == 0:
        q //= p
        k += 1
    return (p, k) if q == 1 else None


def _poly_mod(a: list[int], f: list[int], p: int) -> list[int]:
    """Remainder of ``a`` modulo the monic polynomial ``f`` over GF(p) (coefficients low -> high)."""
    a = list(a)
    k = len(f) - 1
    for top in range(len(a) - 1, k - 1, -1):
        c = a[top] % p
        if c:
            for i in range(k + 1):
                a[top - k + i] = (a[top - k + i] - c * f[i]) % p
    return [c % p for c in a[:k]] + [0] * max(0, k - len(a))


def _digits(x: int, p: int, k: int) -> list[int]:
    return [(x // p**i) % p for i in range(k)]


def _is_irreducible(f: list[int], p: int) -> bool:
    """A monic ``f`` of degree k is irreducible iff no monic polynomial of degree <= k/2 divides it."""
    k = len(f) - 1
    for d in range(1, k // 2 + 1):
        for low in range(p**d):
            if not any(_poly_mod(f, _digits(low, p, d) + [1], p)):
                return False
    return True


class _GaloisField:
    """GF(p**k); element ``x`` in ``range(q)`` encodes the polynomial with base-p digits of ``x``."""

    def __init__(self, p: int, k: int) -> None:
        self.p, self.k, self.q = p, k, p**k
        self.modulus = next(
            f
            for f in (_digits(low, p, k) + [1] for low in range(p**k))
            if _is_irreducible(f, p)
        )

    def mul(self, a: int, b: int) -> int:
        da, db = _digits(a, self.p, self.k), _digits(b, self.p, self.k)
        prod = [0] * (2 * self.k - 1)
        for i, x in enumerate(da):
            for j, y in enumerate(db):
                prod[i + j] += x * y
        return sum(c * self.p**i for i, c in enumerate(_poly_mod(prod, self.modulus, self.p)))

    def quadratic_character(self) -> torch.Tensor:
        """``chi[x]``: 0 for x = 0, 1 for non-zero squares, -1 for non-squares."""
        chi = torch.full((self.q,), -1, dtype=torch.int64)
        chi[[self.mul(x, x) for x in range(1, self.q)]] = 1
        chi[0] = 0
        return chi

    def differences(self) -> torch.Tensor:
        """``d[i, j]``: code of the field element ``i - j`` (digit-wise subtraction mod p)."""
        codes = torch.arange(self.q)
        weights = self.p ** torch.arange(self.k)
        digits = (codes[:, None] // weights) % self.p
        return ((digits[:, None, :] - digits[None, :, :]) % self.p) @ weights


def _jacobsthal(q: int) -> torch.Tensor:
    """``Q[a, b] = chi(a - b)`` over GF(q): symmetric for q = 1 (mod 4), skew for q = 3 (mod 4)."""
    pk = _prime_power(q)
    if pk is None:
        raise ValueError(f"q={q} is not a prime power")
    field = _GaloisField(*pk)
    return field.quadratic_character()[field.differences()]


# ---------------------------------------------------------------------------
# Constructions (exact int64 matrices; the searches and Kronecker products behind them are cached)
# ---------------------------------------------------------------------------


def sylvester_hadamard(order: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Sylvester Hadamard matrix of a power-of-two order (symmetric)."""
    if not _is_power_of_two(order):
        raise ValueError(f"Sylvester construction needs a power of two, got {order}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < order:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


def paley_i_hadamard(q: int) -> torch.Tensor:
    """Paley I: order q + 1 for a prime power q = 3 (mod 4).

    With the skew Jacobsthal matrix Q, ``S = [[0, 1^T], [-1, Q]]`` is skew with
    ``S S^T = q I``, so ``H = I + S`` satisfies ``H H^T = (q + 1) I``.
    """
    if q % 4 != 3 or _prime_power(q) is None:
        raise ValueError(f"Paley I needs a prime power q = 3 (mod 4), got q={q}")
    s = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return s + torch.eye(q + 1, dtype=torch.int64)


def paley_ii_hadamard(q: int) -> torch.Tensor:
    """Paley II: order 2 (q + 1) for a prime power q = 1 (mod 4).

    ``C = [[0, 1^T], [1, Q]]`` is a symmetric conference matrix; zero entries
    (the diagonal) become ``[[1, -1], [-1, -1]]`` and +-1 entries become
    ``+-[[1, 1], [1, -1]]``.
    """
    if q % 4 != 1 or _prime_power(q) is None:
        raise ValueError(f"Paley II needs a prime power q = 1 (mod 4), got q={q}")
    c = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    h2 = torch.tensor([[1, 1], [1, -1]], dtype=torch.int64)
    diag_block = torch.tensor([[1, -1], [-1, -1]], dtype=torch.int64)
    return torch.kron(c, h2) + torch.kron(torch.eye(q + 1, dtype=torch.int64), diag_block)


def _circulant(first_row: torch.Tensor) -> torch.Tensor:
    n = first_row.shape[0]
    idx = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
    return first_row[idx]


@lru_cache(maxsize=None)
def _goethals_seidel_sequences(v: int, generator: int) -> torch.Tensor:
    """Four +-1 sequences of length v whose periodic autocorrelations sum to 0 at every non-zero shift.

    Sequences constant on the orbits of ``G = <generator>`` acting on Z_v by
    multiplication have autocorrelations constant on those orbits too, so only
    one shift per orbit needs to match.  Candidates whose power spectrum
    exceeds 4v anywhere cannot be part of a solution and are dropped; then
    pairs (A, B) are matched against pairs (C, D) with opposite
    autocorrelation sums.
    """
    group = {1}
    while (nxt := group | {(g * generator) % v for g in group}) != group:
        group = nxt
    orbit_of = torch.full((v,), -1, dtype=torch.int64)
    reps: list[int] = []
    for x in range(v):
        if orbit_of[x] < 0:
            orbit_of[[(x * g) % v for g in group]] = len(reps)
            reps.append(x)
    m = len(reps)
    sign_bits = (torch.arange(2**m)[:, None] >> torch.arange(m)) & 1
    seqs = 1 - 2 * sign_bits[:, orbit_of]
    psd = torch.fft.fft(seqs.double()).abs().square()
    # Negating a sequence keeps its autocorrelation, so fix x_0 = +1.
    seqs = seqs[(psd <= 4 * v + 1e-6).all(dim=1) & (seqs[:, 0] == 1)]
    shifts = [r for r in reps if r != 0]
    paf = torch.stack([(seqs * seqs.roll(-s, dims=1)).sum(1) for s in shifts], dim=1)
    i, j = torch.triu_indices(len(seqs), len(seqs))
    pair_paf = paf[i] + paf[j]
    # Each autocorrelation of a +-1 sequence is = v (mod 4), so (pair sum + 2v) / 4 is an integer
    # in [0, v]; encode the vector of those digits in base v + 1 (fits int64 for the registered v).
    weights = (v + 1) ** torch.arange(len(shifts))
    left = ((pair_paf + 2 * v) // 4) @ weights
    right = ((2 * v - pair_paf) // 4) @ weights  # key of the negated sums
    right_sorted, right_order = right.sort()
    pos = torch.searchsorted(right_sorted, left).clamp(max=len(right) - 1)
    hits = (right_sorted[pos] == left).nonzero()
    if len(hits) == 0:
        raise RuntimeError(f"Goethals-Seidel search found no sequences for v={v}, generator={generator}")
    a = int(hits[0])
    b = int(right_order[pos[a]])
    return torch.stack((seqs[i[a]], seqs[j[a]], seqs[i[b]], seqs[j[b]]))


def goethals_seidel_hadamard(order: int) -> torch.Tensor:
    """Hadamard matrix of order 156 or 172 from the Goethals-Seidel array.

    With circulants A, B, C, D satisfying ``sum X X^T = 4 v I`` and the
    back-diagonal permutation R, the array
    ``[[A, BR, CR, DR], [-BR, A, D^T R, -C^T R], [-CR, -D^T R, A, B^T R],
    [-DR, C^T R, -B^T R, A]]`` is Hadamard of order 4 v.
    """
    if order not in _GOETHALS_SEIDEL_ORDERS:
        raise ValueError(
            f"Goethals-Seidel construction is only set up for orders {sorted(_GOETHALS_SEIDEL_ORDERS)}, got {order}"
        )
    v, generator = _GOETHALS_SEIDEL_ORDERS[order]
    a, b, c, d = (_circulant(s) for s in _goethals_seidel_sequences(v, generator))
    r = torch.eye(v, dtype=torch.int64).flip(1)
    h = torch.cat(
        [
            torch.cat([a, b @ r, c @ r, d @ r], 1),
            torch.cat([-b @ r, a, d.T @ r, -c.T @ r], 1),
            torch.cat([-c @ r, -d.T @ r, a, b.T @ r], 1),
            torch.cat([-d @ r, c.T @ r, -b.T @ r, a], 1),
        ],
        0,
    )
    if not torch.equal(h @ h.T, order * torch.eye(order, dtype=torch.int64)):
        raise RuntimeError(f"Goethals-Seidel construction of order {order} failed verification")
    return h


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def _base_construction(m: int) -> str | None:
    """Which construction builds the single non-power-of-two order ``m`` directly, if any."""
    if m < 4 or m % 4:
        return None
    if _prime_power(m - 1):  # m = 0 (mod 4), so q = m - 1 = 3 (mod 4)
        return "paley_i"
    if (m // 2 - 1) % 4 == 1 and _prime_power(m // 2 - 1):
        return "paley_ii"
    if m in _GOETHALS_SEIDEL_ORDERS:
        return "goethals_seidel"
    return None


def _base_matrix(m: int) -> torch.Tensor:
    kind = _base_construction(m)
    if kind == "paley_i":
        return paley_i_hadamard(m - 1)
    if kind == "paley_ii":
        return paley_ii_hadamard(m // 2 - 1)
    return goethals_seidel_hadamard(m)


def _divisors(m: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(m) + 1) if m % d == 0]
    return sorted(set(small + [m // d for d in small]))


@lru_cache(maxsize=None)
def _base_factors(m: int) -> tuple[int, ...] | None:
    """Write the non-power-of-two ``m`` as a product of directly constructible base orders, smallest first factor."""
    if _base_construction(m):
        return (m,)
    for d in _divisors(m):
        if 4 <= d <= m // 4 and _base_construction(d) and not _is_power_of_two(m // d):
            rest = _base_factors(m // d)
            if rest:
                return (d, *rest)
    return None


@lru_cache(maxsize=None)
def _plan(n: int) -> tuple[int, ...] | None:
    if n < 1:
        return None
    pow2 = largest_power_of_two_block(n)
    odd = n // pow2
    if odd == 1:
        return (n,)
    # Smallest base M = odd * 2**j first: the dense part of the fast apply costs O(M) per element.
    base = odd
    while base <= n:
        factors = _base_factors(base)
        if factors:
            return factors + ((n // base,) if n > base else ())
        base *= 2
    return None


def hadamard_order_plan(n: int) -> list[int] | None:
    """Factor orders whose Kronecker product gives ``H_n``, or None if ``n`` is not reachable.

    Non-power-of-two base orders (Paley I / II or Goethals-Seidel) come first,
    followed by the power-of-two (Sylvester) factor when it is > 1, e.g.
    ``576 -> [36, 16]``, ``11008 -> [172, 64]``, ``4096 -> [4096]``.  The
    product of the base orders is the smallest possible.
    """
    plan = _plan(n)
    return None if plan is None else list(plan)


def has_hadamard(n: int) -> bool:
    """Whether ``get_hadamard(n)`` can build a Hadamard matrix of order ``n``."""
    return _plan(n) is not None


def _split_plan(n: int) -> tuple[tuple[int, ...], int]:
    """``(base orders, power-of-two order)`` of the plan for ``n``; raises the user-facing error."""
    plan = _plan(n)
    if plan is None:
        raise ValueError(_no_hadamard_message(n))
    if _is_power_of_two(plan[-1]):
        return plan[:-1], plan[-1]
    return plan, 1


def _no_hadamard_message(n: int) -> str:
    if n < 1:
        return f"Hadamard order must be a positive integer, got n={n}"
    block = largest_power_of_two_block(n)
    odd = n // block
    if odd > 1 and block == 1:
        reason = "odd orders above 1 are never Hadamard"
    elif block == 2 and n > 2:
        reason = "orders = 2 (mod 4) above 2 are never Hadamard"
    else:
        reason = (
            "it is not m * 2**k with m a product of Paley I (q+1, prime power q = 3 mod 4), "
            f"Paley II (2(q+1), prime power q = 1 mod 4) or Goethals-Seidel {sorted(_GOETHALS_SEIDEL_ORDERS)} orders"
        )
    if block > 1:
        alternative = (
            f"use a block-diagonal Hadamard with a power-of-two block dividing n instead "
            f"(--hadamard_group_size, largest such block for n={n}: {block})"
        )
    else:
        alternative = (
            "a block-diagonal Hadamard with a power-of-two block (--hadamard_group_size) "
            f"is not possible either because n={n} is odd"
        )
    return f"No Hadamard matrix of order n={n} = {odd} * 2**{block.bit_length() - 1}: {reason}; {alternative}."


def _factor_matrix(m: int) -> torch.Tensor:
    return sylvester_hadamard(m) if _is_power_of_two(m) else _base_matrix(m)


@lru_cache(maxsize=None)
def _kron(factors: tuple[int, ...]) -> torch.Tensor:
    """Kronecker product of small factor orders (int64; ``[[1]]`` for no factors)."""
    h = torch.ones(1, 1, dtype=torch.int64)
    for m in factors:
        h = torch.kron(h, _factor_matrix(m))
    return h


@lru_cache(maxsize=64)
def _kron_on(factors: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _kron(factors).to(dtype=dtype, device=device)


def get_hadamard(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Unnormalised +-1 Hadamard matrix of order ``n``: ``H_M (x) H_{2**k}`` following ``hadamard_order_plan``.

    Raises ValueError naming ``n`` and the block-diagonal alternative when no
    construction exists.  The full ``n x n`` matrix is built on every call (not
    cached); prefer ``hadamard_transform`` for applying it.
    """
    bases, pow2 = _split_plan(n)
    h = _kron(bases).to(dtype=dtype, copy=True)
    if pow2 > 1:
        h = torch.kron(h, sylvester_hadamard(pow2, dtype))
    return h


# ---------------------------------------------------------------------------
# Fast apply
# ---------------------------------------------------------------------------


# The Sylvester factor is applied 4 bits at a time, lowest bits first, using
# H_{2**k} = H_r (x) H_16 (x) ... (x) H_16.  A 16-point dense butterfly per pass
# (16 flops per element, ceil(k / 4) passes) is much faster in torch than k
# 2-point passes, whose tiny strided elementwise ops and per-pass allocations
# dominate; the work is still O(n log n).
_RADIX = 16


def _apply_on_axis(y: torch.Tensor, g: torch.Tensor, inner: int) -> torch.Tensor:
    """View ``y`` as ``(rows, b, inner)`` and left-multiply the ``b`` axis by ``g`` (b x b)."""
    b = g.shape[0]
    return torch.matmul(g, y.reshape(y.numel() // (b * inner), b, inner))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64):
        return dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    raise TypeError(f"hadamard_transform needs a floating-point tensor, got {dtype}")


def hadamard_transform(
    x: torch.Tensor, n: int | None = None, normalize: bool = True, inverse: bool = False
) -> torch.Tensor:
    """Rotate the last dimension of ``x``: ``x @ H_n.T / sqrt(n)`` (``x @ H_n / sqrt(n)`` if ``inverse``).

    ``H_n = H_M (x) H_{2**k}``: the last dim is viewed as ``(M, 2**k)``, the
    Sylvester factor is applied by an O(n log n) radix-16 fast Walsh-Hadamard
    transform and the small base factor ``H_M`` by a dense matmul.
    ``normalize=False`` drops the ``1/sqrt(n)``.  float32/float64 inputs are
    computed in their own dtype, float16/bfloat16 in float32; the result has
    ``x``'s dtype.
    """
    size = x.shape[-1]
    if n is not None and n != size:
        raise ValueError(f"hadamard_transform: n={n} does not match the last dimension of x ({size})")
    bases, pow2 = _split_plan(size)
    work = _compute_dtype(x.dtype)
    y = x.to(work)
    inner = 1
    while inner < pow2:  # O(n log n): log16(pow2) passes of 16-point Sylvester butterflies
        b = min(_RADIX, pow2 // inner)
        y = _apply_on_axis(y, _kron_on((b,), work, x.device), inner)
        inner *= b
    if bases:  # the base factor H_M acts on the outermost axis of the (M, pow2) view
        h = _kron_on(bases, work, x.device)
        y = _apply_on_axis(y, h.T if inverse else h, pow2)
    if normalize:
        y = y * size**-0.5
    return y.reshape(x.shape).to(x.dtype)


def block_hadamard_transform(
    x: torch.Tensor, block_size: int, normalize: bool = True, inverse: bool = False
) -> torch.Tensor:
    """Apply ``hadamard_transform`` independently to consecutive blocks of ``block_size`` along the last dim.

    Equivalent to ``x @ blockdiag(H_b, ..., H_b).T / sqrt(b)``.
    """
    dim = x.shape[-1]
    if block_size < 1 or dim % block_size:
        raise ValueError(f"block_size={block_size} does not divide the last dimension {dim}")
    blocks = x.reshape(*x.shape[:-1], dim // block_size, block_size)
    return hadamard_transform(blocks, normalize=normalize, inverse=inverse).reshape(x.shape)


def resolve_hadamard_size(n: int, group_size: int | None = None) -> tuple[str, int]:
    """Decide how to rotate a dimension of size ``n``: ``("full", n)`` or ``("block", block_size)``.

    With ``group_size`` given it is validated and used as the block.  Without
    it, a full Hadamard is used when one exists, else (with a warning) the
    largest power-of-two block dividing ``n``.
    """
    if group_size is not None:
        if group_size < 2 or n % group_size:
            raise ValueError(f"hadamard group size {group_size} must be >= 2 and divide the dimension n={n}")
        if not has_hadamard(group_size):
            raise ValueError(_no_hadamard_message(group_size))
        return "block", group_size
    if has_hadamard(n):
        return "full", n
    block = largest_power_of_two_block(n) if n >= 1 else 1
    if block < 2:
        raise ValueError(_no_hadamard_message(n))
    warnings.warn(
        f"No full Hadamard matrix of order n={n}; falling back to a block-diagonal Hadamard with "
        f"block size {block} ({n // block} blocks). Set --hadamard_group_size to choose the block.",
        stacklevel=2,
    )
    return "block", block
