"""Probe (issue 10, FPx weight-only at 16-128 rows): does Triton's warp specialization on Hopper overlap the
weights' in-register decoding with the tensor cores?

The library's FPx tile kernel (``quant_kernels.fpx_gemm``) waits for its wgmma every K step (Triton 3.6, the
weight as the register operand), so a step's decoding never overlaps its own CTA's tensor cores; at 128 rows of
4096 x 4096 that leaves it slower than cuBLAS bf16 (``kernels_h200.md``, forty-third session). Triton 3.6 splits a
``tl.range(..., warp_specialize=True)`` loop on sm_90 into a TMA producer warp group and two consumer warp groups,
each taking half of a 128-row accumulator (a 64-row one both take whole: the work done twice), so that one group
decodes while the other's wgmma runs, but only for loops it can partition. Compiled offline, its data-partition
pass fails on the tile kernel's joined and reshaped code tiles and on two dots a step, and passes with elementwise
decoding and one dot a step. So this probe stores the weights (W4A16 INT4 and FP6 E3M2, per channel) in split
layouts: their low four bits in halves (in each block of 128 codes along K, byte j holds code j in its low nibble and
code 64 + j in its high one), FP6's top two bits in quarters (in each block of 256, byte j holds those of codes j,
64 + j, 128 + j and 192 + j). A K step takes 64 codes, one nibble (and one two-bit field) of each byte, decoded
elementwise into bfloat16 by integer operations, for one dot against the matching 64 activation columns, every
operand loaded by TMA descriptors (a block's bytes again for each of its steps): built on the host, or in the kernel
for the warp-specialized configs (Triton partitions Hopper's data only with those; with host-built ones the first
warp-specialized config hung on an H100).

For each N x K and M it times cuBLAS bf16 (``torch.matmul``) and, per element, the library's weight-only product on
the same codes (``quant_kernels.fpx_matmul``, autotuned) and every probe config (BLOCK_M, BLOCK_N, swapped or not, warp
specialized or not), each output checked against the library's twin (``reference.fpx_matmul_ref``) to bfloat16's
rounding. A config Triton fails to compile is reported and skipped. Each warp-specialized config first runs once on
a small weight in a child process, killed after ``--liveness_timeout`` seconds: one that hangs or fails there is
reported and left out, so that it costs that long and not the run.

    python benchmarks/ws_tile_probe.py --out benchmarks/results/ws_tile_probe_h100
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import LLAMA3_8B_SHAPES, counts, fpx_weight, parse_names, parse_shapes  # noqa: E402
from benchmarks.result_files import command_line, markdown_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, make_timer, replay_note  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402
from quant_layers.packing import unpack_planes  # noqa: E402

BLOCK_K = 128  # codes a block of the halves layout: a K step takes half of it
ELEMENTS = {"int4": 4, "e3m2": 6}  # the weights' elements and their bits
# A probe output passes within this many 2^-8 of the largest output (``error_of``): bfloat16's rounding to nearest
# moves an output by at most 1 of them, the interpreter's truncation by at most 2.
ERROR_BOUND = 2.0


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """One probe launch: its tile, the weight as the wgmma's register operand (``swap``), Triton's warp
    specialization of the K loop, and TMA descriptors built in the kernel rather than on the host."""

    block_m: int
    block_n: int
    swap: bool
    specialized: bool
    device_desc: bool = False

    def label(self) -> str:
        traits = [name for name, on in (("swapped", self.swap), ("warp-specialized", self.specialized),
                                        ("device descriptors", self.device_desc)) if on]
        return ", ".join([f"{self.block_m} x {self.block_n}", *traits])


# The probe's candidates, 4 warps (a warp group; three with warp specialization) and 3 stages each, compiled offline
# for sm_90 with Triton 3.6 (both elements). Warp-specialized, the swapped 64 x 128 tile gives each consumer group 64
# weight rows of its own, the swapped 128 x 128 one too, and the unswapped 128 x 128 and 128 x 64 ones 64 activation
# rows each (both groups decode the whole weight tile). Those take device-built descriptors: with host-built ones the
# first hung on an H100 (forty-fourth session), and Triton partitions Hopper's data only with device-built ones.
CONFIGS = [ProbeConfig(64, 128, True, True, True), ProbeConfig(128, 128, True, True, True),
           ProbeConfig(128, 128, False, True, True), ProbeConfig(128, 64, False, True, True),
           ProbeConfig(64, 128, True, False), ProbeConfig(128, 128, True, False), ProbeConfig(128, 128, False, False),
           ProbeConfig(128, 64, False, False), ProbeConfig(64, 64, True, False)]
DRY_RUN_CONFIGS = [ProbeConfig(16, 16, False, False), ProbeConfig(16, 16, True, True, True)]
# The liveness check's weight and rows (``check_config``): on the GPU, and under the interpreter for a dry run.
LIVENESS_SHAPE = {"cuda": (256, 512, 64), "cpu": (32, 256, 16)}


def step_planes(codes: torch.Tensor, bits: int) -> tuple[torch.Tensor, ...]:
    """(N, K) codes (INT4's two's-complement nibbles, or FP6 E3M2's 6-bit codes) -> the probe's planes. The low four
    bits in the halves layout, (N, K / 2) uint8: in each block of 128 codes byte j holds code j's low and code 64 + j's
    high. FP6's top two bits too, in the quarters layout, (N, K / 4) uint8: in each block of 256 codes byte j holds
    those of codes j, 64 + j, 128 + j and 192 + j, from bit 0 up."""
    n, k = codes.shape
    block = {4: BLOCK_K, 6: 2 * BLOCK_K}[bits]
    if k % block:
        raise ValueError(f"the probe's {bits}-bit layout takes K a multiple of {block}, got {k}")
    c = codes.to(torch.int32)
    low = (c & 0xF).reshape(n, k // BLOCK_K, 2, BLOCK_K // 2)
    planes = [(low[:, :, 0] | (low[:, :, 1] << 4)).to(torch.uint8).reshape(n, k // 2)]
    if bits == 6:
        high = (c >> 4).reshape(n, k // block, 4, BLOCK_K // 2)
        planes.append(sum(high[:, :, q] << (2 * q) for q in range(4)).to(torch.uint8).reshape(n, k // 4))
    return tuple(planes)


def probe_matmul(x: torch.Tensor, planes: tuple[torch.Tensor, ...], scale: torch.Tensor,
                 config: ProbeConfig) -> torch.Tensor:
    """x (M, K) bfloat16 times the weight of ``step_planes`` (one plane: INT4, two: FP6 E3M2) times its per-channel
    ``scale`` (N,), bfloat16 out."""
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor

    from benchmarks.ws_tile_kernel import DOT_F32, halves_kernel  # late: TRITON_INTERPRET is read as it loads

    m, k = x.shape
    n = planes[0].shape[0]
    out = torch.empty(m, n, dtype=torch.bfloat16, device=x.device)
    operands = (x, *(planes * 2)[:2])  # INT4's one plane stands in for the high plane too, unread
    if not config.device_desc:
        operands = (TensorDescriptor.from_tensor(x, [config.block_m, BLOCK_K // 2]),
                    *(TensorDescriptor.from_tensor(p, [config.block_n, BLOCK_K // 2]) for p in operands[1:]))
    grid = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m))
    halves_kernel[grid](*operands, scale, out, m, n, k, out.stride(0), WARP_SPECIALIZE=config.specialized,
                        SWAP_AB=config.swap, DEVICE_DESC=config.device_desc, BLOCK_M=config.block_m,
                        BLOCK_N=config.block_n, HALF=BLOCK_K // 2, FP6=len(planes) == 2, DOT_F32=DOT_F32,
                        num_warps=4, num_stages=3)
    return out


def error_of(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest |got - want| in units of 2^-8 |want|'s largest: the most bfloat16's rounding to nearest can move an
    output (half an ulp, 2^-8 of the lowest value of its binade)."""
    return ((got.float() - want).abs().max() / (want.abs().max() * 2.0**-8)).item()


def probe_weight(w: torch.Tensor, element: str):
    """A bfloat16 weight quantized to ``element`` per channel: the library's planes and scales, and the same codes in
    the probe's layout with its (N,) scales."""
    bits = ELEMENTS[element]
    planes, scale, _ = fpx_weight(w, element)
    probe_planes = tuple(p.contiguous() for p in step_planes(unpack_planes(planes, bits, w.shape[1]), bits))
    return planes, scale, probe_planes, scale.reshape(-1).contiguous()


def twin_output(x: torch.Tensor, planes, scale: torch.Tensor, element: str) -> torch.Tensor:
    from quant_kernels import reference

    return reference.fpx_matmul_ref(x, planes, scale, element=element, bits=ELEMENTS[element],
                                    out_dtype=torch.float32)


def bench(n: int, k: int, m: int, device: torch.device, time_ms, elements: list[str], configs) -> list[dict]:
    import quant_kernels

    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    bf16_ms = time_ms(lambda: torch.matmul(x, w.t()))
    rows = [dict(N=n, K=k, M=m, method="bf16 torch.matmul", ms=bf16_ms, check="")]
    for element in elements:
        planes, scale, probe_planes, scale_n = probe_weight(w, element)
        want = twin_output(x, planes, scale, element)
        library = functools.partial(quant_kernels.fpx_matmul, x, planes, scale, element=element,
                                    bits=ELEMENTS[element], backend="triton")
        rows.append(dict(N=n, K=k, M=m, method=f"{element} library (autotuned)", ms=time_ms(library),
                         check=f"{error_of(library(), want):.2f} (its own rounding)"))
        rows += probe_rows(n, k, m, x, probe_planes, scale_n, want, element, time_ms, configs)
    for r in rows:
        r["x_bf16"] = bf16_ms / r["ms"] if r["ms"] else None
    return rows


def check_config(config: ProbeConfig, device: torch.device) -> float:
    """One run of ``config`` on a small random weight (``LIVENESS_SHAPE``), each element: its largest error."""
    n, k, m = LIVENESS_SHAPE[device.type]
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    errors = []
    for element in ELEMENTS:
        planes, scale, probe_planes, scale_n = probe_weight(w, element)
        errors.append(error_of(probe_matmul(x, probe_planes, scale_n, config), twin_output(x, planes, scale, element)))
    return max(errors)


def live_configs(configs: list[ProbeConfig], dry_run: bool, timeout: float) -> tuple[list[ProbeConfig], list[dict]]:
    """Each warp-specialized config run once first, in a child process killed after ``timeout`` seconds, so that a
    kernel that never finishes (the first host-descriptor one on an H100, forty-fourth session) costs that long
    rather than the whole run. Returns the configs to time (the others and those whose check passed) and each
    check's outcome."""
    keep, checks = [], []
    for index, config in enumerate(configs):
        if not config.specialized:
            keep.append(config)
            continue
        command = [sys.executable, os.path.abspath(__file__), "--liveness_check", str(index)]
        start = time.perf_counter()
        try:
            done = subprocess.run(command + (["--cpu_dry_run"] if dry_run else []), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            outcome = f"hung: no result in {timeout:g} s, killed"
        else:
            lines = (done.stdout if done.returncode == 0 else done.stderr + done.stdout).strip().splitlines()
            outcome = lines[-1][:160] if lines else f"exit {done.returncode}, nothing printed"
            if done.returncode == 0:
                keep.append(config)
            else:
                outcome = f"failed: {outcome}"
        checks.append(dict(config=config.label(), outcome=outcome, seconds=round(time.perf_counter() - start, 1)))
        print(f"liveness {config.label()}: {outcome}", flush=True)
    return keep, checks


def probe_rows(n: int, k: int, m: int, x: torch.Tensor, planes: tuple[torch.Tensor, ...], scale: torch.Tensor,
               want: torch.Tensor, element: str, time_ms, configs) -> list[dict]:
    """Each probe config on one weight: checked against the twin's ``want``, then timed."""
    rows = []
    for config in configs:
        method = f"{element} {config.label()}"
        try:
            got = probe_matmul(x, planes, scale, config)
        except Exception as e:  # a config Triton does not compile here: reported, not fatal
            rows.append(dict(N=n, K=k, M=m, method=method, ms=None,
                             check=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"))
            continue
        err = error_of(got, want)
        rows.append(dict(N=n, K=k, M=m, method=method, ms=time_ms(lambda: probe_matmul(x, planes, scale, config)),
                         check=f"{err:.2f}" if err <= ERROR_BOUND else f"MISMATCH {err:.2f}"))
    return rows


def markdown(result: dict) -> str:
    lines = markdown_header("Probe: INT4 and FP6 weight-only on split layouts, warp-specialized (issue 10)", result) + [
        "Each output against the library's fp32 twin, in units of 2^-8 of the largest output (bfloat16's "
        "rounding to nearest at most). The probe's configs, whose products are exact in fp32, pass at 2 or "
        "less (the interpreter truncates).", "",
        "| N x K | M | method | µs | x bf16 | error |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        us = f"{1000 * r['ms']:.1f}" if r["ms"] else ""
        ratio = f"{r['x_bf16']:.2f}" if r["x_bf16"] else ""
        lines.append(f"| {r['N']}x{r['K']} | {r['M']} | {r['method']} | {us} | {ratio} | {r['check']} |")
    if result.get("liveness"):
        lines += ["", "Each warp-specialized config's first run, in a child process with a time limit (those that did "
                  "not pass are left out above):", ""]
        lines += [f"- {c['config']}: {c['outcome']} ({c['seconds']} s)" for c in result["liveness"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=None, help=f"N x K weight shapes (default {LLAMA3_8B_SHAPES},28672x4096)")
    p.add_argument("--ms", type=counts, default=None, help="activation rows (default 16,64,128)")
    p.add_argument("--elements", default=",".join(ELEMENTS), help=f"comma list of {', '.join(ELEMENTS)}")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--cpu_dry_run", action="store_true",
                   help="no GPU: the Triton interpreter on CPU, 40 x 512 at 3 rows, two configs (no speed measured)")
    p.add_argument("--liveness_timeout", type=float, default=90.0,
                   help="seconds each warp-specialized config's first run (a child process, compiling included) may "
                        "take before it is killed and left out (default 90)")
    p.add_argument("--liveness_check", type=int, default=None, help=argparse.SUPPRESS)  # the child's config index
    add_l2_flush_argument(p)
    p.add_argument("--out", help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if args.liveness_check is None and not args.out:
        p.error("--out is required: the prefix of the result files")
    if args.liveness_timeout <= 0:
        p.error(f"--liveness_timeout takes seconds above 0, got {args.liveness_timeout:g}")
    if args.cpu_dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu_dry_run to exercise the script on CPU")
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    import triton

    # scratch memory for the descriptors a kernel builds (DEVICE_DESC)
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=device))
    configs = DRY_RUN_CONFIGS if args.cpu_dry_run else CONFIGS
    if args.liveness_check is not None:
        error = check_config(configs[args.liveness_check], device)
        print(f"{'ran' if error <= ERROR_BOUND else 'MISMATCH'}, error {error:.2f}")
        return 0 if error <= ERROR_BOUND else 1
    shapes = parse_shapes(args.shapes or ("40x512" if args.cpu_dry_run else LLAMA3_8B_SHAPES + ",28672x4096"))
    ms = args.ms or ([3] if args.cpu_dry_run else [16, 64, 128])
    elements = parse_names(args.elements, ELEMENTS, "--elements")
    time_ms = make_timer(device, args.warmup, args.reps, True, not args.cpu_dry_run, flush_by=args.l2_flush)
    torch.manual_seed(0)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_name(device),
              "versions": library_versions(),
              "timing": replay_note(args.reps, args.warmup, args.l2_flush, args.cpu_dry_run),
              "command": command_line("ws_tile_probe.py", argv if argv is not None else sys.argv[1:]),
              "rows": []}
    configs, result["liveness"] = live_configs(configs, args.cpu_dry_run, args.liveness_timeout)
    write_result_files(args.out, result, markdown(result))
    for n, k in shapes:
        for m in ms:
            result["rows"] += bench(n, k, m, device, time_ms, elements, configs)
            write_result_files(args.out, result, markdown(result))  # partial results survive a time limit
            print(f"done N={n} K={k} M={m}", flush=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
