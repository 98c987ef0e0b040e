"""W4A4 linears at prefill sizes: the int8 path against bf16, cuBLAS's FP8 GEMM and our FP8 path.

Issue 9's prefill target is the W4A4 linear at least as fast as cuBLAS's FP8 GEMM. The FP8 path widens the packed
weight to E4M3 bytes on every call (a pass of 1.5 bytes a weight) before cuBLAS's row-wise FP8 GEMM. The int8 path
(``w4a4_linear(..., path="int8")``, ``w4a4_gemv.w4a4_tc_prefill_triton``) runs the tensor-core decode kernel over
tiles of activation rows: it reads the packed weight, turns its nibbles into int8 registers (INT4 at the top of each
byte, E2M1 as twice its value) as wgmma's register operand and multiplies the activations' even and odd int8 planes
(the bytes the activation kernel writes for INT4 weights) on the int8 tensor cores, exact in int32. For each M and
N x K this times, ``--element`` weights (INT4 or E2M1) with per-row scales and bfloat16 out: torch bf16; cuBLAS's
FP8 GEMM on E4M3 codes given (the issue's peer); the FP8 path's widening + GEMM; the int8 path's kernel, autotuned
(and each ``--configs`` tile fixed), these three on INT4 activation codes given; and the whole linears from
bfloat16 x (activations quantized to the weights' element) of both paths. W4A4 also takes the kernel's FP8 form,
the weights as E4M3 operands against E4M3 activation planes (each step's sums added in fp32, or one dot a step
accumulating in wgmma, whose wgmmas stay in flight while the next step decodes), as a kernel and as a linear. Every
output is checked against an exact fp32 product.

    python benchmarks/prefill_bench.py --ms 512,2048,8192 --out benchmarks/results/prefill_int8_h200

``--default_paths_only`` times, beside bf16 and the peer, only what ``w4a4_linear`` runs by default at each M and
shape (``quant_kernels.default_path``): that path's kernel on codes given and its whole linear. Each form beside it
autotunes kernels of its own, which took most of a cold call's time on the H100.

``--activations int8`` times W4A8 instead (INT4 weights, INT8 activation levels): the same kernel on INT8 planes,
cuBLAS's int8 GEMM (``torch._int_mm``) on the weight's int8 levels as the peer, the weight widened to int8 on every
call then that GEMM (W4A8's route before the int8 path), and ``w4a8_linear`` against that route from bfloat16 x.

``--cpu_dry_run`` runs it on the CPU under the Triton interpreter at one tiny shape (timings meaningless, the
checks real).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import LLAMA3_8B_SHAPES, counts, parse_shapes, parse_tiles  # noqa: E402
from benchmarks.result_files import command_line, markdown_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, make_timer, replay_note  # noqa: E402
from pipeline.results import library_versions  # noqa: E402



def operands(m: int, n: int, k: int, device: torch.device, gen: torch.Generator, element: str = "int4",
             a_levels: int = 8):
    """Random activation levels in [-a_levels, a_levels) (INT4: 8, INT8: 128) and their even / odd int8 planes
    (m, k), random packed weight codes of ``element`` (n, k / 2) and their values (n, k), per-row scales, and the
    exact fp32 product diag(a_scale) (A W^T) diag(w_scale) (no TF32)."""
    from quant_layers import packing

    levels_a = torch.randint(-a_levels, a_levels, (m, k), generator=gen, device=device, dtype=torch.int32).to(
        torch.int8)
    planes = torch.cat([levels_a[:, 0::2], levels_a[:, 1::2]], dim=1).contiguous()
    packed = torch.randint(0, 256, (n, k // 2), generator=gen, device=device, dtype=torch.int32).to(torch.uint8)
    values_w = packing.decode(packing.unpack(packed), packing.element_named(element))
    a_scale = torch.rand(m, 1, generator=gen, device=device) + 0.5
    w_scale = torch.rand(n, 1, generator=gen, device=device) / 64 + 1e-3
    want = (levels_a.float() @ values_w.float().t()) * a_scale * w_scale.t()
    return planes, packed, levels_a, values_w, a_scale, w_scale, want


# The E4M3 operand forms' row labels, by ``fp8_step_sums``.
E4M3_FORMS = {True: " (E4M3 operands, step sums)", False: " (E4M3 operands, one dot, sums in wgmma)"}


def launch_tc(planes, packed, a_scale, w_scale, out, config, element: str = "int4", a_element: str = "int4",
              fp8_step_sums: bool = True):
    """One prefill-tiled launch of the tensor-core kernel (``w4a4_tc_prefill_triton``; E4M3 ``planes`` for E2M1
    weights' FP8 operands, ``fp8_step_sums`` as there) on a fixed ``config``:
    (BLOCK_N weight rows, BLOCK_M activation rows, BLOCK_KB packed bytes a step, warps, stages[, GROUP_M])."""
    import triton

    from quant_kernels.w4a4_gemv import w4a4_tc_prefill_triton

    block_n, block_m, block_kb, warps, stages, group_m = (*config, 1)[:6]
    tile = triton.Config(dict(BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_KB=block_kb, SPLIT_K=1, GROUP_M=group_m),
                         num_warps=warps, num_stages=stages)
    return w4a4_tc_prefill_triton(planes, a_scale, packed, w_scale, a_element=a_element, w_element=element,
                                  out_dtype=out.dtype, out=out, config=tile, fp8_step_sums=fp8_step_sums)


def markdown(result: dict) -> str:
    if result.get("activations") == "int8":
        title, what = "W4A8 linears at prefill sizes: the int8 path", (
            "INT4 weights, INT8 activations (W4A8), per-row scales, bfloat16 out; the kernels take INT8 activation "
            "levels, the linears quantize x per token. `peer`: cuBLAS's int8 GEMM (`torch._int_mm`) on the weight's "
            "int8 levels given (widened beforehand); `widening + int8 GEMM`: the weight widened on every call, then "
            "that GEMM (W4A8's route before the int8 path); `int8 path`: the tensor-core kernel tiled over M on int8 "
            "activation planes (`w4a4_tc_prefill_triton`). `linear`: from bfloat16 x, the activation levels included "
            "(`w4a8_linear`, and the earlier route); elsewhere the levels are given.")
    else:
        title, what = "W4A4 linears at prefill sizes: the int8 path", (
            f"{result['element'].upper()} weights, per-row scales, bfloat16 out; the kernels take INT4 activation "
            f"codes, the linears quantize x to {result['element'].upper()}. `peer`: cuBLAS's FP8 GEMM "
            "(`torch._scaled_mm`) on E4M3 codes given (weights widened beforehand); `fp8 path`: our widening pass "
            "(`unpack_fp8_triton`) then that GEMM; `int8 path`: the tensor-core kernel tiled over M on int8 activation "
            "planes (`w4a4_tc_prefill_triton`). `linear`: from bfloat16 x, the activation codes included "
            "(`w4a4_linear(path=...)`); elsewhere the codes are given.")
    lines = markdown_header(title, result) + [
        what + " TFLOP/s counts 2 M N K. Error: the GEMMs' largest against the exact product, in units of "
        "bfloat16's rounding of the largest output (the linears' against the exact product of x's codes).", "",
        "| M | N x K | kernel | config | µs | TFLOP/s | × bf16 | × peer | max error / bound |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        err = f"{r['error']:.2f}" if r.get("error") is not None else ""
        lines.append(f"| {r['M']} | {r['shape']} | {r['kernel']} | {r.get('config', '')} | {1000 * r['ms']:.1f} | "
                     f"{r['tflops']:.0f} | {r['vs_bf16']:.2f} | {r['vs_peer']:.2f} | {err} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", type=counts, help="activation rows (default 2048,8192; 70 with --cpu_dry_run)")
    p.add_argument("--shapes", help=f"N x K weight shapes (default {LLAMA3_8B_SHAPES}; 48x128 with --cpu_dry_run)")
    p.add_argument("--configs", help="';'-separated BLOCK_N,BLOCK_M,BLOCK_KB,warps,stages[,GROUP_M] tiles of the "
                                     "int8 path's kernel also timed fixed (default: none)")
    p.add_argument("--element", choices=("int4", "e2m1"), default="int4",
                   help="the weights' element (the kernel rows take INT4 activation levels; the linears quantize x "
                        "to the same element)")
    p.add_argument("--activations", choices=("4bit", "int8"), default="4bit",
                   help="int8: W4A8 (INT4 weights only): INT8 activation levels, cuBLAS's int8 GEMM as the peer and "
                        "w4a8_linear as the linear (default 4bit: W4A4 in --element)")
    p.add_argument("--default_paths_only", action="store_true",
                   help="time only the default path's kernel and linear at each M and shape (and bf16, the peer)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    p.add_argument("--cpu_dry_run", action="store_true", help="no GPU: the Triton interpreter on CPU, M = 70 and "
                                                               "48 x 128 unless given")
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported below
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu_dry_run to exercise the script on CPU")
    if args.activations == "int8" and args.element != "int4":
        p.error("--activations int8 (W4A8) takes INT4 weights: drop --element or pass --element int4")
    if args.activations == "int8" and args.default_paths_only:
        p.error("--default_paths_only times W4A4's default paths: drop it or --activations int8")
    try:
        configs = parse_tiles(args.configs or "", "--configs takes tiles BLOCK_N,BLOCK_M,BLOCK_KB,warps,stages"
                                                   "[,GROUP_M]", 5, 6)
    except ValueError as err:
        p.error(str(err))
    import quant_kernels
    from quant_kernels.fp8_gemm import FP8, unpack_fp8_triton, w4a4_matmul_fp8
    from quant_kernels.int8_gemm import quantize_rows_int8, w8a8_matmul
    from quant_kernels.reference import dequantize, int8_weight_codes
    from quant_kernels.w4a4_gemv import _tc_prefill_autotuned, w4a4_tc_prefill_triton

    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    time_ms = make_timer(device, args.warmup, args.reps, True, not args.cpu_dry_run, flush_by=args.l2_flush)
    gen = torch.Generator(device=device).manual_seed(0)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None  # picks the default path there
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "device": gpu or "CPU",
              "versions": library_versions(),
              "timing": replay_note(args.reps, args.warmup, args.l2_flush, args.cpu_dry_run),
              "command": command_line("prefill_bench.py", argv if argv is not None else sys.argv[1:]),
              "element": args.element, "activations": args.activations, "rows": []}
    shapes = parse_shapes(args.shapes or ("48x128" if args.cpu_dry_run else LLAMA3_8B_SHAPES))
    element = args.element
    w4a8 = args.activations == "int8"
    a_element = "int8" if w4a8 else "int4"
    for m in args.ms if args.ms is not None else counts("70" if args.cpu_dry_run else "2048,8192"):
        for n, k in shapes:
            planes, packed, levels_a, values_w, a_scale, w_scale, want = operands(m, n, k, device, gen, element,
                                                                                  128 if w4a8 else 8)
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
            if w4a8:  # cuBLAS's exact int8 GEMM on the weight's int8 levels
                w_int8 = values_w.to(torch.int8)
                peer = functools.partial(w8a8_matmul, levels_a, a_scale, w_int8, w_scale, out_dtype=torch.bfloat16)
                widened = lambda: w8a8_matmul(levels_a, a_scale, int8_weight_codes(packed, "int4"),  # noqa: E731
                                              w_scale, out_dtype=torch.bfloat16)
                names = ("int8 peer (_int_mm)", "widening + int8 GEMM")
            else:
                a_fp8, w_fp8 = levels_a.to(torch.float16).to(FP8), values_w.to(FP8)
                peer = functools.partial(w4a4_matmul_fp8, a_fp8, a_scale, w_fp8, w_scale)
                widened = lambda: w4a4_matmul_fp8(a_fp8, a_scale, unpack_fp8_triton(packed, element),  # noqa: E731
                                                  w_scale)
                names = ("fp8 peer (_scaled_mm)", "fp8 path (widening + GEMM)")
            # the default path (and with it which kernel forms and linears are timed), or None: every one
            default = quant_kernels.default_path(m, n, k, element, element, device=gpu) if args.default_paths_only \
                else None
            flops = 2 * m * n * k
            bf16_ms = time_ms(lambda: x @ w.t())
            peer_ms = time_ms(peer)

            def row(kernel, ms, config="", got=None, against=want):
                bound = None if got is None else against.abs().amax().item() * 2 ** -8  # bfloat16's rounding
                error = None if got is None else (got.float() - against).abs().amax().item() / bound
                result["rows"].append({"M": m, "shape": f"{n}x{k}", "kernel": kernel, "config": config, "ms": ms,
                                       "tflops": flops / ms / 1e9, "vs_bf16": bf16_ms / ms, "vs_peer": peer_ms / ms,
                                       "error": error})
                print(result["rows"][-1], flush=True)
                write_result_files(args.out, result, markdown(result))

            row("bf16 (torch.matmul)", bf16_ms)
            row(names[0], peer_ms, got=peer())
            if default in (None, "fp8"):
                row(names[1], time_ms(widened), got=widened())
            out = torch.empty(m, n, device=device, dtype=torch.bfloat16)
            # The weights as int8 operands against int8 planes, or (W4A4) as E4M3 operands against E4M3 planes, each
            # step's FP8 sums added in fp32 (exact) or one dot a step accumulating in wgmma (its wgmmas in flight)
            forms = {"" if element == "int4" else " (int8 operands)": (planes, True)}
            if not w4a8:
                forms.update({E4M3_FORMS[True]: (planes.float().to(FP8), True),
                              E4M3_FORMS[False]: (planes.float().to(FP8), False)})
            if default is not None:  # the default path's form only (int8: the first; none on the fp8 path)
                kept = {"int8": next(iter(forms)), "e4m3": E4M3_FORMS[False]}.get(default)
                forms = {kept: forms[kept]} if kept is not None else {}
            for form, (a_planes, step_sums) in forms.items():
                tuned = functools.partial(w4a4_tc_prefill_triton, a_planes, a_scale, packed, w_scale,
                                          a_element=a_element, w_element=element, out=out, fp8_step_sums=step_sums)
                ms = time_ms(tuned)
                out.fill_(float("nan"))
                pick = getattr(_tc_prefill_autotuned, "best_config", None)  # none under the interpreter's fixed tile
                tile = "" if pick is None else ",".join(str(v) for v in (*(pick.kwargs[f] for f in (
                    "BLOCK_N", "BLOCK_M", "BLOCK_KB")), pick.num_warps, pick.num_stages, pick.kwargs["GROUP_M"]))
                row(f"int8 path kernel{form}, autotuned", ms, tile, tuned())
                for config in configs:
                    fixed = functools.partial(launch_tc, a_planes, packed, a_scale, w_scale, out, config, element,
                                              a_element, step_sums)
                    ms = time_ms(fixed)
                    out.fill_(float("nan"))
                    row(f"int8 path kernel{form}, fixed", ms, ",".join(map(str, config)), fixed())
            if w4a8:
                levels_x, x_scale = quantize_rows_int8(x)
                exact = (levels_x.float() @ values_w.t()) * x_scale * w_scale.t()

                def earlier_route():  # W4A8 above 64 rows before the int8 path: widening + cuBLAS's int8 GEMM
                    a, a_x_scale = quantize_rows_int8(x)
                    return w8a8_matmul(a, a_x_scale, int8_weight_codes(packed, "int4"), w_scale,
                                       out_dtype=torch.bfloat16)
                linears = {"widening + int8 GEMM linear": earlier_route,
                           "int8 path linear": functools.partial(quant_kernels.w4a8_linear, x, packed, w_scale,
                                                                 out_dtype=torch.bfloat16)}
            else:
                codes, x_scale = quant_kernels.quantize_activations(x, element)
                exact = (dequantize(codes, torch.ones_like(x_scale), element) @ values_w.t()) * x_scale * w_scale.t()
                linears = {f"{path} path linear": functools.partial(
                    quant_kernels.w4a4_linear, x, packed, w_scale, a_element=element, w_element=element,
                    out_dtype=torch.bfloat16, path=path) for path in ("fp8", "int8")}
                for step_sums, form in E4M3_FORMS.items():
                    def e4m3_linear(step_sums=step_sums):  # the activation kernel's E4M3 planes, the FP8 form
                        a_planes, x_scale_planes = quant_kernels.quantize_activations(x, element, dp4a_for="int4",
                                                                                      fp8_codes=True)
                        return w4a4_tc_prefill_triton(a_planes, x_scale_planes, packed, w_scale, a_element=element,
                                                      w_element=element, fp8_step_sums=step_sums)
                    linears[f"int8 path linear{form}"] = e4m3_linear
                if default is not None:
                    linears = {f"{default} path linear (the default)": functools.partial(
                        quant_kernels.w4a4_linear, x, packed, w_scale, a_element=element, w_element=element,
                        out_dtype=torch.bfloat16, path=default)}
            for name, linear in linears.items():
                row(name, time_ms(linear), got=linear(), against=exact)
            del planes, packed, levels_a, values_w, want, x, w, out, exact, peer, widened, linears
            torch.cuda.empty_cache()
    print(markdown(result))
    limit = 2.0 if args.cpu_dry_run else 1.0  # half an ulp; the interpreter's bfloat16 cast truncates: one
    return 0 if all(r["error"] is None or r["error"] <= limit for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
