"""The pipeline end to end: tiny random Llama/Qwen2/Qwen3, TinyStories CLI, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import corpora
from configs import QuantRecipe, RunConfig, qbits_recipe
from evaluation import evaluation_tokens, perplexity
from models import adapter_for
from pipeline import attach_quantizers, run
from quant_layers import QuantLinear, QuantSpec

from conftest import ROOT

W4A4KV4 = dict(
    weight=QuantSpec("int", 4, granularity="channel"),
    activation=QuantSpec("int", 4, granularity="token"),
    key=QuantSpec("int", 4, granularity="head"),
    value=QuantSpec("int", 4, granularity="head", symmetric=False),
)


def run_config(model: str, data_dir: str, tmp_path, quant: QuantRecipe, **kw) -> RunConfig:
    return RunConfig(model=model, quant=quant, data_dir=data_dir, ppl_datasets=("tinystories",), seqlen=128,
                     eval_limit=2, device="cpu", output_dir=str(tmp_path), **kw)


def test_no_quantization_equals_unmodified_hf_model(tinystories_dir, data_dir, tmp_path):
    result = run(run_config(tinystories_dir, data_dir, tmp_path, qbits_recipe("RTN_config_llama", [16, 16, 16])))
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tinystories_dir)
    ids = evaluation_tokens(corpora.resolve("tinystories", "validation", data_dir), tok)
    assert result.metrics["ppl"]["tinystories"] == perplexity(model, ids, 128, limit=2)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_tiny_families_run_quantized(family, tiny_models, data_dir, tmp_path):
    path = tiny_models[family]
    fp = run(run_config(path, data_dir, tmp_path, QuantRecipe(), run_name="fp"))
    q = run(run_config(path, data_dir, tmp_path, QuantRecipe(**W4A4KV4), run_name="q"))
    assert fp.metrics["ppl"]["tinystories"] != q.metrics["ppl"]["tinystories"]
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["recipe"]["weight"]["bits"] == 4 and "tinystories" in saved["metrics"]["ppl"]
    assert QuantRecipe.from_dict(saved["recipe"]) == QuantRecipe(**W4A4KV4)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_fake_quant_wraps_every_linear_and_quantizes_kv(family, tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family], dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    ids = torch.randint(0, 2048, (1, 32))
    ref = _logits(model, ids)
    wrapped = attach_quantizers(model, adapter, QuantRecipe(key=W4A4KV4["key"], value=W4A4KV4["value"]))
    assert wrapped == []
    kv_only = _logits(model, ids)
    assert not torch.allclose(ref, kv_only)
    wrapped = attach_quantizers(model, adapter, QuantRecipe(activation=W4A4KV4["activation"]))
    assert len(wrapped) == 7 * model.config.num_hidden_layers
    assert all(isinstance(m, QuantLinear) for layer in adapter.decoder_layers(model) for m in adapter.linears(layer).values())
    assert not isinstance(model.lm_head, QuantLinear)


def test_quantized_tied_lm_head_leaves_embeddings_alone(tiny_models):
    from calib import quantize_weights_rtn

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    emb = model.model.embed_tokens.weight.detach().clone()
    attach_quantizers(model, adapter_for(model.config), QuantRecipe(weight=W4A4KV4["weight"], quantize_lm_head=True))
    quantize_weights_rtn(model)
    assert torch.equal(model.model.embed_tokens.weight, emb)
    assert not torch.equal(model.lm_head.weight, emb)


def test_kv_quantization_sees_post_rope_keys_per_head(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["qwen3"], dtype=torch.float32).eval()
    adapter = adapter_for(model.config)
    seen = []

    class Spy:
        def __call__(self, x):
            seen.append(x.shape)
            return x

    attach_quantizers(model, adapter, QuantRecipe())
    for layer in adapter.decoder_layers(model):
        adapter.attention(layer).key_quantizer = Spy()
    from quant_layers.kv_cache import install_kv_quantization

    install_kv_quantization(model, [], Spy(), None)
    _logits(model, torch.randint(0, 2048, (2, 16)))
    assert seen and all(s == (2, 2, 16, 32) for s in seen)  # (batch, kv heads, seq, head_dim)


def _cli(script: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter, as a user starts it (the drivers' entry points, the offline hub);
    the other CLI tests run ``main(argv)`` in this process (the ``cli`` fixture), seconds faster each."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_cli_w4a4kv4_on_tinystories_end_to_end(tinystories_dir, data_dir, tmp_path):
    start = time.perf_counter()
    out = _cli("model_quant.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
               "--seqlen", "256", "--eval_limit", "4", "--format", "int", "--w_bits", "4", "--a_bits", "4",
               "--k_bits", "4", "--v_bits", "4", "--v_asym", "--output_dir", str(tmp_path), "--run_name", "w4a4kv4")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert "| tinystories-656k | W[int4-ch]A[int4-tok]K[int4-head]V[int4-head-asym]-rtn |" in out.stdout
    result = json.loads((tmp_path / "w4a4kv4.json").read_text())
    ppl = result["metrics"]["ppl"]["tinystories"]
    assert 20 < ppl < 2000 and result["timings"]["total_s"] > 0 and result["versions"]["torch"]
    assert elapsed < 60


def test_main_qbits_fp4_matches_model_quant_flags(tinystories_dir, data_dir, tmp_path, cli):
    common = ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
              "--seqlen", "128", "--eval_limit", "2", "--output_dir", str(tmp_path)]
    a = cli("main.py", *common, "--qbits", "4", "4", "4", "2", "2", "2", "--run_name", "a")
    b = cli("model_quant.py", *common, "--format", "fp", "--w_bits", "4", "--a_bits", "4", "--k_bits", "4",
            "--v_bits", "4", "--run_name", "b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra, rb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert ra["recipe"] == rb["recipe"] and ra["metrics"] == rb["metrics"]


def test_rotation_rescues_w4a4kv4_through_both_drivers(tinystories_dir, data_dir, tmp_path, cli):
    common = ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
              "--seqlen", "256", "--eval_limit", "8", "--output_dir", str(tmp_path)]
    plain = cli("main.py", *common, "--qbits", "4", "4", "4", "--run_name", "plain")
    rotated = cli("main.py", *common, "--qbits", "4", "4", "4", "--rotate", "--run_name", "rotated")
    flags = cli("model_quant.py", *common, "--w_bits", "4", "--a_bits", "4", "--k_bits", "4", "--v_bits", "4",
                "--transform_class", "hadamard", "--run_name", "flags")
    assert plain.returncode == rotated.returncode == flags.returncode == 0, plain.stderr + rotated.stderr + flags.stderr
    ppl = {n: json.loads((tmp_path / f"{n}.json").read_text())["metrics"]["ppl"]["tinystories"]
           for n in ("plain", "rotated", "flags")}
    assert ppl["rotated"] < 0.9 * ppl["plain"]
    assert ppl["rotated"] == ppl["flags"]
    assert "-hadamard-rtn" in rotated.stdout


def test_wandb_offline_logging(tinystories_dir, data_dir, tmp_path):
    out = _cli("main.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
               "--seqlen", "128", "--eval_limit", "1", "--qbits", "8", "8", "16", "--output_dir", str(tmp_path),
               "--log_wandb", env_extra={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("args, message", [
    (["--format", "int4", "--w_bits", "4"], "unknown format 'int4'"),
    (["--format", "int", "--w_bits", "12"], "2 to 8 bits"),
    (["--format", "int", "--w_bits", "4", "--w_group_size", "100"], "group size 100 does not divide"),
    (["--format", "int", "--k_bits", "4", "--k_groupsize", "24"], "group size 24 does not divide the key head dimension 16"),
    (["--ppl_datasets", "c4"], "c4 (validation split) not found"),
    (["--seqlen", "4096"], "exceeds the model's max_position_embeddings 512"),
    (["--transform_class", "block_hadamard", "--hadamard_group_size", "48"],
     "--hadamard_group_size 48 cannot rotate the hidden dimension 128"),
    (["--transform_class", "identity", "--hadamard_group_size", "16"], "applies to --transform_class hadamard"),
    (["--transform_class", "spin"], "invalid choice: 'spin'"),
])
def test_bad_input_fails_before_loading(args, message, tinystories_dir, tmp_path, cli):
    empty = tmp_path / "data"
    empty.mkdir()
    start = time.perf_counter()
    out = cli("model_quant.py", "--model", tinystories_dir, "--data_dir", str(empty), "--ppl_datasets", "none",
              "--seqlen", "128", "--output_dir", str(tmp_path), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert list(tmp_path.glob("*.json")) == []
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("flags, message", [
    (["--output_dir", "{tmp}/afile"], "--output_dir {tmp}/afile is a file: choose a directory"),
    (["--output_dir", "{tmp}/afile/runs"], "--output_dir {tmp}/afile/runs cannot hold files (Not a directory)"),
    (["--cali_trans", "--epochs", "1", "--calib_dataset", "tinystories", "--nsamples", "2", "--save_matrix",
      "--matrix_path", "{tmp}/afile/m"], "--matrix_path {tmp}/afile/m cannot hold files (Not a directory)"),
])
def test_an_output_that_cannot_be_written_fails_before_loading(flags, message, tinystories_dir, data_dir, tmp_path,
                                                               capsys, no_model_load):
    """Results are written at a run's end, FlatQuant's matrices block by block: a directory that cannot take them is
    refused before the weights load."""
    import model_quant

    (tmp_path / "afile").write_text("not a directory")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert model_quant.main(["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
                             "--seqlen", "128", "--w_bits", "4", "--output_dir", str(tmp_path / "runs"), *flags]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_log_wandb_without_wandb_fails_before_loading(tinystories_dir, data_dir, tmp_path, capsys, monkeypatch,
                                                      no_model_load):
    import importlib.util

    import model_quant

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    assert model_quant.main(["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
                             "--seqlen", "128", "--w_bits", "4", "--log_wandb", "--output_dir", str(tmp_path)]) == 2
    assert "--log_wandb needs the wandb package: pip install wandb" in capsys.readouterr().err


def test_unsupported_architecture_names_supported_ones(tmp_path, cli):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100).save_pretrained(tmp_path / "gpt2")
    out = cli("main.py", "--model", str(tmp_path / "gpt2"), "--ppl_datasets", "none", "--qbits", "4", "4", "4")
    assert out.returncode == 2
    assert "unsupported model family 'gpt2': supported model types are llama, qwen2, qwen3" in out.stderr


def test_hub_id_offline_says_pass_a_local_directory():
    out = _cli("main.py", "--model", "some-org/no-such-model-xyz", "--ppl_datasets", "none")
    assert out.returncode == 2 and "Pass a local model directory instead" in out.stderr


def test_missing_model_directory_and_gguf(tmp_path, cli):
    out = cli("main.py", "--model", str(tmp_path / "nowhere"), "--ppl_datasets", "none")
    assert out.returncode == 2 and "model directory not found" in out.stderr
    out = cli("main.py", "--gguf_file", str(tmp_path / "m.gguf"), "--ppl_datasets", "none")
    assert out.returncode == 2 and "GGUF file not found" in out.stderr


def test_ppl_table_select_and_main_driver(tinystories_dir, data_dir, tmp_path, cli):
    """benchmarks/ppl_table.py: --select picks recipes (a pattern matching none is an error), --driver main."""
    recipes = tmp_path / "recipes.txt"
    recipes.write_text("int4 | --qbits 4 16 16\nfp4 | --qbits 4 16 16 2 0 0\n")
    common = ["benchmarks/ppl_table.py", "--driver", "main",
              "--recipes", str(recipes), "--model", tinystories_dir, "--data_dir", data_dir,
              "--ppl_datasets", "tinystories", "--seqlen", "128", "--eval_limit", "2", "--device", "cpu"]
    bad = cli(*common, "--select", "nvfp*", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "no recipe of" in bad.stderr and "matches --select 'nvfp*'" in bad.stderr
    assert not (tmp_path / "bad.md").exists()
    ok = cli(*common, "--select", "fp*", "--out", str(tmp_path / "t"))
    assert ok.returncode == 0, ok.stderr
    table = (tmp_path / "t.md").read_text()
    assert "| fp4 | `W[e2m1-ch]-rtn` |" in table and "int4" not in table
    assert len(json.loads((tmp_path / "t.json").read_text())) == 1
