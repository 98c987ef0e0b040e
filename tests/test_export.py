"""Real-quantized checkpoints: packing, export -> load round trips, refusals of bad input."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import export.checkpoint as checkpoint
import main
import model_quant
from calib.fpq_search import StaticQuantizer
from calib.gptq import GPTQConfig
from calib.layerwise import LayerwiseConfig, calibrate_layerwise
from calib.rtn import quantize_weights_rtn
from calib.tensor_scale import calibrate_static_tensor_scales
from configs import RunConfig
from configs.recipe import QuantRecipe
from export import export_quantized, load_quantized
from models.adapter import adapter_for
from pipeline.fake_quant import attach_quantizers
from quant_layers.formats import E2M1
from quant_layers.fused_linear import _fusable
from quant_layers.packing import INT4, code_values, decode, encode, pack, unpack
from quant_layers.quantizer import QuantSpec
from quant_layers.real_linear import RealQuantLinear, RealQuantScheme
from transforms import apply_transform


def test_codes_are_the_formats_bit_patterns():
    assert encode(torch.tensor([0.0, 1.0, 7.0, -1.0, -8.0]), INT4).tolist() == [0, 1, 7, 15, 8]
    assert encode(torch.tensor([0.0, 0.5, 1.5, 6.0, -0.5, -6.0, -0.0]), E2M1).tolist() == [0, 1, 3, 7, 9, 15, 0]
    assert pack(torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)).tolist() == [[0x21, 0x0F]]


@pytest.mark.parametrize("element", [INT4, E2M1])
def test_pack_round_trip(element):
    values = code_values(element)[torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(0))]
    codes = encode(values, element)
    assert torch.equal(unpack(pack(codes)), codes)
    assert torch.equal(decode(codes, element), values)


def test_encoding_refuses_values_off_the_grid():
    with pytest.raises(ValueError, match="quantize the tensor first"):
        encode(torch.tensor([0.7]), E2M1)
    with pytest.raises(ValueError, match="quantize the tensor first"):
        encode(torch.tensor([9.0]), INT4)
    with pytest.raises(ValueError, match="even last dimension"):
        pack(torch.zeros(3, dtype=torch.uint8))


def spec(fmt: str, granularity: str, **kw) -> QuantSpec:
    return QuantSpec(fmt, 4, exp_bits=2 if fmt == "fp" else None, granularity=granularity, **kw)


RECIPES = {
    "int4-w4a4": QuantRecipe(weight=spec("int", "channel"), activation=spec("int", "token", clip_ratio=0.9)),
    "int4-g64-w4a16": QuantRecipe(weight=spec("int", "group", group_size=64)),
    "int4-w4a16": QuantRecipe(weight=spec("int", "channel")),  # on the FPx kernels, INT4 levels
    "nvfp4-w4a16": QuantRecipe(weight=QuantSpec("nvfp", 4)),  # E2M1 in groups of 16, their scales kept E4M3
    "mxfp4-w4a16": QuantRecipe(weight=QuantSpec("mxfp", 4)),
    "e2m1-w4a4kv4-hadamard": QuantRecipe(weight=spec("fp", "channel"), activation=spec("fp", "token"),
                                         key=QuantSpec("int", 4, granularity="head"),
                                         value=QuantSpec("int", 4, granularity="head", symmetric=False),
                                         transform="hadamard"),
    "nvfp4-w4a4-gptq": QuantRecipe(weight=QuantSpec("nvfp", 4), activation=QuantSpec("nvfp", 4), method="gptq",
                                   gptq=GPTQConfig()),
    "mxfp4-w4a4": QuantRecipe(weight=QuantSpec("mxfp", 4), activation=QuantSpec("mxfp", 4)),
    "nvfp4-static-w4a4": QuantRecipe(weight=QuantSpec("nvfp", 4),
                                     activation=QuantSpec("nvfp", 4, static_tensor_scale=True)),
    "fp6-e3m2-weight-only": QuantRecipe(weight=QuantSpec("fp", 6, exp_bits=3, granularity="channel")),
    "fp5-e2m2-weight-only": QuantRecipe(weight=QuantSpec("fp", 5, exp_bits=2, granularity="channel")),
    "fp4-e2m1-weight-only": QuantRecipe(weight=spec("fp", "channel")),
    "int8-w8a8": QuantRecipe(weight=QuantSpec("int", 8, granularity="channel"),
                             activation=QuantSpec("int", 8, granularity="token")),
}


def fake_quantized(path: str, recipe: QuantRecipe):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    apply_transform(model, adapter, recipe.transform, seed=0)
    attach_quantizers(model, adapter, recipe)
    if recipe.method == "gptq":
        ids = torch.randint(0, 2048, (4, 32), generator=torch.Generator().manual_seed(0))
        calibrate_layerwise(model, adapter, ids, "cpu", LayerwiseConfig(method="gptq", gptq=recipe.gptq))
    else:
        quantize_weights_rtn(model)
    if recipe.activation is not None and recipe.activation.static_tensor_scale:
        windows = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(2))
        calibrate_static_tensor_scales(model, windows)
    return model


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def assert_same_logits(reference: torch.Tensor, loaded: torch.Tensor) -> None:
    """Equal to fp16 rounding: the kernels sum exact products, the fake model rounds each one."""
    error = (loaded - reference).abs().max() / reference.abs().max()
    assert error < 1e-3, f"relative logit error {error:.2e}"


@pytest.mark.parametrize("name", list(RECIPES))
def test_round_trip_reproduces_fake_quantized_logits(name, tiny_models, tmp_path):
    recipe = RECIPES[name]
    model = fake_quantized(tiny_models["llama"], recipe)
    ids = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = logits(model, ids)
    path = export_quantized(model, None, recipe, str(tmp_path / "ckpt"))
    loaded, _, qc = load_quantized(path)
    assert qc["recipe"] == json.loads(json.dumps(recipe.to_dict()))
    packed = [m for m in loaded.modules() if isinstance(m, RealQuantLinear)]
    # Per layer: q/k/v fused, o, gate/up fused, down.
    assert len(packed) == 8 and all(m.qweight.dtype == torch.uint8 for m in packed)
    assert_same_logits(reference, logits(loaded, ids))
    unfused = load_quantized(path, fuse=False)[0]
    assert len([m for m in unfused.modules() if isinstance(m, RealQuantLinear)]) == 14
    torch.testing.assert_close(logits(unfused, ids), logits(loaded, ids), rtol=1e-5, atol=1e-5)


def test_qwen2_biases_and_stored_scale_encodings(tiny_models, tmp_path):
    recipe = RECIPES["nvfp4-w4a4-gptq"]
    model = fake_quantized(tiny_models["qwen2"], recipe)
    ids = torch.randint(0, 2048, (1, 20), generator=torch.Generator().manual_seed(2))
    reference = logits(model, ids)
    path = export_quantized(model, None, recipe, str(tmp_path / "ckpt"))
    stored = load_file(os.path.join(path, "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj"
    assert stored[f"{q}.weight_scale"].dtype == torch.float8_e4m3fn
    assert stored[f"{q}.weight_scale"].shape == (128, 128 // 16)
    assert stored[f"{q}.weight_global_scale"].numel() == 1
    assert stored[f"{q}.qweight"].shape == (128, 64) and f"{q}.bias" in stored
    assert_same_logits(reference, logits(load_quantized(path)[0], ids))


def test_mxfp4_scales_are_e8m0_bytes(tiny_models, tmp_path):
    recipe = RECIPES["mxfp4-w4a4"]
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))
    scale = load_file(os.path.join(path, "model.safetensors"))["model.layers.0.mlp.down_proj.weight_scale"]
    assert scale.dtype == torch.uint8 and scale.shape == (128, 384 // 32)


def test_nvfp4_and_mxfp4_weights_keep_their_scale_encodings(tiny_models, tmp_path):
    """NVFP4 weights, weight-only or W4A4, hold the checkpoint's E4M3 scales and a global scale a row (fused q/k/v
    keep each part's), MXFP4 ones its E8M0 bytes, at a quarter of fp32's bytes; INT4 in groups keeps fp32 ones.
    Scales stored in another dtype than their scheme's encoding are refused."""
    paths = {}
    for name in ("nvfp4-w4a16", "mxfp4-w4a16", "nvfp4-w4a4-gptq", "int4-g64-w4a16"):
        recipe = RECIPES[name]
        paths[name] = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe,
                                       str(tmp_path / name))
    nvfp4 = load_quantized(paths["nvfp4-w4a16"])[0]
    stored = load_file(os.path.join(paths["nvfp4-w4a16"], "model.safetensors"))
    fused = nvfp4.model.layers[0].self_attn.q_proj.group.linear
    assert fused.weight_scale.dtype == torch.float8_e4m3fn and fused.weight_scale.shape == (128 + 2 * 64, 128 // 16)
    parts = [stored[f"model.layers.0.self_attn.{p}_proj.weight_global_scale"] for p in "qkv"]
    want = torch.cat([g.expand(rows) for g, rows in zip(parts, (128, 64, 64))])
    assert torch.equal(fused.weight_global_scale, want) and len(set(torch.cat(parts).tolist())) == 3
    assert torch.equal(fused.weight_scale[:128].view(torch.uint8),
                       stored["model.layers.0.self_attn.q_proj.weight_scale"].view(torch.uint8))
    mxfp4 = load_quantized(paths["mxfp4-w4a16"])[0]
    assert mxfp4.model.layers[0].mlp.down_proj.weight_scale.dtype == torch.uint8
    w4a4 = load_quantized(paths["nvfp4-w4a4-gptq"])[0].model.layers[0].mlp.down_proj
    assert w4a4.weight_scale.dtype == torch.float8_e4m3fn and w4a4.weight_global_scale.shape == (128,)
    int4 = load_quantized(paths["int4-g64-w4a16"])[0].model.layers[0].mlp.down_proj
    assert int4.weight_scale.dtype == torch.float32 and not hasattr(int4, "weight_global_scale")
    file = os.path.join(paths["nvfp4-w4a16"], "model.safetensors")
    stored["model.layers.0.mlp.up_proj.weight_scale"] = stored["model.layers.0.mlp.up_proj.weight_scale"].float()
    save_file(stored, file)
    with pytest.raises(ValueError, match=r"up_proj.weight_scale is torch.float32 \(384, 8\), its e4m3 scales need "
                                         r"torch.float8_e4m3fn \(384, 8\)"):
        load_quantized(paths["nvfp4-w4a16"])
    stored = load_file(file)
    stored["model.layers.0.mlp.up_proj.weight_scale"] = stored["model.layers.0.mlp.up_proj.weight_scale"].to(
        torch.float8_e4m3fn)
    stored["model.layers.0.mlp.up_proj.weight_global_scale"] = torch.ones(2)
    save_file(stored, file)
    with pytest.raises(ValueError, match=r"up_proj.weight_global_scale \(NVFP4's tensor scale\) is missing or not "
                                         "one value"):
        load_quantized(paths["nvfp4-w4a16"])


@pytest.mark.parametrize("name, code", [("nvfp4-w4a16", 0x7F), ("nvfp4-w4a16", 0x90), ("mxfp4-w4a4", 255)],
                         ids=["e4m3-nan", "e4m3-negative", "e8m0-nan"])
def test_scale_codes_that_are_no_scale_are_refused(name, code, tiny_models, tmp_path):
    """An encoded weight scale that is NaN (E4M3 S.1111.111, E8M0 255) or negative (E4M3's sign bit) is refused at
    load by name, before any kernel reads it."""
    recipe = RECIPES[name]
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))
    file = os.path.join(path, "model.safetensors")
    stored = load_file(file)
    key = "model.layers.1.mlp.up_proj.weight_scale"
    codes = stored[key].view(torch.uint8).clone()
    codes[3, 1] = code
    stored[key] = codes.view(stored[key].dtype)
    save_file(stored, file)
    with pytest.raises(ValueError, match=f"{key} holds .* codes that are NaN or negative, no scale"):
        load_quantized(path)


