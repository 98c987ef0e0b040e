"""LLM-FP4 search: known optima, pre-shift exactness, save/reload, main.py end to end, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

import main
from calib import fpq_search
from calib.fpq_search import (
    FPQConfig,
    StaticQuantizer,
    apply_fpq_params,
    configure_quantizers,
    fpq_calibrate,
    load_params,
    preshift_exponents,
    read_meta,
    rows_attention,
    sample_tokens,
    save_params,
    scale_to_exponent_bias,
    search_input_scale,
    search_linear,
    search_weight_scale,
)
from configs import QuantRecipe, RunConfig, qbits_recipe
from models import adapter_for
from pipeline import run
from quant_layers import QuantLinear, QuantSpec, Quantizer, ensure_quant_linear, install_attention_wrapper
from quant_layers.formats import FPFormat
from quant_layers.quantizer import QuantParams
from transforms import apply_transform

E2M1_CH = QuantSpec("fp", 4, exp_bits=2, granularity="channel")
E2M1_T = QuantSpec("fp", 4, exp_bits=2, granularity="tensor")
GAMMAS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]  # FPQConfig(search_intervals=(0.5, 2.0, 7)).gammas()


# ---------------------------------------------------------------------------------------
# The search itself.


def test_gamma_grid_and_exponent_bias_equivalence():
    assert FPQConfig(search_intervals=(0.5, 2.0, 7)).gammas() == GAMMAS
    assert len(FPQConfig().gammas()) == 100 and FPQConfig().gammas()[0] == 0.01 and FPQConfig().gammas()[-1] == 1.2
    # A scale is a real-valued exponent bias: the scaled grid is the grid of FPFormat(bias=...).
    q = Quantizer(E2M1_T)
    x = torch.randn(1, 1000) * 3
    for scale in (0.1, 0.37, 1.0, 2.9):
        fmt = FPFormat(2, 1, bias=scale_to_exponent_bias(scale, q.element))
        assert math.isclose(fmt.max_value, 6 * scale, rel_tol=1e-12)
        torch.testing.assert_close(q.quantize_with(x, _params(scale)), fmt.round(x), rtol=1e-6, atol=1e-6)


def _params(scale) -> QuantParams:
    return QuantParams(scale if isinstance(scale, torch.Tensor) else torch.tensor([[scale]]))


def test_weight_search_finds_the_known_per_channel_optimum():
    # Row 0 lies exactly on the E2M1 grid whose max value is 1.5 x its absmax, row 1 on the one
    # with max value 1.0 x absmax; every other candidate leaves a rounding error (checked below).
    rows = torch.tensor([[1, 0.75, 0.375, 0.125, -0.25], [1, 2 / 3, 1 / 6, 1 / 12, -0.5]])
    x = torch.eye(5)  # output = the weight itself, so the output error is the weight error
    q = Quantizer(E2M1_CH)
    for j, best in enumerate((1.5, 1.0)):
        errors = [((FPFormat.with_max_value(2, 1, g).round(rows[j]) - rows[j]) ** 2).sum().item() for g in GAMMAS]
        assert errors[GAMMAS.index(best)] == 0 and sorted(errors)[1] > 1e-3
    scale, gamma = search_weight_scale(rows, x, None, rows.T.clone(), q, GAMMAS)
    assert gamma.tolist() == [1.5, 1.0]
    assert torch.equal(scale, torch.tensor([[1.5 / 6], [1.0 / 6]]))
    assert torch.equal(q.quantize_with(rows, _params(scale)), rows)


def test_input_search_finds_the_known_per_tensor_optimum():
    x = torch.tensor([[1.0], [0.75], [0.375], [0.125], [-0.25]])
    w = torch.ones(1, 1)
    scale, gamma = search_input_scale(x, w, None, x.clone(), Quantizer(E2M1_T), GAMMAS)
    assert gamma == 1.5 and scale.item() == 0.25


@pytest.mark.parametrize("spec", [E2M1_CH, QuantSpec("int", 4, granularity="channel")])
def test_weight_search_is_the_argmin_of_a_brute_force_loop(spec):
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(6, 16, generator=gen), torch.randn(32, 16, generator=gen)
    target = x @ w.T
    q = Quantizer(spec)
    _, gamma = search_weight_scale(w, x, None, target, q, GAMMAS)

    def rounded(row: torch.Tensor, max_value: float) -> torch.Tensor:  # independent of Quantizer: bias / INT grid
        if spec.format == "fp":
            return FPFormat.with_max_value(2, 1, max_value).round(row)
        step = max_value / 7
        return torch.clamp(torch.round(row / step), -8, 7) * step

    for j in range(6):
        amax = w[j].abs().max().item()
        errs = [((target[:, j] - x @ rounded(w[j], g * amax)) ** 2).sum().item() for g in GAMMAS]
        assert gamma[j].item() == GAMMAS[min(range(len(GAMMAS)), key=errs.__getitem__)]


def test_search_linear_alternates_and_beats_minmax():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 32, generator=gen) * torch.logspace(-2, 1, 32)  # channels of very different ranges
    w = torch.randn(24, 32, generator=gen)
    cfg = FPQConfig(search_round=2, search_intervals=(0.3, 1.2, 40))
    for preshift in (False, True):
        p = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T),
                          dataclasses.replace(cfg, preshift=preshift))
        assert p.weight_scale.shape == (24, 1) and p.input_scale.shape == (1, 1)
        assert p.stats["rel_err"] < p.stats["rel_err_minmax"]
        assert (p.input_shift is not None) == preshift
    # Pre-shifting channels of very different ranges helps a per-tensor activation scale.
    base = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T), dataclasses.replace(cfg, preshift=False))
    shifted = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T), cfg)
    assert shifted.stats["rel_err"] < 0.8 * base.stats["rel_err"]


# ---------------------------------------------------------------------------------------
# Pre-shift.


def test_sample_tokens_keeps_the_peaks_and_estimates_the_error_without_bias():
    x = torch.randn(4000, 8)
    x[[7, 123, 2500], 3] = 50.0  # outlier tokens
    index, weight = sample_tokens(x, 400, torch.Generator().manual_seed(0))
    assert index.numel() == 400 == index.unique().numel()
    assert {7, 123, 2500} <= set(index[:100].tolist())  # the largest quarter is always in
    assert torch.all(weight[:100] == 1) and torch.allclose(weight[100:], torch.full((300,), 3900 / 300, dtype=weight.dtype))
    # The weighted sample estimates a sum over every token (here of x^2) within a few percent.
    total = x.double().pow(2).sum().item()
    estimate = (x[index].double().pow(2).sum(1) * weight).sum().item()
    assert abs(estimate - total) < 0.05 * total
    assert sample_tokens(x, 0) == (None, None) and sample_tokens(x, 4000) == (None, None)


def test_exact_search_scores_every_token_and_the_sample_agrees():
    torch.manual_seed(0)
    x = torch.randn(3000, 32) * torch.linspace(0.1, 4, 32)
    w = torch.randn(16, 32)
    exact = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T),
                          FPQConfig(search_round=1, search_intervals=(0.5, 1.2, 8), search_tokens=0))
    sampled = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T),
                            FPQConfig(search_round=1, search_intervals=(0.5, 1.2, 8), search_tokens=1024),
                            torch.Generator().manual_seed(0))
    assert exact.stats["search_tokens"] == 3000 and sampled.stats["search_tokens"] == 1024
    assert torch.equal(exact.input_shift, sampled.input_shift)  # from every token either way
    # Scored on a third of the tokens, the sample picks (nearly) the same scales.
    assert (exact.weight_scale == sampled.weight_scale).float().mean() >= 0.75
    assert sampled.stats["rel_err"] == pytest.approx(exact.stats["rel_err"], rel=0.2)


def test_candidate_cache_changes_nothing(monkeypatch):
    """Rounds reuse each candidate's quantized tensor; without the cache the result is bit-identical."""
    torch.manual_seed(0)
    x, w = torch.randn(600, 32) * torch.linspace(0.1, 4, 32), torch.randn(16, 32)
    cfg = FPQConfig(search_round=3, search_intervals=(0.3, 1.2, 10))
    cached = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T), cfg, torch.Generator().manual_seed(0))
    monkeypatch.setattr(fpq_search, "CANDIDATE_CACHE_BYTES", 0)
    plain = search_linear(w, None, x, Quantizer(E2M1_CH), Quantizer(E2M1_T), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(cached.weight_scale, plain.weight_scale) and torch.equal(cached.input_scale, plain.input_scale)
    assert len(cached.stats["round_seconds"]) == 3


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_rows_attention_equals_the_models_attention(tiny_models, family):
    """The K/V search's attention on sampled rows reproduces the model's own (causal, GQA)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family], dtype=torch.float64)
    adapter = adapter_for(model.config)
    install_attention_wrapper(model)
    attn = adapter.attention(adapter.decoder_layers(model)[0])
    seen = {}

    def probe(module, query, key, value, attention_mask, kwargs):
        seen.update(query=query, key=key, value=value, scaling=kwargs.get("scaling") or module.scaling)

    captured = {}
    attn.attention_probe = probe
    o_proj = attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda m, args: captured.setdefault("out", args[0]))
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    model(ids)
    handle.remove()
    positions = torch.tensor([0, 5, 11, 23])
    out = rows_attention(seen["query"][:, :, positions], seen["key"], seen["value"], positions, seen["scaling"])
    expected = captured["out"].reshape(2, 24, -1, out.shape[-1])[:, positions].transpose(1, 2)
    assert seen["query"].shape[1] > seen["key"].shape[1]  # GQA is exercised
    torch.testing.assert_close(out.double(), expected.double(), rtol=1e-5, atol=1e-5)


def test_preshift_exponents_keep_channels_within_the_tensor_range():
    x = torch.tensor([[8.0, -1.0, 0.3, 0.0, 0.01], [1.0, 2.5, -0.2, 0.0, 0.0]])
    k = preshift_exponents(x, E2M1_T)
    assert k.dtype == torch.int8 and k.tolist() == [0, 1, 3, 0, 3]  # E2: shifts clamped to 2^2 - 1 = 3
    assert preshift_exponents(x, QuantSpec("fp", 8, exp_bits=4, granularity="tensor")).tolist() == [0, 1, 4, 0, 9]
    k = preshift_exponents(x, QuantSpec("fp", 8, exp_bits=4, granularity="tensor"))
    m = x.abs().amax(0) * torch.exp2(k.float())  # each nonzero channel lands in (max / 2, max]
    assert ((m > 4) & (m <= 8) | (m == 0)).all()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("transform", ["identity", "hadamard"])
def test_preshift_is_exact_without_quantization(tiny_models, transform):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    apply_transform(model, adapter, transform)
    ids = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(0))
    ref = _logits(model, ids)
    gen = torch.Generator().manual_seed(1)
    for layer in adapter.decoder_layers(model):
        for name in adapter.linear_names():
            linear = ensure_quant_linear(layer, name)
            k = torch.randint(0, 8, (linear.in_features,), generator=gen, dtype=torch.int8)
            linear.weight.data *= torch.exp2(-k.float())  # the fold, as apply_linear_params does it
            linear.act_quantizer = StaticQuantizer(None, None, k)  # shift only, no rounding
    assert torch.equal(_logits(model, ids), ref)


# ---------------------------------------------------------------------------------------
# Block-by-block calibration, save and reload.

SMALL = FPQConfig(search_round=2, search_intervals=(0.3, 1.2, 10), calib_size=3)
W4A4KV4_FP = dict(weight=E2M1_CH, activation=E2M1_T, key=E2M1_T, value=E2M1_T)


def _prepared(path: str, recipe: QuantRecipe):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    apply_transform(model, adapter, recipe.transform)
    configure_quantizers(model, adapter, recipe.weight, recipe.activation, recipe.key, recipe.value, recipe.fpq)
    return model, adapter


@pytest.mark.parametrize("family, transform", [("llama", "identity"), ("qwen2", "identity"), ("qwen3", "hadamard")])
def test_saved_search_reloads_bit_identical(tiny_models, tmp_path, family, transform):
    recipe = QuantRecipe(**W4A4KV4_FP, method="fpq", fpq=SMALL, transform=transform)
    ids = torch.randint(0, 2048, (3, 32), generator=torch.Generator().manual_seed(0))
    model, adapter = _prepared(tiny_models[family], recipe)
    params, report = fpq_calibrate(model, adapter, ids, "cpu", recipe.fpq, batch_size=2)
    assert len(report.per_linear) == 14 and len(report.kv) == 2
    assert all(v["rel_err"] < 0.5 for v in report.per_linear.values())
    path = save_params(str(tmp_path / "p.safetensors"), params, {"format": "x"})
    assert json.loads((tmp_path / "p.json").read_text()) == {"format": "x"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []

    fresh, adapter = _prepared(tiny_models[family], recipe)
    apply_fpq_params(fresh, adapter, load_params(path))
    test_ids = torch.randint(0, 2048, (2, 40), generator=torch.Generator().manual_seed(5))
    assert torch.equal(_logits(fresh, test_ids), _logits(model, test_ids))
    attn = adapter.attention(adapter.decoder_layers(fresh)[0])
    assert isinstance(attn.key_quantizer, StaticQuantizer) and attn.key_quantizer.scale.numel() == 1

    # A recipe quantizing fewer tensors does not silently load the file.
    other, adapter = _prepared(tiny_models[family], dataclasses.replace(recipe, key=None, value=None))
    with pytest.raises(ValueError, match="does not quantize"):
        apply_fpq_params(other, adapter, load_params(path))


def test_module_bits_overrides(tiny_models):
    fpq = dataclasses.replace(SMALL, module_bits=(("layers.*.mlp.down_proj.*", 8, 4), ("layers.1.*", 16, 0),
                                                  ("layers.0.self_attn.key", 6, 0)))
    recipe = QuantRecipe(**W4A4KV4_FP, method="fpq", fpq=fpq)
    model, adapter = _prepared(tiny_models["llama"], recipe)
    l0, l1 = adapter.decoder_layers(model)
    assert l0.mlp.down_proj.weight_quantizer.spec.label == "e4m3-ch"
    assert l0.mlp.down_proj.act_quantizer.spec.label == "e4m3-t"
    assert l0.mlp.up_proj.weight_quantizer.spec.label == "e2m1-ch"
    assert l0.self_attn.key_quantizer.spec.label == "int6-t" and l0.self_attn.value_quantizer.spec.label == "e2m1-t"
    assert not isinstance(l1.mlp.up_proj, QuantLinear) and l1.self_attn.key_quantizer is None  # left alone
    assert QuantRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert "-mb" in recipe.label
    with pytest.raises(ValueError, match="module_bits 'x': .*exponent bits"):
        FPQConfig(module_bits=(("x", 4, 5),))


def test_presets_and_labels():
    fpq = qbits_recipe("FPQ_config_llama", [4, 4, 4, 2, 2, 2])
    base = qbits_recipe("FPQ_baseline_config_llama", [4, 4, 4, 2, 2, 2])
    mm = qbits_recipe("MinMax_config_llama", [4, 4, 4, 2, 2, 2])
    assert fpq.fpq.preshift and fpq.fpq.search and not base.fpq.preshift and not mm.fpq.search
    assert fpq.label == "W[e2m1-ch]A[e2m1-t]K[e2m1-t]V[e2m1-t]-fpq-r3"
    assert base.label.endswith("-fpq_baseline-r3") and mm.label.endswith("-minmax")
    for r in (fpq, base, mm):
        assert QuantRecipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError, match="symmetric FP/INT scales"):
        QuantRecipe(weight=QuantSpec("nvfp", 4), method="fpq")
    with pytest.raises(ValueError, match="not per token"):
        QuantRecipe(activation=QuantSpec("fp", 4, granularity="token"), method="fpq")


# ---------------------------------------------------------------------------------------
# main.py end to end on TinyStories.


def _main_args(tinystories_dir, data_dir, out, *extra) -> list[str]:
    return ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
            "--calib_dataset", "tinystories", "--seqlen", "128", "--eval_limit", "2", "--calib_batch_size", "4",
            "--device", "cpu", "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def fpq_search_run(tinystories_dir, data_dir, tmp_path_factory):
    """One FPQ search through main.py (--calib_size 4 --search_round 1): its output dir and result."""
    out = tmp_path_factory.mktemp("fpq")
    rc = main.main(_main_args(tinystories_dir, data_dir, out, "--quant_config", "FPQ_config_llama",
                              "--qbits", "4", "4", "4", "2", "2", "2", "--calib_size", "4", "--search_round", "1",
                              "--run_name", "fpq"))
    assert rc == 0
    return out, json.loads((out / "fpq.json").read_text())


def test_main_fpq_end_to_end_beats_minmax_and_reloads(fpq_search_run, tinystories_dir, data_dir):
    out, result = fpq_search_run
    path = result["calibration"]["ptq_param_path"]
    assert os.path.basename(path) == ("W4A4KV4_E2E2E2_search_round1_search_intervals(0.01,1.2,100)"
                                      "_search_tokens256_calib(tinystories,4x128,seed0).safetensors")
    assert os.path.dirname(path) == str(out / "search_result" / "tinystories-656k" / "fpq")
    meta = read_meta(path)
    assert meta["model"]["hidden_size"] == 128 and meta["recipe"]["fpq"]["search_round"] == 1
    assert json.loads(open(path.replace(".safetensors", ".json")).read()) == meta
    calib = result["calibration"]
    assert len(calib["per_linear"]) == 14 and set(calib["kv"]) == {"layers.0.self_attn", "layers.1.self_attn"}
    assert result["recipe"]["method"] == "fpq" and result["config"]["quant_label"].endswith("-fpq-r1")

    rc = main.main(_main_args(tinystories_dir, data_dir, out, "--quant_config", "MinMax_config_llama",
                              "--qbits", "4", "4", "4", "2", "2", "2", "--calib_size", "4", "--run_name", "minmax"))
    assert rc == 0
    minmax = json.loads((out / "minmax.json").read_text())
    fpq_ppl, minmax_ppl = result["metrics"]["ppl"]["tinystories"], minmax["metrics"]["ppl"]["tinystories"]
    assert fpq_ppl < minmax_ppl, (fpq_ppl, minmax_ppl)
    assert minmax["calibration"]["ptq_param_path"].endswith(
        "minmax/W4A4KV4_E2E2E2_calib(tinystories,4x128,seed0).safetensors")

    # --only_eval reloads the saved parameters: the same fake-quantized model, the same perplexity.
    rc = main.main(_main_args(tinystories_dir, data_dir, out, "--quant_config", "FPQ_config_llama",
                              "--qbits", "4", "4", "4", "2", "2", "2", "--only_eval", "--ptq_param_path", path,
                              "--run_name", "reload"))
    assert rc == 0
    reload = json.loads((out / "reload.json").read_text())
    assert reload["metrics"] == result["metrics"]
    assert reload["recipe"]["fpq"]["search_round"] == 1  # the settings the parameters were searched with
    assert reload["calibration"]["loaded"] is True


def test_only_eval_refuses_other_qbits_and_models(fpq_search_run, tinystories_dir, data_dir, tiny_models, tmp_path,
                                                  capsys):
    out, result = fpq_search_run
    path = result["calibration"]["ptq_param_path"]
    fpq = ["--quant_config", "FPQ_config_llama", "--only_eval", "--ptq_param_path", path]
    cases = [
        (tinystories_dir, ["--qbits", "4", "4", "4", "3", "3", "3"],
         "different recipe (activation: e2m1-t (file) vs e3m0-t (now)"),
        (tinystories_dir, ["--qbits", "4", "4", "4"], "weight: e2m1-ch (file) vs int4-ch (now)"),
        (tinystories_dir, ["--qbits", "4", "4", "4", "2", "2", "2", "--rotate"], "transform: identity (file)"),
        (tiny_models["llama"], ["--qbits", "4", "4", "4", "2", "2", "2"], "searched on a different model"),
    ]
    # Same architecture, different weights: caught by the embeddings' fingerprint after loading.
    twin = tmp_path / "twin"
    shutil.copytree(tinystories_dir, twin)
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32)
    model.model.embed_tokens.weight.data[0] += 1
    model.save_pretrained(twin)
    cases.append((str(twin), ["--qbits", "4", "4", "4", "2", "2", "2"], "searched on different weights"))
    for model_dir, args, message in cases:
        rc = main.main(_main_args(model_dir, data_dir, tmp_path / "o", *fpq, *args))
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
        assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.json"))


@pytest.mark.parametrize("args, message", [
    (["--search_intervals", "1.2", "0.01", "100"], "needs 0 < γ1 < γ2"),
    (["--search_intervals", "0.5", "0.5", "100"], "needs 0 < γ1 < γ2"),
    (["--search_intervals", "0.01", "1.2", "1"], "integer n >= 2"),
    (["--search_intervals", "0.01", "1.2", "10.5"], "integer n >= 2"),
    (["--search_round", "0"], "--search_round must be an integer of at least 1, got 0"),
    (["--calib_size", "0"], "--calib_size must be at least 1"),
    (["--search_tokens", "-1"], "--search_tokens must be 0 (every token) or a positive count, got -1"),
    (["--only_eval"], "--only_eval needs --ptq_param_path PATH"),
    (["--ptq_param_path", "x.safetensors"], "--ptq_param_path is read with --only_eval"),
    (["--only_eval", "--ptq_param_path", "nowhere.safetensors"], "nowhere.safetensors not found"),
    (["--gptq"], "--gptq / the FlatQuant flags and --quant_config FPQ_config_llama both set the weights"),
])
def test_bad_fpq_input_fails_before_loading(args, message, tinystories_dir, data_dir, tmp_path, capsys):
    rc = main.main(_main_args(tinystories_dir, data_dir, tmp_path, "--quant_config", "FPQ_config_llama",
                              "--qbits", "4", "4", "4", "2", "2", "2", *args))
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert os.listdir(tmp_path) == []


def test_bad_search_intervals_count_and_only_eval_with_rtn(tinystories_dir, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: --search_intervals takes exactly 3 numbers
        main.main(_main_args(tinystories_dir, data_dir, tmp_path, "--quant_config", "FPQ_config_llama",
                             "--search_intervals", "0.01", "1.2"))
    assert exc.value.code == 2 and "expected 3 arguments" in capsys.readouterr().err
    rc = main.main(_main_args(tinystories_dir, data_dir, tmp_path, "--qbits", "4", "4", "4", "--only_eval",
                              "--ptq_param_path", "x.safetensors"))
    assert rc == 2 and "use --quant_config FPQ_config_llama" in capsys.readouterr().err


def test_search_after_hadamard_rotation(tinystories_dir, data_dir, tmp_path):
    recipe = dataclasses.replace(qbits_recipe("FPQ_config_llama", [4, 4, 4, 2, 2, 2]), transform="hadamard",
                                 fpq=dataclasses.replace(SMALL, calib_size=2, search_round=1))
    cfg = RunConfig(model=tinystories_dir, quant=recipe, data_dir=data_dir, ppl_datasets=("tinystories",), seqlen=128,
                    eval_limit=2, device="cpu", calib_dataset="tinystories", calib_batch_size=2,
                    output_dir=str(tmp_path))
    searched = run(cfg)
    path = searched.calibration["ptq_param_path"]
    assert "_hadamard_seed0" in path and searched.config["quant_label"].endswith("-hadamard-fpq-r1-g0.3_1.2_10")
    ppl = searched.metrics["ppl"]["tinystories"]
    assert math.isfinite(ppl) and 1 < ppl < 1000
    params = load_params(path)
    assert "layers.1.mlp.down_proj.input_shift" in params  # pre-shift after the online R4 rotation
    reloaded = run(dataclasses.replace(cfg, only_eval=True, ptq_param_path=path))
    assert reloaded.metrics == searched.metrics


def test_kv_search_needs_the_attention_wrapper(tiny_models):
    """K/V quantizers on an attention the KV-cache wrapper never reaches: a clear error, not a silent skip."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    adapter = adapter_for(model.config)
    recipe = qbits_recipe("FPQ_config_llama", [4, 4, 4, 2, 2, 2])
    configure_quantizers(model, adapter, recipe.weight, recipe.activation, recipe.key, recipe.value, recipe.fpq)
    model.config._attn_implementation = "sdpa"  # point the model back at the plain attention function
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with pytest.raises(RuntimeError, match="the attention never reached the KV-cache wrapper"):
        fpq_calibrate(model, adapter, ids, "cpu", recipe.fpq)
