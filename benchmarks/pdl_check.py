"""The decode step with its kernels launched as programmatic dependent launches, against the same step without.

A kernel launched that way (``quant_kernels.pdl``) starts before the kernel it follows has ended; one that read its
input or wrote its output too early would change tokens or cache contents only on a GPU, and only sometimes.
This builds a W4A4KV4 model of a real config's shapes (random weights, fewer layers), then, in one process
(so every autotuned kernel keeps its config), decodes ``--steps`` greedy tokens from one prompt with a
compiled, graph-replayed step under ``PTQ_PDL=off`` and under each other mode, and compares the tokens and
every packed K/V cache buffer bit for bit:

    python benchmarks/pdl_check.py --config llama-3-8b --layers 4 --steps 64 --out OUT/pdl_check_h200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_model import CONFIGS, build_config, build_model  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from quant_kernels.pdl import PDL_MODES  # noqa: E402
from models.decoding import StaticDecoder  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402


def decode(model, ids: torch.Tensor, steps: int, mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(tokens (batch, steps), the cache's buffers) of a compiled, captured decode under ``PTQ_PDL=mode``."""
    os.environ["PTQ_PDL"] = mode
    decoder = StaticDecoder(model, ids, steps, kv4=True, compile=True)
    decoder.capture()
    tokens = torch.cat([decoder.step().clone() for _ in range(steps)], dim=1)
    torch.cuda.synchronize()
    buffers = [t for layer in decoder.cache.layers for part in (layer.packed_keys, layer.packed_values)
               for t in part.operand if t is not None]
    return tokens, buffers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="llama-3-8b", choices=sorted(CONFIGS))
    p.add_argument("--layers", type=int, default=4, help="decoder layers (default 4: the check, not the model)")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (random ids)")
    p.add_argument("--steps", type=int, default=64, help="greedy tokens decoded")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--modes", default="all,all", help="comma list of the PTQ_PDL modes to compare with off, in "
                                                      "order (default all,all: a race need not show every time)")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if set(modes) - set(PDL_MODES):
        p.error(f"unknown modes {sorted(set(modes) - set(PDL_MODES))} in --modes: choose from {', '.join(PDL_MODES)}")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: programmatic dependent launch exists only on a GPU (Hopper or later)")
    device = torch.device("cuda")
    model = build_model(build_config(args.config, args.layers, args.prompt + args.steps), "w4a4kv4", device)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.prompt), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_name(device),
              "versions": library_versions(),
              "command": command_line("pdl_check.py", argv if argv is not None else sys.argv[1:]),
              "runs": []}
    want_tokens, want_buffers = decode(model, ids, args.steps, "off")
    for mode in modes:
        tokens, buffers = decode(model, ids, args.steps, mode)
        differ = [i for i, (a, b) in enumerate(zip(buffers, want_buffers)) if not torch.equal(a, b)]
        run = {"mode": mode, "tokens_equal": torch.equal(tokens, want_tokens),
               "first_token_differing": next((i for i in range(args.steps)
                                              if not torch.equal(tokens[:, i], want_tokens[:, i])), None),
               "cache_buffers": len(buffers), "cache_buffers_differing": len(differ)}
        run["ok"] = run["tokens_equal"] and not differ
        result["runs"].append(run)
        print(run, flush=True)
    os.environ.pop("PTQ_PDL")
    lines = [f"# Programmatic dependent launch check: {args.config}, {args.layers} layers, W4A4KV4", "",
             f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Command: `{result['command']}`", "",
             f"{args.steps} greedy tokens after a {args.prompt}-token prompt (batch {args.batch}), compiled step "
             "replayed from a CUDA graph, against the same decode under `PTQ_PDL=off`.", "",
             "| PTQ_PDL | tokens equal | first differing token | cache buffers differing | ok |",
             "|---|---|---|---|---|"]
    for run in result["runs"]:
        lines.append(f"| {run['mode']} | {run['tokens_equal']} | {run['first_token_differing']} | "
                     f"{run['cache_buffers_differing']} of {run['cache_buffers']} | {'ok' if run['ok'] else 'FAIL'} |")
    write_result_files(args.out, result, "\n".join(lines) + "\n")
    return 0 if all(run["ok"] for run in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