def test_sharded_checkpoint_loads_the_same(tiny_models, tmp_path):
    recipe = RECIPES["int4-w4a4"]
    model = fake_quantized(tiny_models["llama"], recipe)
    path = export_quantized(model, None, recipe, str(tmp_path / "ckpt"), shard_bytes=200_000)
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    assert len(files) > 1 and os.path.isfile(os.path.join(path, checkpoint.INDEX))
    ids = torch.randint(0, 2048, (1, 16), generator=torch.Generator().manual_seed(3))
    assert_same_logits(logits(model, ids), logits(load_quantized(path)[0], ids))


@pytest.fixture
def saved(tiny_models, tmp_path) -> str:
    recipe = RECIPES["int4-w4a4"]
    return export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))


def test_truncated_file_is_refused(saved):
    file = os.path.join(saved, "model.safetensors")
    data = open(file, "rb").read()
    open(file, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        load_quantized(saved)


def drop_tensor(checkpoint: str, key: str) -> None:
    """Rewrite a one-shard checkpoint without ``key``."""
    file = os.path.join(checkpoint, "model.safetensors")
    tensors = load_file(file)
    del tensors[key]
    save_file(tensors, file)


def test_missing_tensor_is_refused(saved):
    drop_tensor(saved, "model.layers.1.mlp.up_proj.qweight")
    with pytest.raises(ValueError, match="lacks model.layers.1.mlp.up_proj.qweight"):
        load_quantized(saved)


def test_static_tensor_scales_are_stored_and_needed(tiny_models, tmp_path):
    """Each linear's calibrated absmax travels as <name>.act_tensor_amax (q/k/v share theirs when fused); an
    uncalibrated model is refused before anything is written, and a checkpoint without the absmax on loading."""
    recipe = RECIPES["nvfp4-static-w4a4"]
    uncalibrated = fake_quantized(tiny_models["llama"], QuantRecipe(weight=recipe.weight))
    attach_quantizers(uncalibrated, adapter_for(uncalibrated.config), recipe)
    with pytest.raises(ValueError, match="static tensor scale was not calibrated"):
        export_quantized(uncalibrated, None, recipe, str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    model = fake_quantized(tiny_models["llama"], recipe)
    path = export_quantized(model, None, recipe, str(tmp_path / "ckpt"))
    stored = load_file(os.path.join(path, "model.safetensors"))
    q = model.get_submodule("model.layers.0.self_attn.q_proj").act_quantizer.tensor_amax
    assert torch.equal(stored["model.layers.0.self_attn.q_proj.act_tensor_amax"], q)
    fused = load_quantized(path)[0].get_submodule("model.layers.0.self_attn.q_proj").group.linear
    assert torch.equal(fused.act_tensor_amax, q) and fused.act_scheme.static_tensor_scale
    attention = load_quantized(path, fuse=False)[0].model.layers[0].self_attn
    parts = [attention.q_proj, attention.k_proj, attention.v_proj]
    assert _fusable(parts)
    parts[1].act_tensor_amax.mul_(2)  # inputs calibrated apart: not one product
    assert not _fusable(parts)
    drop_tensor(path, "model.layers.1.mlp.down_proj.act_tensor_amax")
    with pytest.raises(ValueError, match="down_proj.act_tensor_amax .* is missing"):
        load_quantized(path)


def test_newer_format_version_is_refused(saved):
    file = os.path.join(saved, "config.json")
    config = json.load(open(file))
    config["quantization_config"]["format_version"] = checkpoint.FORMAT_VERSION + 1
    json.dump(config, open(file, "w"))
    with pytest.raises(ValueError, match="update the harness"):
        load_quantized(saved)


def test_export_refuses_an_existing_directory_and_leaves_nothing_when_it_fails(tiny_models, tmp_path, monkeypatch):
    recipe = RECIPES["int4-w4a4"]
    model = fake_quantized(tiny_models["llama"], recipe)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        export_quantized(model, None, recipe, str(tmp_path / "taken"))

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_quantized(model, None, recipe, str(tmp_path / "new"))
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no checkpoint, no temporary directory


@pytest.mark.parametrize("recipe, message", [
    (QuantRecipe(weight=spec("int", "channel", symmetric=False)), "asymmetric"),
    (QuantRecipe(weight=spec("int", "channel"), activation=spec("int", "tensor")), "per-tensor activation"),
    (QuantRecipe(weight=QuantSpec("int", 8, granularity="channel")), "8-bit"),
    (QuantRecipe(weight=QuantSpec("fp", 6, exp_bits=3, granularity="channel"), activation=spec("fp", "token")),
     "6-bit"),
    (QuantRecipe(weight=spec("int", "channel"), activation=spec("int", "group", group_size=48)), "power-of-two"),
    (QuantRecipe(activation=spec("int", "token")), "4-bit weights"),
])
def test_unsupported_recipes_fail_before_loading(recipe, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(model="unused", quant=recipe, save_path="/nonexistent/ckpt")


def test_weights_without_recorded_scales_are_refused(tiny_models, tmp_path):
    recipe = RECIPES["int4-w4a4"]
    model = fake_quantized(tiny_models["llama"], recipe)
    model.model.layers[0].mlp.up_proj.weight_params = None
    with pytest.raises(ValueError, match="no recorded weight scales"):
        export_quantized(model, None, recipe, str(tmp_path / "ckpt"))
    assert not os.path.exists(tmp_path / "ckpt")


def _ppl(capsys) -> float:
    table = capsys.readouterr().out.strip().splitlines()[-1]
    return float(table.split("|")[3])


@pytest.mark.parametrize("static", [[], ["--a_static_tensor_scale", "--calib_dataset", "tinystories", "--nsamples",
                                         "2"]])
def test_cli_save_then_load_on_tinystories(static, tinystories_dir, data_dir, tmp_path, capsys):
    common = ["--data_dir", data_dir, "--seqlen", "128", "--eval_limit", "2", "--output_dir", str(tmp_path / "runs")]
    path = str(tmp_path / "ckpt")
    assert model_quant.main(["--model", tinystories_dir, "--format", "nvfp", "--w_bits", "4", "--a_bits", "4",
                             "--real_quant", "--save_path", path, *static, *common]) == 0
    fake = _ppl(capsys)
    assert AutoTokenizer.from_pretrained(path) is not None
    assert model_quant.main(["--load_quantized", path, *common]) == 0
    real = _ppl(capsys)
    assert abs(real - fake) / fake < 1e-3
    run = json.load(open(tmp_path / "runs" / "ckpt_real_quant.json"))
    assert run["config"]["real_quant"] and run["calibration"]["checkpoint"] == path


def test_main_quantized_save_default_path(tinystories_dir, data_dir, tmp_path):
    out = str(tmp_path / "runs")
    assert main.main(["--model", tinystories_dir, "--data_dir", data_dir, "--seqlen", "128", "--eval_limit", "1",
                      "--qbits", "4", "4", "16", "--quantized_save", "--output_dir", out, "--run_name", "w4a4"]) == 0
    assert os.path.isfile(os.path.join(out, "quantized", "w4a4", "config.json"))


def test_cli_refuses_an_existing_save_path_before_loading_the_model(tinystories_dir, data_dir, tmp_path, capsys,
                                                                     no_model_load):
    """An existing --save_path stops the run before the weights load (a calibration would be spent for nothing),
    with the export's message, and the directory is left as it was."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    assert model_quant.main(["--model", tinystories_dir, "--data_dir", data_dir, "--seqlen", "128", "--w_bits", "4",
                             "--gptq", "--calib_dataset", "tinystories", "--nsamples", "2", "--real_quant",
                             "--save_path", str(taken), "--output_dir", str(tmp_path / "runs")]) == 2
    assert "exists: choose a new directory (nothing was overwritten)" in capsys.readouterr().err
    assert os.listdir(taken) == ["mine.txt"] and (taken / "mine.txt").read_text() == "keep"


def test_loading_with_an_output_dir_that_cannot_hold_the_results_fails_before_the_model_loads(
        tinystories_dir, tmp_path, capsys, no_model_load):
    recipe = RECIPES["int4-w4a4"]
    path = export_quantized(fake_quantized(tinystories_dir, recipe), AutoTokenizer.from_pretrained(tinystories_dir),
                            recipe, str(tmp_path / "ckpt"))
    (tmp_path / "afile").write_text("not a directory")
    assert model_quant.main(["--load_quantized", path, "--ppl_datasets", "none", "--seqlen", "128",
                             "--output_dir", str(tmp_path / "afile")]) == 2
    assert f"--output_dir {tmp_path / 'afile'} is a file: choose a directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--real_quant"], "--real_quant and --save_path go together"),
    (["--load_quantized", "DIR", "--save_path", "x", "--real_quant"], "drop --save_path"),
])
def test_cli_flag_errors(argv, message, tinystories_dir, capsys):
    assert model_quant.main(["--model", tinystories_dir, "--w_bits", "4", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["int4-w4a4", "nvfp4-w4a4-rtn", "mxfp4-w4a4", "nvfp4-static-w4a4"])
def test_round_trip_on_the_tinystories_model(name, tinystories_dir, tmp_path):
    recipe = RECIPES.get(name) or QuantRecipe(weight=QuantSpec("nvfp", 4), activation=QuantSpec("nvfp", 4))
    model = fake_quantized(tinystories_dir, recipe)
    ids = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(4))
    reference = logits(model, ids)
    path = export_quantized(model, AutoTokenizer.from_pretrained(tinystories_dir), recipe, str(tmp_path / "ckpt"))
    assert_same_logits(reference, logits(load_quantized(path)[0], ids))


def test_generate_script(tinystories_dir, tmp_path, capsys):
    import scripts.generate as generate

    recipe = RECIPES["e2m1-w4a4kv4-hadamard"]
    path = export_quantized(fake_quantized(tinystories_dir, recipe), AutoTokenizer.from_pretrained(tinystories_dir),
                            recipe, str(tmp_path / "ckpt"))
    assert generate.main(["--load_quantized", path, "--prompt", "Once upon a time", "--max_new_tokens", "8",
                          "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Once upon a time") and "8 tokens" in captured.err
    assert "packed KV4 cache" in captured.err
    assert generate.main(["--load_quantized", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    for temperature in ("-1", "nan"):
        assert generate.main(["--load_quantized", path, "--temperature", temperature]) == 2
        assert "--temperature must be 0 (greedy) or more" in capsys.readouterr().err


def test_generate_from_a_static_cache_prints_the_same_text(tinystories_dir, tmp_path, capsys):
    """--static_cache (the CUDA-graph decode path; eager on the CPU) prints HF generate's greedy text."""
    import scripts.generate as generate

    recipe = RECIPES["e2m1-w4a4kv4-hadamard"]
    path = export_quantized(fake_quantized(tinystories_dir, recipe), AutoTokenizer.from_pretrained(tinystories_dir),
                            recipe, str(tmp_path / "ckpt"))
    texts = {}
    for flags in ([], ["--static_cache"]):
        assert generate.main(["--load_quantized", path, "--max_new_tokens", "12", "--device", "cpu", *flags]) == 0
        captured = capsys.readouterr()
        texts[tuple(flags)] = captured.out
    assert "static packed KV4 cache" in captured.err
    assert texts[("--static_cache",)] == texts[()] and len(texts[()].split()) > 8
    assert generate.main(["--load_quantized", path, "--compile", "--temperature", "0.7"]) == 2
    assert "decode greedily" in capsys.readouterr().err


def test_until_eos_cuts_after_the_first_generated_end():
    from scripts.generate import until_eos

    tokens = torch.tensor([[5, 2, 7, 2, 9]])
    assert until_eos(tokens, 2, eos=2).tolist() == [[5, 2, 7, 2]]  # the prompt's 2 does not count
    assert until_eos(tokens, 2, eos=4).tolist() == tokens.tolist()
    assert until_eos(tokens, 2, eos=None).tolist() == tokens.tolist()


def test_fp6_weights_are_stored_in_six_bits(tiny_models, tmp_path):
    recipe = RECIPES["fp6-e3m2-weight-only"]
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))
    stored = load_file(os.path.join(path, "model.safetensors"))
    up = "model.layers.0.mlp.up_proj"
    assert stored[f"{up}.qweight"].shape == (384, 64) and stored[f"{up}.qweight_high"].shape == (384, 32)
    loaded = load_quantized(path)[0]
    assert loaded.get_submodule(up).weight_scheme.element == "e3m2" and loaded.get_submodule(up).act_scheme is None


def test_uint4_codes_are_the_levels():
    from quant_layers.packing import UINT4

    levels = torch.arange(16).float()
    assert torch.equal(encode(levels, UINT4), torch.arange(16, dtype=torch.uint8))
    assert torch.equal(decode(encode(levels, UINT4), UINT4), levels)
    with pytest.raises(ValueError, match="uint4 encoding takes integers in"):
        encode(torch.tensor([16.0]), UINT4)


@pytest.mark.parametrize("recipe", [
    QuantRecipe(weight=spec("int", "channel"), activation=spec("int", "token"), quantize_lm_head=True),
    dataclasses.replace(RECIPES["fp6-e3m2-weight-only"], quantize_lm_head=True)], ids=["w4a4", "fp6-weight-only"])
def test_qwen3_with_a_quantized_lm_head(tiny_models, tmp_path, recipe):
    model = fake_quantized(tiny_models["qwen3"], recipe)
    ids = torch.randint(0, 2048, (1, 16), generator=torch.Generator().manual_seed(5))
    reference = logits(model, ids)
    loaded = load_quantized(export_quantized(model, None, recipe, str(tmp_path / "ckpt")))[0]
    assert isinstance(loaded.lm_head, RealQuantLinear)
    assert loaded.lm_head.schemes == loaded.model.layers[0].mlp.down_proj.schemes  # the decoder linears' scheme
    assert loaded.lm_head.qweight.data_ptr() != loaded.model.embed_tokens.weight.data_ptr()
    assert_same_logits(reference, logits(loaded, ids))


def test_lm_eval_on_a_loaded_checkpoint(tinystories_dir, data_dir, tmp_path, capsys):
    path = str(tmp_path / "ckpt")
    common = ["--data_dir", data_dir, "--seqlen", "128", "--output_dir", str(tmp_path / "runs")]
    assert model_quant.main(["--model", tinystories_dir, "--w_bits", "4", "--a_bits", "4", "--ppl_datasets", "none",
                             "--real_quant", "--save_path", path, *common]) == 0
    assert model_quant.main(["--load_quantized", path, "--ppl_datasets", "none", "--tasks", "piqa",
                             "--lm_eval_limit", "4", *common]) == 0
    run = json.load(open(tmp_path / "runs" / "ckpt_real_quant.json"))
    assert run["metrics"]["lm_eval"]["tasks"]["piqa"]["samples"] == 4


@pytest.mark.parametrize("knobs", [{}, {"FORMAT": "nvfp", "A_STATIC_SCALE": "1", "CALIB_DATASET": "tinystories",
                                      "NSAMPLES": "2"},
                                   {"FORMAT": "fp", "W_BITS": "6", "W_EXP_BITS": "2", "A_BITS": "16"}])
def test_quantize_script_save_path_knob(knobs, tinystories_dir, data_dir, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = str(tmp_path / "ckpt")
    env = {**os.environ, "MODEL": tinystories_dir, "DATA_DIR": data_dir, "SEQLEN": "128", "EVAL_LIMIT": "1",
           "W_BITS": "4", "A_BITS": "4", "SAVE_PATH": path, "OUTPUT_DIR": str(tmp_path / "runs"),
           "PYTHON": sys.executable, **knobs}
    subprocess.run(["bash", os.path.join(root, "scripts", "quantize.sh")], env=env, check=True, capture_output=True)
    recipe = load_quantized(path)[2]["recipe"]
    if "W_EXP_BITS" in knobs:  # FP6 E2M3 weight-only (6 bits default to E3M2)
        assert (recipe["weight"]["bits"], recipe["weight"]["exp_bits"], recipe["activation"]) == (6, 2, None)
    else:
        assert recipe["weight"]["bits"] == 4
        assert recipe["activation"]["static_tensor_scale"] == ("A_STATIC_SCALE" in knobs)


def test_loading_a_checkpoint_without_tokenizer_fails_before_the_model_loads(saved, tmp_path, capsys):
    assert model_quant.main(["--load_quantized", saved, "--ppl_datasets", "none", "--seqlen", "128"]) == 2
    assert "no tokenizer files" in capsys.readouterr().err


def _one_linear_changed(tiny_models, change):
    recipe = RECIPES["int4-w4a4"]
    model = fake_quantized(tiny_models["llama"], recipe)
    change(model.model.layers[0].mlp.up_proj)
    return model, recipe


@pytest.mark.parametrize("change, message", [
    (lambda m: m.weight.data.mul_(1.37), "not on the grid of its recorded scales"),
    (lambda m: setattr(m, "weight_quantizer", None), "quantizes its input but not its weight"),
    (lambda m: setattr(m, "act_quantizer", StaticQuantizer(m.act_quantizer, torch.ones(1))),
     "static per-tensor input scales"),
    (lambda m: setattr(m, "input_transform", torch.nn.Identity()), "cannot be exported"),
])
def test_export_refuses_linears_it_cannot_pack(change, message, tiny_models, tmp_path):
    model, recipe = _one_linear_changed(tiny_models, change)
    with pytest.raises(ValueError, match=message):
        export_quantized(model, None, recipe, str(tmp_path / "ckpt"))
    assert not os.path.exists(tmp_path / "ckpt")


def _edit_config(path: str, edit) -> None:
    file = os.path.join(path, "config.json")
    config = json.load(open(file))
    edit(config)
    json.dump(config, open(file, "w"))


def test_load_refusals(saved, tmp_path):
    file = os.path.join(saved, "model.safetensors")
    tensors = load_file(file)
    tensors["model.layers.0.mlp.up_proj.qweight"] = tensors["model.layers.0.mlp.up_proj.qweight"][:, :8].contiguous()
    save_file(tensors, file)
    with pytest.raises(ValueError, match="does not match its config"):
        load_quantized(saved)
    tensors = load_file(file)
    tensors["model.layers.0.mlp.up_proj.qweight"] = torch.zeros(384, 64, dtype=torch.uint8)
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, file)
    with pytest.raises(ValueError, match="has tensors this model does not"):
        load_quantized(saved)
    _edit_config(saved, lambda c: c.pop("quantization_config"))
    with pytest.raises(ValueError, match="is not a real-quantized checkpoint"):
        load_quantized(saved)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_quantized(str(tmp_path))


def test_missing_shard_is_refused(tiny_models, tmp_path):
    recipe = RECIPES["int4-w4a4"]
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"),
                            shard_bytes=200_000)
    os.remove(os.path.join(path, sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[-1]))
    with pytest.raises(FileNotFoundError, match="copy the whole checkpoint directory"):
        load_quantized(path)


