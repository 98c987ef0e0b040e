"""Probe: what the activation kernel's launches cost a compiled W4A4KV4 decode step (an upper bound).

Times the graph-replayed decode step of ``decode_profile`` with the activation kernel's
decode-step launches replaced by returning the outputs of their first call (no launch at
all; the numbers computed are then wrong, only the time means anything):

* ``norm_silu``: the RMSNorm and silu·up quantizations of the fused decode layers (three a layer);
* ``all_act``: those and o_proj's input quantization (four a layer);
* ``ungated``: nothing replaced, but silu(gate) * up computed by the activation kernel's prologue (one program a
  row) instead of gate/up's decode-kernel epilogue (``DecodePlan.gated_rows`` 0), the arrangement before it;
* ``unsplit``: nothing replaced, but no row split among the activation kernel's programs (``act_quant.SPLIT``):
  the autotuner picks it for decode rows in isolation; this times the step without it;
* ``untailed``: nothing replaced, but the post-attention RMSNorm quantized by a launch of its own instead of
  o_proj's decode kernel's last program (``DecodePlan.norm_tail`` None), the arrangement before it;
* ``post_norm``: untailed, and those launches replaced (every second call of a fused layer's two RMSNorm
  quantizations): what moving them into o_proj's decode kernel could save at most;
* ``attention_untailed``: nothing replaced, but o_proj's input quantized by a launch of its own instead of the
  decode attention's combining kernel's last program (``DecodePlan.attention_tail`` None), the arrangement before it;
* ``down_untailed``: nothing replaced, but each layer's input RMSNorm quantized by a launch of its own instead of
  the previous layer's down_proj's decode kernel's last program (``DecodePlan.next_input_tail`` None), the
  arrangement before it;
* ``bf16``: the bf16 model's step, timed the same way, for the ratio.

A control without patches runs first and last, in the same process. What a fusion of those
launches into the kernels before them could save is at most the difference. Each variant also
digests the logits of a one-token forward before it is timed: the variants that replace no launch
(the un-fused arrangements) must give the first variant's logits bit for bit.

    python benchmarks/launch_cost_probe.py --out OUT/launch_cost_probe_h200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import quant_kernels  # noqa: E402
import quant_kernels.act_quant as act_quant  # noqa: E402
import models.fused_decoder_layer as fused_decoder_layer  # noqa: E402
from benchmarks.bench_model import build_config  # noqa: E402
from benchmarks.decode_profile import profile_mode, tuned_configs  # noqa: E402
from benchmarks.result_files import command_line  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402

ORIGINAL = {name: getattr(quant_kernels, name) for name in ("rms_norm_quantize", "silu_mul_quantize",
                                                         "quantize_activations")}


def _first_call_outputs(function, only_dp4a: bool = False, every_second: bool = False):
    cache: dict = {}
    calls = [0]

    def replay(x, *args, **kwargs):
        calls[0] += 1
        if (only_dp4a and kwargs.get("dp4a_for") is None) or (every_second and calls[0] % 2):
            return function(x, *args, **kwargs)
        key = (tuple(x.shape), x.dtype, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = tuple(t.clone() for t in function(x, *args, **kwargs))
        return cache[key]

    return replay


PLAN = fused_decoder_layer.decode_plan
NEXT_INPUT_TAIL = fused_decoder_layer.next_input_tail
SPLIT_MAX_M = act_quant.SPLIT_MAX_M


def _plan_for(variant: str):
    """decode_plan, less the gated epilogue (``ungated``), the norm tail (``untailed``, ``post_norm``) or the
    attention's tail (``attention_untailed``)."""
    if variant not in ("ungated", "untailed", "post_norm", "attention_untailed"):
        return PLAN

    def plan_of(layer):
        plan = PLAN(layer)
        if plan is not None and variant == "ungated":
            plan.gated_rows = 0
        if plan is not None and variant in ("untailed", "post_norm"):
            plan.norm_tail = None
        if plan is not None and variant == "attention_untailed":
            plan.attention_tail = None
        return plan

    return plan_of


def patch(variant: str) -> None:
    for name, function in ORIGINAL.items():
        setattr(quant_kernels, name, function)
    fused_decoder_layer.decode_plan = _plan_for(variant)
    fused_decoder_layer.next_input_tail = (lambda plan, layer: None) if variant == "down_untailed" else NEXT_INPUT_TAIL
    split_max_m = 0 if variant == "unsplit" else SPLIT_MAX_M
    if act_quant.SPLIT_MAX_M != split_max_m:  # the tuner's picks so far were made with the other candidates
        act_quant.SPLIT_MAX_M = split_max_m
        act_quant._act_quant_autotuned.cache.clear()
    if variant in ("norm_silu", "all_act"):
        quant_kernels.rms_norm_quantize = _first_call_outputs(ORIGINAL["rms_norm_quantize"])
        quant_kernels.silu_mul_quantize = _first_call_outputs(ORIGINAL["silu_mul_quantize"])
    if variant == "post_norm":  # a fused layer quantizes its input norm first, its post-attention norm second
        quant_kernels.rms_norm_quantize = _first_call_outputs(ORIGINAL["rms_norm_quantize"], every_second=True)
    if variant == "all_act":
        quant_kernels.quantize_activations = _first_call_outputs(ORIGINAL["quantize_activations"], only_dp4a=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="control,norm_silu,all_act,control")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    device = torch.device("cuda")
    config = build_config("llama-3-8b", None, 2048)
    result = {"device": device_name(device), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "versions": library_versions(), "command": command_line("launch_cost_probe.py",
                                                                           argv or sys.argv[1:]), "rows": []}
    digests: dict[str, str] = {}  # the first variant's logits digest per mode
    for variant in args.variants.split(","):
        patch(variant)
        mode = "bf16" if variant == "bf16" else "w4a4kv4"
        row = profile_mode(config, mode, args.batch, 2048, args.steps, device, compile=True, digest=True)
        launches = sum(k["count"] for k in row["kernels"].values())
        digests.setdefault(mode, row["logits_sha256"])
        same = row["logits_sha256"] == digests[mode]
        result["rows"].append({"variant": variant, "batch": args.batch, "step_us": row["step_us"], "launches": launches,
                               "logits_sha256": row["logits_sha256"], "logits_equal_first": same,
                               "kernels": row["kernels"], "tuned_configs": tuned_configs()})
        print(f"{variant}: step {row['step_us']:.1f} us, {launches:.0f} launches, one-token logits "
              f"{'equal to' if same else 'differ from'} the first {mode} variant's", flush=True)
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
    patch("control")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
