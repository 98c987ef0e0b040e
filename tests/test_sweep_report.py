"""scripts/report.py over hand-written run JSONs; scripts/sweep.sh as a dry run and for real on TinyStories."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = "scripts/report.py"  # run in this process (the cli fixture); sweep.sh runs it for real
SWEEP = os.path.join(ROOT, "scripts", "sweep.sh")
SPEC = {"fmt": "int", "bits": 4, "granularity": "channel"}


def _run_json(name: str, label: str, quantized: bool, ppl: dict, lm_eval: dict | None = None,
              total_s: float = 1.0) -> dict:
    metrics = {"ppl": ppl, **({"lm_eval": lm_eval} if lm_eval else {})}
    recipe = {"weight": SPEC if quantized else None, "activation": None, "key": None, "value": None,
              "method": "rtn", "transform": "identity"}
    return {"run_name": name, "model": "tiny", "recipe": recipe,
            "config": {"quant_label": label, "seqlen": 256, "eval_limit": 2}, "metrics": metrics,
            "timings": {"total_s": total_s}, "device": "cpu", "calibration": None,
            "date": "2026-01-01T00:00:00+00:00", "versions": {}}


def _lm_eval(piqa: float, winogrande: float, word_ppl: float) -> dict:
    return {"tasks": {"piqa": {"task": "piqa_local", "acc": piqa - 0.05, "acc_norm": piqa},
                      "winogrande": {"task": "winogrande_local", "acc": winogrande},
                      "wikitext": {"task": "wikitext_local", "word_perplexity": word_ppl, "byte_perplexity": 2.0,
                                   "bits_per_byte": 1.0}},
            "average": {"value": (piqa + winogrande) / 2, "metric": {"piqa": "acc_norm", "winogrande": "acc"}}}


def _write_runs(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    runs = [
        _run_json("baseline", "fp", False, {"wikitext2": 12.5, "c4": 20.25}, _lm_eval(0.70, 0.60, 30.0), 10.0),
        _run_json("int-w4a4kv4", "W[int4-ch]-rtn", True, {"wikitext2": 15000.0, "c4": 18000.0},
                  _lm_eval(0.50, 0.52, 1.5e6), 12.34),
        _run_json("nvfp-w4a16", "W[nvfp4]-rtn", True, {"wikitext2": 13.75, "c4": 21.5}, None, 11.0),
    ]
    for run in runs:
        (folder / f"{run['run_name']}.json").write_text(json.dumps(run))
    (folder / "notes.json").write_text(json.dumps({"comment": "not a run"}))


def test_report_table_and_plot(tmp_path, cli):
    _write_runs(tmp_path / "runs")
    out = cli(REPORT, str(tmp_path / "runs"), "--out", str(tmp_path / "out" / "sweep"))
    assert out.returncode == 0, out.stderr
    assert "skipping" in out.stderr and "notes.json: not a run JSON" in out.stderr
    table = (tmp_path / "out" / "sweep.md").read_text()
    lines = table.splitlines()
    assert lines[0] == ("| run | recipe | ppl wikitext2 | ppl c4 | lm-eval avg (%) | piqa acc_norm (%) | "
                        "winogrande acc (%) | lm-eval wikitext word perplexity | time (s) |")
    assert lines[2:5] == [
        "| baseline | fp | 12.50 | 20.25 | 65.00 | 70.00 | 60.00 | 30.00 | 10.00 |",
        "| int-w4a4kv4 | W[int4-ch]-rtn | 15000.00 | 18000.00 | 51.00 | 50.00 | 52.00 | 1.5e+06 | 12.34 |",
        "| nvfp-w4a16 | W[nvfp4]-rtn | 13.75 | 21.50 |  |  |  |  | 11.00 |",
    ]
    assert "token-level perplexity over non-overlapping windows of 256 tokens" in table
    assert "not comparable with `ppl`" in table
    assert out.stdout.strip() == table.strip()
    png = (tmp_path / "out" / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_report_defaults_to_the_runs_folder(tmp_path, cli):
    _write_runs(tmp_path)
    assert cli(REPORT, str(tmp_path)).returncode == 0
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").stat().st_size > 0


def test_report_without_runs_exits_2(tmp_path, cli):
    (tmp_path / "other.json").write_text("[1, 2]")
    out = cli(REPORT, str(tmp_path))
    assert out.returncode == 2
    assert "no run JSONs in" in out.stderr and not (tmp_path / "report.md").exists()
    out = cli(REPORT, str(tmp_path / "missing"))
    assert out.returncode == 2 and "is not a folder" in out.stderr


def _sweep(env: dict, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", SWEEP, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_sweep_dry_run_prints_the_grid(tmp_path):
    out = _sweep({"DRY_RUN": "1", "FORMATS": "int fp nvfp mxfp", "BITS": "4 4,16", "TRANSFORMS": "identity hadamard",
                  "METHODS": "rtn gptq", "GROUP": "g1", "OUT_DIR": str(tmp_path), "PYTHON": "python"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    runs = [line for line in lines if line.startswith("python model_quant.py")]
    assert len(runs) == 1 + 4 * 2 * 2 * 2 and len(lines) == len(runs) + 1
    assert lines[-1] == f"python scripts/report.py {tmp_path}/g1 "
    assert all(f"--output_dir {tmp_path}/g1 " in r and "--log_wandb" in r and "--wandb_group g1 " in r for r in runs)
    assert "--run_name baseline " in runs[0] and "--format" not in runs[0] and "--w_bits" not in runs[0]
    names = [r.split("--run_name ")[1].split()[0] for r in runs]
    assert len(set(names)) == len(names) and "mxfp-w4a16kv16-hadamard-gptq" in names
    mx = runs[names.index("mxfp-w4a16kv16-hadamard-gptq")]
    assert "--format mxfp --w_bits 4 --a_bits 16 --k_bits 16 --v_bits 16 --transform_class hadamard --gptq" in mx
    assert sum("--gptq" in r for r in runs) == 16
    assert not tmp_path.joinpath("g1").exists()


def test_sweep_rejects_a_bad_grid_before_running():
    out = _sweep({"DRY_RUN": "1", "BITS": "4,x"})
    assert out.returncode == 2 and "BITS entry '4,x' is not W[,A[,KV]]" in out.stderr
    out = _sweep({"DRY_RUN": "1", "METHODS": "awq"})
    assert out.returncode == 2 and "unknown method 'awq'" in out.stderr


def test_tiny_sweep_on_tinystories(tinystories_dir, data_dir, tmp_path):
    out = _sweep({"MODEL": tinystories_dir, "DATA_DIR": data_dir, "PPL_DATASETS": "wikitext2", "SEQLEN": "256",
                  "EVAL_LIMIT": "2", "FORMATS": "int nvfp", "BITS": "4", "TRANSFORMS": "identity", "METHODS": "rtn",
                  "GROUP": "tiny", "OUT_DIR": str(tmp_path), "PYTHON": sys.executable, "WANDB_MODE": "offline"},
                 timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "tiny"
    names = ["baseline", "int-w4a4kv4-identity-rtn", "nvfp-w4a4kv4-identity-rtn"]
    for name in names:
        run = json.loads((folder / f"{name}.json").read_text())
        assert run["config"]["wandb_group"] == "tiny" and run["config"]["log_wandb"]
        assert run["metrics"]["ppl"]["wikitext2"] > 1
    assert json.loads((folder / "baseline.json").read_text())["config"]["quant_label"] == "fp"
    table = (folder / "report.md").read_text()
    assert [line.split(" | ")[0] for line in table.splitlines()[2:5]] == [f"| {n}" for n in names]
    assert (folder / "report.png").stat().st_size > 0
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 3
