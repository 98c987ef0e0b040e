"""Triton kernels for real-quantized inference, each beside its pure-torch reference twin.

Entry points for W4A4 linear layers and one for weight-only FPx layers, all
dispatching on the tensors' device:

- ``w4a4_linear``: (M, K) activations x packed ``nn.Linear`` weights, quantizing the
  activations on the fly; picks the path below that suits M, the scales and the device.
- ``quantize_activations``: (M, K) activations -> packed 4-bit codes + fp32 scales
  (INT4 / E2M1 per token or per group, NVFP4, MXFP4), optionally after a fused block
  Hadamard rotation; or one FP8 E4M3 byte per code, for the FP8 path. ``rms_norm_quantize``
  and ``silu_mul_quantize``: the same kernel quantizing per token what it computes first, an
  RMSNorm's output or an MLP's silu(gate) * up (decode layers, ``models.fused_decoder_layer``).
- ``w4a4_matmul``: packed activations x packed weights -> (M, N) (Triton; on a GPU, up
  to 8 rows with per-row scales take the CUDA-core decode kernel ``w4a4_gemv``, other
  decode-sized M split K).
- ``w4a4_matmul_dp4a``: the decode kernel alone, on activation codes already quantized to its dp4a
  bytes (``quantize_activations(..., dp4a_for=...)``), 1..8 rows with per-row scales (1..64 with INT4 or E2M1
  weights; any number with INT4 weights, whose rows above 64 take the tensor-core kernel tiled over M: the
  ``int8`` path of ``w4a4_linear``).
- ``unpack_fp8`` and ``fp8_gemm.w4a4_matmul_fp8``: the prefill path for per-row scales with E2M1 weights,
  codes widened to FP8 and cuBLAS's row-wise scaled FP8 GEMM.
- ``w8a8_linear``: INT8 per-token activations x INT8 per-channel weights (``int8_gemm``);
  ``w4a8_linear`` the same activations x packed INT4 weights (the decode kernel at a few rows).
- ``decode_attention``: single-token queries (grouped per K/V head) over a KV cache, split
  along the keys (flash-decoding); the twin is SDPA. ``decode_attention_packed``: the same
  over a packed KV4 cache, its codes dequantized in the kernel.
- ``fpx_matmul``: float activations x FP4 / FP5 / FP6 weights in bit planes (FP6-LLM
  style, per-channel scales) or INT4 weights per channel, or INT4 / E2M1 weights with scales in groups
  (W4A16: GPTQ's, NVFP4, MXFP4) -> (..., N); up to 4 rows run on the CUDA cores on a GPU, other rows on
  the tensor cores, from 1024 on the dequantized weight by cuBLAS.
- ``dequantize_weight``: packed codes times their scales in a float dtype, one pass (``dequant``), what
  ``fpx_matmul`` multiplies by cuBLAS at prefill rows.

Not dispatched from here: ``kv_write.write_kv4_triton`` quantizes new K/V tokens into a static
packed KV4 cache; ``quant_layers.packed_kv_cache`` calls it on a GPU (its torch writes are the twin).

``backend=None`` picks Triton for CUDA tensors and the torch twin otherwise;
``backend="triton"`` also runs the kernels on CPU tensors when ``TRITON_INTERPRET=1``
was set before the kernels were imported (that is how the tests check them). The twins
live in ``quant_kernels.reference`` (``quantize_activations_ref``, ``w4a4_matmul_ref``,
``packed_weight``, ``fpx_matmul_ref``, ``decode_attention_ref``).

Importing this package imports nothing of the project's and no triton: the backends are
imported on first use, which keeps ``import quant_kernels`` cheap and lets ``TRITON_INTERPRET``
be set after it. (It was named ``kernels`` until transformers 5.25 made Hugging Face's ``kernels``
package a dependency that ``import transformers`` imports: a top-level folder of ours of that name
hid it, ``tests/test_package_names.py``.)
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import torch

if TYPE_CHECKING:
    from .reference import NormTail

__all__ = ["BACKENDS", "PATHS", "decode_attention", "decode_attention_packed", "decode_codes_form",
           "decode_codes_like", "default_path", "dequantize_weight", "fpx_matmul", "in_row_chunks",
           "quantize_activations", "rms_norm_quantize", "silu_mul_quantize", "unpack_fp8", "w4a4_linear",
           "w4a4_matmul", "w4a4_matmul_dp4a", "w4a8_linear", "w8a8_linear"]

BACKENDS = ("triton", "torch")
# The Triton kernels index with 32-bit offsets: a row-indexed tensor of 2^31 elements or more wraps them, and the
# kernel reads and writes out of bounds (Llama-3-8B's gate/up product of 64 prefills of 2048 tokens, 131072 x 28672
# values, was an illegal memory access on the H100). The models' row-wise products run such rows in chunks below it
# (``in_row_chunks``).
MAX_ROW_CHUNK_ELEMENTS = 2**31 - 1
PATHS = ("packed", "fp8", "int8", "e4m3", "dequantized")
# From this many rows on, per-row-scaled bfloat16 products on a GPU may take the FP8 path; INT4 weights keep the
# int8 path up to INT8_MAX_ROWS rows. On the H200 (Llama-3-8B shapes, activation codes included) the int8 path's
# linear ran 1.06-1.86x as fast as the FP8 path's at 256-2048 rows, 0.98-1.04x at 4096 and 0.91-1.01x at 8192
# (``benchmarks/results/prefill_int8_h200.md``, ``prefill_int8_4096_8192_h200.md``).
FP8_MIN_ROWS = 256
INT8_MAX_ROWS = 4096
# From this many rows (the first the tensor-core decode kernel, ``w4a4_gemv.TC_MAX_M``, leaves) INT4 and E2M1 weights
# with per-row scales take the int8 path (E2M1 the e4m3 one where it would) in any output dtype. Below FP8_MIN_ROWS,
# and in float16 at any size, they took ``w4a4_gemm``'s packed kernel, which ran 0.48-0.80x bf16 (INT4) and
# 0.17-0.41x (E2M1) at 128 rows on the H100, inside a stream of calls, and 0.35-0.43x / 0.15-0.23x at 512
# (``benchmarks/results/kernel_bench_decode_in_stream_retimed_128_512_h100.md``), where the int8 path's kernel ran
# 0.93-1.52x bf16 at 256 rows on the H200 (``prefill_int8_h200.md``). At 128 and 512 rows on the H200 the int8
# path's linear ran 2.2-5.4x the packed kernel's (INT4 0.85-1.69x bf16, E2M1 0.66-1.22x, in a stream;
# ``kernel_bench_decode_in_stream_retimed_128_512_h200.md``).
INT8_MIN_ROWS = 65
# E2M1 weights take the int8 path (as int8 operands of twice their values) up to this many rows: 1.13-1.49x the FP8
# path's linear at 256 rows, 1.00-1.11x at 512 (but 0.77x at 4096 x 4096 in one of the two calls), 0.69-0.77x at 2048
# and 0.59-0.61x at 8192 (two H200 calls, ``prefill_int8_e2m1_h200.md``, ``prefill_e4m3_e2m1_rejected_h200.md``).
E2M1_INT8_MAX_ROWS = 512
# Above those rows and up to this many, E2M1 weights take the e4m3 path (the tensor-core kernel's one-dot FP8 form,
# its wgmmas in flight while the next K step decodes), else the FP8 path: its linear ran 1.13-1.19x the FP8 path's
# at 2048 rows and 0.94-0.99x at 8192 (one H200 call, ``prefill_e4m3_async_e2m1_h200.md``); 4096 lies between.
E2M1_E4M3_MAX_ROWS = 4096
# GPUs on which those paths (int8 for INT4 weights, e4m3 for E2M1) take every row from their first on, the FP8 path
# none: on the H100 at 8192 rows their linears (activation codes included) ran 0.94-0.99x and 0.96x cuBLAS's FP8 GEMM
# against the FP8 path's 0.82-0.89x at 14336 x 4096 and 4096 x 14336, and the int8 kernel 1.07x against the FP8
# path's 0.97x at 4096 x 4096 (``benchmarks/results/prefill_{int4,e2m1}_retimed_8192_all_paths_h100.md``,
# ``prefill_int4_retimed_8192_h100.md``).
UNBOUNDED_ROWS_DEVICES = ("NVIDIA H100 80GB HBM3",)
# From this many rows MXFP4 W4A4 (E2M1, power-of-two scales per 32) in bfloat16 takes the FP8 path, its group
# scales folded into E4M3 values (``fp8_gemm.fold_multipliers``), cuBLAS's FP8 GEMM multiplying them. On the H100
# (Llama-3-8B shapes, in a stream) the folded linear ran 0.88-1.23x bf16 at 8192 rows against the dequantized
# path's 0.89-1.02x (ahead at three shapes of four, level at 4096 x 4096), but 0.53-0.80x at 2048 rows against
# 0.66-0.88x and 0.36-0.52x at 1024 against 0.53-0.66x: folding and widening both operands costs more there than the
# FP8 GEMM saves (``kernel_bench_decode_in_stream_retimed_mx_fold_h100.md``; 4096 rows untimed).
MX_FP8_MIN_ROWS = 8192


def e4m3_path_on() -> bool:
    """Whether the auto path takes ``e4m3`` wherever it would take ``int8`` or ``fp8`` with INT4 or E2M1 weights and
    activations: ``PTQ_E4M3_PATH=1`` (read at each product; without it only E2M1 weights between
    ``E2M1_INT8_MAX_ROWS`` and ``E2M1_E4M3_MAX_ROWS`` rows take it)."""
    from .switches import env_switch

    return env_switch("PTQ_E4M3_PATH", False, {
        "0": f"the int8 and fp8 paths (e4m3 for E2M1 weights at {E2M1_INT8_MAX_ROWS + 1}-{E2M1_E4M3_MAX_ROWS} rows), "
             f"the default", "1": "the tensor-core kernel's one-dot FP8 form on E4M3 planes"})


def _device_name(tensor: torch.Tensor) -> str | None:
    """The name of the GPU ``tensor`` is on (None on the CPU), looked up once a device: every product asks."""
    return _gpu_name(tensor.device.index) if tensor.is_cuda else None


@functools.lru_cache(maxsize=None)
def _gpu_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def _use_triton(tensor: torch.Tensor, backend: str | None) -> bool:
    if backend is None:
        return tensor.is_cuda
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)} (or None for auto)")
    if backend == "triton" and not tensor.is_cuda:
        from .act_quant import INTERPRET

        if not INTERPRET:
            raise ValueError("the Triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before the kernels "
                             "are imported, to run them on CPU)")
    return backend == "triton"


Result = TypeVar("Result", torch.Tensor, tuple)


def row_chunk_rows(width: int) -> int:
    """The most rows of ``width`` elements that one launch indexes below ``MAX_ROW_CHUNK_ELEMENTS``."""
    return max(1, MAX_ROW_CHUNK_ELEMENTS // max(width, 1))


def in_row_chunks(compute: Callable[..., Result], row_tensors: Sequence[torch.Tensor | None], width: int) -> Result:
    """``compute(*row_tensors)`` (tensors of the same rows, or None), run on slices of at most ``row_chunk_rows(width)``
    rows where there are more (``width``: the widest row of any tensor the computation reads or writes), its results
    (a tensor, or a tuple of them, rows first) concatenated. ``compute`` must treat each row on its own."""
    rows = next(t.shape[0] for t in row_tensors if t is not None)
    step = row_chunk_rows(width)
    if rows <= step:
        return compute(*row_tensors)
    parts = [compute(*(None if t is None else t[first:first + step] for t in row_tensors))
             for first in range(0, rows, step)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(results) for results in zip(*parts))
    return torch.cat(parts)


def quantize_activations(
    x: torch.Tensor, element: str, group_size: int = 0, scale_kind: str = "float",
    clip_ratio: float = 1.0, hadamard_block: int = 0, *, fp8_codes: bool = False, dp4a_for: str | None = None,
    tensor_amax: torch.Tensor | None = None, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) float16/bfloat16/float32 -> (packed uint8 (M, K//2), fp32 scales (M, K//group_size) or (M, 1)).

    ``element``: ``int4`` or ``e2m1``. ``scale_kind``: ``float`` (amax * clip_ratio /
    element max, per token when ``group_size`` is 0, else per group of a power of two
    >= 16), ``e4m3`` (NVFP4: e2m1, group 16, E4M3 block scales under an fp32 scale set by
    the whole tensor's amax) or ``e8m0`` (MXFP4: e2m1, group 32, power-of-two scales).
    The scales are the decoded fp32 dequantization scales: ``decode(codes) * scale`` is
    the fake-quantized activation. ``hadamard_block`` b (16..256) first rotates
    consecutive blocks of b along K by the normalised Sylvester H_b, rounding the
    rotated values to x's dtype (as the model's rotation would). ``fp8_codes``: the codes
    come unpacked, (M, K) float8_e4m3fn holding each code's value. ``dp4a_for`` (a weight element; per-token
    float scales): the codes come as (M, K) int8 bytes in the order the decode kernel pairs them with that
    element's weights (``reference.dp4a_bytes``); with ``fp8_codes`` too (``dp4a_for="int4"``, INT4 or E2M1
    activations) those bytes' values come as float8_e4m3fn in their order, for the tensor-core kernel's FP8 forms
    (INT4 or E2M1 weights as E4M3 operands, at decode rows and prefill tiles). ``tensor_amax`` (``e4m3`` scales; a
    float32 scalar tensor on x's device): a calibrated absmax that sets the tensor scale instead of x's own
    (``StaticTensorScale``).
    """
    from .reference import check_e4m3_planes_args, e4m3_planes

    check_e4m3_planes_args(fp8_codes, dp4a_for, element)
    if _use_triton(x, backend):
        from .act_quant import quantize_activations_triton

        return quantize_activations_triton(x, element, group_size, scale_kind, clip_ratio, hadamard_block, fp8_codes,
                                           dp4a_for, tensor_amax)
    from .reference import quantize_activations_ref

    packed, scales = quantize_activations_ref(x, element, group_size, scale_kind, clip_ratio, hadamard_block,
                                              dp4a_for, tensor_amax)
    if fp8_codes and dp4a_for:
        return e4m3_planes(packed), scales
    if fp8_codes:
        from .fp8_gemm import unpack_fp8_ref

        return unpack_fp8_ref(packed, element), scales
    return packed, scales


