"""Where a decode step's time goes: GPU time per kernel of one CUDA-graph decode step, per mode.

Builds the ``bench_model`` model (random weights, real shapes), prefills ``--seqlen`` tokens
into a static cache, captures one decode step as a CUDA graph, then profiles ``--steps``
replays with ``torch.profiler``. With ``--prefill`` it profiles ``bench_model``'s timed
prefill instead: ``--steps`` eager forwards over ``--batch`` x ``--seqlen`` tokens, no cache.
Reports, per mode: the step's wall time, the sum of its kernels' GPU time (the rest is the
gaps between kernels), and the kernels grouped by name with their count and GPU time per
step, largest first; and the configs the W4A4 decode GEMV's and the activation kernel's
autotuners picked in the process.

    python benchmarks/decode_profile.py --compile --modes bf16,w4a4 --out benchmarks/results/decode_profile_h200
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_model import CONFIGS, MODES, build_config, build_model, mode_list  # noqa: E402
from models.decoding import StaticDecoder, compile_options, inductor_option  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402


def kernel_times(profile, steps: int) -> dict[str, dict[str, float]]:
    """GPU microseconds and launches per step, by kernel name."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: {"us": 0.0, "count": 0.0})
    for event in profile.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            row = table[event.name]
            row["us"] += event.device_time / steps
            row["count"] += 1 / steps
    return dict(table)


def timed_and_profiled(run: Callable[[], object], steps: int, device: torch.device) -> tuple[float, dict]:
    """Microseconds per call of ``run`` (wall clock over ``steps`` calls), then its kernels' GPU time per call
    over ``steps`` more calls under torch.profiler (``kernel_times``); the caller warms up first."""
    start = time.perf_counter()
    for _ in range(steps):
        run()
    torch.cuda.synchronize(device)
    step_us = (time.perf_counter() - start) / steps * 1e6
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(steps):
            run()
        torch.cuda.synchronize(device)
    return step_us, kernel_times(profile, steps)


def _inductor_option(text: str) -> tuple:
    try:
        return inductor_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _row(mode: str, batch: int, compile: bool, warmup_s: float, step_us: float, kernels: dict,
         inductor_options: dict | None = None) -> dict:
    return {"mode": mode, "batch": batch, "compile": compile, "inductor_options": inductor_options or {},
            "capture_s": warmup_s, "step_us": step_us, "kernel_us": sum(k["us"] for k in kernels.values()),
            "kernels": kernels}


def logits_digest(model: nn.Module, ids: torch.Tensor) -> str:
    """SHA-256 of the logits of a one-token forward (no cache) of ids' first tokens: one decode-sized pass through
    every fused layer, so that variants of a step that should compute the same numbers can be compared bit for
    bit."""
    logits = model(ids[:, :1], use_cache=False).logits
    return hashlib.sha256(logits.float().cpu().numpy().tobytes()).hexdigest()


@torch.no_grad()
def profile_mode(config, mode: str, batch: int, seqlen: int, steps: int, device: torch.device,
                 compile: bool = False, inductor_options: dict | None = None, digest: bool = False) -> dict:
    """The graph-replayed decode step of ``mode`` timed and profiled; ``digest``: with the ``logits_digest`` of
    the model first."""
    model = build_model(config, mode, device)
    torch._dynamo.reset()
    ids = torch.randint(0, config.vocab_size, (batch, seqlen), device=device)
    digested = {"logits_sha256": logits_digest(model, ids)} if digest else {}
    decoder = StaticDecoder(model, ids, steps * 2 + 4, kv4=MODES[mode].kv4, compile=compile,
                            inductor_options=inductor_options)
    started = time.perf_counter()
    decoder.capture()
    capture_s = time.perf_counter() - started
    for _ in range(3):
        decoder.step()
    torch.cuda.synchronize(device)
    step_us, kernels = timed_and_profiled(decoder.step, steps, device)
    del model, decoder
    torch.cuda.empty_cache()
    return {**_row(mode, batch, compile, capture_s, step_us, kernels, inductor_options), **digested}


@torch.no_grad()
def profile_prefill(config, mode: str, batch: int, seqlen: int, steps: int, device: torch.device) -> dict:
    """``bench_model``'s prefill (one eager forward, no cache), timed and profiled over ``steps`` calls after two
    warm-up calls (which autotune)."""
    model = build_model(config, mode, device)
    ids = torch.randint(0, config.vocab_size, (batch, seqlen), device=device)

    def forward() -> None:
        model(ids, use_cache=False)

    started = time.perf_counter()
    for _ in range(2):
        forward()
    torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - started
    step_us, kernels = timed_and_profiled(forward, steps, device)
    del model
    torch.cuda.empty_cache()
    return _row(mode, batch, False, warmup_s, step_us, kernels)


