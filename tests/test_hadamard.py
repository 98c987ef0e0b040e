"""Tests for transforms/hadamard.py: exact orthogonality, constructions, fast apply, fallbacks."""

import math
import warnings

import pytest
import torch

from transforms.hadamard import (
    _GaloisField,
    block_hadamard_transform,
    get_hadamard,
    goethals_seidel_hadamard,
    hadamard_order_plan,
    hadamard_transform,
    has_hadamard,
    largest_power_of_two_block,
    paley_i_hadamard,
    paley_ii_hadamard,
    resolve_hadamard_size,
    sylvester_hadamard,
)

BASE_SIZES = [12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172]
DENSE_SIZES = [128, 384, 576, 896, 1024, 1536]  # full Gram matrix by dense matmul
MID_SIZES = [3072, 3584, 4096, 4864]  # full Gram matrix via the fast transform, sampled rows dense
LARGE_SIZES = [11008, 12288, 14336, 18944, 25600]  # not materialised: exact factors + sampled rows

EXPECTED_PLANS = {
    128: [128],
    384: [12, 32],
    576: [36, 16],
    896: [28, 32],
    1024: [1024],
    1536: [12, 128],
    3072: [12, 256],
    3584: [28, 128],
    4096: [4096],
    4864: [76, 64],
    11008: [172, 64],
    12288: [12, 1024],
    14336: [28, 512],
    18944: [148, 128],
    25600: [100, 256],
    40: [20, 2],
    156: [156],
    172: [172],
    312: [156, 2],
    1904: [28, 68],  # 7 * 17 * 16: no single Paley base, Kronecker product of two
}


def assert_hadamard(h: torch.Tensor) -> None:
    """Entries +-1 and H H^T = n I, exactly (float64/int64 sums of +-1 are exact at these sizes)."""
    n = h.shape[0]
    h = h.to(torch.float64)
    assert h.shape == (n, n)
    assert bool((h.abs() == 1).all())
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