def rms_norm_quantize(
    x: torch.Tensor, weight: torch.Tensor, eps: float, element: str, clip_ratio: float = 1.0, *,
    dp4a_for: str | None = None, fp8_codes: bool = False, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) -> (codes, per-token scales, RMSNorm(x) * weight): the norm's output quantized as
    ``quantize_activations`` quantizes it (packed codes, or dp4a bytes with ``dp4a_for``; with ``fp8_codes`` too,
    E4M3 planes), in one pass over x. The norm is HF's (Llama, Qwen2, Qwen3); ``weight`` (K,) has x's dtype."""
    from .reference import check_e4m3_planes_args, e4m3_planes, rms_norm_quantize_ref

    check_e4m3_planes_args(fp8_codes, dp4a_for, element)
    if _use_triton(x, backend):
        from .act_quant import rms_norm_quantize_triton

        return rms_norm_quantize_triton(x, weight, eps, element, clip_ratio, dp4a_for, fp8_codes)
    codes, scales, normed = rms_norm_quantize_ref(x, weight, eps, element, clip_ratio, dp4a_for)
    return (e4m3_planes(codes) if fp8_codes else codes), scales, normed


def silu_mul_quantize(
    x: torch.Tensor, element: str, clip_ratio: float = 1.0, *, dp4a_for: str | None = None,
    fp8_codes: bool = False, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x = [gate | up] (M, 2K) -> (codes, per-token scales) of silu(gate) * up (an HF MLP's input to
    down_proj), quantized as ``quantize_activations`` does (``fp8_codes`` as ``rms_norm_quantize``'s), the product
    never written."""
    from .reference import check_e4m3_planes_args, e4m3_planes, silu_mul_quantize_ref

    check_e4m3_planes_args(fp8_codes, dp4a_for, element)
    if _use_triton(x, backend):
        from .act_quant import silu_mul_quantize_triton

        return silu_mul_quantize_triton(x, element, clip_ratio, dp4a_for, fp8_codes)
    codes, scales = silu_mul_quantize_ref(x, element, clip_ratio, dp4a_for)
    return (e4m3_planes(codes) if fp8_codes else codes), scales


