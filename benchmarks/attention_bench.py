"""Decode attention over a static cache: the bf16 cache's kernel and the packed KV4 cache's, across batch sizes, the
programs each SM is given (``PTQ_ATTENTION_PROGRAMS_PER_SM``, which sets how far the keys are split) and, with
``--tiles``, the partial kernel's tiles (``PTQ_ATTENTION_TILE``: keys a step, warps, stages, register cap).

Llama-3-8B's attention by default (8 K/V heads, 4 query heads each, head dim 128): one query token a sequence over a
cache of ``--length`` slots of which ``--context`` are written (bench_model's decode: 2306 slots, 2176 keys on
average over its 256 steps after 2048). The KV4 cache is bench_model's (INT4 K, asymmetric INT4 V, a scale per
token and head), read in two forms: each K and V tile dequantized as the cache does ("KV4"), or the codes taken
by the dots and the scales applied to the scores and probabilities ("KV4 factored", ``PTQ_KV4_FACTORED=1``). Each
call is timed in a stream of CUDA-graph calls with the L2 flushed before each (``benchmarks.timing``) and checked
against attention in fp32 over the cache. GB/s counts the written keys' bytes (codes, scales and zero
points for KV4), against about 3.0 TB/s of copy on the H100.

    python benchmarks/attention_bench.py --out benchmarks/results/attention_bench_h100
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import counts  # noqa: E402
from benchmarks.result_files import run_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, flush_note, gpu_stream_timer  # noqa: E402
from quant_kernels.switches import environment  # noqa: E402

PROGRAMS_ENV = "PTQ_ATTENTION_PROGRAMS_PER_SM"
# The switches each timed form runs under: the KV4 cache dequantized tile by tile, or its scales factored out of
# the dots (``flash_decode.factored``).
FORM_SWITCHES = {"bf16": (), "KV4": (("PTQ_KV4_FACTORED", "0"),), "KV4 factored": (("PTQ_KV4_FACTORED", "1"),)}


def tiles(text: str) -> list[str]:
    """``--tiles``: a comma list of PTQ_ATTENTION_TILE values, each checked (``flash_decode.parse_tile``)."""
    from quant_kernels.flash_decode import parse_tile

    chosen = [part for part in text.split(",") if part]
    for part in chosen:
        try:
            parse_tile(part)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return chosen


def cache_bytes(batch: int, heads_kv: int, context: int, dim: int, packed: bool) -> int:
    """Bytes of K and V the written keys hold: bf16 values, or KV4's codes (half a byte each), an fp32 scale per
    token and head for K and V and an fp32 zero point for V."""
    per_key = dim // 2 * 2 + 4 * 3 if packed else dim * 2 * 2
    return batch * heads_kv * context * per_key


def bench(batch: int, args, time_ms, device: torch.device) -> list[dict]:
    """One row per (cache form, programs per SM, tile) at this batch size."""
    import quant_kernels
    from quant_kernels import reference
    from quant_kernels.flash_decode import TILE_ENV, _splits, partial_tile
    from quant_layers.packed_kv_cache import _PackedTensor
    from quant_layers.quantizer import QuantSpec, Quantizer

    heads_kv, dim = args.heads_kv, args.dim
    q = torch.randn(batch, heads_kv, args.groups, dim, device=device, dtype=torch.bfloat16)
    key, value = (torch.randn(batch, heads_kv, args.length, dim, device=device, dtype=torch.bfloat16)
                  for _ in range(2))
    mask = (torch.arange(args.length, device=device) < args.context)[None, None, None, :]  # shared by the batch
    specs = (QuantSpec("int", 4, granularity="head"), QuantSpec("int", 4, granularity="head", symmetric=False))
    packed_key, packed_value = (_PackedTensor(Quantizer(spec, dim)) for spec in specs)
    packed_key.append(key)
    packed_value.append(value)
    def packed_call():
        return quant_kernels.decode_attention_packed(q, packed_key.operand, packed_value.operand, mask,
                                                     key_element=packed_key.kernel_element,
                                                     value_element=packed_value.kernel_element, backend="triton")

    bf16_twin = reference.decode_attention_ref(q.float(), key.float(), value.float(), mask, dim**-0.5)
    kv4_twin = reference.decode_attention_ref(q.float(), packed_key.dequantized(torch.float32),
                                              packed_value.dequantized(torch.float32), mask, dim**-0.5)
    calls = {"bf16": (lambda: quant_kernels.decode_attention(q, key, value, mask, backend="triton"), bf16_twin),
             "KV4": (packed_call, kv4_twin), "KV4 factored": (packed_call, kv4_twin)}
    rows = []
    for cache, (call, want) in calls.items():
        packed = cache != "bf16"
        for programs, tile_text in itertools.product(args.programs, args.tiles or [None]):
            tile_switch = () if tile_text is None else ((TILE_ENV, tile_text),)
            with environment(((PROGRAMS_ENV, str(programs)), *FORM_SWITCHES[cache], *tile_switch)):
                error = ((call().float() - want).abs().max() / want.abs().max()).item()
                ms = time_ms(call)
                tile = partial_tile(packed, cache == "KV4 factored", batch * heads_kv, args.length, device)
                splits = _splits(args.length, batch * heads_kv, device, packed, tile.keys)[1]
            total = cache_bytes(batch, heads_kv, args.context, dim, packed)
            rows.append({"batch": batch, "cache": cache, "programs_per_sm": programs, "tile": str(tile),
                         "splits": splits, "us": ms * 1e3, "gb_s": total / (ms * 1e-3) / 1e9, "rel_err": error})
    return rows


def markdown(result: dict) -> str:
    lines = ["# Decode attention over a static cache: bf16 and KV4 (its tiles dequantized, or its scales factored "
             "out of the dots), by programs per SM and tile", "",
             f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Command: `{result['command']}`", "",
             f"{result['heads_kv']} K/V heads, {result['groups']} query heads each, head dim {result['dim']}; "
             f"{result['context']} written keys of {result['length']} slots. Median µs of one call in a stream of "
             f"CUDA-graph calls, the {flush_note(result['l2_flush'])} before each; GB/s of the written keys' bytes; "
             "largest error over the "
             "largest output, against attention in fp32 over the cache (KV4: dequantized in fp32). Tile: the partial "
             "kernel's keys a step x warps x stages (x its register cap).", "",
             "| batch | cache | programs per SM | tile | slices | µs | GB/s | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['batch']} | {r['cache']} | {r['programs_per_sm']} | {r['tile']} | {r['splits']} | "
                     f"{r['us']:.1f} | {r['gb_s']:.0f} | {r['rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=counts, default=[1, 8, 64], help="sequences, one query token each")
    p.add_argument("--programs", type=counts, default=[2, 4, 8, 16],
                   help=f"programs per SM to try ({PROGRAMS_ENV}; by default 4 over KV4, 2 over bf16)")
    p.add_argument("--tiles", type=tiles, default=[],
                   help="comma list of partial-kernel tiles to try, each KEYSxWARPSxSTAGES[xMAXNREG] "
                        "(PTQ_ATTENTION_TILE; by default the launch's own, flash_decode.partial_tile)")
    p.add_argument("--length", type=int, default=2306, help="cache slots (bench_model: 2048 + 256 + 2)")
    p.add_argument("--context", type=int, default=2176, help="written keys (bench_model's mean context)")
    p.add_argument("--heads_kv", type=int, default=8)
    p.add_argument("--groups", type=int, default=4, help="query heads per K/V head")
    p.add_argument("--dim", type=int, default=128, help="head dim")
    p.add_argument("--in_stream", type=int, default=20, help="calls per timed CUDA graph")
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if not 1 <= args.context <= args.length:
        p.error(f"--context must be 1 to --length ({args.length}) keys, got {args.context}")
    device, time_ms = gpu_stream_timer(p, args.in_stream, args.l2_flush)
    result = {**run_header("attention_bench.py", argv, device), "l2_flush": args.l2_flush,
              **{name: getattr(args, name) for name in ("length", "context", "heads_kv", "groups", "dim")},
              "rows": []}
    for batch in args.batches:
        result["rows"] += bench(batch, args, time_ms, device)
        write_result_files(args.out, result, markdown(result))
        print(result["rows"][-1], flush=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