def test_fp6_checkpoint_without_its_high_plane_is_refused(tiny_models, tmp_path):
    recipe = RECIPES["fp6-e3m2-weight-only"]
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))
    drop_tensor(path, "model.layers.0.mlp.up_proj.qweight_high")
    with pytest.raises(ValueError, match="qweight_high is missing or misshapen"):
        load_quantized(path)


def test_odd_input_dimension_cannot_be_packed():
    with pytest.raises(ValueError, match="even input dimension"):
        RealQuantLinear(7, 4, False, RealQuantScheme("int4"), None)


def test_weight_groups_must_divide_the_input_dimension():
    """SmolLM2's 576 features in GPTQ's groups of 128 would leave a partial group: refused when the linear is made
    (before a product fails on the scales' shape)."""
    with pytest.raises(ValueError, match="groups of 128 must divide the input dimension 576"):
        RealQuantLinear(576, 8, False, RealQuantScheme("int4", group=128), None)
    assert RealQuantLinear(576, 8, False, RealQuantScheme("int4", group=64), None).weight_scale.shape == (8, 9)


def test_main_save_path_needs_quantized_save(tinystories_dir, capsys):
    assert main.main(["--model", tinystories_dir, "--qbits", "4", "4", "16", "--save_path", "x"]) == 2
    assert "add --quantized_save" in capsys.readouterr().err