def decode_codes_form(w_element: str, m: int, on_gpu: bool) -> tuple[str, bool]:
    """(dp4a_for, fp8_codes): the form in which the decode path (the fused decode layers' norms, tails and
    attention, ``w4a4_linear``'s decode rows) writes per-token activation codes for a linear of ``w_element``
    weights at ``m`` rows. On a GPU, E2M1 weights at the tensor-core decode kernel's rows
    (``w4a4_gemv.takes_tensor_cores``) take E4M3 planes in INT4 weights' order, its one-dot FP8 form: on the H200 its
    linear ran 1.20-1.89x the dp4a bytes' at 8, 16 and 64 rows of the Llama-3-8B shapes
    (``benchmarks/results/decode_rows_e4m3_e2m1_h200.md``; ``PTQ_E2M1_PLANES=0`` keeps the bytes); else the dp4a
    bytes for ``w_element``."""
    if on_gpu and w_element == "e2m1":
        from .switches import env_switch
        from .w4a4_gemv import takes_tensor_cores

        planes = env_switch("PTQ_E2M1_PLANES", True, {
            "0": "dp4a bytes for E2M1 weights at every decode row", "1": "E4M3 planes for E2M1 weights at the "
            "tensor-core decode kernel's rows (the one-dot FP8 form), the default"})
        if planes and takes_tensor_cores(m, w_element):
            return "int4", True
    return w_element, False


