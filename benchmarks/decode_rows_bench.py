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

``--tc_sweep`` times instead every config of the tensor-core decode kernel that fits the weights, fixed, at each
shape and row count (on the codes the linear writes: E4M3 planes for E2M1 weights), without a residual, with one
(``--residual 1``: a model's o_proj and down_proj add theirs, a tuning key of its own) or both, the autotuner's pick
marked: the evidence for ``w4a4_gemv.PINNED_TC_CONFIGS``, whose picks one tuning process may draw differently from
the next. ``--gemv_sweep`` does the same for the CUDA-core decode kernel at 1 to ``GEMV_MAX_M`` rows (every
candidate its pruning keeps, on dp4a bytes), the evidence for ``PINNED_GEMV_CONFIGS``. ``--codes packed`` (or
``both``) sweeps the tensor-core kernel on the activations' packed codes too (its A_PACKED form, half the
activation bytes; no default path writes them). ``--extra`` times tensor-core configs that are not autotuning
candidates beside them. The tensor-core sweep runs with ``PTQ_TC_WARP_SPLIT`` on (``--warp_split 1``, the
kernel's default: tiles of fewer than 16 weight rows a warp have their warps each take a slice of a step's K), off
(0), or off and then on for the configs it changes (``both``):

    python benchmarks/decode_rows_bench.py --tc_sweep --ms 16 --residual both --out benchmarks/results/tc_sweep_h100
    python benchmarks/decode_rows_bench.py --gemv_sweep --ms 1 --element e2m1 --out benchmarks/results/gemv_sweep_h100
    python benchmarks/decode_rows_bench.py --tc_sweep --ms 16 --codes both --out benchmarks/results/tc_packed_h100
    python benchmarks/decode_rows_bench.py --tc_sweep --ms 16 --extra "32,256,2,2,3;16,256,2,2,3" \
        --out benchmarks/results/tc_split_narrow_h100
    python benchmarks/decode_rows_bench.py --tc_sweep --ms 16 --warp_split both --out benchmarks/results/tc_warp_split
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import counts, parse_shapes  # noqa: E402
from benchmarks.result_files import markdown_header, run_header, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, flush_note, gpu_stream_timer, stream_timer_note  # noqa: E402
from quant_kernels.switches import environment  # noqa: E402


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


# The decode kernels a sweep times: the name its rows and title give, and its pins' name in ``w4a4_gemv``.
SWEPT_KERNELS = {"tc": ("tensor-core", "PINNED_TC_CONFIGS"), "cuda_core": ("CUDA-core", "PINNED_GEMV_CONFIGS")}


def tuned_pick(call, kernel: str = "tc") -> object:
    """The ``kernel`` decode kernel's autotuned (or pinned) config after ``call``, its autotuned launch, ran; None
    under the interpreter, which runs a fixed config."""
    from quant_kernels import w4a4_gemv

    call()
    if w4a4_gemv.INTERPRET:
        return None
    return (w4a4_gemv._tc_autotuned if kernel == "tc" else w4a4_gemv._gemv_autotuned).best_config


def sweep_candidates(kernel: str, m: int, flags: dict, extra: tuple = ()) -> list:
    """The configs a sweep times: the tensor-core kernel's ``TC_CONFIGS``, then ``extra``'s (BLOCK_N, BLOCK_KB,
    SPLIT_K, warps, stages) not among them, that its launch in the form ``flags`` says (``tc_decode_flags``) takes
    (``tc_config_takes``: FP8 operands for E2M1 weights or E4M3 planes need whole warpgroups); or every CUDA-core
    candidate that its pruning keeps at ``m`` rows."""
    import triton

    from quant_kernels import w4a4_gemv

    if kernel == "tc":
        return [triton.Config(dict(BLOCK_N=bn, BLOCK_KB=bkb, SPLIT_K=split), num_warps=warps, num_stages=stages)
                for bn, bkb, split, warps, stages in dict.fromkeys(list(w4a4_gemv.TC_CONFIGS) + list(extra))
                if w4a4_gemv.tc_config_takes(dict(flags, BLOCK_N=bn, BLOCK_KB=bkb, num_warps=warps))]
    return w4a4_gemv.prune_decode_configs(w4a4_gemv._gemv_autotuned.configs,
                                          dict(BLOCK_M=triton.next_power_of_2(m)))