def test_generate_needs_new_tokens(saved, capsys):
    import scripts.generate as generate

    assert generate.main(["--load_quantized", saved, "--max_new_tokens", "0"]) == 2
    assert "--max_new_tokens must be at least 1" in capsys.readouterr().err


def test_fused_linears_serve_each_part_once_per_input():
    """The fused product is computed once per input, dropped after the last part, recomputed for a new input."""
    from quant_layers.fused_linear import FusedGroup

    gen = torch.Generator().manual_seed(3)
    parts = []
    for rows, bias in ((32, True), (16, False)):
        part = RealQuantLinear(64, rows, bias, RealQuantScheme("int4"), RealQuantScheme("int4"))
        part.qweight.copy_(torch.randint(0, 256, part.qweight.shape, generator=gen, dtype=torch.uint8))
        part.weight_scale.copy_(torch.rand(rows, 1, generator=gen) * 0.01)
        if bias:
            part.bias.data.copy_(torch.randn(rows, generator=gen))
        parts.append(part)
    group = FusedGroup(parts)
    calls = []
    group.linear.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.randn(3, 64, generator=gen), torch.randn(3, 64, generator=gen)
    for inputs in (x, y):
        outs = [group.output(1, inputs), group.output(0, inputs)]
        for out, part in zip(outs, parts[::-1]):
            torch.testing.assert_close(out, part(inputs), rtol=1e-6, atol=1e-6)
    assert len(calls) == 2 and group._input is None
    group.output(0, x)
    group.output(0, x)  # the same part twice for one input: a new product, not a stale one
    assert len(calls) == 4