def decode_codes_like(x: torch.Tensor, m: int, k: int, w_element: str) -> torch.Tensor:
    """An empty (M, K) tensor on x's device in the dtype of the codes ``decode_codes_form`` gives (int8 dp4a bytes
    or float8_e4m3fn planes): the fake results of the custom ops that write them."""
    _, fp8_codes = decode_codes_form(w_element, m, x.is_cuda)
    return x.new_empty(m, k, dtype=torch.float8_e4m3fn if fp8_codes else torch.int8)


def unpack_fp8(packed: torch.Tensor, element: str, *, mult: torch.Tensor | None = None,
               backend: str | None = None) -> torch.Tensor:
    """(rows, K // 2) packed 4-bit codes -> (rows, K) float8_e4m3fn holding their values (exact); ``mult`` (rows,
    groups): each value times its group's multiplier first (``fp8_gemm.fold_multipliers``), rounded to E4M3."""
    if _use_triton(packed, backend):
        from .fp8_gemm import unpack_fp8_triton

        return unpack_fp8_triton(packed, element, mult)
    from .fp8_gemm import unpack_fp8_ref

    return unpack_fp8_ref(packed, element, mult)


def w4a4_linear(
    x: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *, a_element: str, w_element: str,
    a_group: int = 0, w_group: int = 0, scale_kind: str = "float", clip_ratio: float = 1.0,
    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16, backend: str | None = None,
    path: str | None = None, residual: torch.Tensor | None = None, norm_tail: NormTail | None = None,
    a_tensor_amax: torch.Tensor | None = None, w_global_scale: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, N) = Q(x) @ (decode(w) * w_scale).T (+ bias): quantize x's rows, then multiply; ``residual`` (M, N):
    returns ``residual + product``, the product rounded to ``out_dtype`` first (in the decode kernel's
    epilogue where it runs). ``norm_tail`` (``reference.NormTail``): returns (that, the next RMSNorm's dp4a bytes
    of it, their per-token scales), computed by the decode kernel's last program where it runs
    (``w4a4_matmul_dp4a``), else by ``rms_norm_quantize``. ``a_tensor_amax``: NVFP4 activations' calibrated
    absmax (``quantize_activations``' ``tensor_amax``). Weight scales in groups may come encoded (``w4a4_matmul``;
    ``w_global_scale``).

    ``path``: ``packed`` (4-bit activation codes, ``w4a4_matmul``), ``fp8`` (codes as E4M3 bytes, weight widened by
    ``unpack_fp8``, cuBLAS's FP8 GEMM; per-row scales, or MXFP4's (E2M1 both sides, ``e8m0`` power-of-two scales in
    groups of 32) folded into the E4M3 values, exact while a row's group scales span at most 2^14 (``fp8_gemm``); K
    and N multiples of 16, bfloat16 out) or ``int8`` (INT4 or E2M1 weights: codes as the int8 bytes of INT4 weights'
    dp4a order, the packed weight unpacked in registers for the int8 tensor cores, E2M1 as twice its values,
    ``w4a4_matmul_dp4a`` / ``w4a4_gemv.w4a4_tc_prefill_triton``; per-row float scales, K a multiple of 8) or
    ``e4m3`` (as ``int8``, INT4 or E2M1 activations too: the codes as E4M3 planes in that order, the weight's
    nibbles E4M3 operands, one dot a K step accumulating in wgmma: the decode launch up to ``TC_MAX_M`` rows, the
    prefill one above; the reference backend computes the int8 path's exact product) or ``dequantized`` (INT4 or
    E2M1 weights, any scales: the activation codes dequantized into ``out_dtype``, each value rounded once as a
    fake-quantized model of that dtype holds it, then ``fpx_matmul``'s weight-only product).
    None picks, on the Triton backend, ``int8`` for INT4 weights from ``INT8_MIN_ROWS`` to ``INT8_MAX_ROWS`` rows
    (E2M1 up to ``E2M1_INT8_MAX_ROWS``, then ``e4m3`` up to ``E2M1_E4M3_MAX_ROWS``; on ``UNBOUNDED_ROWS_DEVICES`` at
    every size) in any output dtype, ``fp8`` above them in bfloat16 products of at least ``FP8_MIN_ROWS`` rows where
    it fits (where it does not, the int8 and e4m3 paths keep them; MXFP4 from ``MX_FP8_MIN_ROWS``), ``dequantized``
    for the other bfloat16 and float16 products of INT4 and E2M1 codes the decode kernels do not take (scales in
    groups), else ``packed``; with ``PTQ_E4M3_PATH=1`` ``e4m3`` in place of ``int8`` and ``fp8`` wherever it fits.
    """
    from .fp8_gemm import w4a4_matmul_fp8

    if path is not None and path not in PATHS:
        raise ValueError(f"unknown path {path!r}: choose one of {', '.join(PATHS)} (or None for auto)")
    m, k = x.shape
    fits, int8_fits, e4m3_fits = paths_fitting(m, w_packed.shape[0], k, w_element, a_element, a_group, w_group,
                                               scale_kind)
    if path == "fp8" and not (fits and out_dtype == torch.bfloat16):
        raise ValueError(f"the fp8 path takes per-row scales (groups 0, float scales) or MXFP4's (E2M1, groups of 32, "
                         f"e8m0 scales), K and N multiples of 16 and bfloat16 output, got groups {a_group}/{w_group}, "
                         f"{scale_kind} scales, K={k}, N={w_packed.shape[0]}, {out_dtype}: use path='packed'")
    if path == "int8" and not (int8_fits and w_element in ("int4", "e2m1")):
        raise ValueError(f"the int8 path takes INT4 or E2M1 weights, per-row float scales (groups 0) and K a multiple "
                         f"of 8, got {w_element} weights, groups {a_group}/{w_group}, {scale_kind} scales, K={k}: use "
                         f"path='packed'")
    if path == "e4m3" and not e4m3_fits:
        raise ValueError(f"the e4m3 path takes INT4 or E2M1 weights and activations, per-row float scales (groups 0) "
                         f"and K a multiple of 8, got {w_element} weights, {a_element} activations, groups "
                         f"{a_group}/{w_group}, {scale_kind} scales, K={k}: use path='packed'")
    if path is None:
        path = default_path(m, w_packed.shape[0], k, w_element, a_element, _use_triton(x, backend), out_dtype,
                            a_group, w_group, scale_kind, _device_name(x))
    if path == "e4m3" and _use_triton(x, backend):
        from .w4a4_gemv import TC_MAX_M, w4a4_gemv_triton, w4a4_tc_prefill_triton

        planes, a_scale = quantize_activations(x, a_element, 0, "float", clip_ratio, dp4a_for="int4", fp8_codes=True,
                                               backend=backend)
        kw = dict(a_element=a_element, w_element=w_element, bias=bias, out_dtype=out_dtype, residual=residual)
        out = (w4a4_gemv_triton(planes, a_scale, w_packed, w_scale, **kw) if m <= TC_MAX_M else
               w4a4_tc_prefill_triton(planes, a_scale, w_packed, w_scale, **kw, fp8_step_sums=False))
        return _with_norm_tail(out, norm_tail, backend)
    if path == "e4m3":  # the reference backend: the same exact product as the int8 path's
        path = "int8"
    if path == "int8" and w_element == "e2m1" and _use_triton(x, backend):
        from .w4a4_gemv import w4a4_tc_prefill_triton

        a_bytes, a_scale = quantize_activations(x, a_element, 0, "float", clip_ratio, dp4a_for="int4",
                                                backend=backend)
        out = w4a4_tc_prefill_triton(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element="e2m1",
                                     bias=bias, out_dtype=out_dtype, residual=residual)
        return _with_norm_tail(out, norm_tail, backend)
    if path == "int8":
        a_bytes, a_scale = quantize_activations(x, a_element, 0, "float", clip_ratio, dp4a_for=w_element,
                                                backend=backend)
        return w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element,
                                bias=bias, out_dtype=out_dtype, residual=residual, norm_tail=norm_tail,
                                backend=backend)
    if path == "fp8":
        if a_group:  # MXFP4: the group scales folded into the E4M3 values, the rows' to the GEMM
            from .fp8_gemm import fold_multipliers
            from .reference import scale_values

            packed, a_group_scale = quantize_activations(x, a_element, a_group, scale_kind, clip_ratio,
                                                         backend=backend)
            a_mult, a_scale = fold_multipliers(a_group_scale)
            w_mult, w_scale = fold_multipliers(scale_values(w_scale))
            codes = unpack_fp8(packed, a_element, mult=a_mult, backend=backend)
            w_fp8 = unpack_fp8(w_packed, w_element, mult=w_mult, backend=backend)
        else:
            codes, a_scale = quantize_activations(x, a_element, 0, "float", clip_ratio, fp8_codes=True,
                                                  backend=backend)
            w_fp8 = unpack_fp8(w_packed, w_element, backend=backend)
        out = w4a4_matmul_fp8(codes, a_scale, w_fp8, w_scale, bias)
        return _with_norm_tail(out if residual is None else residual + out, norm_tail, backend)
    if path == "packed" and _use_triton(x, backend) and x.is_cuda:
        from .w4a4_gemm import takes_gemv

        if takes_gemv(m, k, a_group, w_group, w_element=w_element):  # the decode kernels, on their codes
            dp4a_for, fp8_codes = decode_codes_form(w_element, m, True)
            a_bytes, a_scale = quantize_activations(x, a_element, 0, "float", clip_ratio, fp8_codes=fp8_codes,
                                                    dp4a_for=dp4a_for, backend=backend)
            return w4a4_matmul_dp4a(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element,
                                    bias=bias, out_dtype=out_dtype, residual=residual, norm_tail=norm_tail,
                                    backend=backend)
    packed, a_scale = quantize_activations(x, a_element, a_group, scale_kind, clip_ratio, tensor_amax=a_tensor_amax,
                                           backend=backend)
    if path == "dequantized":  # the activations as a fake-quantized model of out_dtype holds them, weight-only
        x_q = dequantize_weight((packed,), a_scale, element=a_element, group=a_group, dtype=out_dtype, backend=backend)
        out = fpx_matmul(x_q, (w_packed,), w_scale, element=w_element, bits=4, group=w_group, backend=backend,
                         bias=None if bias is None else bias.to(out_dtype), w_global_scale=w_global_scale)
    else:
        out = w4a4_matmul(packed, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element,
                          a_group=a_group, w_group=w_group, bias=bias, out_dtype=out_dtype, backend=backend,
                          w_global_scale=w_global_scale)
    return _with_norm_tail(out if residual is None else residual + out, norm_tail, backend)


def paths_fitting(m: int, n: int, k: int, w_element: str, a_element: str, a_group: int, w_group: int,
                  scale_kind: str) -> tuple[bool, bool, bool]:
    """Whether an (M, K) x (N, K) product of these elements, groups and scales fits the fp8 (per-row scales, or
    MXFP4's folded), int8 and e4m3 paths."""
    from .reference import fp8_path_fits

    mx = scale_kind == "e8m0" and a_group == w_group == 32 and a_element == w_element == "e2m1"
    fits = fp8_path_fits(m, n, k, 0, 0) and (mx or scale_kind == "float" and a_group == w_group == 0)
    int8_fits = a_group == w_group == 0 and scale_kind == "float" and k % 8 == 0
    return fits, int8_fits, int8_fits and w_element in ("int4", "e2m1") and a_element in ("int4", "e2m1")


def default_path(m: int, n: int, k: int, w_element: str, a_element: str, on_triton: bool = True,
                 out_dtype: torch.dtype = torch.bfloat16, a_group: int = 0, w_group: int = 0,
                 scale_kind: str = "float", device: str | None = None) -> str:
    """The path ``w4a4_linear`` takes for an (M, K) x (N, K) product when none is given (its docstring says which);
    ``on_triton``: whether it runs on the Triton backend; ``device``: the GPU's name (``UNBOUNDED_ROWS_DEVICES``)."""
    fits, int8_fits, e4m3_fits = paths_fitting(m, n, k, w_element, a_element, a_group, w_group, scale_kind)
    tiled = on_triton and m >= INT8_MIN_ROWS and int8_fits and (w_element == "int4" or e4m3_fits)
    fp8 = on_triton and m >= (MX_FP8_MIN_ROWS if a_group else FP8_MIN_ROWS) and fits and out_dtype == torch.bfloat16
    most = math.inf if device in UNBOUNDED_ROWS_DEVICES else {"int4": INT8_MAX_ROWS}.get(w_element, E2M1_E4M3_MAX_ROWS)
    if tiled and (m <= most or not fp8):
        e2m1_rows = w_element == "e2m1" and m > E2M1_INT8_MAX_ROWS
        return "e4m3" if e4m3_fits and (e4m3_path_on() or e2m1_rows) else "int8"
    if fp8:
        return "e4m3" if e4m3_fits and e4m3_path_on() else "fp8"
    # The INT4 and E2M1 products no path above takes and the decode kernels do not (scales in groups: NVFP4, MXFP4,
    # INT4 g128 W4A4): the activations dequantized, then the weight-only product. The packed kernel ran NVFP4 at
    # 0.33-0.40x bf16 at one row, 0.07-0.11x at 128 and 0.07-0.08x at 2048, MXFP4 at 0.33-0.41x, 0.10-0.17x and
    # 0.12-0.14x, where this path ran NVFP4 at 0.92-1.19x, 0.54-0.78x and 0.64-0.78x, MXFP4 at 1.17-1.40x, 0.59-0.82x
    # and 0.69-0.89x (H200, Llama-3-8B shapes, in a stream; ``kernel_bench_decode_in_stream_retimed_groups_h200.md``).
    decode_rows = int8_fits and m < INT8_MIN_ROWS  # ``w4a4_linear`` hands them on to the decode kernels
    if on_triton and not decode_rows and out_dtype in (torch.bfloat16, torch.float16) and \
            {w_element, a_element} <= {"int4", "e2m1"}:
        return "dequantized"
    return "packed"


def _with_norm_tail(out: torch.Tensor, norm_tail: NormTail | None, backend: str | None):
    """``out``, or with a ``reference.NormTail``: (out, the codes and scales ``reference.norm_tail_ref`` gives for
    it)."""
    if norm_tail is None:
        return out
    if _use_triton(out, backend):
        from .act_quant import norm_tail_triton

        return (out, *norm_tail_triton(out, norm_tail))
    from .reference import norm_tail_ref

    return (out, *norm_tail_ref(out, norm_tail))


def w4a8_linear(x: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *, clip_ratio: float = 1.0,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32,
                backend: str | None = None) -> torch.Tensor:
    """(M, N) = Q8(x) @ (decode(w) * w_scale).T (+ bias) for packed INT4 weights with per-channel scales: x's rows
    quantized to INT8 per token (W4A8). See ``_int8_activation_linear`` for the paths."""
    return _int8_activation_linear(x, w_packed, w_scale, "int4", clip_ratio, bias, out_dtype, backend)


def w8a8_linear(x: torch.Tensor, w_codes: torch.Tensor, w_scale: torch.Tensor, *, clip_ratio: float = 1.0,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32,
                backend: str | None = None) -> torch.Tensor:
    """(M, N) = Q8(x) @ (w * w_scale).T (+ bias) for (N, K) INT8 weight bytes with per-channel scales: x's rows
    quantized to INT8 per token (W8A8). See ``_int8_activation_linear`` for the paths."""
    return _int8_activation_linear(x, w_codes, w_scale, "int8", clip_ratio, bias, out_dtype, backend)


def _int8_activation_linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, w_element: str,
                            clip_ratio: float, bias: torch.Tensor | None, out_dtype: torch.dtype,
                            backend: str | None) -> torch.Tensor:
    """W4A8 / W8A8. Where the decode kernels take the product (CUDA, up to ``GEMV_MAX_M`` rows; INT4 weights at any
    number, above ``TC_MAX_M`` on the tensor-core kernel tiled over M), the activation kernel writes the INT8 levels
    as its dp4a bytes (one launch) and a kernel multiplies them with the weight bytes (INT4 nibbles or INT8 bytes;
    exact int32 sums for K < 2**17). Elsewhere the W8A8 product of ``int8_gemm`` (cuBLAS's exact int8 GEMM where it
    applies), INT4 weights widened to int8 levels."""
    from .int8_gemm import quantize_rows_int8, w8a8_matmul
    from .reference import int8_weight_codes

    if _use_triton(x, backend) and x.is_cuda:
        from .w4a4_gemm import takes_gemv

        if takes_gemv(*x.shape, 0, 0, w_element=w_element) or (w_element == "int4" and x.shape[1] % 8 == 0):
            a_bytes, a_scale = quantize_activations(x, "int8", clip_ratio=clip_ratio, dp4a_for=w_element,
                                                    backend=backend)
            return w4a4_matmul_dp4a(a_bytes, a_scale, w, w_scale, a_element="int8", w_element=w_element, bias=bias,
                                    out_dtype=out_dtype, backend=backend)
    a, a_scale = quantize_rows_int8(x, clip_ratio)
    return w8a8_matmul(a, a_scale, int8_weight_codes(w, w_element), w_scale, bias, out_dtype)


def w4a4_matmul_dp4a(
    a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
    residual: torch.Tensor | None = None, gated: bool = False, norm_tail: NormTail | None = None,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, N) = (values(a_bytes) * a_scale) @ (decode(w) * w_scale).T (+ bias) for 1..8 rows (1..64 with INT4
    or E2M1 weights, on the tensor cores from 5; E2M1 up to 8 with ``PTQ_TC_E2M1=0``; any number with INT4 weights,
    above 64 on the tensor-core kernel tiled over M, ``w4a4_gemv.w4a4_tc_prefill_triton``), per-row scales.

    ``a_bytes`` (M, K) int8 are the activation codes in the decode kernel's dp4a order for
    ``w_element`` weights (``quantize_activations(..., dp4a_for=w_element)``), or float8_e4m3fn planes in INT4
    weights' order (on a GPU the tensor-core kernel's one-dot form, ``decode_codes_form``; the twin takes them too).
    ``residual`` (M, N) of ``out_dtype``: returns ``residual + product`` (the product rounded to ``out_dtype`` first,
    as a layer's ``residual + linear(x)``), added in the kernel's epilogue. ``gated``: the weight rows are an MLP's
    gate rows then its up rows, and the result is (M, N / 2) silu(gate) * up, computed in the kernel's epilogue, where
    the CUDA-core decode kernel takes the rows (``w4a4_gemv.takes_gated``). ``norm_tail`` (``reference.NormTail``):
    returns (the result, the next RMSNorm's dp4a bytes of it, their per-token scales), computed by the CUDA-core
    decode kernel's last program where it takes the rows.
    """
    if _use_triton(a_bytes, backend):
        from .w4a4_gemv import TC_MAX_M, w4a4_gemv_triton, w4a4_tc_prefill_triton

        if w_element == "int4" and a_bytes.shape[0] > TC_MAX_M and not gated:
            out = w4a4_tc_prefill_triton(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, bias=bias,
                                         out_dtype=out_dtype, residual=residual)
            return _with_norm_tail(out, norm_tail, backend)
        return w4a4_gemv_triton(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element,
                                bias=bias, out_dtype=out_dtype, residual=residual, gated=gated, norm_tail=norm_tail)
    from .reference import w4a4_gemv_ref

    return w4a4_gemv_ref(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element, bias=bias,
                         out_dtype=out_dtype, residual=residual, gated=gated, norm_tail=norm_tail)


def w4a4_matmul(
    a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, a_group: int = 0, w_group: int = 0,
    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16, backend: str | None = None,
    w_global_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """out (M, N) = (decode(a) * a_scale) @ (decode(w) * w_scale).T (+ bias), fp32 accumulation.

    ``a_packed`` (M, K//2) and ``w_packed`` (N, K//2) are uint8 (``nn.Linear`` layout);
    ``a_scale`` is (M, 1) for ``a_group`` 0 or (M, K//a_group), likewise ``w_scale``.
    Groups are 0 (one scale per row) or multiples of 16 dividing K. Weight scales in groups may come as NVFP4 and
    MXFP4 checkpoints encode them (E4M3 with their rows' ``w_global_scale``, E8M0 bytes;
    ``reference.check_weight_scales``), read so by the kernel.
    """
    kw = dict(a_element=a_element, w_element=w_element, a_group=a_group, w_group=w_group, bias=bias,
              out_dtype=out_dtype, w_global_scale=w_global_scale)
    if _use_triton(a_packed, backend):
        from .w4a4_gemm import w4a4_matmul_triton

        return w4a4_matmul_triton(a_packed, a_scale, w_packed, w_scale, **kw)
    from .reference import w4a4_matmul_ref

    return w4a4_matmul_ref(a_packed, a_scale, w_packed, w_scale, **kw)


def dequantize_weight(
    planes: tuple[torch.Tensor, ...] | list[torch.Tensor], scale: torch.Tensor, *, element: str, bits: int = 4,
    group: int = 0, dtype: torch.dtype = torch.float32, backend: str | None = None,
    global_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, K) weight in ``dtype`` of packed codes times their scales, each rounded once: the weight a fake-quantized
    model of that dtype holds. ``planes``: a packed 4-bit plane (INT4, E2M1 or a 4-bit FPx element), plus the 1- or
    2-bit plane of FP5 / FP6 (``packing.pack_planes``); ``scale`` (N,) or (N, 1), or (N, K // group) for INT4 and
    E2M1 in groups: fp32, or as NVFP4 and MXFP4 checkpoints encode them (E4M3 with their rows' (N,)
    ``global_scale``, E8M0 bytes; ``reference.scale_values``)."""
    if _use_triton(planes[0], backend):
        from .dequant import dequantize_triton

        return dequantize_triton(planes, scale, element=element, bits=bits, group=group, dtype=dtype,
                                 global_scale=global_scale)
    from .reference import packed_weight

    return packed_weight(planes, scale, element, bits, group, global_scale).to(dtype)


def fpx_matmul(
    x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor, *,
    element: str, bits: int, bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
    group: int = 0, backend: str | None = None, w_global_scale: torch.Tensor | None = None, gated: bool = False,
) -> torch.Tensor:
    """out (..., N) = x @ (decode(w) * w_scale[:, None]).T (+ bias), fp32 accumulation; weight-only.

    ``x`` (..., K) float16/bfloat16/float32 is not quantized. ``planes`` are
    ``quant_layers.packing.pack_planes(codes, bits)`` of the (N, K) weight codes (one
    uint8 (N, K//2) plane for 4 bits, plus (N, K//8) for 5 or (N, K//4) for 6 bits);
    ``element`` is an FP element of ``bits`` bits (``e2m1``, ``e3m0``, ``e2m2``, ``e3m1``,
    ``e2m3``, ``e3m2``, ...) or ``int4``; ``w_scale`` is (N,) or (N, 1), or (N, K // group) for INT4 and E2M1
    weights in groups of ``group``, fp32 or as NVFP4 and MXFP4 checkpoints encode them (``dequantize_weight``;
    E4M3 with ``w_global_scale``), read so by the kernels. ``out_dtype`` defaults to x's. ``gated``: the weight rows
    are an MLP's gate rows then its up rows, and the result (..., N / 2) is silu(gate) * up of the product, rounded
    as eager torch rounds HF's ``act_fn(gate) * up`` (``reference.silu_mul_ref``); at decode rows the row kernel's
    epilogue computes it, which saves the launch of its own.
    """
    if x.dim() == 0:
        raise ValueError("activations must be (..., K), got a scalar")
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    kw = dict(element=element, bits=bits, bias=bias, out_dtype=out_dtype, group=group, w_global_scale=w_global_scale,
              gated=gated)
    if _use_triton(x, backend):
        from .fpx_gemm import fpx_matmul_triton

        out = fpx_matmul_triton(x2, planes, w_scale, **kw)
    else:
        from .reference import fpx_matmul_ref

        out = fpx_matmul_ref(x2, planes, w_scale, **kw)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def fpx_gates_in_product(x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], *, bits: int,
                         group: int = 0, backend: str | None = None) -> bool:
    """Whether ``fpx_matmul(x, planes, ..., gated=True)`` computes silu(gate) * up with the product, in one launch:
    the twin always; the Triton kernels where the row kernel takes x's rows in its fp32 forms (decode rows). Elsewhere
    the gating follows the product inside the call, where a compiled caller's own fused kernel would cost less."""
    if not _use_triton(x, backend):
        return True
    from .fpx_gemm import gates_in_kernel

    return gates_in_kernel(x.numel() // x.shape[-1], planes[0].shape[0], x.shape[-1], x.dtype, bits, group)


def decode_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
                     scale: float | None = None, *, norm_tail: NormTail | None = None,
                     backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of one token per sequence: q (B, Hkv, G, D) holds the G query heads that share each of the
    Hkv K/V heads; key and value (B, Hkv, L, D); mask None or boolean, (B or 1, 1, 1, L), True where a key
    is seen. Returns (B, Hkv, G, D) in q's dtype; ``scale`` defaults to D ** -0.5. ``norm_tail``
    (``reference.NormTail``, at decode o_proj's input quantization, weight None): returns (the output, the dp4a
    bytes and per-token scales of its (B, Hkv * G * D) rows), computed by the combining kernel's last program
    where the Triton kernels run.
    """
    from .reference import decode_attention_problem

    problem = decode_attention_problem(q, key, value, mask)
    if problem:
        raise ValueError(problem)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if _use_triton(q, backend):
        from .flash_decode import decode_attention_triton

        return decode_attention_triton(q, key, value, mask, scale, norm_tail)
    from .reference import decode_attention_ref

    return _with_attention_tail(decode_attention_ref(q, key, value, mask, scale), norm_tail)


def decode_attention_packed(q: torch.Tensor, key: tuple, value: tuple, mask: torch.Tensor | None = None,
                            scale: float | None = None, *, key_element: str, value_element: str,
                            norm_tail: NormTail | None = None, backend: str | None = None,
                            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``decode_attention`` over K and V held packed, as the KV4 cache stores them: key and value are (uint8
    codes (B, Hkv, L, D // 2), float scales (B, Hkv, L, D // group), zero points shaped as the scales or None);
    elements ``int4``, ``uint4`` (the code is the level, under zero points) or ``e2m1``. Each value is
    dequantized as the cache does it (fp32 ``(level - zero) * scale``, rounded to q's dtype) inside the kernel.
    ``norm_tail`` as in ``decode_attention``.
    """
    from .reference import decode_attention_packed_problem

    problem = decode_attention_packed_problem(q, key, value, mask, key_element, value_element)
    if problem:
        raise ValueError(problem)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if _use_triton(q, backend):
        from .flash_decode import decode_attention_packed_triton

        return decode_attention_packed_triton(q, key, value, mask, scale, key_element, value_element, norm_tail)
    from .reference import decode_attention_packed_ref

    return _with_attention_tail(decode_attention_packed_ref(q, key, value, mask, scale, key_element, value_element),
                                norm_tail)


def _with_attention_tail(out: torch.Tensor, norm_tail: NormTail | None):
    """The twins' attention output, or with a norm tail: (out, ``reference.norm_tail_ref`` of its rows)."""
    if norm_tail is None:
        return out
    from .reference import check_norm_tail, norm_tail_ref

    rows = out.reshape(out.shape[0], -1)
    check_norm_tail(norm_tail, *rows.shape, out.dtype)
    return (out, *norm_tail_ref(rows, norm_tail))
