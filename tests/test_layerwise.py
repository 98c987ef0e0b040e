"""The layer-by-layer calibration runner: RTN/GPTQ through it, resume, offload, errors."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

import calib.layerwise as layerwise
from calib.gptq import GPTQConfig
from calib.layerwise import CalibrationReport, LayerwiseConfig, calibrate_layerwise
from calib.progress import MANIFEST
from calib.rtn import quantize_weights_rtn
from configs.recipe import QuantRecipe
from models.adapter import adapter_for
from pipeline.fake_quant import attach_quantizers
from quant_layers.linear import QuantLinear
from quant_layers.quantizer import QuantSpec, Quantizer

W4 = QuantSpec("int", 4, granularity="channel")
W4A4KV4 = QuantRecipe(
    weight=W4,
    activation=QuantSpec("int", 4, granularity="token"),
    key=QuantSpec("int", 4, granularity="head"),
    value=QuantSpec("int", 4, granularity="head", symmetric=False),
)
FINGERPRINT = {"recipe": "w4-gptq", "model": "tiny-llama", "nsamples": 5, "seqlen": 32}


def load(path: str, recipe: QuantRecipe | None = W4A4KV4):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    if recipe is not None:
        attach_quantizers(model, adapter, recipe)
    return model, adapter


def calib_ids(nsamples: int = 5, seqlen: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2048, (nsamples, seqlen), generator=torch.Generator().manual_seed(seed))


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same_params(a: dict[str, torch.Tensor], model) -> None:
    b = dict(model.named_parameters())
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ: {different}"


def snapshot(directory) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gptq_reference(tiny_models, tmp_path_factory):
    """An uninterrupted GPTQ run on tiny Llama (uneven micro-batches: 5 windows by 2)."""
    progress = str(tmp_path_factory.mktemp("reference") / "progress")
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(batch_size=2, progress_dir=progress, fingerprint=FINGERPRINT)
    report = calibrate_layerwise(model, adapter, calib_ids(), torch.device("cpu"), config)
    return params(model), report, progress


def test_rtn_through_the_runner_equals_plain_rtn(tiny_models):
    recipe = QuantRecipe(weight=W4, activation=W4A4KV4.activation, quantize_lm_head=True)
    model, adapter = load(tiny_models["llama"], recipe)
    original = params(model)
    report = calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(method="rtn"))
    quantizer = Quantizer(W4)
    for layer_index, layer in enumerate(adapter.decoder_layers(model)):
        for name, linear in adapter.linears(layer).items():
            key = f"model.layers.{layer_index}.{name}.weight"
            assert torch.equal(linear.weight, quantizer(original[key])), key
    plain, _ = load(tiny_models["llama"], recipe)
    quantize_weights_rtn(plain)
    assert_same_params(params(plain), model)  # lm_head (quantize_lm_head) included
    assert report.blocks == 2 and report.resumed_blocks == 0
    assert len(report.per_linear) == 2 * 7 + 1 and "lm_head" in report.per_linear


def test_captured_block_inputs_match_the_hf_forward(tiny_models):
    """Capture + block-by-block propagation reproduces the model's own hidden states."""
    model, adapter = load(tiny_models["qwen2"], recipe=None)
    ids = calib_ids(5, 24)
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True, use_cache=False).hidden_states
        config = LayerwiseConfig(batch_size=2, offload_activations=True)
        layers = adapter.decoder_layers(model)
        acts = layerwise.capture_block_inputs(model, adapter, layers, ids, torch.device("cpu"), config)
        assert {k[1] for k in acts.block_inputs} == {2, 1}  # kwargs per micro-batch size
        assert not any(name in kw for _, kw in acts.block_inputs.values()
                       for name in ("cache", "past_key_values", "past_key_value"))
        torch.testing.assert_close(acts.hidden, expected[0], rtol=0, atol=0)
        acts.propagate(layers[0], 0, torch.device("cpu"))
        torch.testing.assert_close(acts.hidden, expected[1], rtol=1e-5, atol=1e-5)


def _logit_error(model, reference_logits, ids) -> float:
    with torch.no_grad():
        return float((model(ids, use_cache=False).logits - reference_logits).pow(2).mean())


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_gptq_through_the_runner_beats_rtn(family, tiny_models):
    ids = calib_ids(8, 64, seed=1)
    fp, _ = load(tiny_models[family], recipe=None)
    with torch.no_grad():
        reference = fp(ids, use_cache=False).logits
    weight_only = QuantRecipe(weight=W4)
    rtn, adapter = load(tiny_models[family], weight_only)
    calibrate_layerwise(rtn, adapter, ids, "cpu", LayerwiseConfig(method="rtn"))
    gptq, adapter = load(tiny_models[family], weight_only)
    original = params(gptq)
    report = calibrate_layerwise(gptq, adapter, ids, "cpu", LayerwiseConfig(batch_size=4))

    assert _logit_error(gptq, reference, ids) < 0.8 * _logit_error(rtn, reference, ids)
    current = dict(gptq.named_parameters())
    linear_weights = [k for k in original if ".layers." in k and k.endswith("proj.weight")]
    assert len(linear_weights) == 14
    assert all(not torch.equal(original[k], current[k]) for k in linear_weights)
    assert set(report.per_linear) == {
        f"layers.{i}.{name}" for i in range(2) for name in adapter.linear_names()
    }
    for stats in report.per_linear.values():
        assert {"damp", "escalations", "loss", "seconds"} <= set(stats) and stats["damp"] > 0
    assert isinstance(report, CalibrationReport) and report.peak_gpu_bytes is None
    assert report.peak_cpu_rss_bytes > 0 and json.dumps(report.to_dict())
    assert all(p.device.type == "cpu" for p in gptq.parameters())