def extra_tc_configs(text: str, element: str) -> list[tuple[int, int, int, int, int]]:
    """``--extra``'s tensor-core configs, checked by ``gemv_ncu.parse_tc_configs`` and, for E2M1 weights, for whole
    warpgroups (a tile of fewer than 16 weight rows a warp then runs only with its K slices stacked into the
    warpgroup's rows, as ``PTQ_TC_WARP_SPLIT`` does unless 0: ``sweep_candidates`` keeps it only so); else a
    ValueError naming the config."""
    from benchmarks.gemv_ncu import parse_tc_configs

    configs = parse_tc_configs(text)
    for block_n, block_kb, split, warps, stages in configs:
        if element == "e2m1" and warps % 4:
            raise ValueError(f"{block_n},{block_kb},{split},{warps},{stages}: E2M1 weights multiply on wgmma, which "
                             "needs warps a multiple of 4")
    return configs


def config_sweep(n: int, k: int, m: int, time_ms, device: torch.device, element: str = "int4",
                 residual: bool = False, kernel: str = "tc", packed: bool = False, extra: tuple = (),
                 warp_split: bool = True, split_only: bool = False) -> list[dict]:
    """Every config of a decode kernel (``kernel``: "tc", the tensor-core one, or "cuda_core"; ``sweep_candidates``)
    at M x N x K, fixed, on the codes ``w4a4_linear`` writes for it (``decode_codes_form``: E4M3 planes for E2M1
    weights on the tensor cores on a GPU, else dp4a bytes), or (``packed``, the tensor-core kernel) on the packed
    codes, bfloat16 out, with a residual added (``residual``, as a model's o_proj and down_proj add theirs: another
    tensor-core tuning key) or not; ``extra``: tensor-core configs to time beside the autotuner's candidates
    (``sweep_candidates``). ``warp_split``: ``PTQ_TC_WARP_SPLIT`` on (the default) or off; ``split_only``: only the
    tensor-core configs whose warps it splits a step's K (``w4a4_gemv.tc_warp_slices``). Rows, bf16's first, then the
    configs fastest first: µs, weight GB/s, the ratio to bf16, the largest error of the fp32 product against the
    twin's over its largest output, whether the autotuner (or the kernel's pins) picked it, and whether it is one of
    the autotuner's candidates, and whether its warps split K."""
    if (packed or split_only) and kernel != "tc":
        raise ValueError(f"{'packed activation codes' if packed else 'the warps splitting K'} take the tensor-core "
                         f"kernel, not the {SWEPT_KERNELS[kernel][0]} one")
    with environment((("PTQ_TC_WARP_SPLIT", "1" if warp_split else "0"),)):
        return timed_configs(n, k, m, time_ms, device, element, residual, kernel, packed, extra, split_only)


