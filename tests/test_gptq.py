"""GPTQ on small layers: beats RTN for every format, stays on the grid, survives singular
Hessians; the Hessian accumulator; the Quantizer's fit / quantize_with split."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from calib.gptq import (
    GPTQConfig,
    GPTQStats,
    HessianAccumulator,
    gptq_quantize,
    gptq_quantize_with_params,
)
from quant_layers.quantizer import QuantParams, QuantSpec, Quantizer

OUT, IN, N = 64, 256, 512

INT4_CH = QuantSpec("int", 4)
SPECS = {
    "int4-ch": INT4_CH,
    "int4-ch-asym": QuantSpec("int", 4, symmetric=False),
    "int4-g32": QuantSpec("int", 4, granularity="group", group_size=32),
    "int4-g64-asym": QuantSpec("int", 4, granularity="group", group_size=64, symmetric=False),
    "int4-g32-mse": QuantSpec("int", 4, granularity="group", group_size=32, observer="mse"),
    "int4-t": QuantSpec("int", 4, granularity="tensor"),
    "e2m1-ch": QuantSpec("fp", 4),
    "e2m1-g32": QuantSpec("fp", 4, granularity="group", group_size=32),
    "nvfp4": QuantSpec("nvfp", 4),
    "mxfp4": QuantSpec("mxfp", 4),
}
VARIANTS = {
    "plain": GPTQConfig(),
    "act_order": GPTQConfig(act_order=True),
    "static": GPTQConfig(static_groups=True),
    "act_order+static": GPTQConfig(act_order=True, static_groups=True),
    "block16-f64": GPTQConfig(block_size=16, hessian_dtype="float64"),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: a single intra-op thread is ~10x faster than fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def layer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight, inputs with correlated, outlier and dead columns, and their Hessian."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 24, generator=g) @ torch.randn(24, IN, generator=g)  # strongly correlated
    x += 0.3 * torch.randn(N, IN, generator=g)
    x *= torch.exp(torch.randn(IN, generator=g))  # uneven column scales
    x[:, ::37] *= 8  # outlier channels
    x[:, 5] = 0  # a dead input
    w = torch.randn(OUT, IN, generator=g) * 0.05
    w[:, 7] *= 10
    acc = HessianAccumulator(IN)
    acc.add_batch(x)
    return w, x, acc.hessian


def output_error(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return (x @ (w - q).T).norm().item()


def assert_on_grid(quantizer: Quantizer, q: torch.Tensor, params: QuantParams) -> None:
    """Every group of q, re-quantized with the params GPTQ used, is unchanged, and q / scale
    (minus the zero point) lies on the element format's grid."""
    qg = quantizer.grouped(q)
    assert torch.equal(quantizer.quantize_with(qg, params), qg)
    scale = params.scale.expand_as(qg)
    levels = qg / torch.where(scale > 0, scale, torch.ones_like(scale))
    if params.zero is not None:
        levels = levels + params.zero
    grid = quantizer.element.grid().float()
    nearest = grid[(levels.unsqueeze(-1) - grid).abs().argmin(-1)]
    assert torch.allclose(levels, nearest, rtol=1e-5, atol=1e-5)


GROUPED = [name for name, spec in SPECS.items() if spec.granularity == "group"]
CASES = (
    [(name, "plain") for name in SPECS]
    + [(name, variant) for name in GROUPED for variant in VARIANTS if variant != "plain"]
    + [(name, "act_order") for name in ("int4-ch", "int4-ch-asym", "e2m1-ch", "int4-t")]
)


@pytest.mark.parametrize("name, variant", CASES)
def test_gptq_beats_rtn_and_stays_on_grid(name, variant):
    w, x, h = layer()
    quantizer = Quantizer(SPECS[name])
    w_before, h_before = w.clone(), h.clone()
    q, stats, params = gptq_quantize_with_params(w, h, quantizer, VARIANTS[variant])
    assert torch.equal(w, w_before) and torch.equal(h, h_before)  # inputs untouched
    assert q.shape == w.shape and q.dtype == w.dtype and torch.isfinite(q).all()
    assert (q[:, 5] == 0).all()  # dead input column
    assert stats.escalations == 0 and stats.loss > 0
    assert stats.damp == pytest.approx(0.01 * h.diagonal().mean().item(), rel=0.01)
    rtn = quantizer(w)
    # the inputs are strongly correlated: GPTQ lands at 0.09-0.26 of RTN's output error
    assert output_error(w, q, x) < 0.5 * output_error(w, rtn, x)
    assert_on_grid(quantizer, q, params)


