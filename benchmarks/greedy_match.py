"""Greedy decoding of a real-quantized checkpoint against its full-precision model, token by token.

Loads the original model (``--model``, in ``--dtype``) and the checkpoint (``--load_quantized``,
written by ``model_quant.py --real_quant``), decodes ``--max_new_tokens`` greedy tokens from
the same prompt with each, and reports how many leading tokens agree and both texts:

    python model_quant.py --model models_local/SmolLM2-135M-Instruct --dtype bfloat16 --format int \\
        --w_bits 8 --a_bits 8 --real_quant --save_path ckpt/smollm2-w8a8 --ppl_datasets ""
    python benchmarks/greedy_match.py --model models_local/SmolLM2-135M-Instruct --dtype bfloat16 \\
        --load_quantized ckpt/smollm2-w8a8 --out benchmarks/results/greedy_match_smollm2_w8a8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from export import load_quantized  # noqa: E402
from models import load_model, load_tokenizer, resolve_device  # noqa: E402
from models.loading import locate  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402


@torch.no_grad()
def greedy(model, ids: torch.Tensor, steps: int, eos: int | None) -> list[int]:
    out = model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=eos)
    return out[0, ids.shape[1]:].tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the full-precision model the checkpoint was made from")
    p.add_argument("--load_quantized", required=True, metavar="DIR")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    loc = locate(args.model)
    tokenizer = load_tokenizer(loc)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids.to(device)
    reference = load_model(loc, dtype, device).eval()
    t = time.perf_counter()
    want = greedy(reference, ids, args.max_new_tokens, tokenizer.eos_token_id)
    reference_s = time.perf_counter() - t
    del reference
    quantized, _, qc = load_quantized(args.load_quantized, device, dtype)
    t = time.perf_counter()
    got = greedy(quantized, ids, args.max_new_tokens, tokenizer.eos_token_id)
    quantized_s = time.perf_counter() - t
    agree = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), len(want))
    result = {
        "model": args.model, "checkpoint": args.load_quantized, "recipe": qc["recipe"], "dtype": args.dtype,
        "prompt": args.prompt, "max_new_tokens": args.max_new_tokens, "leading_tokens_equal": agree,
        "reference_text": tokenizer.decode(want), "quantized_text": tokenizer.decode(got),
        "reference_s": reference_s, "quantized_s": quantized_s, "device": device_name(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": library_versions(),
        "command": command_line("greedy_match.py", argv if argv is not None else sys.argv[1:]),
    }
    md = "\n".join([
        f"# Greedy decoding: {args.load_quantized} against {args.model} ({args.dtype})", "",
        f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
        f"Command: `{result['command']}`", "",
        f"Prompt: `{args.prompt}`. Leading generated tokens equal: **{agree} of {args.max_new_tokens}**.", "",
        f"- full precision ({reference_s:.1f} s): {result['reference_text']!r}",
        f"- real-quantized ({quantized_s:.1f} s): {result['quantized_text']!r}", "",
    ])
    write_result_files(args.out, result, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
