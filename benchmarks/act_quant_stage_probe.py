"""Probe: the activation kernel's row blocks walked in turn with the next block prefetched in registers
(ROW_STAGES 0) against the same loop software-pipelined by Triton through shared memory (ROW_STAGES = the
loop's stages, cp.async), for fixed configs at prefill sizes, against a device copy.

    python benchmarks/act_quant_stage_probe.py --out OUT/act_quant_stage_probe_h200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.act_quant_bench import FORMATS  # noqa: E402
from benchmarks.kernel_bench import act_quant_bytes  # noqa: E402
from benchmarks.timing import make_timer  # noqa: E402

# (BLOCK_M, ROW_STEPS, ROW_STAGES, warps); ROW_STEPS 1 is a whole row a program
CONFIGS = [(1, 1, 0, 4), (1, 4, 0, 4), (1, 16, 0, 8), (1, 16, 0, 16)] + [
    (1, steps, stages, w) for steps in (4, 16) for stages in (2, 3, 4) for w in (4, 8, 16)]


class FixedConfig:
    """Stands in for the autotuned kernel: launches one config."""

    def __init__(self, kernel, config):
        self.kernel, self.config = kernel, config

    def __getitem__(self, grid):
        bm, steps, stages, warps = self.config

        def launch(*args, **kwargs):
            meta = dict(BLOCK_M=bm, CHUNK=0, ROW_STEPS=steps, ROW_STAGES=stages)
            return self.kernel[grid(meta)](*args, **kwargs, **meta, num_warps=warps)

        return launch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", default="8192x4096,8192x14336")
    p.add_argument("--formats", default="int4,e2m1")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from kernels import act_quant
    from kernels.reference import quantize_activations_ref

    device = torch.device("cuda")
    time_ms = make_timer(device, 5, 20, True, True)
    rows = []
    for shape in args.shapes.split(","):
        m, k = map(int, shape.split("x"))
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        copy_ms = time_ms(lambda: x.clone())
        copy_gbs = 4 * x.numel() / copy_ms / 1e6
        print({"M": m, "K": k, "copy_us": 1000 * copy_ms, "copy_gbs": copy_gbs}, flush=True)
        for name in args.formats.split(","):
            element, group, kind, clip = FORMATS[name]
            want = quantize_activations_ref(x, element, group, kind, clip)
            moved = act_quant_bytes(m, k, group, False)
            for config in CONFIGS:
                if config[0] * config[1] > m:
                    continue
                act_quant._act_quant_autotuned = FixedConfig(act_quant._act_quant_kernel, config)

                def run():
                    return act_quant.quantize_activations_triton(x, element, group, kind, clip)

                try:
                    ms = time_ms(run)
                    got = run()
                    same = bool(torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]))
                except Exception as e:  # noqa: BLE001 - a config that does not compile is a result too
                    rows.append({"M": m, "K": k, "format": name, "config": config, "error": repr(e)[:200]})
                    print(rows[-1], flush=True)
                    continue
                rows.append({"M": m, "K": k, "format": name, "config": config, "us": 1000 * ms,
                             "of_copy": moved / ms / 1e6 / copy_gbs, "equals_twin": same})
                print(rows[-1], flush=True)
            with open(args.out + ".json", "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": torch.cuda.get_device_name(device),
                           "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
