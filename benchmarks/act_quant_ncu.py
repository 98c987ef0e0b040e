"""The activation kernel at prefill sizes for Nsight Compute, on the autotuner's own picks.

For each ``--shapes`` M x K (bfloat16 rows) and ``--formats`` format (``act_quant_bench.FORMATS``: per-token INT4
clipped at 0.9, per-token E2M1, NVFP4, MXFP4; packed codes, or ``--fp8_codes`` the E4M3 bytes of the FP8 path) it
calls the kernel until the autotuner has settled, then ``--launches`` times inside an NVTX range ``measure``, which
ncu filters on, so the report holds the picked config alone and none of the tuner's trial runs; it prints each key's
pick. ``gemv_ncu.py`` fixes the decode kernels' configs instead; this one asks why the pick is where
``act_quant_bench.py`` times it (E2M1's packed codes at 71-78 % of a device copy on the H200, INT4 at 78-88 %):

    ncu --nvtx --nvtx-include "measure/" --section SpeedOfLight --section Occupancy --section LaunchStats \\
        --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \\
        --section InstructionStats python benchmarks/act_quant_ncu.py --shapes 8192x4096,8192x14336

``--cpu_dry_run`` runs the same calls under the Triton interpreter on a tiny shape (no autotuner there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.act_quant_bench import FORMATS, config_label  # noqa: E402
from benchmarks.kernel_bench import parse_names, parse_shapes  # noqa: E402

DRY_SHAPE = (6, 384)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="8192x4096,8192x14336", help="M x K activation shapes, comma-separated")
    p.add_argument("--formats", default="int4,e2m1", help=f"comma list of {', '.join(FORMATS)}")
    p.add_argument("--fp8_codes", action="store_true", help="the per-token formats' E4M3 bytes (the FP8 path)")
    p.add_argument("--tuning_calls", type=int, default=2, help="calls before the measured ones (autotuning)")
    p.add_argument("--launches", type=int, default=1, help="calls inside the NVTX range per shape and format")
    p.add_argument("--cpu_dry_run", action="store_true", help="no GPU: the interpreter, a tiny shape")
    args = p.parse_args(argv)
    try:
        formats = parse_names(args.formats, FORMATS, "--formats")
        shapes = parse_shapes(args.shapes, "M x K", "8192x4096", presets={})
    except SystemExit as err:
        p.error(str(err))
    if args.fp8_codes and any(FORMATS[f][1] for f in formats):
        p.error("--fp8_codes takes the per-token formats only (int4, e2m1)")
    if args.launches < 1 or args.tuning_calls < 0:
        p.error(f"--launches must be at least 1 and --tuning_calls at least 0, got {args.launches}, "
                f"{args.tuning_calls}")
    if args.cpu_dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
        shapes = [DRY_SHAPE]
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU (under ncu), or pass --cpu_dry_run")
    from quant_kernels import act_quant  # late: builds Triton kernels, after TRITON_INTERPRET is settled

    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    torch.manual_seed(0)
    for m, k in shapes:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        for name in formats:
            element, group, kind, clip = FORMATS[name]

            def run():
                return act_quant.quantize_activations_triton(x, element, group, kind, clip, fp8_codes=args.fp8_codes)

            for _ in range(args.tuning_calls):
                run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            with torch.cuda.nvtx.range("measure") if device.type == "cuda" else contextlib.nullcontext():
                for _ in range(args.launches):
                    codes, scales = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            print(f"M={m} K={k} {name}{' E4M3 codes' if args.fp8_codes else ''}: {args.launches} measured "
                  f"launches, scales finite: {bool(scales.isfinite().all())}", flush=True)
    tuner = act_quant._act_quant_autotuned
    for key, config in tuner.cache.items():
        print(f"pick {config_label(key, tuner.keys)}: {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
