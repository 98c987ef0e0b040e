"""Perplexity of a random model of a real shape placed across GPUs (``--distribute``'s path), bf16 or W4A4.

Builds the Llama of ``--shape`` with random weights on the CPU (``gptq_speed.random_model``;
the full Llama-3-70B needs about 150 GB of host memory), fake-quantizes it with RTN for
``--recipe w4a4`` (INT4 weights per channel, INT4 activations per token), places it on
every visible GPU with the pipeline's ``models.placement.distribute`` (whole decoder
layers per GPU, within ``--max_memory``) and scores random-token windows with the
pipeline's ``evaluation.perplexity``. The number itself means nothing (random weights);
the run shows the path works at that size and how long it takes, per GPU memory included.

    python benchmarks/distributed_ppl.py --shape llama3-70b --recipe bf16 --max_memory 0=120GiB,1=120GiB --out PREFIX
    python benchmarks/distributed_ppl.py --shape tiny --recipe w4a4 --device cpu    # the same path on one device
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.gptq_speed import SHAPES, random_model  # noqa: E402
from calib import quantize_weights_rtn  # noqa: E402
from configs import QuantRecipe  # noqa: E402
from evaluation import perplexity  # noqa: E402
from models import adapter_for  # noqa: E402
from models.placement import MemoryLimits, distribute  # noqa: E402
from pipeline import attach_quantizers  # noqa: E402
from pipeline.results import library_versions  # noqa: E402
from quant_layers import QuantSpec  # noqa: E402

RECIPES = {
    "bf16": None,
    "w4a4": QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                        activation=QuantSpec("int", 4, granularity="token")),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llama3-70b", choices=sorted(SHAPES))
    p.add_argument("--layers", type=int, help="build only this many blocks")
    p.add_argument("--recipe", default="bf16", choices=sorted(RECIPES))
    p.add_argument("--windows", type=int, default=8, help="random-token windows scored")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--max_memory", help="as the drivers' --max_memory, e.g. 0=120GiB,1=120GiB,cpu=200GiB")
    p.add_argument("--device", default="distribute", help="'distribute' (every GPU), or one device (cpu, cuda)")
    p.add_argument("--out", help="output prefix: writes PREFIX.json")
    args = p.parse_args(argv)
    if args.device == "distribute" and not torch.cuda.is_available():
        p.error("--device distribute places the model on CUDA GPUs, and none is visible: pass --device cpu to check "
                "the path on one device")
    limits = MemoryLimits.parse(args.max_memory) if args.max_memory else None

    dtype = torch.bfloat16 if args.device != "cpu" else torch.float32
    t = time.perf_counter()
    init_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # fast random draws on a GPU
    model, full_depth = random_model(args.shape, args.layers, dtype, init_device, seed=0)
    adapter = adapter_for(model.config)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    if RECIPES[args.recipe] is not None:
        attach_quantizers(model, adapter, RECIPES[args.recipe])
        quantize_weights_rtn(model)
    quantize_s = time.perf_counter() - t
    t = time.perf_counter()
    if args.device == "distribute":
        distribute(model, adapter, limits)
    else:
        model.to(args.device)
    place_s = time.perf_counter() - t
    ids = torch.randint(0, model.config.vocab_size, (args.windows * args.seqlen,),
                        generator=torch.Generator().manual_seed(0))
    for i in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(i)
    t = time.perf_counter()
    ppl = perplexity(model, ids, args.seqlen)
    eval_s = time.perf_counter() - t
    placement = getattr(model, "hf_device_map", None)
    result = {
        "shape": args.shape, "layers": model.config.num_hidden_layers, "full_depth": full_depth,
        "recipe": args.recipe, "dtype": str(dtype).replace("torch.", ""), "windows": args.windows,
        "seqlen": args.seqlen, "ppl": ppl, "build_s": round(build_s, 1), "quantize_s": round(quantize_s, 1),
        "place_s": round(place_s, 1), "eval_s": round(eval_s, 2),
        "tokens_per_s": round(args.windows * args.seqlen / eval_s, 1),
        "gpus": [{"name": torch.cuda.get_device_name(i),
                  "peak_gib": round(torch.cuda.max_memory_allocated(i) / 2**30, 2)}
                 for i in range(torch.cuda.device_count())],
        "blocks_per_device": None if placement is None else {
            str(d): sum(1 for k, v in placement.items() if v == d and ".layers." in f".{k}.")
            for d in set(placement.values())},
        "max_memory": args.max_memory, "device": args.device, "versions": library_versions(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/distributed_ppl.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump({**result, "device_map": placement}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
