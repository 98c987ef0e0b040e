"""GPTQ through the drivers: layer-by-layer on the TinyStories model, resume, bad input."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from configs import QuantRecipe, RunConfig
from pipeline import run
from quant_layers import QuantSpec


def _common(tinystories_dir, data_dir, tmp_path) -> list[str]:
    return ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
            "--calib_dataset", "tinystories", "--nsamples", "8", "--seqlen", "256", "--eval_limit", "4",
            "--calib_batch_size", "4", "--output_dir", str(tmp_path)]


def _tree_digest(root) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_gptq_beats_rtn_end_to_end_and_reports_calibration(tinystories_dir, data_dir, tmp_path, cli):
    common = _common(tinystories_dir, data_dir, tmp_path)
    rtn = cli("model_quant.py", *common, "--w_bits", "3", "--run_name", "rtn")
    gptq = cli("model_quant.py", *common, "--w_bits", "3", "--gptq", "--run_name", "gptq")
    assert rtn.returncode == 0 and gptq.returncode == 0, rtn.stderr + gptq.stderr
    results = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("rtn", "gptq")}
    ppl = {n: r["metrics"]["ppl"]["tinystories"] for n, r in results.items()}
    assert ppl["gptq"] < ppl["rtn"]
    report = results["gptq"]["calibration"]
    assert report["blocks"] == 2 and report["resumed_blocks"] == 0 and report["peak_cpu_rss_bytes"] > 0
    assert len(report["per_linear"]) == 2 * 7 and all(v["loss"] >= 0 for v in report["per_linear"].values())
    assert results["gptq"]["recipe"]["method"] == "gptq" and results["gptq"]["recipe"]["gptq"]["percdamp"] == 0.01
    assert "-gptq |" in gptq.stdout

    # Resuming a finished run reloads every block and gives the same model.
    again = cli("model_quant.py", *common, "--w_bits", "3", "--gptq", "--resume", "--run_name", "gptq")
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "gptq.json").read_text())
    assert resumed["calibration"]["resumed_blocks"] == 2
    assert resumed["metrics"] == results["gptq"]["metrics"]


def test_rotation_and_gptq_through_main(tinystories_dir, data_dir, tmp_path, cli):
    out = cli("main.py", *_common(tinystories_dir, data_dir, tmp_path), "--qbits", "4", "4", "4", "--rotate",
              "--gptq", "--act_order", "--run_name", "quarot")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "quarot.json").read_text())
    assert result["recipe"]["transform"] == "hadamard" and result["recipe"]["gptq"]["act_order"] is True
    assert result["config"]["quant_label"].endswith("-hadamard-gptq")


def test_resume_from_a_different_recipe_is_refused_and_touches_nothing(tinystories_dir, data_dir, tmp_path, cli):
    common = _common(tinystories_dir, data_dir, tmp_path)
    first = cli("model_quant.py", *common, "--w_bits", "4", "--gptq", "--run_name", "r")
    assert first.returncode == 0, first.stderr
    before = _tree_digest(tmp_path)
    other = cli("model_quant.py", *common, "--w_bits", "4", "--w_group_size", "64", "--gptq", "--resume",
                "--run_name", "r")
    assert other.returncode == 2 and "recipe" in other.stderr and "--output_dir" in other.stderr, other.stderr
    fresh = cli("model_quant.py", *common, "--w_bits", "4", "--gptq", "--run_name", "r")
    assert fresh.returncode == 2 and "pass --resume" in fresh.stderr, fresh.stderr
    assert _tree_digest(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--w_bits", "4", "--gptq", "--nsamples", "0"], "--nsamples must be at least 1, got 0"),
    (["--w_bits", "4", "--gptq", "--seqlen", "4096"], "exceeds the model's max_position_embeddings 512"),
    (["--a_bits", "4", "--gptq"], "GPTQ quantizes weights: set the weight bits below 16"),
    (["--w_bits", "4", "--resume"], "--resume continues a layer-by-layer GPTQ or FlatQuant calibration: add --gptq"),
    (["--w_bits", "4", "--gptq", "--percdamp", "-1"], "damping (percdamp) must be a finite number >= 0"),
    (["--w_bits", "4", "--gptq", "--calib_dataset", "nowhere.txt"], "unknown dataset 'nowhere.txt'"),
])
def test_bad_gptq_input_fails_before_loading(args, message, tinystories_dir, data_dir, tmp_path, cli):
    out = cli("model_quant.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "none",
              "--seqlen", "128", "--output_dir", str(tmp_path), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert os.listdir(tmp_path) == []


def test_gptq_runs_on_tiny_qwen_families(tiny_models, data_dir, tmp_path):
    for family in ("qwen2", "qwen3"):
        cfg = RunConfig(model=tiny_models[family], data_dir=data_dir, ppl_datasets=("tinystories",), seqlen=64,
                        eval_limit=2, device="cpu", calib_dataset="tinystories", nsamples=4,
                        output_dir=str(tmp_path), run_name=family,
                        quant=QuantRecipe(weight=QuantSpec("nvfp", 4), transform="hadamard", method="gptq"))
        result = run(cfg)
        assert result.calibration["blocks"] == 2 and result.metrics["ppl"]["tinystories"] > 1