def test_quantizers_and_devices_are_restored(tiny_models):
    model, adapter = load(tiny_models["llama"])
    def quantizers():
        names = ("act_quantizer", "key_quantizer", "value_quantizer")
        return {id(m): tuple(getattr(m, n, None) for n in names) for m in model.modules()}

    before = quantizers()
    devices = {k: v.device for k, v in model.named_parameters()}
    calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(method="rtn"))
    after = quantizers()
    assert before == after
    assert all(q is not None for q, _, _ in (after[id(m)] for m in model.modules() if isinstance(m, QuantLinear)))
    assert {k: v.device for k, v in model.named_parameters()} == devices
    assert all("forward" not in layer.__dict__ for layer in adapter.decoder_layers(model))
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tie kept


def test_group_passes_stop_after_the_group(tiny_models, monkeypatch):
    """A group's Hessian pass ends once the group has its input: later linears never run."""
    def rtn_instead(w, h, q, c, **kw):
        grouped = q.grouped(w)
        params = q.fit(grouped)
        return q.quantize_with(grouped, params).reshape(w.shape), {"seconds": 0.0}, params

    monkeypatch.setattr(layerwise, "gptq_quantize_with_params", rtn_instead)
    model, adapter = load(tiny_models["llama"])
    calls = {"o_proj": 0, "down_proj": 0}
    layer0 = adapter.decoder_layers(model)[0]
    for name in calls:
        layer0.get_submodule(f"{'self_attn' if name == 'o_proj' else 'mlp'}.{name}").register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    calibrate_layerwise(model, adapter, calib_ids(5, 16), "cpu", LayerwiseConfig(batch_size=2))
    spans = 3
    assert calls == {"o_proj": 3 * spans, "down_proj": spans}  # o: gate/up pass, down pass, output pass


def test_resume_after_a_crash_is_bit_identical(gptq_reference, tiny_models, tmp_path, monkeypatch):
    reference, _, reference_dir = gptq_reference
    manifest = json.loads(open(os.path.join(reference_dir, MANIFEST)).read())
    assert manifest["complete"] and manifest["finished_blocks"] == 2

    progress = str(tmp_path / "progress")
    config = LayerwiseConfig(batch_size=2, progress_dir=progress, fingerprint=FINGERPRINT)
    real = layerwise.gptq_quantize_with_params
    calls = []

    def crash_in_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4 + 2:  # block 0's four GPTQ problems (qkv, o, gate/up, down), two of block 1
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(layerwise, "gptq_quantize_with_params", crash_in_second_block)
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    monkeypatch.setattr(layerwise, "gptq_quantize_with_params", real)
    assert all(m.act_quantizer is not None for m in model.modules() if isinstance(m, QuantLinear))
    saved = json.loads(open(os.path.join(progress, MANIFEST)).read())
    assert saved["finished_blocks"] == 1 and not saved["complete"]
    assert sorted(os.listdir(progress)) == ["block_00000.safetensors", MANIFEST]  # no temporaries left

    model, adapter = load(tiny_models["llama"])  # a fresh process would start from scratch
    resumed = calibrate_layerwise(model, adapter, calib_ids(), "cpu", dataclasses.replace(config, resume=True))
    assert resumed.resumed_blocks == 1 and resumed.blocks == 2
    assert_same_params(reference, model)
    assert len(resumed.per_linear) == 14
    assert json.loads(open(os.path.join(progress, MANIFEST)).read())["complete"]

    # A complete directory resumes to the same weights without calibrating anything.
    model, adapter = load(tiny_models["llama"])
    again = calibrate_layerwise(model, adapter, calib_ids(), "cpu", dataclasses.replace(config, resume=True))
    assert again.resumed_blocks == 2
    assert_same_params(reference, model)
    assert_weights_reproduced_by_their_scales(model)


def assert_weights_reproduced_by_their_scales(model) -> None:
    """Every quantized linear carries the scales its weight was rounded with (what the exporter needs)."""
    linears = [m for m in model.modules() if isinstance(m, QuantLinear) and m.weight_quantizer is not None]
    assert linears
    for m in linears:
        q = m.weight_quantizer
        assert m.weight_params is not None
        rebuilt = q.quantize_with(q.grouped(m.weight.data), m.weight_params).reshape(m.weight.shape)
        assert torch.equal(rebuilt, m.weight.data.float())