def test_int8_codes_are_two_s_complement_bytes():
    from quant_layers.packing import INT8, code_values, pack_planes

    levels = torch.arange(-128, 128).float()
    codes = encode(levels, INT8)
    assert torch.equal(codes.view(torch.int8).float(), levels) and torch.equal(decode(codes, INT8), levels)
    assert torch.equal(code_values(INT8)[codes.long()], levels)
    assert torch.equal(pack_planes(codes.reshape(2, 128), 8)[0], codes.reshape(2, 128))
    with pytest.raises(ValueError, match=r"int8 encoding takes integers in \[-128, 127\]"):
        encode(torch.tensor([128.0]), INT8)


@pytest.mark.parametrize("weight, act_bits", [(QuantSpec("int", 8, granularity="channel"), None),
                                              (QuantSpec("int", 8, granularity="channel"), 4),
                                              (QuantSpec("int", 4, granularity="group", group_size=64), 8)])
def test_int8_runs_only_as_w8a8_or_w4a8_per_channel(weight, act_bits):
    from quant_layers.real_linear import check_real_quant_recipe

    act = None if act_bits is None else QuantSpec("int", act_bits, granularity="token")
    with pytest.raises(ValueError, match="W8A8 .*W4A8.*INT4 weights per channel"):
        check_real_quant_recipe(QuantRecipe(weight=weight, activation=act))


