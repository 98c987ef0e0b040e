"""The compiled decode step of a random real-quantized model against the eager one, in each activation-codes form.

For each mode and decode batch: a random ``--config`` model of ``--layers`` layers (``bench_model.build_model``), a
``--seqlen`` prefill into a static cache, then the first decode step's logits four ways: eager and
``torch.compile``d, each with the decode path's default codes (for E2M1 weights on a GPU: E4M3 planes at 5-64 rows,
``quant_kernels.decode_codes_form``) and with dp4a bytes (``PTQ_E2M1_PLANES=0``). Reported: each pair's relative
L2 difference of the logits and the share of rows whose greedy token agrees; then ``--steps`` greedy tokens of the
captured compiled step (on a GPU; the compiled step itself on a CPU) against the eager step (default codes), and
where each row first parts. A check fails on a non-finite logit or a relative difference over ``--tolerance``:
any rounding difference (FP8 against integer accumulation, an ulp of a K scale in compiled glue) flips a few 4-bit
activation or K/V codes, and each flip moves a product by a quantization step, so the forms differ by about the
noise of 4-bit quantization (on the CPU, the compiled and eager steps of a one-layer W4A4KV4 model, whose new K
scales differed by an ulp and one K code by one, differed by 0.11; on a random Llama-3-8B's layers, whose fused
bfloat16 glue inductor kept in fp32, 0.2-0.42 until ``models.decoding.compile_options`` emulated eager's casts,
0 since); a wrong path differs by about the logits' own size (1 and more).

    python benchmarks/decode_match.py --modes fp4a4kv4 --batches 8,16 --out benchmarks/results/decode_match_fp4_h200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_model import CONFIGS, MODES, build_config, build_model, mode_list  # noqa: E402
from benchmarks.kernel_bench import counts  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from models import resolve_device  # noqa: E402
from models.decoding import StaticDecoder, compile_options, keeping_cache_length  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402
from quant_kernels.switches import environment  # noqa: E402

FORMS = {"default": "1", "bytes": "0"}  # PTQ_E2M1_PLANES for each codes form (1, E4M3 planes, is its default)


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


@torch.no_grad()
def step_logits(decoder: StaticDecoder, form: str, compiled: bool) -> torch.Tensor:
    """The first decode step's float logits in codes form ``form``, eager or compiled (its second call, after one
    that autotunes); the cache's count is left as it was."""
    with environment((("PTQ_E2M1_PLANES", FORMS[form]),)):
        torch._dynamo.reset()  # the form is read when the step is traced
        forward = torch.compile(decoder.logits, options=compile_options()) if compiled else decoder.logits
        if compiled:
            with keeping_cache_length(decoder.cache):
                forward()
        with keeping_cache_length(decoder.cache):
            return forward().float()


@torch.no_grad()
def greedy_steps(model, ids: torch.Tensor, steps: int, kv4: bool, compiled: bool) -> torch.Tensor:
    torch._dynamo.reset()
    decoder = StaticDecoder(model, ids, steps, kv4=kv4, compile=compiled)
    if compiled and ids.is_cuda:
        decoder.capture()
    return torch.cat([decoder.step().clone() for _ in range(steps)], dim=1)


def match_batch(model, mode: str, batch: int, args, device: torch.device) -> dict:
    generator = torch.Generator(device=device).manual_seed(batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.seqlen), device=device, generator=generator)
    kv4 = MODES[mode].kv4
    decoder = StaticDecoder(model, ids, args.steps, kv4=kv4)
    logits = {(form, compiled): step_logits(decoder, form, compiled) for form in FORMS for compiled in (False, True)}
    pairs = {"default eager vs bytes eager": (("default", False), ("bytes", False)),
             "default compiled vs default eager": (("default", True), ("default", False)),
             "bytes compiled vs bytes eager": (("bytes", True), ("bytes", False))}
    row = {"mode": mode, "batch": batch, "finite": all(bool(v.isfinite().all()) for v in logits.values())}
    for name, (a, b) in pairs.items():
        row[name] = {"relative_l2": relative_difference(logits[a], logits[b]),
                     "same_token": (logits[a].argmax(-1) == logits[b].argmax(-1)).float().mean().item()}
    eager = greedy_steps(model, ids, args.steps, kv4, compiled=False)
    graph = greedy_steps(model, ids, args.steps, kv4, compiled=True)
    same = eager == graph
    parted = torch.where(same.all(-1), args.steps, (~same).int().argmax(-1))
    row["greedy"] = {"steps": args.steps, "same_tokens": same.float().mean().item(),
                     "first_parting_step_per_row": parted.tolist()}
    row["ok"] = row["finite"] and all(row[name]["relative_l2"] <= args.tolerance for name in pairs)
    return row


def markdown(result: dict) -> str:
    lines = [f"# Decode step: compiled against eager, E4M3 planes against dp4a bytes ({result['config']}, "
             f"{result['layers']} layers, random weights)", "",
             f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Command: `{result['command']}`", "",
             f"First decode step after a {result['seqlen']}-token prefill: relative L2 difference of the logits and "
             f"the share of rows with the same greedy token (tolerance {result['tolerance']}); then "
             "the captured compiled step's greedy tokens against the eager step's.", "",
             "| mode | batch | planes vs bytes (eager) | compiled vs eager (default) | compiled vs eager (bytes) "
             "| greedy tokens same | first parting step per row | ok |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        cells = [f"{row[name]['relative_l2']:.2e}, {row[name]['same_token']:.0%}" for name in
                 ("default eager vs bytes eager", "default compiled vs default eager", "bytes compiled vs bytes eager")]
        greedy = row["greedy"]
        lines.append(f"| {row['mode']} | {row['batch']} | {' | '.join(cells)} | {greedy['same_tokens']:.1%} of "
                     f"{greedy['steps']} steps | {greedy['first_parting_step_per_row']} | "
                     f"{'ok' if row['ok'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="llama-3-8b", choices=sorted(CONFIGS))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--modes", type=mode_list, default=["fp4a4kv4"])
    p.add_argument("--batches", type=counts, default=[8, 16])
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--tolerance", type=float, default=0.25)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    for flag in ("layers", "seqlen", "steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not args.batches:
        p.error("--batches is empty: give at least one decode batch")
    device = resolve_device(args.device)
    config = build_config(args.config, args.layers, args.seqlen)
    result = {"config": args.config, "layers": args.layers, "seqlen": args.seqlen, "tolerance": args.tolerance,
              "device": device_name(device), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "versions": library_versions(),
              "command": command_line("decode_match.py", argv if argv is not None else sys.argv[1:]), "rows": []}
    for mode in args.modes:
        with environment(MODES[mode].env):
            model = build_model(config, mode, device)
            for batch in args.batches:
                result["rows"].append(match_batch(model, mode, batch, args, device))
                print(result["rows"][-1], flush=True)
                write_result_files(args.out, result, markdown(result))
        del model
    print(markdown(result))
    return 0 if all(row["ok"] for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