def timed_configs(n: int, k: int, m: int, time_ms, device: torch.device, element: str, residual: bool, kernel: str,
                  packed: bool, extra: tuple, split_only: bool) -> list[dict]:
    """``config_sweep``'s rows, ``PTQ_TC_WARP_SPLIT`` set as its caller says."""
    import quant_kernels
    from benchmarks.kernel_bench import described
    from quant_kernels import reference, w4a4_gemv

    x = torch.randn(m, k, dtype=torch.bfloat16, device=device)
    w16 = torch.randn(n, k, dtype=torch.bfloat16, device=device) * 0.02
    w_packed, w_scale = quant_kernels.quantize_activations(w16, element, backend="triton")
    if packed:
        dp4a_for, fp8_codes = None, False
    elif kernel == "tc":
        dp4a_for, fp8_codes = quant_kernels.decode_codes_form(element, m, device.type == "cuda")
    else:
        dp4a_for, fp8_codes = element, False
    codes = quant_kernels.quantize_activations(x, element, dp4a_for=dp4a_for, fp8_codes=fp8_codes, backend="triton")
    added = torch.randn(m, n, dtype=torch.bfloat16, device=device) if residual else None
    want = reference.w4a4_matmul_ref(*reference.quantize_activations_ref(x, element, 0, "float"), w_packed, w_scale,
                                     a_element=element, w_element=element, out_dtype=torch.float32)
    product = functools.partial(w4a4_gemv.w4a4_gemv_triton, *codes, w_packed, w_scale, a_element=element,
                                w_element=element, tensor_cores=kernel == "tc")
    pick = tuned_pick(lambda: product(out_dtype=torch.bfloat16, residual=added), kernel)
    shape = dict(n=n, k=k, m=m, element=element, residual=residual, kernel=kernel,
                 codes="packed codes" if packed else "E4M3 planes" if fp8_codes else "dp4a bytes")
    bf16_ms = time_ms(lambda: x @ w16.T)
    weight_bytes = w_packed.numel() + 4 * w_scale.numel()
    timed = []
    flags = w4a4_gemv.tc_decode_flags(element, fp8_codes, packed)
    candidates = {described(c) for c in sweep_candidates(kernel, m, flags)}
    for config in sweep_candidates(kernel, m, flags, extra):
        split = kernel == "tc" and w4a4_gemv.tc_warp_slices(dict(flags, **config.kwargs,
                                                                  num_warps=config.num_warps)) > 1
        if split_only and not split:
            continue
        got = product(out_dtype=torch.float32, config=config)
        ms = time_ms(lambda config=config: product(out_dtype=torch.bfloat16, residual=added, config=config))
        name = described(config)
        timed.append(dict(shape, warp_split=split, config=name, pick=pick is not None and described(pick) == name,
            candidate=name in candidates, us=ms * 1e3, gb_s=weight_bytes / ms / 1e6,
            x_bf16=bf16_ms / ms, rel_err=((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()))
    return [dict(shape, config="bf16 x @ w.T", pick=False, candidate=True, warp_split=False, us=bf16_ms * 1e3,
                 gb_s=2 * n * k / bf16_ms / 1e6, x_bf16=1.0, rel_err=0.0)] + sorted(timed, key=lambda r: r["us"])


def sweep_markdown(result: dict) -> str:
    """The table of a ``--tc_sweep`` or ``--gemv_sweep`` run."""
    element = result["element"].upper()
    name, pins = SWEPT_KERNELS[result.get("kernel", "tc")]
    configs = ("every config that fits the weights (BLOCK_N x BLOCK_KB, the K split, warps, stages)"
               if result.get("kernel", "tc") == "tc" else "every candidate its pruning keeps at these rows")
    lines = markdown_header(f"The {name} decode kernel's configs, fixed, in a stream ({element} x {element}, "
                            "per-row scales)", result)
    lines += ["bfloat16 out, with a residual added where the column says so (a model's o_proj and down_proj add "
              f"theirs). Each shape's bf16 `x @ w.T` first, then {configs}, fastest first; `*` marks the "
              f"autotuner's pick (or `{pins}`'), `+` a config timed beside its candidates (`--extra`); "
              "`K over warps`: its warps each took a slice of a step's K (`PTQ_TC_WARP_SPLIT=1`). GB/s "
              "counts the packed weight and its scales. The error is the fp32 product's largest against the twin's, "
              "over its largest output.", "",
              "| N x K | M | codes | residual | config | µs | GB/s | x bf16 | error |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        split = ", K over warps" if r.get("warp_split") else ""
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {r['codes']} | {'yes' if r['residual'] else 'no'} | "
                     f"{'* ' if r['pick'] else ''}{'' if r.get('candidate', True) else '+ '}{r['config']}{split} | "
                     f"{r['us']:.1f} | {r['gb_s']:.0f} | {r['x_bf16']:.2f} | {r['rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


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
    p.add_argument("--tc_sweep", action="store_true",
                   help="instead, time every tensor-core decode config that fits, fixed, at each shape and row count "
                        "(TC_MIN_M to TC_MAX_M), the autotuner's pick marked: the evidence for PINNED_TC_CONFIGS")
    p.add_argument("--gemv_sweep", action="store_true",
                   help="instead, time every CUDA-core decode config its pruning keeps, fixed, at each shape and row "
                        "count (1 to GEMV_MAX_M), on dp4a bytes, the autotuner's pick marked: the evidence for "
                        "PINNED_GEMV_CONFIGS")
    p.add_argument("--codes", default="linear", choices=["linear", "packed", "both"],
                   help="--tc_sweep: the codes the linear writes (linear, the default), the activations' packed "
                        "codes (packed: the kernel's A_PACKED form, no default path's), or both")
    p.add_argument("--residual", default="0", choices=["0", "1", "both"],
                   help="--tc_sweep, --gemv_sweep: the products without a residual (0, the default), with one added "
                        "(1: a model's o_proj and down_proj, another tensor-core tuning key), or both")
    p.add_argument("--extra", default="",
                   help="--tc_sweep: ';'-separated tensor-core configs BLOCK_N,BLOCK_KB,split_k,warps,stages to time "
                        "beside the autotuner's candidates (marked + in the table)")
    p.add_argument("--warp_split", default="1", choices=["0", "1", "both"],
                   help="--tc_sweep: PTQ_TC_WARP_SPLIT on (1, the default: tiles of fewer than 16 weight rows a warp "
                        "have their warps each take a slice of a step's K), off (0), or off and then on for the "
                        "configs it changes (both)")
    add_l2_flush_argument(p)
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    from quant_kernels.w4a4_gemv import GEMV_MAX_M, TC_MAX_M, TC_MIN_M

    if args.tc_sweep and args.gemv_sweep:
        p.error("--tc_sweep and --gemv_sweep each time one kernel: choose one a run")
    kernel = "tc" if args.tc_sweep else "cuda_core" if args.gemv_sweep else None
    if args.codes != "linear" and kernel != "tc":
        p.error(f"--codes {args.codes} sweeps the activations' packed codes on the tensor-core kernel: give "
                "--tc_sweep")
    if args.extra and kernel != "tc":
        p.error("--extra times tensor-core configs beside the autotuner's: give --tc_sweep")
    if args.warp_split != "1" and kernel != "tc":
        p.error(f"--warp_split {args.warp_split} sets how the tensor-core kernel's warps share a step: give "
                "--tc_sweep")
    try:
        extra = extra_tc_configs(args.extra, args.element)
    except ValueError as error:
        p.error(f"--extra: {error}")
    low, high = (TC_MIN_M, TC_MAX_M) if kernel == "tc" else (1, GEMV_MAX_M)
    if kernel and not all(low <= m <= high for m in args.ms):
        p.error(f"--{'tc' if kernel == 'tc' else 'gemv'}_sweep times the {SWEPT_KERNELS[kernel][0]} decode kernel, "
                f"which takes {low} to {high} rows on a GPU: got --ms {','.join(map(str, args.ms))}")
    device, time_ms = gpu_stream_timer(p, args.in_stream, args.l2_flush)
    result = {**run_header("decode_rows_bench.py", argv, device), "l2_flush": args.l2_flush, "rows": [],
              "element": args.element, "timing": stream_timer_note(args.in_stream, args.l2_flush),
              **({"kernel": kernel} if kernel else {})}
    residuals = {"0": [False], "1": [True], "both": [False, True]}[args.residual]
    forms = {"linear": [False], "packed": [True], "both": [False, True]}[args.codes]
    splits = {"0": [(False, False)], "1": [(True, False)], "both": [(False, False), (True, True)]}[args.warp_split]
    for n, k in parse_shapes(args.shapes):
        for m in args.ms:
            if kernel:
                for residual in residuals:
                    for packed in forms:
                        for warp_split, split_only in splits:
                            result["rows"] += config_sweep(n, k, m, time_ms, device, args.element, residual, kernel,
                                                           packed, extra, warp_split, split_only)
                            write_result_files(args.out, result, sweep_markdown(result))
                print(sweep_markdown(result).splitlines()[-1], flush=True)
            else:
                result["rows"].append(bench(n, k, m, time_ms, device, args.element))
                write_result_files(args.out, result, markdown(result))
                print(result["rows"][-1], flush=True)
    print(sweep_markdown(result) if kernel else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