@pytest.mark.parametrize("weight, head_bits, message", [
    (spec("int", "channel"), dict(lm_head_a_bits=6), "no kernel for activations quantized as int6-tok"),
    (spec("int", "group", group_size=64), dict(lm_head_a_bits=8),
     r"W4A8 \(INT4 weights per channel\), got int4 weights in groups of 64"),
    (spec("int", "channel"), dict(lm_head_w_bits=8),
     "got int8 weights with int4 activations: for lm_head use --lm_head_w_bits 8 --lm_head_a_bits 8"),
])
def test_real_quant_refuses_an_lm_head_without_a_kernel(weight, head_bits, message):
    from quant_layers.real_linear import check_real_quant_recipe

    recipe = QuantRecipe(weight=weight, activation=spec("int", "token"), quantize_lm_head=True, **head_bits)
    with pytest.raises(ValueError, match=message):
        check_real_quant_recipe(recipe)


def test_cli_int8_lm_head_weights_need_int8_input():
    """--lm_head_w_bits 8 runs with --lm_head_a_bits 8 (W8A8); with the decoder's INT4 input it is refused before
    any model loads."""
    def config(*argv: str) -> RunConfig:
        return model_quant.build_config(model_quant.build_parser().parse_args(
            ["--model", "m", "--w_bits", "4", "--a_bits", "4", "--quantize_lm_head", "--real_quant",
             "--save_path", "ckpt", *argv]))

    assert config("--lm_head_w_bits", "8", "--lm_head_a_bits", "8").quant.label.endswith("-lmhead-w8-a8")
    with pytest.raises(ValueError, match="int8 weights with int4 activations: for lm_head use --lm_head_w_bits 8"):
        config("--lm_head_w_bits", "8")


