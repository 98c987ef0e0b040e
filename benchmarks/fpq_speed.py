"""LLM-FP4 search time per round against one GPTQ pass, same model, windows and machine.

Loads a real checkpoint, keeps its first ``--layers`` decoder blocks (the per-block cost
does not depend on depth), draws ``--calib_size`` calibration windows and times, on fresh
copies of the model:

* one GPTQ pass (layer-by-layer runner, W4A4KV4 of ``--qbits`` with dynamic activations,
  as ``--quant_config RTN_config_llama --gptq``), and
* the LLM-FP4 search (``FPQ_config_llama``), with the time of each search round summed
  over every linear and K/V search (``FPQReport.round_seconds``).

Both are extrapolated to the model's full depth by the per-block time. The issue's rule:
no search round may be slower than one GPTQ pass.

    python benchmarks/fpq_speed.py --model models_local/SmolLM2-135M-Instruct \\
        --data_dir ../shared/assets/data --layers 4 --out benchmarks/results/fpq_speed_smollm2_cpu
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result_files import command_line, write_result_files  # noqa: E402

import corpora  # noqa: E402
from calib import LayerwiseConfig, calibrate_layerwise, calibration_windows  # noqa: E402
from calib import fpq_search  # noqa: E402
from configs import qbits_recipe  # noqa: E402
from models import adapter_for, load_model, load_tokenizer, resolve_device  # noqa: E402
from models.loading import locate  # noqa: E402
from pipeline import attach_quantizers  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data_dir", default=os.environ.get("PTQ_DATA_DIR"))
    p.add_argument("--calib_dataset", default="c4")
    p.add_argument("--calib_size", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib_batch_size", type=int, default=4)
    p.add_argument("--qbits", type=int, nargs="+", default=[4, 4, 4, 2, 2, 2])
    p.add_argument("--search_round", type=int, default=3)
    p.add_argument("--search_tokens", type=int, default=fpq_search.FPQConfig.search_tokens)
    p.add_argument("--layers", type=int, default=4, help="decoder blocks kept (timed), from the first")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    loc = locate(args.model, None)
    tokenizer = load_tokenizer(loc)
    model = load_model(loc, torch.float32, torch.device("cpu"))
    adapter = adapter_for(model.config)
    layers = adapter.decoder_layers(model)
    full_depth = len(layers)
    del layers[args.layers:]
    model.config.num_hidden_layers = len(layers)
    source = corpora.resolve(args.calib_dataset, "train", args.data_dir)
    windows = calibration_windows(source, tokenizer, args.calib_size, args.seqlen, seed=0)

    gptq_model = copy.deepcopy(model)
    attach_quantizers(gptq_model, adapter, qbits_recipe("RTN_config_llama", args.qbits))
    t = time.perf_counter()
    gptq = calibrate_layerwise(gptq_model, adapter, windows, device,
                               LayerwiseConfig(method="gptq", batch_size=args.calib_batch_size))
    gptq_s = time.perf_counter() - t
    del gptq_model

    recipe = qbits_recipe("FPQ_config_llama", args.qbits)
    config = fpq_search.FPQConfig(search_round=args.search_round, search_tokens=args.search_tokens)
    fpq_search.configure_quantizers(model, adapter, recipe.weight, recipe.activation, recipe.key, recipe.value, config)
    _, report = fpq_search.fpq_calibrate(model, adapter, windows, device, config, batch_size=args.calib_batch_size)

    scale = full_depth / args.layers
    result = {
        "model": os.path.basename(args.model.rstrip("/")), "blocks_timed": args.layers, "full_depth": full_depth,
        "calibration": f"{args.calib_size} x {args.seqlen} {args.calib_dataset}", "qbits": args.qbits,
        "search_tokens": args.search_tokens, "device": device_name(device), "threads": torch.get_num_threads(),
        "versions": library_versions(), "date": time.strftime("%Y-%m-%d"),
        "gptq_pass_s": gptq_s, "gptq_blocks": gptq.blocks,
        "fpq_total_s": report.seconds, "fpq_round_s": report.round_seconds,
        "full_depth_estimate_s": {"gptq_pass": gptq_s * scale, "fpq_total": report.seconds * scale,
                                  "fpq_rounds": [r * scale for r in report.round_seconds]},
        "command": command_line("fpq_speed.py", argv if argv is not None else sys.argv[1:]),
    }
    est = result["full_depth_estimate_s"]
    rows = [f"| GPTQ pass | {gptq_s:.1f} | {est['gptq_pass']:.0f} |",
            *[f"| FPQ search round {i + 1} | {r:.1f} | {e:.0f} |"
              for i, (r, e) in enumerate(zip(report.round_seconds, est["fpq_rounds"]))],
            f"| FPQ whole calibration (forwards, ranges, {len(report.round_seconds)} rounds) | {report.seconds:.1f} | "
            f"{est['fpq_total']:.0f} |"]
    md = "\n".join([
        f"Model: {result['model']}, first {args.layers} of {full_depth} blocks; calibration {result['calibration']}; "
        f"--qbits {' '.join(map(str, args.qbits))}; --search_tokens {args.search_tokens}.",
        f"Device: {result['device']} ({result['threads']} threads). Date: {result['date']}. "
        f"Versions: {result['versions']}.",
        f"Command: `{result['command']}`",
        "",
        f"| step | seconds ({args.layers} blocks) | estimated for {full_depth} blocks |",
        "|---|---|---|",
        *rows,
    ]) + "\n"
    write_result_files(args.out, result, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
