"""Export -> load round trip of real-quantized checkpoints on a real model, per recipe.

For each recipe: load the model, transform it and quantize its weights with RTN as the
pipeline does (and, for NVFP4 activations on a static tensor scale, calibrate it on ``--nsamples`` C4 windows),
score the fake-quantized model, export the packed checkpoint,
load it onto ``RealQuantLinear`` (kernels on CUDA, their torch twins on the CPU) and score
it on the same tokens. Reports the largest logit difference relative to the largest
logit, both perplexities, the checkpoint size against the model's bf16 size, and times.

    python benchmarks/real_quant_roundtrip.py --model models_local/SmolLM2-135M-Instruct \\
        --data_dir ../shared/assets/data --windows 4 --out benchmarks/results/real_quant_roundtrip_smollm2_cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import write_result_files  # noqa: E402

import corpora  # noqa: E402
from calib import calibration_windows, quantize_weights_rtn  # noqa: E402
from calib.tensor_scale import calibrate_static_tensor_scales  # noqa: E402
from configs.recipe import QuantRecipe  # noqa: E402
from evaluation import evaluation_tokens  # noqa: E402
from export import checkpoint_bytes, export_quantized, load_quantized  # noqa: E402
from models import adapter_for, load_model, load_tokenizer, resolve_device  # noqa: E402
from models.loading import locate  # noqa: E402
from pipeline.fake_quant import attach_quantizers  # noqa: E402
from quant_layers.quantizer import QuantSpec  # noqa: E402
from transforms import apply_transform  # noqa: E402

RECIPES = {
    "int4-w4a4-hadamard": QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                                      activation=QuantSpec("int", 4, granularity="token"), transform="hadamard"),
    "nvfp4-w4a4": QuantRecipe(weight=QuantSpec("nvfp", 4), activation=QuantSpec("nvfp", 4)),
    "nvfp4-static-w4a4": QuantRecipe(weight=QuantSpec("nvfp", 4),
                                     activation=QuantSpec("nvfp", 4, static_tensor_scale=True)),
    "mxfp4-w4a4": QuantRecipe(weight=QuantSpec("mxfp", 4), activation=QuantSpec("mxfp", 4)),
    "e2m1-w4a4-hadamard": QuantRecipe(weight=QuantSpec("fp", 4, exp_bits=2, granularity="channel"),
                                      activation=QuantSpec("fp", 4, exp_bits=2, granularity="token"),
                                      transform="hadamard"),
}


@torch.no_grad()
def score(model, windows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, float]:
    """Logits of every window (CPU float32) and the perplexity over them."""
    all_logits, nll = [], 0.0
    for w in windows:
        ids = w[None].to(device)
        logits = model(ids).logits.float()
        nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        all_logits.append(logits.cpu())
    return torch.cat(all_logits), float(torch.exp(torch.tensor(nll / (windows.numel() - len(windows)))))


def run_recipe(name: str, recipe: QuantRecipe, args, windows, tokenizer, device, workdir: str) -> dict:
    loc = locate(args.model)
    model = load_model(loc, torch.float32, torch.device("cpu"))
    adapter = adapter_for(model.config)
    bf16_bytes = sum(p.numel() for p in model.parameters()) * 2
    apply_transform(model, adapter, recipe.transform, seed=0)
    attach_quantizers(model, adapter, recipe)
    quantize_weights_rtn(model)
    model.to(device).eval()
    if recipe.activation is not None and recipe.activation.static_tensor_scale:
        calibrate_static_tensor_scales(model, calibration_windows(
            corpora.resolve("c4", "train", args.data_dir), tokenizer, args.nsamples, args.seqlen, 0))
    fake_logits, fake_ppl = score(model, windows, device)
    path = os.path.join(workdir, name)
    t = time.perf_counter()
    export_quantized(model, tokenizer, recipe, path)
    export_s = time.perf_counter() - t
    del model
    t = time.perf_counter()
    loaded, _, _ = load_quantized(path, device)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    real_logits, real_ppl = score(loaded, windows, device)
    real_s = time.perf_counter() - t
    error = ((real_logits - fake_logits).abs().max() / fake_logits.abs().max()).item()
    size = checkpoint_bytes(path)
    shutil.rmtree(path)
    return {"recipe": name, "label": recipe.label, "max_rel_logit_error": error, "ppl_fake": fake_ppl,
            "ppl_real": real_ppl, "checkpoint_bytes": size, "bf16_bytes": bf16_bytes,
            "export_s": round(export_s, 2), "load_s": round(load_s, 2), "real_eval_s": round(real_s, 2)}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| recipe | max relative logit error | PPL fake-quant | PPL real-quant | checkpoint (MiB) "
             "| bf16 model (MiB) | export (s) | load (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['max_rel_logit_error']:.1e} | {r['ppl_fake']:.3f} | {r['ppl_real']:.3f} | "
                     f"{r['checkpoint_bytes'] / 2**20:.1f} | {r['bf16_bytes'] / 2**20:.1f} | {r['export_s']} | "
                     f"{r['load_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data_dir", default=os.environ.get("PTQ_DATA_DIR"))
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--windows", type=int, default=4, help="WikiText-2 test windows scored")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--nsamples", type=int, default=8, help="C4 windows a static NVFP4 tensor scale is calibrated on")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipes {unknown}: choose from {', '.join(RECIPES)}")
    device = resolve_device(args.device)
    tokenizer = load_tokenizer(locate(args.model))
    ids = evaluation_tokens(corpora.resolve("wikitext2", "test", args.data_dir), tokenizer)
    windows = ids[: args.windows * args.seqlen].reshape(args.windows, args.seqlen)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            rows.append(run_recipe(name, RECIPES[name], args, windows, tokenizer, device, workdir))
            print(json.dumps(rows[-1]), flush=True)
    header = (f"Real-quant round trip, {os.path.basename(args.model.rstrip('/'))}, RTN, float32, {args.windows} × "
              f"{args.seqlen} WikiText-2 test tokens, device {device} ({platform.machine()}), "
              f"{datetime.date.today()}, torch {torch.__version__}.\nCommand: `python {' '.join(sys.argv)}`")
    write_result_files(args.out, {"command": sys.argv, "device": str(device), "rows": rows}, markdown(rows, header))
    print(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