@pytest.mark.parametrize("head_w_bits", [None, 8])
def test_int8_input_lm_head_round_trip(head_w_bits, tiny_models, tmp_path):
    """--quantize_lm_head --lm_head_a_bits 8 [--lm_head_w_bits 8]: the decoder linears W4A4, lm_head's input INT8
    (W4A8, or W8A8 with INT8 weights); the checkpoint reproduces the fake-quantized logits and says so."""
    from quant_layers.real_linear import check_real_quant_recipe

    recipe = QuantRecipe(weight=spec("int", "channel"), activation=spec("int", "token", clip_ratio=0.9),
                         quantize_lm_head=True, lm_head_a_bits=8, lm_head_w_bits=head_w_bits)
    check_real_quant_recipe(recipe)
    model = fake_quantized(tiny_models["llama"], recipe)
    up_proj, w_bits = model.model.layers[0].mlp.up_proj, head_w_bits or 4
    assert model.lm_head.act_quantizer.spec.bits == 8 and up_proj.act_quantizer.spec.bits == 4
    assert model.lm_head.weight_quantizer.spec.bits == w_bits and up_proj.weight_quantizer.spec.bits == 4
    ids = torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = logits(model, ids)
    loaded, _, qc = load_quantized(export_quantized(model, None, recipe, str(tmp_path / "ckpt")))
    assert qc["modules"]["lm_head"]["act"]["element"] == "int8" and qc["recipe"]["lm_head_a_bits"] == 8
    assert qc["recipe"]["lm_head_w_bits"] == head_w_bits
    assert loaded.lm_head.weight_scheme.element == f"int{w_bits}"
    assert loaded.model.layers[0].mlp.up_proj.weight_scheme.element == "int4"
    assert_same_logits(reference, logits(loaded, ids))


