"""Decode-sized W4A4 products across batch rows: the CUDA-core and tensor-core decode kernels against cuBLAS bf16.

For each N x K weight shape and row count M it times, in a stream of CUDA-graph calls with the L2 flushed
before each (``benchmarks.timing``, ``--in_stream``): cuBLAS bf16 (``x @ w.T``); ``quant_kernels.w4a4_linear`` as a
model runs it (the activation kernel writing dp4a bytes, or E4M3 planes where ``quant_kernels.decode_codes_form``
gives them: E2M1 weights at the tensor-core rows unless ``PTQ_E2M1_PLANES=0``; then the decode kernel it picks: the
CUDA-core one below ``TC_MIN_M`` rows, the tensor-core one up to ``TC_MAX_M`` for INT4 and E2M1 weights, for
``--element e2m1`` not with ``PTQ_TC_E2M1=0``); and each decode kernel alone on dp4a bytes (the CUDA-core one up to
``GEMV_MAX_M`` rows). Every kernel output is checked against the twin. From TC_MIN_M rows also the tensor-core
kernel's one-dot FP8 form on E4M3 activation planes in INT4 weights' order (the weights as E4M3 operands, the sums
accumulating in wgmma, its wgmmas left in flight), alone and after the activation kernel that writes the planes.

    python benchmarks/decode_rows_bench.py --out benchmarks/results/decode_rows_h200
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import counts, parse_shapes  # noqa: E402
from benchmarks.result_files import run_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, flush_note, gpu_stream_timer  # noqa: E402


def bench(n: int, k: int, m: int, time_ms, device: torch.device, element: str = "int4") -> dict:
    """One row: INT4 x INT4 or E2M1 x E2M1 (``element``) at M x N x K."""
    import quant_kernels
    from quant_kernels import reference, w4a4_gemv

    x = torch.randn(m, k, dtype=torch.bfloat16, device=device)
    w16 = torch.randn(n, k, dtype=torch.bfloat16, device=device) * 0.02
    w_packed, w_scale = quant_kernels.quantize_activations(w16, element, backend="triton")
    a_bytes, a_scale = quant_kernels.quantize_activations(x, element, dp4a_for=element, backend="triton")
    kw = dict(a_element=element, w_element=element)
    want = reference.w4a4_gemv_ref(a_bytes.cpu(), a_scale.cpu(), w_packed.cpu(), w_scale.cpu(), **kw,
                                   out_dtype=torch.float32).to(device)
    row = {"n": n, "k": k, "m": m, "element": element, "bf16_ms": time_ms(lambda: x @ w16.T),
           "linear_ms": time_ms(lambda: quant_kernels.w4a4_linear(x, w_packed, w_scale, **kw,
                                                                  out_dtype=torch.bfloat16)),
           "linear_kernel": ("tensor-core, E4M3 planes" if quant_kernels.decode_codes_form(element, m, True)[1] else
                             "tensor-core") if w4a4_gemv.takes_tensor_cores(m, element) else
           "CUDA-core" if m <= w4a4_gemv.max_rows(element) else "GEMM"}
    def record(name: str, call, tuner) -> None:
        """``name``'s time, its largest error against the twin and the config its autotuner picked."""
        got = call()
        row[f"{name}_ms"] = time_ms(call)
        row[f"{name}_rel_err"] = ((got - want).abs().max() / want.abs().max()).item()
        row[f"{name}_config"] = str(getattr(tuner, "best_config", ""))

    for name, tc in (("cuda_core", False), ("tensor_core", True)):
        if (tc and m > w4a4_gemv.TC_MAX_M) or (not tc and m > w4a4_gemv.GEMV_MAX_M):
            continue
        record(name, functools.partial(w4a4_gemv.w4a4_gemv_triton, a_bytes, a_scale, w_packed, w_scale, **kw,
                                       out_dtype=torch.float32, tensor_cores=tc),
               w4a4_gemv._tc_autotuned if tc else w4a4_gemv._gemv_autotuned)
    if w4a4_gemv.TC_MIN_M <= m <= w4a4_gemv.TC_MAX_M:  # the one-dot FP8 form on E4M3 planes (path='e4m3')

        def quantized():
            return quant_kernels.quantize_activations(x, element, dp4a_for="int4", fp8_codes=True, backend="triton")

        def linear():
            return w4a4_gemv.w4a4_gemv_triton(*quantized(), w_packed, w_scale, **kw, out_dtype=torch.bfloat16)
        record("tensor_core_e4m3", functools.partial(w4a4_gemv.w4a4_gemv_triton, *quantized(), w_packed, w_scale,
                                                     **kw, out_dtype=torch.float32), w4a4_gemv._tc_autotuned)
        row["linear_e4m3_ms"] = time_ms(linear)
    return row


