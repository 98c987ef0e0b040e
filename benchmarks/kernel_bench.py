"""W4A4 and FPx weight-only Triton kernels against bf16 and FP8 cuBLAS on LLM linear shapes.

For each weight shape N x K (``--shapes``) and token count M (``--ms``) it times, with
CUDA events (median of ``--reps`` after ``--warmup``; ``--flush_l2`` clears the L2 cache
before every repetition):

* ``bf16``: ``torch.matmul(x, w.T)``;
* ``fp8``: ``torch._scaled_mm`` on E4M3 with row-wise scales (the activation cast is not
  timed; M is padded to a multiple of 16, as the row-wise kernels need);
* ``int4``, ``e2m1`` (per-token activations x per-channel weights), ``nvfp4`` and
  ``mxfp4`` (16 / 32-element groups on both sides): our W4A4 GEMM alone (``gemm``: the
  decode kernels of ``w4a4_gemv`` at the rows they take with per-row scales, up to 64, on the codes
  ``w4a4_linear`` writes for them (E4M3 planes for E2M1 weights at the tensor-core rows on a GPU, else dp4a
  bytes), else ``w4a4_gemm``'s tensor-core kernel on the packed codes, split-K at M <= 16, named ``packed gemm``)
  and after the activation-quantization kernel (``quant+gemm``); where the decode kernel ran, also
  the packed one (``dot gemm``) and, on E4M3 planes, the same kernel on dp4a bytes (``dp4a gemm``), for
  comparison. ``w4a4_linear`` takes the packed kernel only in float32 and for elements the other paths do
  not take: above the decode rows INT4 and E2M1 take the int8, e4m3 or FP8 path, and the group-scaled
  formats take the dequantized path at every M (activations dequantized to bfloat16, then the weight-only
  product); that linear is timed beside the packed kernel
  (``<path> quant+gemm (default)``; ``benchmarks/prefill_bench.py`` times the int8 path's forms);
* for ``int4`` and ``e2m1``, the FP8 path (``quant_kernels.fp8_gemm``): cuBLAS's FP8 GEMM on
  codes widened to E4M3 alone (``fp8 gemm``, weight widened beforehand), with the weight
  widened in the timed call (``fp8 unpack+gemm``), and the whole linear
  (``fp8 quant+unpack+gemm``: activation codes, widening, GEMM);
* for ``int4`` above 64 rows, the int8 path (``w4a4_gemv.w4a4_tc_prefill_triton``): the tensor-core kernel tiled
  over M on the activation kernel's int8 bytes, the packed weight unpacked in registers, alone (``int8 gemm``) and
  with the activation codes (``int8 quant+gemm``);

the activation-quantization kernel alone, in GB/s, next to a device copy
(``x.clone()``) of the same activations; and, for M in ``--weight_only_ms``, the FPx
weight-only GEMM (bf16 activations, or fp16 with ``--weight_only_dtype fp16``; FP6 E3M2 /
E2M3, FP5 E2M2 / E3M1, FP4 E2M1 weights in bit planes with per-channel scales) against
``torch.matmul`` in the activations' dtype. Every kernel is first checked against its torch
twin on the same data (codes and scales exactly; GEMM within 1e-5 of the output's magnitude);
the result of the check is in the tables.
``--shapes`` takes N x K pairs or a preset: ``llama3-8b`` (default), ``qwen2.5-7b``,
``smollm2-1.7b``.

    python benchmarks/kernel_bench.py --out benchmarks/results/kernel_bench_h100 --flush_l2 --cuda_graph

Without a GPU, ``--cpu_dry_run`` runs the kernels under the Triton interpreter on tiny
shapes (timings meaningless, the check and the report are real):

    python benchmarks/kernel_bench.py --cpu_dry_run --reps 2 --out /tmp/kernel_bench_dry
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_check import FP8_ACCUMULATION_OF_MAX  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from benchmarks.timing import add_l2_flush_argument, flush_note, in_stream_note, make_timer  # noqa: E402
import quant_kernels  # noqa: E402  (imports no triton: TRITON_INTERPRET can still be set in main)
from quant_kernels import reference  # noqa: E402
from pipeline.results import device_name, library_versions  # noqa: E402
from quant_layers import QuantSpec, Quantizer  # noqa: E402
from quant_layers.packing import element_named, encode, pack_planes  # noqa: E402

LLAMA3_8B_SHAPES = "4096x4096,14336x4096,4096x14336,6144x4096"  # N x K: o_proj, gate/up, down, qkv
SHAPE_PRESETS = {
    "llama3-8b": LLAMA3_8B_SHAPES,
    "qwen2.5-7b": "3584x3584,18944x3584,3584x18944,4608x3584",
    "smollm2-1.7b": "2048x2048,8192x2048,2048x8192,6144x2048",
}
LLAMA3_8B_MS = "1,16,128,512,2048,8192"
WEIGHT_ONLY_MS = "1,16,128"
DRY_RUN_SHAPES, DRY_RUN_MS = "48x128", "1,5"
# name -> (element, group, scale kind); weights use the same format, per output channel or per group.
W4A4_FORMATS = {
    "int4": ("int4", 0, "float"),
    "e2m1": ("e2m1", 0, "float"),
    "nvfp4": ("e2m1", 16, "e4m3"),
    "mxfp4": ("e2m1", 32, "e8m0"),
}
FPX_FORMATS = ("e3m2", "e2m3", "e2m2", "e3m1", "e2m1", "int4")  # weight-only elements of the FPx kernels
# The FPx weight-only GEMM's activation dtypes (``--weight_only_dtype``).
WEIGHT_ONLY_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Weight-only formats with scales in groups (``weight_only_format``): GPTQ's INT4 g128, E2M1 in NVFP4's and MXFP4's
# groups with fp32 scales, and NVFP4 and MXFP4 with their scales as their checkpoints encode them.
ENCODED_WEIGHT_ONLY = {"nvfp4": ("e2m1", 16, "nvfp"), "mxfp4": ("e2m1", 32, "mxfp")}
GROUPED_WEIGHT_ONLY = ("int4_g128", "e2m1_g16", "e2m1_g32", *ENCODED_WEIGHT_ONLY)
CHECK_ROWS = 64  # rows of the activations checked against the twin
PREFILL_COMPARE_M = 256  # from these rows the FPx path not taken (tile kernel or dequantized weight) is timed too


def parse_shapes(text: str, form: str = "N x K", example: str = "4096x4096,14336x4096",
                 presets: dict[str, str] = SHAPE_PRESETS) -> list[tuple[int, int]]:
    """'AxB,AxB' (or a name of ``presets``) -> [(A, B), ...], pairs of positive integers; SystemExit naming them as
    ``form`` (weights' N x K by default) otherwise."""
    text = presets.get(text, text)
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
        named = f" or one of {', '.join(presets)}" if presets else ""
        raise SystemExit(f"--shapes takes {form} pairs like {example}{named}, got {text!r}")
    return shapes  # type: ignore[return-value]


def counts(text: str) -> list[int]:
    """An argparse type: a comma list of row or batch counts, each at least 1 ('' for none)."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"counts are at least 1, got {text!r} ('' for none)")
    return values


def parse_tiles(text: str, form: str, fewest: int, most: int) -> list[tuple[int, ...]]:
    """';'-separated kernel tiles of ``fewest`` to ``most`` comma-separated whole numbers (``form`` names them) ->
    tuples as given; a ValueError naming the form for anything else."""
    tiles = []
    for part in filter(None, text.split(";")):
        fields = part.split(",")
        if not fewest <= len(fields) <= most or not all(f.strip().isdigit() for f in fields):
            raise ValueError(f"{form} ({fewest} to {most} integers), got {part!r}")
        tiles.append(tuple(int(f) for f in fields))
    return tiles


def parse_names(text: str, allowed, flag: str) -> list[str]:
    """A comma list of names, each one of ``allowed`` (at least one), or SystemExit naming ``flag``."""
    names = [name for name in text.split(",") if name]
    if not names or any(name not in allowed for name in names):
        raise SystemExit(f"{flag} takes a comma list of {', '.join(allowed)}, got {text!r}")
    return names


def rowwise_fp8(t: torch.Tensor, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 rows and their fp32 scales (rows padded with zeros to a multiple of ``multiple``)."""
    pad = (-t.shape[0]) % multiple
    t = torch.cat([t, t.new_zeros(pad, t.shape[1])]) if pad else t
    scale = (t.abs().amax(dim=1, keepdim=True).float() / 448.0).clamp(min=1e-12)
    return (t.float() / scale).to(torch.float8_e4m3fn), scale


def check_quantization(x: torch.Tensor, element: str, group: int, kind: str) -> str:
    got = quant_kernels.quantize_activations(x, element, group, kind, backend="triton")
    want = reference.quantize_activations_ref(x, element, group, kind)
    same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    return "ok" if same else f"MISMATCH codes {(got[0] != want[0]).float().mean().item():.2e}"


def check_gemm(a: tuple, w: tuple, spec: dict) -> str:
    """Triton GEMM against the twin on the first CHECK_ROWS rows."""
    a_rows = (a[0][:CHECK_ROWS], a[1][:CHECK_ROWS])
    got = quant_kernels.w4a4_matmul(*a_rows, *w, out_dtype=torch.float32, backend="triton", **spec).float()
    want = reference.w4a4_matmul_ref(*a_rows, *w, out_dtype=torch.float32, **spec)
    err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()
    return "ok" if err <= 1e-5 else f"MISMATCH rel err {err:.1e}"


def decode_gemm(x: torch.Tensor, wq: tuple, element: str, form: tuple[str, bool]) -> tuple[functools.partial, str]:
    """The decode kernel's product (bfloat16 out) of x's per-token codes in ``form``, (dp4a_for, fp8_codes) as
    ``decode_codes_form`` gives the one ``w4a4_linear`` writes (on a GPU, E4M3 planes for E2M1 weights at the
    tensor-core rows; else the dp4a bytes for ``element``), and its check: every row's fp32 product against the
    twin's, within 1e-5 of the largest."""
    from quant_kernels.w4a4_gemv import w4a4_gemv_triton  # late: builds Triton kernels (see main)

    dp4a_for, fp8_codes = form
    codes = quant_kernels.quantize_activations(x, element, dp4a_for=dp4a_for, fp8_codes=fp8_codes, backend="triton")
    product = functools.partial(w4a4_gemv_triton, *codes, *wq, a_element=element, w_element=element)
    want = reference.w4a4_matmul_ref(*reference.quantize_activations_ref(x, element, 0, "float"), *wq,
                                     a_element=element, w_element=element, out_dtype=torch.float32)
    err = ((product(out_dtype=torch.float32) - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()
    named = "E4M3 planes" if fp8_codes else "dp4a bytes"
    return (functools.partial(product, out_dtype=torch.bfloat16),
            f"ok on {named}" if err <= 1e-5 else f"MISMATCH on {named}, rel err {err:.1e}")


def path_errors(x: torch.Tensor, wq: tuple, a_element: str, w_element: str, path: str, floor: float, group: int = 0,
                kind: str = "float") -> tuple[float, float]:
    """``w4a4_linear`` on ``path`` (bfloat16 out; scales per ``group`` codes of ``kind`` on both sides) against the
    fp32 twin on ``x``'s rows: the largest elementwise error relative to |want| plus ``floor`` times the largest
    |want|, and the largest error over the largest |want|."""
    spec = dict(a_element=a_element, w_element=w_element, a_group=group, w_group=group)
    got = quant_kernels.w4a4_linear(x, *wq, **spec, scale_kind=kind, out_dtype=torch.bfloat16, backend="triton",
                                    path=path).float()
    aq = reference.quantize_activations_ref(x, a_element, group, kind)
    want = reference.w4a4_matmul_ref(*aq, *wq, **spec, out_dtype=torch.float32)
    err = ((got - want).abs() / (want.abs() + floor * want.abs().max())).max().item()
    return err, ((got - want).abs().max() / want.abs().max()).item()


def check_fp8_path(x: torch.Tensor, wq: tuple, element: str) -> str:
    """The FP8 path's linear against the fp32 twin on the first CHECK_ROWS rows: bfloat16 rounding."""
    err, of_max = path_errors(x[:CHECK_ROWS], wq, element, element, "fp8", 1e-5)
    if err <= 2.0**-7:
        return "ok"
    # Hopper's FP8 accumulation (see FP8_ACCUMULATION_OF_MAX): outputs near zero then miss
    # bfloat16 rounding while the largest do not.
    return (f"{'close' if of_max <= FP8_ACCUMULATION_OF_MAX else 'MISMATCH'}: max err {of_max:.1e} of max |out|, "
            f"elementwise rel err {err:.1e}")


def check_int8_path(x: torch.Tensor, wq: tuple) -> str:
    """The int8 path's linear (INT4) against the fp32 twin on the first rows (above the decode kernels' 64, so
    that it runs): bfloat16 rounding."""
    # The kernel's sums are exact; the twin's fp32 ones leave ~1e-7 where they cancel: a floor of 2^-10 of the largest
    err, _ = path_errors(x[:2 * CHECK_ROWS + 65], wq, "int4", "int4", "int8", 2.0**-10)
    return "ok" if err <= 2.0**-7 else f"MISMATCH: elementwise rel err {err:.1e}"  # the interpreter truncates


def check_default_path(x: torch.Tensor, wq: tuple, element: str, group: int, kind: str, path: str) -> str:
    """The linear on ``path`` (bfloat16 out) against the fp32 twin on x's first rows (enough to pass the decode
    kernels' 64, so that the int8 and e4m3 paths run their prefill launch): within 2^-6 of the largest output (the
    dequantized path rounds the activations to bfloat16 once, and from ``fpx_gemm.DEQUANT_MIN_M`` rows the weight;
    FP8 accumulates at reduced precision)."""
    _, err = path_errors(x[:quant_kernels.INT8_MIN_ROWS + CHECK_ROWS], wq, element, element, path, 0.0, group, kind)
    return "ok" if err <= 2.0**-6 else f"MISMATCH rel err {err:.1e}"


def fp8_path_rows(n: int, m: int, k: int, x: torch.Tensor, wq: tuple, name: str, element: str, time_ms) -> list[dict]:
    """The FP8 path of a per-row format: GEMM alone, with the weight widening, with everything."""
    from quant_kernels.fp8_gemm import w4a4_matmul_fp8  # late: builds Triton kernels (TRITON_INTERPRET is set in main)

    check = check_fp8_path(x, wq, element)
    codes, a_scale = quant_kernels.quantize_activations(x, element, fp8_codes=True, backend="triton")
    w8 = quant_kernels.unpack_fp8(wq[0], element, backend="triton")
    weight_bytes = wq[0].numel() + 4 * wq[1].numel()
    linear = functools.partial(quant_kernels.w4a4_linear, x, *wq, a_element=element, w_element=element,
                               out_dtype=torch.bfloat16, backend="triton", path="fp8")
    return [
        row(n, m, k, f"{name} fp8 gemm", time_ms(lambda: w4a4_matmul_fp8(codes, a_scale, w8, wq[1])), n * k, check),
        row(n, m, k, f"{name} fp8 unpack+gemm", time_ms(
            lambda: w4a4_matmul_fp8(codes, a_scale, quant_kernels.unpack_fp8(wq[0], element, backend="triton"), wq[1])),
            weight_bytes, check),
        row(n, m, k, f"{name} fp8 quant+unpack+gemm", time_ms(linear), weight_bytes, check),
    ]


def int8_path_rows(n: int, m: int, k: int, x: torch.Tensor, wq: tuple, time_ms) -> list[dict]:
    """The int8 path of INT4: the M-tiled tensor-core kernel alone, and with the activation codes."""
    from quant_kernels.w4a4_gemv import _tc_prefill_autotuned, w4a4_tc_prefill_triton  # late (see main)

    check = check_int8_path(x, wq)
    a_bytes, a_scale = quant_kernels.quantize_activations(x, "int4", dp4a_for="int4", backend="triton")
    weight_bytes = wq[0].numel() + 4 * wq[1].numel()
    gemm = functools.partial(w4a4_tc_prefill_triton, a_bytes, a_scale, *wq, a_element="int4", out_dtype=torch.bfloat16)
    linear = functools.partial(quant_kernels.w4a4_linear, x, *wq, a_element="int4", w_element="int4",
                               out_dtype=torch.bfloat16, backend="triton", path="int8")
    rows = [row(n, m, k, "int4 int8 gemm", time_ms(gemm), weight_bytes, check)]
    rows[-1]["config"] = described(getattr(_tc_prefill_autotuned, "best_config", None))
    rows.append(row(n, m, k, "int4 int8 quant+gemm", time_ms(linear), weight_bytes, check))
    return rows


def tuned_config(m: int, k: int, group: int, gemv: bool | None = None, w_element: str | None = None) -> str:
    """The config the autotuner of this GEMM picked on its last run: tile sizes, warps, stages."""
    from quant_kernels import w4a4_gemm

    if w4a4_gemm.INTERPRET:  # one fixed config, no autotuner
        return ""
    return described(getattr(w4a4_gemm.autotuner_for(m, k, group, group, gemv, w_element), "best_config", None))


def fpx_tuned_config(row_kernel: bool, group: int = 0) -> str:
    """The config the FPx kernel's autotuner (the CUDA-core row kernel's or the tensor-core one's, for scales in
    groups when ``group``) picked on its last run."""
    from quant_kernels import fpx_gemm

    if fpx_gemm.INTERPRET:
        return ""
    tuners = {(True, False): fpx_gemm._fpx_row_autotuned, (False, False): fpx_gemm._fpx_autotuned,
              (True, True): fpx_gemm._fpx_row_group_autotuned, (False, True): fpx_gemm._fpx_group_autotuned}
    return described(getattr(tuners[row_kernel, bool(group)], "best_config", None))


def described(config) -> str:
    if config is None:
        return ""
    tiles = " ".join(f"{key}={value}" for key, value in config.kwargs.items())
    capped = f" maxnreg={config.maxnreg}" if config.maxnreg else ""
    return f"{tiles} warps={config.num_warps} stages={config.num_stages}{capped}"


def row(n: int, m: int, k: int, method: str, ms: float | None, weight_bytes: int, note: str = "") -> dict:
    flops = 2 * m * n * k
    return {
        "N": n, "K": k, "M": m, "method": method, "ms": ms,
        "tflops": flops / ms / 1e9 if ms else None,
        "weight_gbs": weight_bytes / ms / 1e6 if ms else None,
        "check": note,
    }


def bench_shape(n: int, k: int, m: int, device: torch.device, time_ms, formats: list[str],
                alternatives: bool = True) -> list[dict]:
    """Every GEMM of one (N, K, M): the bf16 and fp8 baselines first, then the W4A4 formats: the kernel each takes by
    default and its whole linear, then (``alternatives``) the other kernels and paths the format could take."""
    from quant_kernels.w4a4_gemm import takes_gemv, w4a4_matmul_triton  # late: builds Triton kernels (see main)
    from quant_kernels.w4a4_gemv import TC_MAX_M
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None  # picks the default path there
    rows = [row(n, m, k, "bf16", time_ms(lambda: torch.matmul(x, w.t())), 2 * n * k)]
    fp8_ok = True
    try:
        (x8, xs), (w8, ws) = rowwise_fp8(x, 16), rowwise_fp8(w)
        ws = ws.t().contiguous()
        ms = time_ms(lambda: torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16))
        rows.append(row(n, m, k, "fp8", ms, n * k + 4 * n, "M padded to 16" if m % 16 else ""))
    except (RuntimeError, NotImplementedError) as e:  # no FP8 row-wise kernel here (pre-Hopper GPUs)
        fp8_ok = False
        rows.append(row(n, m, k, "fp8", None, n * k, f"unavailable: {str(e).splitlines()[0][:80]}"))
    for name in formats:
        element, group, kind = W4A4_FORMATS[name]
        wq = quant_kernels.quantize_activations(w, element, group, kind, backend="triton")
        aq = quant_kernels.quantize_activations(x, element, group, kind, backend="triton")
        spec = dict(a_element=element, w_element=element, a_group=group, w_group=group)
        check = ", ".join([check_quantization(x[:CHECK_ROWS], element, group, kind),
                           check_gemm(aq, wq, spec)])
        weight_bytes = wq[0].numel() + 4 * wq[1].numel()
        decode = takes_gemv(m, k, group, group, w_element=element)
        if decode:  # a decode kernel (CUDA-core, or tensor-core for INT4 and E2M1 weights), on the linear's codes
            form = quant_kernels.decode_codes_form(element, m, gpu is not None)
            gemm, decode_check = decode_gemm(x, wq, element, form)
            check = f"{check}, {decode_check}"
        else:
            gemm = functools.partial(quant_kernels.w4a4_matmul, *aq, *wq, out_dtype=torch.bfloat16, backend="triton",
                                     **spec)
        linear = functools.partial(quant_kernels.w4a4_linear, x, *wq, a_element=element, w_element=element,
                                   a_group=group, w_group=group, scale_kind=kind, out_dtype=torch.bfloat16, backend="triton",
                                   path="packed")
        kernel = name if decode else f"{name} packed"  # above the decode rows not the default path for every format
        rows.append(row(n, m, k, f"{kernel} gemm", time_ms(gemm), weight_bytes, check))
        rows[-1]["config"] = tuned_config(m, k, group, w_element=element if decode else None)
        rows.append(row(n, m, k, f"{kernel} quant+gemm", time_ms(linear), weight_bytes, check))
        default = quant_kernels.default_path(m, n, k, element, element, True, torch.bfloat16, group, group, kind,
                                             gpu)
        if default != "packed":  # the linear w4a4_linear takes there (the decode kernels' rows take "packed")
            rows.append(row(n, m, k, f"{name} {default} quant+gemm (default)", time_ms(
                functools.partial(linear, path=default)), weight_bytes,
                check_default_path(x, wq, element, group, kind, default)))
        if kind == "e8m0" and default in ("fp8", "dequantized") and \
                quant_kernels.paths_fitting(m, n, k, element, element, group, group, kind)[0]:
            other = "dequantized" if default == "fp8" else "fp8"  # MXFP4: the folded FP8 path and the dequantized
            rows.append(row(n, m, k, f"{name} {other} quant+gemm", time_ms(  # one, either side of MX_FP8_MIN_ROWS
                functools.partial(linear, path=other)), weight_bytes,
                check_default_path(x, wq, element, group, kind, other)))
        if decode and alternatives and form[1]:
            bytes_gemm, bytes_check = decode_gemm(x, wq, element, (element, False))
            rows.append(row(n, m, k, f"{name} dp4a gemm", time_ms(bytes_gemm), weight_bytes, bytes_check))
            rows[-1]["config"] = tuned_config(m, k, group, w_element=element)
        if decode and alternatives:
            dot = functools.partial(w4a4_matmul_triton, out_dtype=torch.bfloat16, gemv=False, **spec)
            rows.append(row(n, m, k, f"{name} dot gemm", time_ms(lambda: dot(*aq, *wq)), weight_bytes))
            rows[-1]["config"] = tuned_config(m, k, group, gemv=False)
        if alternatives and fp8_ok and reference.fp8_path_fits(m, n, k, group, group):
            rows += fp8_path_rows(n, m, k, x, wq, name, element, time_ms)
        if alternatives and name == "int4" and m > TC_MAX_M and k % 8 == 0:
            rows += int8_path_rows(n, m, k, x, wq, time_ms)
    for r in rows:
        r["x_bf16"] = rows[0]["ms"] / r["ms"] if r["ms"] else None
        r["x_fp8"] = rows[1]["ms"] / r["ms"] if r["ms"] and rows[1]["ms"] else None
    return rows


def act_quant_bytes(m: int, k: int, group: int, fp8_codes: bool = False) -> int:
    """Bytes the activation kernel moves for (m, k) bfloat16 activations: read, codes (half a byte, or one E4M3
    byte) and fp32 scales written."""
    return m * k * 2 + (m * k if fp8_codes else m * k // 2) + 4 * m * (k // group if group else 1)


def bench_act_quant(m: int, k: int, device: torch.device, time_ms, formats: list[str]) -> list[dict]:
    """The quantization kernel alone (read bf16, write codes + scales) against x.clone()."""
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    copy_ms = time_ms(lambda: x.clone())
    out = [{"M": m, "K": k, "kernel": "x.clone()", "ms": copy_ms, "gbs": 2 * x.numel() * 2 / copy_ms / 1e6, "check": ""}]
    for name in formats:
        element, group, kind = W4A4_FORMATS[name]
        ms = time_ms(lambda: quant_kernels.quantize_activations(x, element, group, kind, backend="triton"))
        moved = act_quant_bytes(m, k, group)
        out.append({"M": m, "K": k, "kernel": name, "ms": ms, "gbs": moved / ms / 1e6,
                    "check": check_quantization(x[:CHECK_ROWS], element, group, kind)})
    return out


def fpx_weight(w: torch.Tensor, element: str, group: int = 0, block_format: str | None = None,
               ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor | None]:
    """Bit planes and scales of ``w`` quantized (RTN) per output channel, (N, 1), or per ``group`` codes along K,
    (N, K / group), in fp32, and None; or, ``block_format`` 'nvfp' / 'mxfp', as NVFP4 / MXFP4 quantize it, its
    scales as their checkpoints encode them (``export.checkpoint.encode_weight_scales``) with the rows' global
    scales of E4M3 ones (else None)."""
    fmt = element_named(element)
    if block_format is not None:
        quantizer = Quantizer(QuantSpec(block_format, 4))
    else:
        granularity = dict(granularity="group", group_size=group) if group else dict(granularity="channel")
        quantizer = Quantizer(QuantSpec("int", 4, **granularity) if element == "int4" else
                              QuantSpec("fp", fmt.bits, exp_bits=fmt.exp_bits, **granularity))
    wg = quantizer.grouped(w)
    params = quantizer.fit(wg)
    codes = encode(quantizer.levels(wg, params), fmt).reshape(w.shape)
    scale, global_scale = params.scale.reshape(w.shape[0], -1).float(), None
    if block_format is not None:
        from export.checkpoint import encode_weight_scales  # late: the exporter imports transformers

        stored = encode_weight_scales(block_format, scale, params.tensor_scale, f"{element} weight")
        scale = stored["weight_scale"]
        if "weight_global_scale" in stored:  # one a row, as RealQuantLinear holds it
            global_scale = stored["weight_global_scale"].expand(w.shape[0]).contiguous()
    return pack_planes(codes, fmt.bits), scale, global_scale


def weight_only_format(name: str) -> tuple[str, int, str | None]:
    """A ``--weight_only_formats`` name as (element, group, block format): an FPx element, per channel, or an
    INT4 / E2M1 one with ``_gN`` for fp32 scales per N codes along K (``int4_g128``: GPTQ's; ``e2m1_g16``,
    ``e2m1_g32``: NVFP4's and MXFP4's groups), and None; or ``nvfp4`` / ``mxfp4`` (``ENCODED_WEIGHT_ONLY``)."""
    if name in ENCODED_WEIGHT_ONLY:
        return ENCODED_WEIGHT_ONLY[name]
    element, _, group = name.partition("_g")
    return element, int(group) if group else 0, None


def check_fpx(x: torch.Tensor, planes: tuple[torch.Tensor, ...], scale: torch.Tensor, element: str,
              row_kernel: bool | None = None, dequantize: bool = False, group: int = 0,
              w_global_scale: torch.Tensor | None = None) -> str:
    """Triton weight-only GEMM (``row_kernel``, ``dequantize``, ``group`` and ``w_global_scale`` as
    ``fpx_matmul_triton`` takes them) against the twin on the first CHECK_ROWS rows: the kernels' fp32 out within
    1e-5 of the largest value, except where they may round each weight to x's dtype (the dequantized weight's
    product, and the tensor-core kernel's in groups wider than its K step), which
    ``reference.dequantized_product_excess`` bounds."""
    from quant_kernels.fpx_gemm import fpx_matmul_triton, takes_row_kernel  # late: builds Triton kernels (see main)

    bits = element_named(element).bits
    rows = x[:CHECK_ROWS]
    spec = dict(element=element, bits=bits, group=group, w_global_scale=w_global_scale)
    row_kernel_runs = row_kernel or row_kernel is None and takes_row_kernel(rows.shape[0], rows.shape[1])
    if dequantize or group and not row_kernel_runs:
        got = fpx_matmul_triton(rows, planes, scale, **spec, row_kernel=row_kernel, dequantize=dequantize)
        over = reference.dequantized_product_excess(got, rows, planes, scale, element, bits, group=group,
                                                    w_global_scale=w_global_scale)
        return "ok" if over <= 1 else f"MISMATCH {over:.2f} of the rounding bound"
    want = reference.fpx_matmul_ref(rows, planes, scale, **spec, out_dtype=torch.float32)
    got = fpx_matmul_triton(rows, planes, scale, **spec, out_dtype=torch.float32, row_kernel=row_kernel,
                            dequantize=False)
    err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()
    return "ok" if err <= 1e-5 else f"MISMATCH rel err {err:.1e}"


def bench_weight_only(n: int, k: int, m: int, device: torch.device, time_ms,
                      formats: tuple[str, ...] = FPX_FORMATS, dtype: str = "bf16") -> list[dict]:
    """``dtype`` (bf16 or fp16) activations x FPx weights (``weight_only_format`` names: per-channel scales, or
    INT4 / E2M1 in groups) against torch.matmul in that dtype (the ratio ``x_<dtype>``); for 2..ROW_MAX_M rows the
    kernel the default did not pick beside it (the tensor-core kernel up to ROW_DEFAULT_MAX_M rows, where the
    CUDA-core row kernel is the default, the row kernel above), and from PREFILL_COMPARE_M rows (every M for weights
    in groups) the path it did not pick of the kernels and the dequantized weight times cuBLAS
    (``fpx_gemm.takes_dequantized``)."""
    from quant_kernels import fpx_gemm  # late: builds Triton kernels (see main)

    x = torch.randn(m, k, device=device, dtype=WEIGHT_ONLY_DTYPES[dtype])
    w = torch.randn(n, k, device=device, dtype=x.dtype) * 0.02
    rows = [row(n, m, k, dtype, time_ms(lambda: torch.matmul(x, w.t())), 2 * n * k)]
    for name in formats:
        element, group, block_format = weight_only_format(name)
        planes, scale, global_scale = fpx_weight(w, element, group, block_format)
        spec = dict(element=element, bits=element_named(element).bits, group=group, w_global_scale=global_scale)
        gemm = functools.partial(quant_kernels.fpx_matmul, x, planes, scale, **spec, backend="triton")
        weight_bytes = sum(p.numel() for p in planes) + scale.element_size() * scale.numel() + (
            0 if global_scale is None else 4 * global_scale.numel())
        checked = dict(group=group, w_global_scale=global_scale)
        dequantized = fpx_gemm.takes_dequantized(m, x.dtype, x.dtype, None)
        check = check_fpx(x, planes, scale, element, dequantize=dequantized, **checked)
        rows.append(row(n, m, k, f"{name} w-only{' (dequantized + cuBLAS)' if dequantized else ''}",
                        time_ms(gemm), weight_bytes, check))
        by_default = fpx_gemm.takes_row_kernel(m, k)
        rows[-1]["config"] = "" if dequantized else fpx_tuned_config(by_default, group)
        if m >= PREFILL_COMPARE_M or group and not dequantized:
            other = functools.partial(fpx_gemm.fpx_matmul_triton, x, planes, scale, **spec,
                                      dequantize=not dequantized)
            check = check_fpx(x, planes, scale, element, dequantize=not dequantized, **checked)  # before the pick
            kernel = "row kernel" if by_default else "tile kernel"
            rows.append(row(n, m, k, f"{name} w-only {kernel if dequantized else 'dequantized + cuBLAS'}",
                            time_ms(other), weight_bytes, check))
            rows[-1]["config"] = fpx_tuned_config(by_default, group) if dequantized else ""
        if 1 < m <= fpx_gemm.ROW_MAX_M and k % 8 == 0:
            other = functools.partial(fpx_gemm.fpx_matmul_triton, x, planes, scale, **spec,
                                      row_kernel=not by_default)
            kernel = "tensor-core" if by_default else "row"
            rows.append(row(n, m, k, f"{name} w-only {kernel} kernel", time_ms(other), weight_bytes,
                            check_fpx(x, planes, scale, element, row_kernel=not by_default, **checked)))
            rows[-1]["config"] = fpx_tuned_config(not by_default, group)
    for r in rows:
        r[f"x_{dtype}"] = rows[0]["ms"] / r["ms"]
    return rows


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    lines = [
        f"W4A4 kernels vs bf16 / FP8 row-wise GEMM. Device: {result['device']}. Date: {result['date']}.",
        f"Versions: {result['versions']}. Timing: {result['timing']}.",
        f"Command: `{result['command']}`",
        "",
        "| N x K | M | method | ms | TFLOP/s | weight GB/s | x bf16 | x fp8 | check | tuned config |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["gemm"]:
        lines.append(f"| {r['N']}x{r['K']} | {r['M']} | {r['method']} | {fmt(r['ms'], '.4f')} | "
                     f"{fmt(r['tflops'], '.1f')} | {fmt(r['weight_gbs'], '.0f')} | {fmt(r['x_bf16'], '.2f')} | "
                     f"{fmt(r['x_fp8'], '.2f')} | {r['check']} | {r.get('config', '')} |")
    lines += ["", "Activation quantization alone (bf16 in; GB/s counts activations read, codes and scales written):",
              "",
              "| M | K | kernel | ms | GB/s | check |", "|---|---|---|---|---|---|"]
    for r in result["act_quant"]:
        lines.append(f"| {r['M']} | {r['K']} | {r['kernel']} | {r['ms']:.4f} | {r['gbs']:.0f} | {r['check']} |")
    if result["weight_only"]:
        dtype = result.get("weight_only_dtype", "bf16")  # (bf16 in the files written before the option)
        lines += ["", f"FPx weight-only GEMM ({dtype} activations, per-channel scales, or fp32 scales per N codes for "
                      f"names ending _gN; weight GB/s counts planes and scales) vs {dtype} torch.matmul:", "",
                  f"| N x K | M | method | ms | TFLOP/s | weight GB/s | x {dtype} | check | tuned config |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["weight_only"]:
            lines.append(f"| {r['N']}x{r['K']} | {r['M']} | {r['method']} | {fmt(r['ms'], '.4f')} | "
                         f"{fmt(r['tflops'], '.1f')} | {fmt(r['weight_gbs'], '.0f')} | "
                         f"{fmt(r[f'x_{dtype}'], '.2f')} | {r['check']} | {r.get('config', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=None, help=f"N x K weight shapes or a preset ({', '.join(SHAPE_PRESETS)}; "
                                                      f"default: Llama-3-8B, {LLAMA3_8B_SHAPES})")
    p.add_argument("--ms", type=counts, default=None, help=f"token counts M (default: {LLAMA3_8B_MS})")
    p.add_argument("--weight_only_ms", type=counts, default=None,
                   help=f"token counts M of the FPx weight-only GEMM, '' to skip it (default: {WEIGHT_ONLY_MS})")
    p.add_argument("--formats", default=",".join(W4A4_FORMATS),
                   help=f"W4A4 formats to time, a comma list of {', '.join(W4A4_FORMATS)} (default: all)")
    p.add_argument("--weight_only_formats", default=",".join(FPX_FORMATS),
                   help=f"comma list of the FPx weight-only elements to time, or of {', '.join(GROUPED_WEIGHT_ONLY)} "
                        "(scales in groups; each autotunes its own kernels: fewer keep a GPU call short)")
    p.add_argument("--weight_only_dtype", default="bf16", choices=sorted(WEIGHT_ONLY_DTYPES),
                   help="the FPx weight-only GEMM's activations and its torch.matmul baseline (default: bf16)")
    p.add_argument("--default_paths_only", action="store_true",
                   help="time each W4A4 format's decode or packed kernel and linear, and the linear w4a4_linear "
                        "takes by default where it is another, only: not the dot GEMM, FP8 and int8 paths beside "
                        "them (each autotunes kernels of its own: most of a cold call's time at decode sizes)")
    p.add_argument("--reps", type=int, default=50, help="timed repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (the first ones autotune)")
    p.add_argument("--flush_l2", action="store_true", help="clear the L2 cache before every timed repetition")
    add_l2_flush_argument(p)
    p.add_argument("--cuda_graph", action="store_true", help="time CUDA-graph replays (no host launch overhead)")
    p.add_argument("--in_stream", type=int, default=0, metavar="R",
                   help="time each call inside a stream of kernels: a CUDA graph of R calls (each after the L2 "
                        "flush with --flush_l2), minus one of the flushes alone, per call; a lone replay's launch "
                        "latency drops out, as it does for a kernel inside a captured model step")
    p.add_argument("--cpu_dry_run", action="store_true", help="no GPU: Triton interpreter on CPU, tiny default shapes")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)

    if args.cpu_dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the Triton kernels are first used
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu_dry_run to exercise the script on CPU")
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    shapes = parse_shapes(args.shapes or (DRY_RUN_SHAPES if args.cpu_dry_run else LLAMA3_8B_SHAPES))
    ms = args.ms if args.ms is not None else counts(DRY_RUN_MS if args.cpu_dry_run else LLAMA3_8B_MS)
    weight_only_ms = args.weight_only_ms if args.weight_only_ms is not None else counts(
        DRY_RUN_MS if args.cpu_dry_run else WEIGHT_ONLY_MS)
    if args.in_stream < 0:
        p.error(f"--in_stream takes the calls per graph (0: off), got {args.in_stream}")
    if args.l2_flush != p.get_default("l2_flush") and not args.flush_l2:
        p.error(f"--l2_flush {args.l2_flush} says how --flush_l2 flushes: give --flush_l2 too")
    formats = parse_names(args.formats, W4A4_FORMATS, "--formats")
    wo_formats = tuple(parse_names(args.weight_only_formats, FPX_FORMATS + GROUPED_WEIGHT_ONLY,
                                   "--weight_only_formats"))
    time_ms = make_timer(device, args.warmup, args.reps, args.flush_l2, args.cuda_graph and not args.cpu_dry_run,
                         args.in_stream, args.l2_flush)
    torch.manual_seed(0)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_name(device), "versions": library_versions(),
        "timing": f"median of {args.reps} after {args.warmup} warmup calls"
                  f"{', ' + flush_note(args.l2_flush) + ' before each' if args.flush_l2 else ''}"
                  f"{', CUDA graph replays' if args.cuda_graph and not args.in_stream else ''}"
                  f"{in_stream_note(args.in_stream)}"
                  f"{' (CPU, Triton interpreter: not a speed measurement)' if args.cpu_dry_run else ''}",
        "command": command_line("kernel_bench.py", argv if argv is not None else sys.argv[1:]),
        "gemm": [], "act_quant": [], "weight_only": [], "weight_only_dtype": args.weight_only_dtype,
    }
    act_done = set()
    started = time.monotonic()  # each shape's line tells how far in the run is: cold tuning dominates a first call
    for n, k in shapes:
        for m in ms:
            result["gemm"] += bench_shape(n, k, m, device, time_ms, formats, not args.default_paths_only)
            if (m, k) not in act_done:
                act_done.add((m, k))
                result["act_quant"] += bench_act_quant(m, k, device, time_ms, formats)
            write_result_files(args.out, result, markdown(result))  # partial results survive a time limit
            print(f"done N={n} K={k} M={m} ({time.monotonic() - started:.0f} s in)", flush=True)
    for n, k in shapes:
        for m in weight_only_ms:
            result["weight_only"] += bench_weight_only(n, k, m, device, time_ms, wo_formats, args.weight_only_dtype)
            write_result_files(args.out, result, markdown(result))
            print(f"done weight-only N={n} K={k} M={m} ({time.monotonic() - started:.0f} s in)", flush=True)
    print(markdown(result))  # the files were written after the last step
    return 0


if __name__ == "__main__":
    sys.exit(main())