def test_offloaded_activations_give_identical_weights(gptq_reference, tiny_models):
    reference, _, _ = gptq_reference
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(batch_size=2, offload_activations=True)
    calibrate_layerwise(model, adapter, calib_ids(), torch.device("cpu"), config)
    assert_same_params(reference, model)


def test_resume_refuses_other_settings_and_existing_progress(tiny_models, tmp_path):
    progress = str(tmp_path / "progress")
    ids = calib_ids()
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(method="rtn", progress_dir=progress, fingerprint=FINGERPRINT)
    calibrate_layerwise(model, adapter, ids, "cpu", config)
    files = snapshot(progress)
    assert set(files) == {"block_00000.safetensors", "block_00001.safetensors", MANIFEST}

    other = {**FINGERPRINT, "recipe": "w4-rtn-g128"}
    with pytest.raises(ValueError, match=r"recipe.*--output_dir.*--resume"):
        calibrate_layerwise(model, adapter, ids, "cpu",
                            LayerwiseConfig(method="rtn", progress_dir=progress, resume=True, fingerprint=other))
    with pytest.raises(ValueError, match=r"layerwise\.method"):
        calibrate_layerwise(model, adapter, ids, "cpu",
                            LayerwiseConfig(progress_dir=progress, resume=True, fingerprint=FINGERPRINT))
    assert snapshot(progress) == files

    with pytest.raises(ValueError, match=r"earlier run exists.*--resume.*--output_dir"):
        calibrate_layerwise(model, adapter, ids, "cpu",
                            LayerwiseConfig(method="rtn", progress_dir=progress, fingerprint=FINGERPRINT))
    assert snapshot(progress) == files


def test_gptq_settings_are_part_of_the_fingerprint(gptq_reference, tiny_models):
    _, _, reference_dir = gptq_reference
    files = snapshot(reference_dir)
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(gptq=GPTQConfig(percdamp=0.1), batch_size=2, progress_dir=reference_dir,
                             resume=True, fingerprint=FINGERPRINT)
    with pytest.raises(ValueError, match=r"layerwise\.gptq\.percdamp"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    config = LayerwiseConfig(batch_size=2, progress_dir=reference_dir, resume=True, fingerprint=FINGERPRINT)
    with pytest.raises(ValueError, match=r"calibration_ids"):
        calibrate_layerwise(model, adapter, calib_ids(seed=7), "cpu", config)
    assert snapshot(reference_dir) == files


def test_bad_input_is_refused_clearly(tiny_models):
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(ValueError, match="empty"):
        calibrate_layerwise(model, adapter, torch.zeros(0, 16, dtype=torch.long), "cpu", LayerwiseConfig())
    with pytest.raises(ValueError, match="needs calibration windows"):
        calibrate_layerwise(model, adapter, None, "cpu", LayerwiseConfig())
    with pytest.raises(ValueError, match=r"limit of 512.*lower --seqlen"):
        calibrate_layerwise(model, adapter, calib_ids(1, 513), "cpu", LayerwiseConfig())
    with pytest.raises(ValueError, match=r"unknown calibration method 'awq'.*gptq, rtn"):
        LayerwiseConfig(method="awq")
    config = LayerwiseConfig()
    config.method = "awq"
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    with pytest.raises(ValueError, match="batch size"):
        LayerwiseConfig(batch_size=0)
    with pytest.raises(ValueError, match="--resume needs"):
        LayerwiseConfig(resume=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_calibration_keeps_the_model_on_cpu_and_resumes_exactly(tiny_models, tmp_path, monkeypatch):
    cuda = torch.device("cuda")
    config = LayerwiseConfig(batch_size=2, progress_dir=str(tmp_path / "a"), fingerprint=FINGERPRINT)
    model, adapter = load(tiny_models["llama"])
    report = calibrate_layerwise(model, adapter, calib_ids(), cuda, config)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert report.peak_gpu_bytes > 0
    reference = params(model)

    model, adapter = load(tiny_models["llama"])
    calibrate_layerwise(model, adapter, calib_ids(), cuda, dataclasses.replace(config, progress_dir=None,
                                                                              offload_activations=True))
    assert_same_params(reference, model)

    crashed = dataclasses.replace(config, progress_dir=str(tmp_path / "b"))
    real = layerwise.gptq_quantize_with_params
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # inside block 1
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(layerwise, "gptq_quantize_with_params", crash)
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        calibrate_layerwise(model, adapter, calib_ids(), cuda, crashed)
    assert all(p.device.type == "cpu" for p in model.parameters())
    monkeypatch.setattr(layerwise, "gptq_quantize_with_params", real)
    model, adapter = load(tiny_models["llama"])
    resumed = calibrate_layerwise(model, adapter, calib_ids(), cuda, dataclasses.replace(crashed, resume=True))
    assert resumed.resumed_blocks == 1
    assert_same_params(reference, model)