def test_w8a8_export_decodes_greedily_like_the_float_model(tiny_models, tmp_path):
    """INT8 weights and activations barely move the logits: greedy decoding keeps the float model's tokens."""
    recipe = RECIPES["int8-w8a8"]
    float_model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    path = export_quantized(fake_quantized(tiny_models["llama"], recipe), None, recipe, str(tmp_path / "ckpt"))
    loaded = load_quantized(path)[0]
    ids = torch.randint(0, 2048, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = float_model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
        got = loaded.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)


def edit_quantization_config(checkpoint_dir: str, edit) -> None:
    file = os.path.join(checkpoint_dir, "config.json")
    config = json.load(open(file))
    edit(config["quantization_config"])
    json.dump(config, open(file, "w"))


@pytest.mark.parametrize("edit, message", [
    (lambda qc: qc.update(format_version="two"), "format_version is 'two', not a version number"),
    (lambda qc: qc.pop("recipe"), "quantization_config lacks recipe"),
    (lambda qc: qc.update(dtype="float99"), "dtype is 'float99'"),
    (lambda qc: qc["modules"]["model.layers.0.mlp.up_proj"]["weight"].update(elements="int4"),
     "entry of model.layers.0.mlp.up_proj is malformed"),
])
def test_a_damaged_quantization_config_is_refused_by_name(saved, edit, message):
    """A hand-edited or damaged quantization_config says which entry is wrong, not a bare KeyError or TypeError."""
    edit_quantization_config(saved, edit)
    with pytest.raises(ValueError, match=message):
        load_quantized(saved)


def test_a_config_json_that_is_not_json_is_refused(saved):
    open(os.path.join(saved, "config.json"), "w").write("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON .* export it again"):
        load_quantized(saved)


def test_an_entry_that_names_no_linear_of_the_model_is_refused(saved):
    """An entry (with its tensors) for a linear the model does not have: a layer past the config's last."""
    edit_quantization_config(saved, lambda qc: qc["modules"].update(
        {"model.layers.9.mlp.up_proj": qc["modules"]["model.layers.0.mlp.up_proj"]}))
    file = os.path.join(saved, "model.safetensors")
    tensors = load_file(file)
    prefix = "model.layers.0.mlp.up_proj."
    tensors.update({"model.layers.9.mlp.up_proj." + k[len(prefix):]: v.clone()
                    for k, v in tensors.items() if k.startswith(prefix)})
    save_file(tensors, file)
    with pytest.raises(ValueError, match="entry of model.layers.9.mlp.up_proj is malformed or names no linear"):
        load_quantized(saved)
