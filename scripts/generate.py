"""Generate text with a real-quantized checkpoint (packed 4-bit weights on the kernels).

    python scripts/generate.py --load_quantized DIR --prompt "Once upon a time" --max_new_tokens 64

Greedy by default; ``--temperature`` > 0 samples. On CUDA the linears run the Triton W4A4
kernels, on the CPU their torch reference twins. A checkpoint whose recipe quantizes K and V
to 4 bits decodes from a packed KV4 cache (``quant_layers.packed_kv_cache``).

``--static_cache`` decodes greedily from a static cache instead of HF ``generate``, each step
one replay of a captured CUDA graph on a GPU (``models.decoding``); ``--compile`` also puts
the step through ``torch.compile`` (implies ``--static_cache``). The same tokens up to
rounding (the static cache's attention sums over padded, masked buffers), far fewer launches
per token: this is the decode path ``benchmarks/bench_model.py`` times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.recipe import QuantRecipe  # noqa: E402
from export import load_quantized  # noqa: E402
from models import resolve_device  # noqa: E402
from models.decoding import cache_kwargs, greedy_generate  # noqa: E402
from quant_layers.packed_kv_cache import PackedKVCache  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_quantized", required=True, metavar="DIR", help="a checkpoint written by --real_quant")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--static_cache", action="store_true",
                   help="greedy decoding from a static cache, CUDA-graph replays on a GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (implies --static_cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens < 1:
        print(f"error: --max_new_tokens must be at least 1, got {args.max_new_tokens}", file=sys.stderr)
        return 2
    if not args.temperature >= 0:  # NaN too
        print(f"error: --temperature must be 0 (greedy) or more (sampling), got {args.temperature}", file=sys.stderr)
        return 2
    static = args.static_cache or args.compile
    if static and args.temperature > 0:
        print("error: --static_cache / --compile decode greedily; drop them to sample with --temperature",
              file=sys.stderr)
        return 2
    try:
        model, tokenizer, quantization_config = load_quantized(args.load_quantized, resolve_device(args.device))
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if tokenizer is None:
        print(f"error: {args.load_quantized} has no tokenizer files: export it again", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    device = next(model.parameters()).device
    inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
    sampling = dict(do_sample=True, temperature=args.temperature) if args.temperature > 0 else dict(do_sample=False)
    recipe = QuantRecipe.from_dict(quantization_config["recipe"])
    kv4 = all(spec is not None and spec.bits == 4 for spec in (recipe.key, recipe.value))
    cache = PackedKVCache(model) if kv4 and not static else None
    start = time.perf_counter()
    if static:
        out = until_eos(greedy_generate(model, inputs["input_ids"], args.max_new_tokens, kv4=kv4, compile=args.compile),
                        inputs["input_ids"].shape[1], tokenizer.eos_token_id)
    else:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.eos_token_id,
                                 **cache_kwargs(model, cache), **sampling)
    seconds = time.perf_counter() - start
    new = out.shape[1] - inputs["input_ids"].shape[1]
    print(tokenizer.decode(out[0], skip_special_tokens=True))
    kv = f", packed KV4 cache {cache.nbytes / 2**10:.0f} KiB" if cache is not None else ""
    kv = ", static packed KV4 cache" if kv4 and static else kv
    kv += ", compiled" if args.compile else ""
    print(f"\n[{new} tokens in {seconds:.2f} s, {new / seconds:.1f} tokens/s on {device}{kv}]", file=sys.stderr)
    return 0


def until_eos(tokens: torch.Tensor, prompt_length: int, eos: int | None) -> torch.Tensor:
    """(1, length) ids cut after the first generated end-of-sequence token, as ``generate`` stops there."""
    generated = tokens[0, prompt_length:]
    ends = (generated == eos).nonzero() if eos is not None else generated[:0]
    return tokens if len(ends) == 0 else tokens[:, :prompt_length + int(ends[0]) + 1]


if __name__ == "__main__":
    sys.exit(main())