def tuned_configs() -> dict[str, list[str]]:
    """What the decode GEMV's (CUDA-core and tensor-core), the activation kernel's and the FPx row kernel's
    autotuners picked so far in this process, per key.

    Each process tunes anew, and the same decode step's GEMVs took 1258 to 1881 us in three
    processes on the H200 (``benchmarks/results/end_to_end_h200.md``, run 4): the picks go
    into the profile so that runs can be compared config by config.
    """
    from quant_kernels import act_quant, fpx_gemm, w4a4_gemv  # late: builds Triton kernels

    tuners = {"w4a4_gemv": w4a4_gemv._gemv_autotuned, "w4a4_tc": w4a4_gemv._tc_autotuned,
              "act_quant": act_quant._act_quant_autotuned, "fpx_row": fpx_gemm._fpx_row_autotuned}
    return {name: [f"{key}: {config}" for key, config in tuner.cache.items()] for name, tuner in tuners.items()}


def markdown(result: dict, top: int) -> str:
    prefill = result.get("prefill", False)
    shape = f"{result['config']}, batch {result['batch']}"
    title = (f"# Prefill profile: {shape}, {result['seqlen']} tokens" if prefill
             else f"# Decode step profile: {shape}, after {result['seqlen']} tokens")
    what = ("One eager prefill forward (no cache), as bench_model times it; a 'step' is one forward; kernel GPU "
            "time from torch.profiler, per forward." if prefill
            else "One CUDA-graph decode step, replayed; kernel GPU time from torch.profiler, per step. A kernel "
                 "launched as a programmatic dependent launch (quant_kernels.pdl, PTQ_PDL) starts before the one it "
                 "follows ends, and its time includes that wait: such kernels' times overlap, and their sum can "
                 "exceed the step (negative gaps).")
    lines = [title, "", f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Command: `{result['command']}`", "", what, ""]
    for row in result["rows"]:
        gap = row["step_us"] - row["kernel_us"]
        count = sum(k["count"] for k in row["kernels"].values())
        options = ", ".join(f"{k}={v}" for k, v in row.get("inductor_options", {}).items())
        compiled = (f" (compiled, {options})" if options else " (compiled)") if row.get("compile") else ""
        rate = "" if prefill else f" ({1e6 / row['step_us'] * row['batch']:.1f} tok/s)"
        lines += [f"## {row['mode']}{compiled}: {'forward' if prefill else 'step'} {row['step_us']:.0f} us{rate}, "
                  f"kernels {row['kernel_us']:.0f} us in {count:.0f} launches, gaps {gap:.0f} us; warm-up "
                  f"({'two forwards' if prefill else 'compile, autotune, capture'}) "
                  f"{row.get('capture_s', 0):.0f} s", "",
                  "| kernel | launches/step | us/step | share |", "|---|---|---|---|"]
        ranked = sorted(row["kernels"].items(), key=lambda item: -item[1]["us"])
        for name, k in ranked[:top]:
            lines.append(f"| `{name[:90]}` | {k['count']:.0f} | {k['us']:.1f} | {k['us'] / row['step_us']:.1%} |")
        lines.append("")
        for name, picks in row.get("tuned_configs", {}).items():
            lines += [f"Autotuned `{name}` configs in this process (key: config):", ""]
            lines += [f"- `{pick}`" for pick in picks] or ["- none"]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="llama-3-8b", choices=sorted(CONFIGS))
    p.add_argument("--layers", type=int, help="decoder layers to build (default: the config's)")
    p.add_argument("--modes", type=mode_list, default=["bf16", "w4a4"], help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="torch.compile the step before capturing it")
    p.add_argument("--inductor", type=_inductor_option, action="append", default=[], metavar="NAME=VALUE",
                   help="an inductor option for the compiled step (repeatable), e.g. combo_kernels=1")
    p.add_argument("--prefill", action="store_true",
                   help="profile the prefill forward (batch x seqlen tokens, no cache) instead of a decode step")
    p.add_argument("--top", type=int, default=25, help="kernels listed per mode")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if args.prefill and args.compile:
        p.error("--prefill profiles the eager forward bench_model times; --compile is for decode steps")
    if args.inductor and not args.compile:
        p.error("--inductor sets options of the compiled step: add --compile")
    inductor_options = dict(args.inductor)
    try:
        compile_options(inductor_options)  # an unknown name stops here, before a model is built
    except ValueError as error:
        p.error(str(error))
    if not torch.cuda.is_available():
        p.error("decode_profile needs a CUDA device (it profiles CUDA-graph replays)")
    device = torch.device("cuda")
    config = build_config(args.config, args.layers, args.seqlen)
    result = {"config": args.config, "batch": args.batch, "seqlen": args.seqlen, "prefill": args.prefill,
              "device": device_name(device),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": library_versions(),
              "command": command_line("decode_profile.py", argv or sys.argv[1:]), "rows": []}
    for mode in args.modes:
        if args.prefill:
            result["rows"].append(profile_prefill(config, mode, args.batch, args.seqlen, args.steps, device))
        else:
            result["rows"].append(profile_mode(config, mode, args.batch, args.seqlen, args.steps, device,
                                              compile=args.compile, inductor_options=inductor_options))
        result["rows"][-1]["tuned_configs"] = tuned_configs()
        write_result_files(args.out, result, markdown(result, args.top))
        print(f"done {mode}", flush=True)
    print(markdown(result, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