def markdown(result: dict) -> str:
    elements = sorted({r.get("element", "int4").upper() for r in result["rows"]}) or ["INT4"]
    lines = [f"# Decode-sized W4A4 products ({', '.join(f'{e} x {e}' for e in elements)}, per-row scales) "
             "across rows", "",
             f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Command: `{result['command']}`", "",
             f"Median µs of one call in a stream of CUDA-graph calls, the {flush_note(result['l2_flush'])} before "
             "each. `linear`: "
             "`quant_kernels.w4a4_linear` from bf16 rows (activation kernel + the decode kernel it picks); the kernel "
             "columns: that kernel alone on dp4a bytes. Ratios against cuBLAS bf16. Largest error of each kernel "
             "over the largest output, against the twin (fp32 out): " + (
                 f"{max(v for r in result['rows'] for key, v in r.items() if key.endswith('rel_err')):.1e}."
                 if result["rows"] else "none run."), "",
             "| N x K | M | bf16 | linear (kernel) | CUDA-core kernel | tensor-core kernel | tensor-core kernel, "
             "E4M3 planes | linear, E4M3 planes |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(r: dict, key: str) -> str:
        return "–" if key not in r else f"{r[key] * 1e3:.1f} ({r['bf16_ms'] / r[key]:.2f}×)"
    for r in result["rows"]:
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {r['bf16_ms'] * 1e3:.1f} | {cell(r, 'linear_ms')} "
                     f"{r['linear_kernel']} | {cell(r, 'cuda_core_ms')} | {cell(r, 'tensor_core_ms')} | "
                     f"{cell(r, 'tensor_core_e4m3_ms')} | {cell(r, 'linear_e4m3_ms')} |")
    lines += ["", "Tuned configs:", ""]
    for r in result["rows"]:
        lines.append(f"- {r['n']}x{r['k']} M={r['m']}: CUDA-core `{r.get('cuda_core_config', '–')}`; tensor-core "
                     f"`{r.get('tensor_core_config', '–')}`; on E4M3 planes "
                     f"`{r.get('tensor_core_e4m3_config', '–')}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="4096x4096,14336x4096,4096x14336,6144x4096", help="N x K weight shapes")
    p.add_argument("--ms", type=counts, default=[1, 4, 5, 8, 16, 32, 64], help="activation row counts")
    p.add_argument("--in_stream", type=int, default=20, help="calls per timed CUDA graph")
    p.add_argument("--element", choices=["int4", "e2m1"], default="int4",
                   help="weight and activation element (E2M1 weights off the tensor-core kernel with PTQ_TC_E2M1=0)")
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    device, time_ms = gpu_stream_timer(p, args.in_stream, args.l2_flush)
    result = {**run_header("decode_rows_bench.py", argv, device), "l2_flush": args.l2_flush, "rows": []}
    for n, k in parse_shapes(args.shapes):
        for m in args.ms:
            result["rows"].append(bench(n, k, m, time_ms, device, args.element))
            write_result_files(args.out, result, markdown(result))
            print(result["rows"][-1], flush=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
