"""Static NVFP4 activation tensor scales: the spec, the quantizer, the calibration and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from calib.tensor_scale import calibrate_static_tensor_scales, static_scale_linears
from configs import QuantRecipe
from models import adapter_for
from pipeline.fake_quant import attach_quantizers
from quant_layers import E2M1, E4M3, QuantLinear, QuantSpec, Quantizer, StaticTensorScale

NVFP4_STATIC = QuantSpec("nvfp", 4, static_tensor_scale=True)


def test_static_tensor_scale_is_nvfp4_activations_only():
    assert NVFP4_STATIC.label == "nvfp4-static" and QuantSpec("nvfp", 4).label == "nvfp4"
    with pytest.raises(ValueError, match="static tensor scale is NVFP4's second-level scale: use --format nvfp"):
        QuantSpec("int", 4, granularity="token", static_tensor_scale=True)
    with pytest.raises(ValueError, match="the weights keep their own absmax"):
        QuantRecipe(weight=NVFP4_STATIC)
    with pytest.raises(ValueError, match="the keys keep their own absmax"):
        QuantRecipe(key=NVFP4_STATIC)
    recipe = QuantRecipe(weight=QuantSpec("nvfp", 4), activation=NVFP4_STATIC)
    assert QuantRecipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.label.startswith("W[nvfp4]A[nvfp4-static]")


def test_static_scale_equals_dynamic_at_the_inputs_own_absmax_and_saturates_above_it():
    torch.manual_seed(0)
    x = torch.randn(6, 64)
    q = Quantizer(NVFP4_STATIC)
    assert torch.equal(StaticTensorScale(q, x.abs().amax())(x), q.fake_quantize(x))
    # A calibrated absmax a quarter of the input's: g = amax / (448 * 6); blocks beyond 448 g saturate there, and
    # their elements at 6, so nothing exceeds 6 * 448 * g = the calibrated absmax.
    amax = x.abs().amax() / 4
    y = StaticTensorScale(q, amax)(x)
    g = amax / (E4M3.max_value * E2M1.max_value)
    blocks = x.reshape(-1, 16)
    block_scale = E4M3.round(blocks.abs().amax(dim=1, keepdim=True) / E2M1.max_value / g) * g
    want = E2M1.round(blocks / block_scale) * block_scale
    assert torch.equal(y, want.reshape(x.shape))
    assert torch.isclose(y.abs().max(), amax, rtol=1e-6, atol=0) and (y.abs() == y.abs().max()).sum() > 1
    with pytest.raises(ValueError, match="takes each input's own tensor scale"):
        StaticTensorScale(Quantizer(QuantSpec("nvfp", 4)), amax)


def _fake_quantized(model_dir: str, recipe: QuantRecipe):
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    attach_quantizers(model, adapter_for(model.config), recipe)
    return model


def test_calibration_takes_each_linears_input_absmax_over_the_windows(tiny_models):
    recipe = QuantRecipe(weight=QuantSpec("nvfp", 4), activation=NVFP4_STATIC, quantize_lm_head=True)
    model = _fake_quantized(tiny_models["llama"], recipe)
    linears = static_scale_linears(model)
    assert len(linears) == 7 * model.config.num_hidden_layers + 1 and "lm_head" in linears
    windows = torch.randint(0, model.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    # The inputs the linears see unquantized while the rest of the model runs as the recipe says.
    seen = {name: 0.0 for name in linears}
    saved = {name: m.act_quantizer for name, m in linears.items()}
    for m in linears.values():
        m.act_quantizer = None
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(
        name, max(seen[name], float(args[0].abs().amax())))) for name, m in linears.items()]
    with torch.no_grad():
        for w in windows:
            model(w[None])
    for h in hooks:
        h.remove()
    for name, m in linears.items():
        m.act_quantizer = saved[name]

    amax = calibrate_static_tensor_scales(model, windows, batch_size=2)
    assert amax == pytest.approx(seen, rel=0, abs=0)
    for name, m in linears.items():
        assert isinstance(m.act_quantizer, StaticTensorScale) and float(m.act_quantizer.tensor_amax) == seen[name]
    assert static_scale_linears(model) == {} and calibrate_static_tensor_scales(model, windows) == {}
    with torch.no_grad():
        assert torch.isfinite(model(windows[:1]).logits).all()


def test_calibration_refuses_an_input_with_no_range(tiny_models):
    model = _fake_quantized(tiny_models["llama"], QuantRecipe(activation=NVFP4_STATIC))
    first = next(m for m in model.modules() if isinstance(m, QuantLinear))
    first.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    with pytest.raises(ValueError, match="--calib_batch_size must be at least 1, got 0"):
        calibrate_static_tensor_scales(model, torch.zeros(1, 8, dtype=torch.long), batch_size=0)
    with pytest.raises(ValueError, match="absmax is zero or not finite"):
        calibrate_static_tensor_scales(model, torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="absmax is zero or not finite"):  # no window: nothing seen
        calibrate_static_tensor_scales(model, torch.zeros(0, 8, dtype=torch.long))
    assert isinstance(first.act_quantizer, Quantizer)  # nothing installed, the quantizers restored


def test_cli_static_nvfp4_activations_on_tinystories(tinystories_dir, data_dir, tmp_path, cli):
    common = ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories", "--seqlen", "128",
              "--eval_limit", "2", "--output_dir", str(tmp_path), "--format", "nvfp", "--w_bits", "4", "--a_bits", "4"]
    static = cli("model_quant.py", *common, "--a_static_tensor_scale", "--calib_dataset", "tinystories",
                 "--nsamples", "4", "--run_name", "static")
    dynamic = cli("model_quant.py", *common, "--run_name", "dynamic")
    assert static.returncode == dynamic.returncode == 0, static.stderr + dynamic.stderr
    assert "A[nvfp4-static]" in static.stdout
    result = json.loads((tmp_path / "static.json").read_text())
    amax = result["calibration"]["static_tensor_amax"]
    assert len(amax) == 7 * 2 and all(v > 0 for v in amax.values())  # every decoder linear of the 2 blocks
    assert result["recipe"]["activation"]["static_tensor_scale"] is True and result["timings"]["tensor_scale_s"] > 0
    ppl = {n: json.loads((tmp_path / f"{n}.json").read_text())["metrics"]["ppl"]["tinystories"]
           for n in ("static", "dynamic")}
    assert ppl["static"] != ppl["dynamic"] and abs(ppl["static"] / ppl["dynamic"] - 1) < 0.25


@pytest.mark.parametrize("args, message", [
    (["--a_static_tensor_scale"], "--a_static_tensor_scale calibrates NVFP4 activations' tensor scale"),
    (["--format", "int", "--a_bits", "4", "--a_static_tensor_scale"], "use --format nvfp"),
])
def test_cli_refuses_static_scales_it_cannot_take(args, message, tinystories_dir, tmp_path, cli):
    out = cli("model_quant.py", "--model", tinystories_dir, "--ppl_datasets", "none", "--seqlen", "128",
              "--output_dir", str(tmp_path), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_gptq_then_static_scales(tinystories_dir, data_dir, tmp_path, cli):
    """GPTQ's layer-by-layer runner keeps the model on the CPU block by block; the static scales are calibrated on
    the whole quantized model after it, and both reports are kept."""
    out = cli("model_quant.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
              "--seqlen", "128", "--eval_limit", "2", "--output_dir", str(tmp_path), "--format", "nvfp", "--w_bits",
              "4", "--a_bits", "4", "--gptq", "--a_static_tensor_scale", "--calib_dataset", "tinystories",
              "--nsamples", "2", "--run_name", "gptq_static")
    assert out.returncode == 0, out.stderr
    calibration = json.loads((tmp_path / "gptq_static.json").read_text())["calibration"]
    assert len(calibration["per_linear"]) == len(calibration["static_tensor_amax"]) == 7 * 2