def scaled_unit_rows(n: int, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of ``n * I`` without building the n x n identity."""
    out = torch.zeros(len(rows), n, dtype=torch.float64)
    out[torch.arange(len(rows)), rows] = n
    return out


def rows_from_plan(n: int, rows: torch.Tensor) -> torch.Tensor:
    """Rows of kron(H_factor_0, H_factor_1, ...) built from the factors alone."""
    out = torch.ones(len(rows), 1, dtype=torch.float64)
    stride = n
    for f in hadamard_order_plan(n):
        stride //= f
        h = get_hadamard(f)
        out = (out[:, :, None] * h[(rows // stride) % f][:, None, :]).reshape(len(rows), -1)
    return out


@pytest.mark.parametrize("n", EXPECTED_PLANS)
def test_plans(n: int) -> None:
    plan = hadamard_order_plan(n)
    assert plan == EXPECTED_PLANS[n]
    assert math.prod(plan) == n
    assert has_hadamard(n)


@pytest.mark.parametrize("n", [1, 2, 4, 8, *BASE_SIZES, 76, 100, 148, 312, 344, *DENSE_SIZES, 1904])
def test_dense_sizes_exact(n: int) -> None:
    assert_hadamard(get_hadamard(n, dtype=torch.int64))


@pytest.mark.parametrize("n", MID_SIZES)
def test_mid_sizes_exact(n: int) -> None:
    # float32 is exact here: every partial sum is an integer of magnitude <= n < 2**24.
    h = get_hadamard(n, dtype=torch.float32)
    assert bool((h.abs() == 1).all())
    # The unnormalised transform of H's rows is H @ H^T.
    assert torch.equal(hadamard_transform(h, normalize=False), n * torch.eye(n))
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:48]
    assert torch.equal((h[rows] @ h.T).double(), scaled_unit_rows(n, rows))
    assert torch.equal(h[rows].double(), rows_from_plan(n, rows))


@pytest.mark.parametrize("n", LARGE_SIZES)
def test_large_sizes_exact(n: int) -> None:
    # H_n = kron(factors): exact factors give H H^T = n I by the mixed-product rule; rows are spot-checked too.
    for f in hadamard_order_plan(n):
        assert_hadamard(get_hadamard(f))
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:24]
    h_rows = rows_from_plan(n, rows)
    assert bool((h_rows.abs() == 1).all())
    gram_rows = hadamard_transform(h_rows, normalize=False)  # = H[rows] @ H^T
    assert torch.equal(gram_rows, scaled_unit_rows(n, rows))


@pytest.mark.parametrize(("p", "k"), [(3, 2), (5, 2), (3, 3), (7, 2), (2, 3)])
def test_galois_field(p: int, k: int) -> None:
    field = _GaloisField(p, k)
    q = p**k
    for x in range(1, q):  # multiplication by a non-zero element permutes the non-zero elements
        assert sorted(field.mul(x, y) for y in range(1, q)) == list(range(1, q))
    chi = field.quadratic_character()
    if p > 2:
        assert int((chi == 1).sum()) == int((chi == -1).sum()) == (q - 1) // 2


@pytest.mark.parametrize("q", [3, 7, 11, 19, 23, 27, 43, 343])
def test_paley_i(q: int) -> None:
    h = paley_i_hadamard(q)
    assert h.shape == (q + 1, q + 1)
    assert_hadamard(h)
    s = h - torch.eye(q + 1, dtype=h.dtype)
    assert torch.equal(s, -s.T)  # skew-Hadamard


@pytest.mark.parametrize("q", [5, 9, 13, 17, 25, 29, 49])
def test_paley_ii(q: int) -> None:
    h = paley_ii_hadamard(q)
    assert h.shape == (2 * (q + 1), 2 * (q + 1))
    assert_hadamard(h)
    assert torch.equal(h, h.T)


@pytest.mark.parametrize(("builder", "q"), [(paley_i_hadamard, 15), (paley_i_hadamard, 13), (paley_ii_hadamard, 21), (paley_ii_hadamard, 11)])
def test_paley_rejects_bad_q(builder, q: int) -> None:
    with pytest.raises(ValueError, match=f"q={q}"):
        builder(q)


@pytest.mark.parametrize("order", [156, 172])
def test_goethals_seidel(order: int) -> None:
    assert_hadamard(goethals_seidel_hadamard(order))


def test_sylvester_and_pow2_helpers() -> None:
    assert torch.equal(sylvester_hadamard(2), torch.tensor([[1, 1], [1, -1]]))
    assert_hadamard(sylvester_hadamard(256))
    with pytest.raises(ValueError):
        sylvester_hadamard(12)
    assert [largest_power_of_two_block(n) for n in (1, 7, 12, 4864, 11008, 4096)] == [1, 1, 4, 256, 256, 4096]


@pytest.mark.parametrize("n", [576, 1536, 384, 4864, 1024, 156, 172, 344, 100, 1904, 40, 12, 2, 1])
def test_transform_matches_dense(n: int) -> None:
    x = torch.randn(3, 2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    h = get_hadamard(n) / math.sqrt(n)
    y = hadamard_transform(x)
    assert (y - x @ h.T).abs().max() < 1e-10
    assert (hadamard_transform(x, n=n, inverse=True) - x @ h).abs().max() < 1e-10
    assert (hadamard_transform(y, inverse=True) - x).abs().max() < 1e-10  # orthogonal: inverse undoes it
    assert (hadamard_transform(x, normalize=False) - x @ get_hadamard(n).T).abs().max() < 1e-8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_transform_keeps_dtype(dtype: torch.dtype) -> None:
    x = torch.randn(4, 576, generator=torch.Generator().manual_seed(0)).to(dtype)
    y = hadamard_transform(x)
    assert y.dtype == dtype
    ref = x.double() @ get_hadamard(576).T / math.sqrt(576)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert (y.double() - ref).abs().max() < tol


def test_transform_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n=128"):
        hadamard_transform(torch.randn(2, 64), n=128)
    with pytest.raises(TypeError):
        hadamard_transform(torch.ones(2, 64, dtype=torch.int64))
    with pytest.raises(ValueError, match="n=188"):
        hadamard_transform(torch.randn(2, 188))


@pytest.mark.parametrize(("dim", "block"), [(512, 64), (576, 64), (2048, 256), (240, 12), (688, 172)])
def test_block_transform_matches_block_diagonal(dim: int, block: int) -> None:
    x = torch.randn(3, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(dim))
    dense = torch.block_diag(*[get_hadamard(block)] * (dim // block)) / math.sqrt(block)
    assert (block_hadamard_transform(x, block) - x @ dense.T).abs().max() < 1e-10
    assert (block_hadamard_transform(x, block, inverse=True) - x @ dense).abs().max() < 1e-10


def test_block_transform_rejects_non_dividing_block() -> None:
    with pytest.raises(ValueError, match=r"block_size=48 .* 4864"):
        block_hadamard_transform(torch.randn(2, 4864), 48)


@pytest.mark.parametrize("n", [210, 577, 92, 188, 376, 0])
def test_no_construction_raises(n: int) -> None:
    assert not has_hadamard(n)
    assert hadamard_order_plan(n) is None
    with pytest.raises(ValueError, match=f"n={n}") as info:
        get_hadamard(n)
    if n > 0 and n % 2 == 0:
        assert "block-diagonal Hadamard with a power-of-two block" in str(info.value)
        assert "--hadamard_group_size" in str(info.value)


def test_resolve_full() -> None:
    for n in (4096, 11008, 14336, 576, 156):
        assert resolve_hadamard_size(n) == ("full", n)


def test_resolve_warns_and_falls_back_to_block() -> None:
    # 92, 184, 188, 376 are multiples of 4 not reachable by Paley / Goethals-Seidel / Kronecker products.
    for n, block in ((92, 4), (184, 8), (188, 4), (376, 8)):
        with pytest.warns(UserWarning, match=f"n={n}.*block size {block}"):
            assert resolve_hadamard_size(n) == ("block", block)


def test_resolve_explicit_group() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_hadamard_size(11008, group_size=128) == ("block", 128)
        assert resolve_hadamard_size(188, group_size=4) == ("block", 4)
        assert resolve_hadamard_size(4864, group_size=76) == ("block", 76)
    with pytest.raises(ValueError, match=r"group size 48 .*n=4096"):
        resolve_hadamard_size(4096, group_size=48)
    with pytest.raises(ValueError, match="group size 1"):
        resolve_hadamard_size(4096, group_size=1)
    with pytest.raises(ValueError, match="n=94"):
        resolve_hadamard_size(188, group_size=94)


@pytest.mark.parametrize("n", [577, 4865, 210 + 1])
def test_resolve_odd_raises(n: int) -> None:
    with pytest.raises(ValueError, match=f"n={n}"):
        resolve_hadamard_size(n)