def reference_gptq(w, h, quantizer, act_order, percdamp=0.01):
    """Textbook GPTQ/OBS in float64: explicit inverse, one column at a time, no Cholesky,
    no blocks, no permuted matrices; a group is fitted from the current weights when the
    first of its columns comes up."""
    W, H = w.double().clone(), h.double().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * H.diagonal().mean() * torch.eye(len(H), dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    g = quantizer.spec.group_length(W.shape[1]) or W.shape[1]
    tensor_amax = W.abs().amax().float()
    order = torch.argsort(H.diagonal(), descending=True).tolist() if act_order else range(W.shape[1])
    Q, params = torch.zeros_like(W), {}
    for j in order:
        k = j // g
        if k not in params:
            params[k] = quantizer.fit(W[:, k * g : (k + 1) * g].float(), tensor_amax)
        Q[:, j] = quantizer.quantize_with(W[:, j : j + 1].float(), params[k]).double()[:, 0]
        err = (W[:, j] - Q[:, j]) / Hinv[j, j]
        W -= err[:, None] * Hinv[j][None, :]
        Hinv -= Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]  # eliminate column j
    return Q.float()


@pytest.mark.parametrize("name, act_order", [
    ("int4-g32", False), ("int4-g32", True), ("int4-g64-asym", True), ("nvfp4", False), ("nvfp4", True),
    ("mxfp4", True), ("int4-ch", True),
])
def test_matches_textbook_reference(name, act_order):
    # block 32 with groups of 16/32/64 (and act_order scattering groups over blocks):
    # groups fitted mid-block must see the block's pending updates
    w, _, h = layer()
    quantizer = Quantizer(SPECS[name])
    q, _ = gptq_quantize(w, h, quantizer, GPTQConfig(act_order=act_order, block_size=32, hessian_dtype="float64"))
    ref = reference_gptq(w, h, quantizer, act_order)
    assert torch.allclose(q, ref, rtol=0, atol=1e-5 * w.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    w, x, h = layer()
    for name in ("int4-g32", "nvfp4"):
        quantizer = Quantizer(SPECS[name])
        config = GPTQConfig(act_order=True, hessian_dtype="float64")
        q_cpu, _ = gptq_quantize(w, h, quantizer, config)
        q_gpu, stats = gptq_quantize(w.cuda(), h.cuda(), quantizer, config)
        assert q_gpu.device.type == "cuda" and q_gpu.dtype == w.dtype and stats.escalations == 0
        q_gpu = q_gpu.cpu()
        # the same decisions up to rare near-ties flipped by different float summation order
        assert ((q_gpu - q_cpu).abs() > 1e-5 * w.abs().max()).float().mean() < 0.01
        assert output_error(w, q_gpu, x) == pytest.approx(output_error(w, q_cpu, x), rel=0.01)
    q_half, _ = gptq_quantize(w.cuda().half(), h.cuda(), quantizer, GPTQConfig())
    assert q_half.dtype == torch.float16 and q_half.device.type == "cuda"


def test_per_channel_int_levels_are_integers_in_range():
    w, _, h = layer()
    for spec, lo, hi in [(INT4_CH, -8, 7), (QuantSpec("int", 4, symmetric=False), 0, 15)]:
        q, _, params = gptq_quantize_with_params(w, h, Quantizer(spec), GPTQConfig(act_order=True))
        assert params.scale.shape == (OUT, 1)
        levels = q / params.scale + (0 if params.zero is None else params.zero)
        assert torch.allclose(levels, levels.round(), atol=1e-4)
        assert levels.round().min() >= lo and levels.round().max() <= hi


def test_nvfp4_tensor_scale_comes_from_the_whole_weight():
    w, _, h = layer()
    quantizer = Quantizer(QuantSpec("nvfp", 4))
    _, _, params = gptq_quantize_with_params(w, h, quantizer, GPTQConfig())
    global_scale = w.abs().amax() / (448 * 6)
    block = params.scale / global_scale  # every block scale is an E4M3 value
    assert torch.allclose(block, block.to(torch.float8_e4m3fn).float(), rtol=1e-5)
    assert params.scale.shape == (OUT * IN // 16, 1)


def test_gptq_quantize_matches_the_params_variant_and_keeps_dtype():
    w, _, h = layer()
    spec = QuantSpec("int", 4, granularity="group", group_size=32)
    q, stats = gptq_quantize(w, h, Quantizer(spec), GPTQConfig(act_order=True))
    q2, _, _ = gptq_quantize_with_params(w, h, Quantizer(spec), GPTQConfig(act_order=True))
    assert isinstance(stats, GPTQStats) and stats.seconds >= 0 and torch.equal(q, q2)
    qb, _ = gptq_quantize(w.bfloat16(), h, Quantizer(spec), GPTQConfig())
    assert qb.dtype == torch.bfloat16 and qb.shape == w.shape


def test_singular_hessian_escalates_damping(caplog):
    g = torch.Generator().manual_seed(1)
    x = torch.outer(torch.randn(64, generator=g), torch.randn(IN, generator=g))  # rank 1
    acc = HessianAccumulator(IN)
    acc.add_batch(x)
    w = torch.randn(OUT, IN, generator=g)
    with caplog.at_level(logging.WARNING, logger="calib.gptq"):
        q, stats = gptq_quantize(w, acc.hessian, Quantizer(INT4_CH), GPTQConfig(percdamp=0.0))
    assert stats.escalations > 0 and stats.damp > 0
    assert sum("Cholesky" in r.getMessage() for r in caplog.records) == stats.escalations
    assert torch.isfinite(q).all()


def test_hopeless_hessians_are_clear_errors():
    h = torch.full((32, 32), 10.0) - 9.0 * torch.eye(32)  # unit diagonal, eigenvalue -9
    w = torch.randn(4, 32)
    with pytest.raises(RuntimeError, match="Cholesky factorisation failed"):
        gptq_quantize(w, h, Quantizer(INT4_CH), GPTQConfig(percdamp=0.0))
    with pytest.raises(ValueError, match="non-finite"):
        gptq_quantize(w, torch.full((32, 32), float("nan")), Quantizer(INT4_CH), GPTQConfig())
    with pytest.raises(ValueError, match="does not match"):
        gptq_quantize(w, torch.eye(16), Quantizer(INT4_CH), GPTQConfig())
    with pytest.raises(ValueError, match="does not divide"):
        gptq_quantize(w, torch.eye(32), Quantizer(QuantSpec("int", 4, granularity="group", group_size=12)), GPTQConfig())


def test_hessian_accumulator_equals_one_shot():
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(3, 7, 48, generator=g), torch.randn(5, 48, generator=g).bfloat16(), torch.randn(0, 48), torch.randn(2, 11, 48, generator=g)]
    acc = HessianAccumulator(48, dtype=torch.float64)
    for b in batches:
        acc.add_batch(b)
    x = torch.cat([b.reshape(-1, 48).double() for b in batches])
    assert acc.nsamples == x.shape[0] == 21 + 5 + 22
    assert torch.allclose(acc.hessian, 2 / x.shape[0] * x.T @ x, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="in_features=48"):
        acc.add_batch(torch.randn(4, 32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_size=0), "block size"),
    (dict(block_size=2.5), "block size"),
    (dict(percdamp=-0.1), "percdamp"),
    (dict(percdamp=float("nan")), "percdamp"),
    (dict(hessian_dtype="float16"), "unknown Hessian dtype"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTQConfig(**kwargs)


@pytest.mark.parametrize("spec", [
    INT4_CH, QuantSpec("int", 4, symmetric=False, observer="mse"), QuantSpec("int", 8, granularity="group", group_size=32),
    QuantSpec("fp", 4, observer="mse", clip_ratio=0.9), QuantSpec("fp", 8, exp_bits=4, granularity="tensor"),
    QuantSpec("nvfp", 4), QuantSpec("nvfp", 4, observer="mse"), QuantSpec("mxfp", 4), QuantSpec("mxfp", 6),
])
def test_fit_then_quantize_with_is_fake_quantize(spec):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 128, generator=g) * torch.rand(6, 1, generator=g) * 10
    x[0, :3] *= 30
    q = Quantizer(spec)
    xg = q.grouped(x)
    params = q.fit(xg)
    assert params.scale.shape == (xg.shape[0], 1)
    assert (params.zero is None) == spec.symmetric
    assert torch.equal(q.quantize_with(xg, params).reshape(x.shape), q.fake_quantize(x))
    # NVFP4's tensor scale can come from outside (GPTQ passes the whole weight's amax)
    if spec.format == "nvfp":
        wide = q.fit(xg, tensor_amax=xg.abs().amax() * 3)
        assert not torch.equal(wide.scale, params.scale)


@pytest.mark.parametrize("name", ["int4-g32", "nvfp4", "e2m1-ch"])
def test_stacked_rows_equal_separate_calls(name):
    """Linears sharing a Hessian can be stacked by rows, each row keeping its own tensor amax."""
    w, _, h = layer()
    w = w.clone()
    w2 = torch.randn(OUT // 2, IN, generator=torch.Generator().manual_seed(1)) * 0.3
    w[:, 5] = 0  # keep the dead input's column out of the tensor amax of either weight
    w2[:, 5] = 0
    quantizer = Quantizer(SPECS[name])
    alone = torch.cat([gptq_quantize(x, h, quantizer, GPTQConfig())[0] for x in (w, w2)])
    row_amax = torch.cat([x.abs().amax().expand(x.shape[0], 1) for x in (w, w2)])
    stacked, _ = gptq_quantize(torch.cat([w, w2]), h, quantizer, GPTQConfig(), tensor_amax=row_amax)
    assert torch.allclose(stacked, alone, atol=1e-6)
