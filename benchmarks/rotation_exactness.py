"""How exactly a fused rotation preserves a real model: max relative logit error per transform.

Loads the model in float64 and float32, fuses each transform class (no quantization) and
compares the logits on a few windows of WikiText-2 with the unrotated model's.

    python benchmarks/rotation_exactness.py --model models_local/SmolLM2-135M-Instruct \\
        --data_dir ../shared/assets/data --out benchmarks/results/rotation_exactness_smollm2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import write_result_files  # noqa: E402

import corpora  # noqa: E402
from evaluation import evaluation_tokens  # noqa: E402
from models import adapter_for, load_model, load_tokenizer  # noqa: E402
from models.loading import dtype_name, locate  # noqa: E402
from transforms import apply_transform  # noqa: E402

CASES = [("hadamard", None), ("random_orthogonal", None), ("block_hadamard", 16), ("block_hadamard", 32),
         ("block_hadamard", 64)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data_dir")
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.md and PREFIX.json")
    args = p.parse_args(argv)

    loc = locate(args.model, None)
    ids = evaluation_tokens(corpora.resolve("wikitext2", "test", args.data_dir), load_tokenizer(loc))
    batch = ids[: args.windows * args.seqlen].reshape(args.windows, args.seqlen)
    rows = []
    for dtype in (torch.float64, torch.float32):
        with torch.no_grad():
            ref = load_model(loc, dtype, torch.device("cpu"))(batch).logits
        for transform, group in CASES:
            model = load_model(loc, dtype, torch.device("cpu"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                apply_transform(model, adapter_for(model.config), transform, seed=0, group_size=group)
            with torch.no_grad():
                out = model(batch).logits
            err = float((out - ref).abs().max() / ref.abs().max())
            rows.append({"dtype": dtype_name(dtype), "transform": transform, "block": group,
                         "max_rel_logit_error": err})
            print(rows[-1], flush=True)
    lines = [
        f"# Rotation exactness: {os.path.basename(args.model.rstrip('/'))}",
        "",
        f"Max |logits_rotated - logits| / max |logits| over {args.windows} WikiText-2 windows of {args.seqlen} "
        f"tokens, no quantization, CPU. Date: {time.strftime('%Y-%m-%d')}, torch {torch.__version__}.",
        f"Command: `python benchmarks/rotation_exactness.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "HF's RMSNorm computes in float32 even for a float64 model, which bounds the float64 figures near 1e-7.",
        "",
        "| dtype | transform | block | max relative logit error |",
        "|---|---|---|---|",
        *[f"| {r['dtype']} | {r['transform']} | {r['block'] or 'full'} | {r['max_rel_logit_error']:.2e} |" for r in rows],
    ]
    write_result_files(args.out, rows, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
