"""GPTQ (and FlatQuant) calibration speed and memory on real model shapes with random weights.

Builds a Llama of a real architecture's exact shapes on the CPU (random bf16 weights,
no checkpoint needed), wraps every linear for W4 (default INT4 g128, weights only) and
calibrates it with the layer-by-layer runner the pipeline uses: one block on the GPU at
a time, ``--nsamples`` x ``--seqlen`` random-token calibration windows. Reports wall
time, per-block time, peak GPU memory and peak CPU RSS.

``--method flatquant`` times FlatQuant instead: W4A4KV4 INT (weights per channel,
activations per token, K/V asymmetric per head), ``--epochs`` over the windows,
``--cali_bsz`` windows a step, then RTN at the learned clips (``--flat_gptq``: GPTQ):

    python benchmarks/gptq_speed.py --method flatquant --shape llama3-8b --layers 2 --out PREFIX

``--layers N`` builds only the first N blocks (for shapes whose full model does not fit
in host memory, e.g. Llama-3-70B): the per-block time is measured on those and the
full-depth time extrapolated from it, and the peak GPU memory of a block-resident run
does not depend on depth.

    python benchmarks/gptq_speed.py --shape llama3-8b --out benchmarks/results/gptq_speed_llama3_8b

Under torchrun the calibration windows are split over the ranks (one GPU each), as
``model_quant.py`` splits them; rank 0 reports, with ``world_size`` in the JSON:

    torchrun --standalone --nproc_per_node 2 benchmarks/gptq_speed.py --shape llama3-70b --layers 4 --out PREFIX
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calib import GPTQConfig, LayerwiseConfig, calibrate_layerwise, distributed  # noqa: E402
from calib.flatquant import FlatQuantConfig  # noqa: E402
from configs import QuantRecipe  # noqa: E402
from models import adapter_for  # noqa: E402
from pipeline import attach_quantizers  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402
from quant_layers import QuantSpec  # noqa: E402

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "llama3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512),
}


def random_model(shape: str, layers: int | None, dtype: torch.dtype, init_device: torch.device, seed: int):
    """A ``LlamaForCausalLM`` of ``shape`` on the CPU with N(0, 0.02) weights, built without HF's slow init.

    Weights are drawn on ``init_device`` (fast on a GPU) and copied to the CPU tensor by tensor.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    kwargs = dict(SHAPES[shape])
    full_depth = kwargs["num_hidden_layers"]
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    config = LlamaConfig(**kwargs, tie_word_embeddings=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.to_empty(device="cpu")
    gen = torch.Generator(device=init_device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=init_device, dtype=dtype).mul_(0.02))
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its buffers were left empty on the meta device
    return model.eval(), full_depth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="gptq", choices=("gptq", "flatquant"))
    p.add_argument("--epochs", type=int, default=15, help="FlatQuant epochs per block")
    p.add_argument("--cali_bsz", type=int, default=4, help="FlatQuant windows per training step")
    p.add_argument("--flat_gptq", action="store_true", help="FlatQuant: GPTQ after training (default RTN)")
    p.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--layers", type=int, help="build only this many blocks and extrapolate to full depth")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib_batch_size", type=int, default=8)
    p.add_argument("--format", default="int")
    p.add_argument("--w_bits", type=int, default=4)
    p.add_argument("--w_group_size", type=int, default=128)
    p.add_argument("--act_order", action="store_true")
    p.add_argument("--offload_activations", action="store_true")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", help="output prefix: writes PREFIX.json")
    args = p.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    distributed.init(use_cuda=device.type == "cuda")
    try:
        return _run(args, argv, dtype, distributed.rank_device(device))
    finally:
        distributed.destroy()


def _run(args: argparse.Namespace, argv: list[str] | None, dtype: torch.dtype, device: torch.device) -> int:
    t = time.perf_counter()
    model, full_depth = random_model(args.shape, args.layers, dtype, device, seed=0)
    build_s = time.perf_counter() - t
    adapter = adapter_for(model.config)
    granularity = "group" if args.w_group_size > 0 else "channel"
    spec = QuantSpec(args.format, args.w_bits, granularity=granularity,
                     group_size=args.w_group_size if args.w_group_size > 0 else None)
    flat = None
    if args.method == "flatquant":
        flat = FlatQuantConfig(epochs=args.epochs, cali_bsz=args.cali_bsz,
                               weight_method="gptq" if args.flat_gptq else "rtn")
        spec = QuantSpec(args.format, args.w_bits, granularity="channel")
        attach_quantizers(model, adapter, QuantRecipe(
            weight=spec, activation=QuantSpec(args.format, 4, granularity="token"),
            key=QuantSpec("int", 4, granularity="head", symmetric=False),
            value=QuantSpec("int", 4, granularity="head", symmetric=False), method="flatquant", flatquant=flat))
    else:
        attach_quantizers(model, adapter, QuantRecipe(weight=spec, method="gptq"))
    ids = torch.randint(0, model.config.vocab_size, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    config = LayerwiseConfig(method=args.method, gptq=GPTQConfig(act_order=args.act_order),
                             flatquant=flat or FlatQuantConfig(), batch_size=args.calib_batch_size,
                             offload_activations=args.offload_activations)
    report = calibrate_layerwise(model, adapter, ids, device, config)

    layers = model.config.num_hidden_layers
    # Stacked linears share one record; count its time once.
    gptq_s = sum(v["seconds"] / len(v.get("stacked_with", [k])) for k, v in report.per_linear.items()
                 if v.get("method", "gptq") == "gptq")
    per_block = report.seconds / layers
    result = {
        "method": args.method, "flatquant": None if flat is None else dataclasses.asdict(flat),
        "shape": args.shape, "layers_built": layers, "full_depth": full_depth, "format": spec.label,
        "world_size": distributed.world_size(),
        "nsamples": args.nsamples, "seqlen": args.seqlen, "calib_batch_size": args.calib_batch_size,
        "act_order": args.act_order, "offload_activations": args.offload_activations, "dtype": args.dtype,
        "build_s": round(build_s, 1), "calibration_s": round(report.seconds, 1), "gptq_column_loops_s": round(gptq_s, 1),
        # what the ranks split (forward passes, Hessians); every rank runs the column loops of every GPTQ problem
        "outside_column_loops_s": round(report.seconds - gptq_s, 1),
        "per_block_s": round(per_block, 2), "full_depth_estimate_s": round(per_block * full_depth, 1),
        "peak_gpu_gib": round(report.peak_gpu_bytes / 2**30, 2) if report.peak_gpu_bytes else None,
        "peak_cpu_rss_gib": round(report.peak_cpu_rss_bytes / 2**30, 2),
        "device": device_name(device), "versions": library_versions(), "date": time.strftime("%Y-%m-%d"),
        "command": ("python" if distributed.world_size() == 1 else
                    f"torchrun --nproc_per_node {distributed.world_size()}")
                   + " benchmarks/gptq_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if not distributed.is_main():
        return 0
    print(json.dumps(result, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump({**result, "per_linear": report.per_linear}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
