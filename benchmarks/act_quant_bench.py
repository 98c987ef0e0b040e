"""The activation-quantization kernel against a device copy (issue 9's "at least 80 % of copy bandwidth").

For each M x K (bfloat16 activations) it times ``x.clone()`` and the kernel for each format
(per-token INT4 with clip 0.9, per-token E2M1, NVFP4, MXFP4; the per-token ones also with
``--fp8_codes``, the E4M3 bytes the FP8 prefill path reads), checks every packed result
against the torch twin on the whole tensor, and reports GB/s (activations read, codes and
scales written) and the share of the copy's GB/s (which reads and writes x). ``--baseline
FILE`` also times another version of ``quant_kernels/act_quant.py`` (e.g. ``git show
HEAD~3:quant_kernels/act_quant.py > /tmp/old.py``; its relative imports are made absolute) in the
same process, with the same timer. ``--static_tensor_amax`` also times NVFP4 with a calibrated tensor amax (x's
own, taken before timing; the current version only), which reads x once where its own absmax takes a launch of its
own. ``--in_stream R`` times each call, and the copy, inside a CUDA graph of R calls (a lone replay's launch
latency, several microseconds at 2048 rows, drops out, as inside a captured model step; and each call pays for the
lines it leaves dirty, which the next flush drains: replayed alone after a read, a copy of 2048 x 4096 left its 16.8
MB of writes in the L2 unpaid, 12.8-13.0 us on an H100 against 16.1-16.4 in a stream or after a write, so the share
of copy alone understates a kernel that writes a quarter as much). The autotuned configs are
listed per key. ``--pin`` times one config (every ``_act_quant_kernel`` config
field and num_warps, optionally maxnreg, e.g. ``BLOCK_M=1,CHUNK=0,ROW_STEPS=4,SPLIT=0,num_warps=8``) in every
version instead of each tuner's pick: the picks alone moved the same kernel's share of copy by about +-5 points
between calls, which hides an A/B of a few points. Several configs separated by ``;`` are each timed as a version
of their own (a copy of each module per config), in the same process.

    python benchmarks/act_quant_bench.py --shapes 8192x4096,8192x14336 --out benchmarks/results/act_quant_h200
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import W4A4_FORMATS, act_quant_bytes  # noqa: E402
from benchmarks.result_files import command_line, markdown_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, flush_note, in_stream_note, make_timer  # noqa: E402
from pipeline.results import library_versions  # noqa: E402

# name: (element, group size, scale kind, clip ratio): kernel_bench's formats, per-token INT4 clipped at 0.9
FORMATS = {name: (*spec, 0.9 if name == "int4" else 1.0) for name, spec in W4A4_FORMATS.items()}


def load_baseline(path: str):
    """A copy of quant_kernels/act_quant.py as its own module (relative imports made absolute)."""
    with open(path) as f:
        source = f.read().replace("from .", "from quant_kernels.")
    tmp = tempfile.NamedTemporaryFile("w", suffix="_act_quant_baseline.py", delete=False)
    tmp.write(source)
    tmp.close()
    try:
        spec = importlib.util.spec_from_file_location("act_quant_baseline", tmp.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # triton.jit keeps each kernel's source: the file can go
    finally:
        os.unlink(tmp.name)
    return module


def pin_config(module, text: str) -> None:
    """Make ``module``'s activation kernel (``quant_kernels.act_quant`` or a baseline copy of it) run the one config
    that ``text`` names (``NAME=int`` pairs: every config field of its tuner's configs and num_warps, and optionally
    maxnreg, ptxas's register cap), unpruned and untuned; ValueError naming the fields otherwise."""
    import triton

    tuner = module._act_quant_autotuned
    fields = sorted(tuner.configs[0].kwargs) + ["num_warps"]
    try:
        pairs = dict((name.strip(), int(value)) for name, value in (item.split("=") for item in text.split(",")))
    except ValueError:
        raise ValueError(f"--pin takes NAME=int pairs separated by commas, got {text!r}") from None
    maxnreg = pairs.pop("maxnreg", None)
    if sorted(pairs) != sorted(fields):
        raise ValueError(f"--pin names every field of the kernel's configs once (and maxnreg at will): "
                         f"{', '.join(fields)}; got {', '.join(sorted(pairs))}")
    warps = pairs.pop("num_warps")
    kwargs = {name: bool(value) if isinstance(tuner.configs[0].kwargs[name], bool) else value
              for name, value in pairs.items()}
    tuner.configs = [triton.Config(kwargs, num_warps=warps, maxnreg=maxnreg)]
    tuner.early_config_prune = None  # one config: the tuner runs it without timing or pruning
    tuner.cache.clear()


def pinned_versions(current, source: str, baseline: str | None, pins: str | None) -> list[tuple[str, object]]:
    """(label, module) to time: ``current`` (the act_quant module, from the file ``source``) and, given, the
    ``baseline`` file's version; with
    ``pins`` (configs separated by ';', ``pin_config``'s text), each version once per config, pinned to it, the
    first config on the modules themselves, each further one on fresh copies, labelled with its config."""
    texts = [None] if pins is None else [t.strip() for t in pins.split(";") if t.strip()]
    if not texts:
        raise ValueError(f"--pin names at least one config, got {pins!r}")
    plain = [("current", current)] + ([("baseline", load_baseline(baseline))] if baseline else [])
    versions = []
    for i, text in enumerate(texts):
        for label, module in plain:
            if i:
                module = load_baseline(baseline if label == "baseline" else source)
            if text:
                pin_config(module, text)
            versions.append((f"{label} [{text}]" if len(texts) > 1 else label, module))
    return versions


def config_label(key: tuple, names: list[str]) -> str:
    """An autotuner key of the activation kernel (the values of its ``key`` ``names``, then the arguments' dtypes)
    in words."""
    v = dict(zip(names, key))
    element = "int4" if v["ELEMENT_INT4"] else "int8" if v["ELEMENT_INT8"] else "e2m1"
    return (f"K {v['K']}, M bucket {v['M_BUCKET']}, {element}, group {v['GROUP']}"
            + (f", H{v['HAD_BLOCK']}" if v["HAD_BLOCK"] else "") + (", E4M3 codes" if v["OUT_FP8"] else ""))


def markdown(result: dict) -> str:
    lines = markdown_header("Activation quantization against a device copy", result) + [
        "GB/s counts the bfloat16 activations read and the codes (half a byte, or a byte for E4M3 codes) and "
        "fp32 scales written; the copy's counts x read and written. `equals twin`: every code and scale of "
        "the whole tensor (E4M3 codes are not compared).", "",
        "| M | K | kernel | version | µs | GB/s | of copy | equals twin |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        share = f"{100 * r['of_copy']:.1f} %" if r.get("of_copy") else ""
        same = {True: "yes", False: "NO", None: ""}[r.get("equals_twin")]
        lines.append(f"| {r['M']} | {r['K']} | {r['kernel']} | {r.get('version', '')} | {1000 * r['ms']:.1f} | "
                     f"{r['gbs']:.0f} | {share} | {same} |")
    lines += ["", "Autotuned configs (key: config):", ""] + [f"- `{k}`: {v}" for k, v in result["configs"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="2048x4096,8192x4096,2048x14336,8192x14336", help="M x K activation shapes")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    p.add_argument("--no_fp8_codes", action="store_true", help="skip the E4M3-code variants of the per-token formats")
    p.add_argument("--baseline", help="another version of quant_kernels/act_quant.py to time beside the current one")
    p.add_argument("--pin", help="one config for every version, e.g. BLOCK_M=1,CHUNK=0,ROW_STEPS=4,SPLIT=0,num_warps=8 "
                                 "(maxnreg=N optional); several separated by ';' are timed one after the other")
    p.add_argument("--static_tensor_amax", action="store_true",
                   help="also NVFP4 with a given (calibrated) tensor amax, as --a_static_tensor_scale runs it")
    p.add_argument("--in_stream", type=int, default=0, metavar="R",
                   help="time each call (the copy's too) inside a stream of kernels: a CUDA graph of R calls, each "
                        "after the L2 flush, minus one of the flushes alone, per call; a lone replay's launch "
                        "latency, a larger share of the smaller kernel's time, drops out (default 0: lone replays)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if not formats or any(f not in FORMATS for f in formats):
        p.error(f"--formats takes a comma list of {', '.join(FORMATS)}, got {args.formats!r}")
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    except ValueError:
        p.error(f"--shapes takes M x K pairs like 8192x4096, got {args.shapes!r}")
    if args.in_stream < 0:
        p.error(f"--in_stream takes the calls per graph (0: off), got {args.in_stream}")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark times the compiled kernel on a GPU")
    from quant_kernels import act_quant
    from quant_kernels.reference import quantize_activations_ref

    try:
        versions = pinned_versions(act_quant, act_quant.__file__, args.baseline, args.pin)
    except ValueError as err:
        p.error(str(err))
    device = torch.device("cuda")
    time_ms = make_timer(device, args.warmup, args.reps, True, True, args.in_stream, args.l2_flush)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": torch.cuda.get_device_name(device),
              "versions": library_versions(),
              "timing": f"median of {args.reps} {'' if args.in_stream else 'CUDA-graph replays '}after "
                        f"{args.warmup} warmup calls, {flush_note(args.l2_flush)}{in_stream_note(args.in_stream)}",
              "command": command_line("act_quant_bench.py", argv if argv is not None else sys.argv[1:]),
              "rows": [], "configs": {}}
    for m, k in shapes:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        copy_ms = time_ms(lambda: x.clone())
        copy_gbs = 4 * x.numel() / copy_ms / 1e6
        result["rows"].append({"M": m, "K": k, "kernel": "x.clone()", "ms": copy_ms, "gbs": copy_gbs})
        for name in formats:
            element, group, kind, clip = FORMATS[name]
            fp8_variants = (False,) if group or args.no_fp8_codes else (False, True)
            amax_variants = (None, x.float().abs().amax()) if kind == "e4m3" and args.static_tensor_amax else (None,)
            for fp8, amax in itertools.product(fp8_variants, amax_variants):
                moved = act_quant_bytes(m, k, group, fp8)
                want = None if fp8 else quantize_activations_ref(x, element, group, kind, clip, tensor_amax=amax)
                for label, module in versions if amax is None else versions[:1]:
                    def run():
                        given = {} if amax is None else {"tensor_amax": amax}
                        return module.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=fp8,
                                                                  **given)

                    ms = time_ms(run)
                    got = run()
                    same = None if fp8 else bool(torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]))
                    result["rows"].append({"M": m, "K": k, "kernel": name + (" E4M3 codes" if fp8 else "")
                                           + ("" if amax is None else " static amax"),
                                           "version": label, "ms": ms, "gbs": moved / ms / 1e6,
                                           "of_copy": moved / ms / 1e6 / copy_gbs, "equals_twin": same})
                    print(result["rows"][-1], flush=True)
                    tuner = act_quant._act_quant_autotuned
                    result["configs"] = {config_label(key, tuner.keys): str(config)
                                         for key, config in tuner.cache.items()}
                    write_result_files(args.out, result, markdown(result))  # every row survives a time limit
    print(markdown(result))
    return 0 if all(r.get("equals_twin") is not False for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
