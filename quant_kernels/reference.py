"""Pure-torch twins of the W4A4 and FPx weight-only kernels, and the argument checks both backends share.

The twins define what the Triton kernels compute. They are built from the fake
quantization code (``Quantizer.fit`` picks the scales, ``element.round`` rounds,
``packing`` encodes and packs), so a real-quantized model and its fake-quantized
simulation agree by construction. The checks run before any work and raise ValueError
naming the offending argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quant_layers import packing
from quant_layers.formats import ENCODED_SCALE_DTYPES, FPFormat, NumberFormat
from quant_layers.quantizer import QuantSpec, Quantizer
from transforms.hadamard import block_hadamard_transform

ELEMENTS = ("int4", "e2m1")  # the W4A4 kernels' 4-bit elements
# The decode kernel's activation bytes count INT4 and INT8 levels and halves of E2M1 values (exact integers).
DP4A_BYTES_PER_UNIT = {"int4": 1, "e2m1": 2, "int8": 1}
# The decode kernel's (activation, weight) pairs: W4A4 in any mix of the 4-bit elements, W4A8 and W8A8. INT8
# activations exist only as dp4a bytes; INT8 weights are (N, K) two's complement bytes, not packed codes.
DP4A_PAIRS = {(a, w) for a in ELEMENTS for w in ELEMENTS} | {("int8", "int4"), ("int8", "int8")}
FPX_BITS = (4, 5, 6)
SCALE_KINDS = ("float", "e4m3", "e8m0")
# The kernels' code of each scale kind (the activation kernel's SCALE_KIND, the weight kernels' SCALE_CODE).
SCALE_KIND_CODES = {kind: code for code, kind in enumerate(SCALE_KINDS)}
# Block-scaled formats fix their element and group: NVFP4 (E4M3 scales) and MXFP4 (E8M0).
BLOCK_SCALED = {"e4m3": ("nvfp", 16), "e8m0": ("mxfp", 32)}
# Weight scales in groups held as a checkpoint encodes them: NVFP4's E4M3 (with a global scale a row) and MXFP4's
# E8M0 biased exponents (``scale_values``).
ENCODED_SCALES = {dtype: kind for kind, dtype in ENCODED_SCALE_DTYPES.items()}
ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HADAMARD_BLOCKS = (16, 32, 64, 128, 256)
# What the activation kernel may compute from its input before quantizing it (its PROLOGUE; 0: nothing).
PROLOGUES = {"rms_norm": 1, "silu_mul": 2}


# cuBLAS FP8 GEMMs need K and N multiples of 16 (16-byte aligned rows); the row-wise ones M too (padded).
FP8_ALIGNMENT = 16


def fp8_path_fits(m: int, n: int, k: int, a_group: int, w_group: int) -> bool:
    """Whether the FP8 path (``fp8_gemm.w4a4_matmul_fp8``) takes this product: per-row scales and aligned K, N."""
    return a_group == 0 and w_group == 0 and k % FP8_ALIGNMENT == 0 and n % FP8_ALIGNMENT == 0 and m > 0


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def w4a4_element(element: str) -> NumberFormat:
    """The format of a W4A4 element name, or a ValueError naming the choices."""
    if element not in ELEMENTS:
        raise ValueError(f"unknown 4-bit element {element!r}: choose one of {', '.join(ELEMENTS)}")
    return packing.element_named(element)


def check_activation_args(
    x: torch.Tensor, element: str, group_size: int, scale_kind: str, clip_ratio: float, hadamard_block: int,
    dp4a_for: str | None = None, tensor_amax: torch.Tensor | None = None,
) -> None:
    """Raise ValueError unless ``quantize_activations`` can take these arguments."""
    if tensor_amax is not None and (scale_kind != "e4m3" or tensor_amax.numel() != 1
                                    or tensor_amax.dtype != torch.float32 or tensor_amax.device != x.device):
        raise ValueError(f"a given tensor amax sets NVFP4's tensor scale (scale kind 'e4m3'): one float32 value on "
                         f"x's device ({x.device}), got {tuple(tensor_amax.shape)} {tensor_amax.dtype} on "
                         f"{tensor_amax.device} for scale kind {scale_kind!r}")
    if x.dim() != 2:
        raise ValueError(f"activations must be 2-D (tokens, features), got shape {tuple(x.shape)}")
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"activations must be float16, bfloat16 or float32, got {x.dtype}")
    if element == "int8":
        if dp4a_for is None or (element, dp4a_for) not in DP4A_PAIRS:
            raise ValueError(f"INT8 activations are written as the decode kernel's dp4a bytes for INT4 or INT8 "
                             f"weights: pass dp4a_for='int4' or 'int8', got dp4a_for={dp4a_for!r}")
    else:
        w4a4_element(element)
    if scale_kind not in SCALE_KINDS:
        raise ValueError(f"unknown scale kind {scale_kind!r}: choose one of {', '.join(SCALE_KINDS)}")
    k = x.shape[1]
    if k == 0 or k % 2:
        raise ValueError(f"packing two 4-bit codes per byte needs a positive even K, got K={k}")
    if scale_kind in BLOCK_SCALED:
        fmt, block = BLOCK_SCALED[scale_kind]
        if element != "e2m1" or group_size != block:
            raise ValueError(
                f"{scale_kind} scales are {fmt.upper()}4: use element 'e2m1' with group_size={block}, "
                f"got element {element!r} with group_size={group_size}"
            )
    if group_size and (group_size < 16 or not _is_power_of_two(group_size)):
        raise ValueError(f"activation group size must be 0 (per token) or a power of two >= 16, got {group_size}")
    if group_size and k % group_size:
        raise ValueError(f"group size {group_size} does not divide K={k}")
    if not 0.0 < clip_ratio <= 1.0:
        raise ValueError(f"clip ratio must be in (0, 1], got {clip_ratio}")
    if hadamard_block and hadamard_block not in HADAMARD_BLOCKS:
        raise ValueError(f"hadamard block must be 0 (off) or one of {HADAMARD_BLOCKS}, got {hadamard_block}")
    if hadamard_block and k % hadamard_block:
        raise ValueError(f"hadamard block {hadamard_block} does not divide K={k}")
    if dp4a_for is not None:
        if dp4a_for != "int8":
            w4a4_element(dp4a_for)
        if (element, dp4a_for) not in DP4A_PAIRS:
            raise ValueError(f"the decode kernel takes INT8 weights with INT8 activations only (W8A8), got {element} "
                             f"activations for dp4a_for={dp4a_for!r}")
        if group_size or scale_kind != "float" or k % 8:
            raise ValueError(f"dp4a bytes are for the decode kernel: per-token float scales and K a multiple of 8, "
                             f"got group_size={group_size}, {scale_kind} scales, K={k}")


def _check_operand(
    name: str, packed: torch.Tensor, scale: torch.Tensor, element: str, group: int, k: int | None,
    encoded: bool = False,
) -> int:
    """Check one packed operand and its scales (``encoded``: float or ``ENCODED_SCALES``); return its K (two codes
    per byte)."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"{name}_packed must be a 2-D uint8 tensor of packed 4-bit codes, "
                         f"got {packed.dtype} with shape {tuple(packed.shape)}")
    w4a4_element(element)
    k_here = 2 * packed.shape[1]
    if k is not None and k_here != k:
        raise ValueError(f"a and w disagree on K: a_packed holds K={k}, w_packed holds K={k_here}")
    if group and (group % 16 or k_here % group):
        raise ValueError(f"{name}_group must be 0 (one scale per row) or a multiple of 16 dividing K={k_here}, "
                         f"got {group}")
    expected = (packed.shape[0], k_here // group if group else 1)
    if tuple(scale.shape) != expected or not (scale.is_floating_point() or encoded and scale.dtype in ENCODED_SCALES):
        raise ValueError(f"{name}_scale must be a float tensor of shape {expected} for {name}_group={group}, "
                         f"got {scale.dtype} with shape {tuple(scale.shape)}")
    return k_here


def check_out(out: torch.Tensor | None, m: int, n: int, out_dtype: torch.dtype) -> None:
    """Raise ValueError unless ``out`` is None or an (m, n) ``out_dtype`` tensor a kernel can write rows of."""
    if out is not None and (out.shape != (m, n) or out.dtype != out_dtype or out.stride(1) != 1):
        raise ValueError(f"out must be a ({m}, {n}) {out_dtype} tensor with unit column stride, "
                         f"got {out.dtype} with shape {tuple(out.shape)} and strides {out.stride()}")


def check_matmul_args(
    a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
    a_element: str, w_element: str, a_group: int, w_group: int, bias: torch.Tensor | None, out_dtype: torch.dtype,
    w_global_scale: torch.Tensor | None = None,
) -> None:
    """Raise ValueError unless ``w4a4_matmul`` can take these arguments (the weight's scales also as
    ``check_weight_scales`` takes them: in groups, NVFP4's E4M3 with ``w_global_scale`` and MXFP4's E8M0)."""
    k = _check_operand("a", a_packed, a_scale, a_element, a_group, None)
    _check_operand("w", w_packed, w_scale, w_element, w_group, k, encoded=True)
    check_weight_scales(w_scale, w_packed.shape[0], k, w_element, w_group, "w_scale", w_global_scale)
    _check_bias_and_out(bias, w_packed.shape[0], out_dtype)


def _check_bias_and_out(bias: torch.Tensor | None, n: int, out_dtype: torch.dtype) -> None:
    if bias is not None and (tuple(bias.shape) != (n,) or not bias.is_floating_point()):
        raise ValueError(f"bias must be a float tensor of shape ({n},), got {bias.dtype} with shape {tuple(bias.shape)}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype}")


def activation_spec(element: str, group_size: int, scale_kind: str, clip_ratio: float) -> QuantSpec:
    """The fake-quantization spec that ``quantize_activations`` realises."""
    if scale_kind in BLOCK_SCALED:
        return QuantSpec(format=BLOCK_SCALED[scale_kind][0], bits=4, clip_ratio=clip_ratio)
    fmt = {"int4": dict(format="int", bits=4), "e2m1": dict(format="fp", bits=4, exp_bits=2),
           "int8": dict(format="int", bits=8)}[element]
    granularity = dict(granularity="group", group_size=group_size) if group_size else dict(granularity="token")
    return QuantSpec(clip_ratio=clip_ratio, **fmt, **granularity)


def quantize_activations_ref(
    x: torch.Tensor, element: str, group_size: int = 0, scale_kind: str = "float",
    clip_ratio: float = 1.0, hadamard_block: int = 0, dp4a_for: str | None = None,
    tensor_amax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes (M, K//2) uint8 and fp32 scales (M, K//group or 1) of ``x`` (M, K).

    ``decode(unpack(packed)) * scale`` equals ``Quantizer(activation_spec(...)).fake_quantize``
    of the (block-Hadamard rotated, in x's dtype) activations, bit for bit in fp32.
    ``dp4a_for`` (a weight element, per-token scales only): the codes come as
    ``dp4a_bytes(packed, element, dp4a_for)`` instead, for the decode kernel. ``tensor_amax`` (NVFP4, a float32
    scalar tensor): the calibrated absmax that sets the tensor scale (``StaticTensorScale``), not x's own.
    """
    check_activation_args(x, element, group_size, scale_kind, clip_ratio, hadamard_block, dp4a_for, tensor_amax)
    m, k = x.shape
    if m == 0:  # no tokens: nothing to take Quantizer.fit's whole-tensor maximum of
        codes = (torch.empty(0, k, dtype=torch.int8, device=x.device) if dp4a_for
                 else torch.empty(0, k // 2, dtype=torch.uint8, device=x.device))
        return codes, torch.empty(0, k // group_size if group_size else 1, device=x.device)
    if hadamard_block:
        x = block_hadamard_transform(x, hadamard_block)
    quantizer = Quantizer(activation_spec(element, group_size, scale_kind, clip_ratio))
    xg = quantizer.grouped(x)
    scale = quantizer.fit(xg, None if tensor_amax is None else tensor_amax.reshape(())).scale
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = quantizer.element.round(xg / safe).reshape(m, k)
    if dp4a_for:
        return dp4a_order(levels * DP4A_BYTES_PER_UNIT[element], dp4a_for), scale.reshape(m, -1)
    return packing.pack(packing.encode(levels, quantizer.element)), scale.reshape(m, -1)


def check_prologue_args(x: torch.Tensor, weight: torch.Tensor | None, element: str, clip_ratio: float,
                        dp4a_for: str | None, prologue: int) -> None:
    """Raise ValueError unless the activation kernel can quantize x per token after this prologue
    (``PROLOGUES``): RMSNorm by ``weight`` (K,), of x's dtype; or silu(gate) * up of x = [gate | up]."""
    if x.dim() != 2:
        raise ValueError(f"activations must be 2-D (tokens, features), got shape {tuple(x.shape)}")
    k = x.shape[1]
    if prologue == PROLOGUES["silu_mul"]:
        if k % 2:
            raise ValueError(f"silu(gate) * up takes gate and up side by side, (M, 2K): got an odd width {k}")
        k //= 2
    elif weight is None or tuple(weight.shape) != (k,) or weight.dtype != x.dtype:
        raise ValueError(f"the RMSNorm weight must be a ({k},) tensor of the activations' dtype {x.dtype}, got "
                         f"{None if weight is None else (weight.dtype, tuple(weight.shape))}")
    check_activation_args(x[:, :k], element, 0, "float", clip_ratio, 0, dp4a_for)


def rms_norm_quantize_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, element: str, clip_ratio: float = 1.0,
                          dp4a_for: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, per-token scales, normalised x): HF's RMSNorm of x (Llama, Qwen2, Qwen3: fp32 mean of squares,
    the normalised rows in x's dtype, times the weight), then ``quantize_activations_ref`` of it."""
    check_prologue_args(x, weight, element, clip_ratio, dp4a_for, PROLOGUES["rms_norm"])
    rows = x.float()
    normed = weight * (rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (*quantize_activations_ref(normed, element, 0, "float", clip_ratio, 0, dp4a_for), normed)


@dataclass(frozen=True)
class NormTail:
    """An RMSNorm and the per-token quantization of its output that a kernel runs on its own output in its last
    program (the decode kernel, ``w4a4_matmul_dp4a(..., norm_tail=...)``; the decode attention, whose output
    ``weight`` None quantizes without a norm): the next linear's input, as ``rms_norm_quantize`` (weight None:
    ``quantize_activations`` per token) computes it with these arguments; ``dp4a_for`` is the next linear's weight
    element, ``fp8_codes`` (with ``dp4a_for`` 'int4') the codes as E4M3 planes (``quant_kernels.decode_codes_form``)."""

    weight: torch.Tensor | None
    eps: float
    element: str
    clip_ratio: float
    dp4a_for: str
    fp8_codes: bool = False


def check_norm_tail(tail: NormTail, m: int, n: int, out_dtype: torch.dtype, gated: bool = False) -> None:
    """Raise ValueError unless a kernel can run ``tail`` on its (M, N) ``out_dtype`` output."""
    if gated:
        raise ValueError("a norm tail normalises the product's rows; a gated product (silu(gate) * up) has none: "
                         "pass gated=False or norm_tail=None")
    if tail.element not in ELEMENTS:
        raise ValueError(f"a norm tail quantizes to 4-bit codes for the decode kernel: element 'int4' or 'e2m1', got "
                         f"{tail.element!r}")
    check_e4m3_planes_args(tail.fp8_codes, tail.dp4a_for, tail.element)
    rows = torch.empty(m, n, dtype=out_dtype, device="meta")
    if tail.weight is None:
        check_activation_args(rows, tail.element, 0, "float", tail.clip_ratio, 0, tail.dp4a_for)
    else:
        check_prologue_args(rows, tail.weight, tail.element, tail.clip_ratio, tail.dp4a_for, PROLOGUES["rms_norm"])


def norm_tail_ref(out: torch.Tensor, tail: NormTail) -> tuple[torch.Tensor, torch.Tensor]:
    """The (dp4a bytes or E4M3 planes, per-token scales) a norm tail writes for the (M, N) output ``out``."""
    if tail.weight is None:
        codes, scales = quantize_activations_ref(out, tail.element, 0, "float", tail.clip_ratio, 0, tail.dp4a_for)
    else:
        codes, scales, _ = rms_norm_quantize_ref(out, tail.weight, tail.eps, tail.element, tail.clip_ratio,
                                                 tail.dp4a_for)
    return (e4m3_planes(codes) if tail.fp8_codes else codes), scales


def check_e4m3_planes_args(fp8_codes: bool, dp4a_for: str | None, element: str) -> None:
    """Raise ValueError unless codes written as E4M3 (``fp8_codes``) in a dp4a order are E4M3 planes: INT4 weights'
    order (``dp4a_for`` 'int4') of INT4 or E2M1 activations."""
    if fp8_codes and dp4a_for and (dp4a_for != "int4" or element not in ELEMENTS):
        raise ValueError(f"fp8_codes with dp4a_for writes INT4 weights' order of INT4 or E2M1 activations as E4M3: "
                         f"pass dp4a_for='int4' with element 'int4' or 'e2m1', got dp4a_for={dp4a_for!r} with "
                         f"element {element!r} (or drop one of the two layouts)")


def check_e4m3_planes(a_element: str) -> None:
    """Raise ValueError unless E4M3 activation planes (``quantize_activations(..., dp4a_for="int4",
    fp8_codes=True)``) can hold ``a_element``'s codes: INT4 levels or twice the E2M1 values, not INT8 levels."""
    if a_element not in ELEMENTS:
        raise ValueError(f"E4M3 activation bytes hold INT4 or E2M1 activations (twice their values), got {a_element}: "
                         f"pass the int8 bytes of quantize_activations(..., dp4a_for='int4') for INT8 activations")


def check_packed_activations(a_packed: torch.Tensor, a_element: str, w_element: str) -> torch.Tensor:
    """Raise ValueError unless activation codes given packed (two a byte, uint8, as ``quantize_activations`` writes
    them without ``dp4a_for``) can take the decode path's packed form: a 2-D tensor of INT4 codes against INT4
    weights or E2M1 codes against E2M1 weights. Returns an empty int8 (M, K) tensor standing in for them in
    ``check_dp4a_args`` (shapes only)."""
    if a_packed.dim() != 2 or (a_element, w_element) not in (("int4", "int4"), ("e2m1", "e2m1")):
        raise ValueError(f"packed activation codes (uint8, two a byte) take INT4 or E2M1 activations against weights "
                         f"of their element, as a 2-D tensor: got {a_element} activations with {w_element} weights, "
                         f"shape {tuple(a_packed.shape)}; pass the dp4a bytes of quantize_activations(..., dp4a_for="
                         f"w_element) for other pairs")
    return torch.empty(a_packed.shape[0], 2 * a_packed.shape[1], dtype=torch.int8)


def e4m3_planes(dp4a_bytes: torch.Tensor) -> torch.Tensor:
    """INT4 weights' dp4a bytes (``dp4a_bytes``, ``w_element`` 'int4') as the E4M3 planes of the tensor-core
    kernel's FP8 forms: the same values in the same order, float8_e4m3fn (exact: |value| <= 12)."""
    return dp4a_bytes.float().to(torch.float8_e4m3fn)


def silu_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x = [gate | up] (..., 2K), each op in x's dtype as eager torch computes an HF MLP's
    ``act_fn(gate_proj(x)) * up_proj(x)``."""
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def silu_mul_quantize_ref(x: torch.Tensor, element: str, clip_ratio: float = 1.0,
                          dp4a_for: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, per-token scales) of ``silu_mul_ref(x)`` for x = [gate | up] (M, 2K)."""
    check_prologue_args(x, None, element, clip_ratio, dp4a_for, PROLOGUES["silu_mul"])
    return quantize_activations_ref(silu_mul_ref(x), element, 0, "float", clip_ratio, 0, dp4a_for)


def dp4a_bytes(packed: torch.Tensor, element: str, w_element: str) -> torch.Tensor:
    """Packed activation codes (M, K//2) -> (M, K) int8 in the order the decode kernel (``w4a4_gemv``) pairs
    them with ``w_element`` weights: each byte is the code's INT4 level or twice its E2M1 value; the first
    K/2 bytes of a row hold, for each weight word i (codes 8i..8i+7), the codes that meet its first dp4a
    operand (8i + 0, 2, 4, 6 for INT4 weights; 8i + 0..3 for E2M1), the last K/2 the others.
    """
    w4a4_element(w_element)
    k = 2 * packed.shape[1]
    if k % 8:
        raise ValueError(f"dp4a bytes pair codes in words of 8: K must be a multiple of 8, got K={k}")
    values = packing.decode(packing.unpack(packed), w4a4_element(element)) * DP4A_BYTES_PER_UNIT[element]
    return dp4a_order(values, w_element)


def dp4a_order(values: torch.Tensor, w_element: str) -> torch.Tensor:
    """(M, K) integer-valued floats -> int8 bytes in ``dp4a_bytes``' order for ``w_element`` weights."""
    m, k = values.shape
    words = values.to(torch.int8).reshape(m, k // 8, 4, 2) if w_element == "int4" else (
        values.to(torch.int8).reshape(m, k // 8, 2, 4).transpose(2, 3))
    return words.permute(0, 3, 1, 2).reshape(m, k).contiguous()


def dp4a_values(a_bytes: torch.Tensor, element: str, w_element: str) -> torch.Tensor:
    """The inverse of ``dp4a_bytes`` up to packing: (M, K) dp4a bytes -> the codes' fp32 values in K order."""
    m, k = a_bytes.shape
    words = a_bytes.reshape(m, 2, k // 8, 4).permute(0, 2, 3, 1)  # (M, word, byte, operand)
    values = words.reshape(m, k) if w_element == "int4" else words.transpose(2, 3).reshape(m, k)
    return values.float() / DP4A_BYTES_PER_UNIT[element]


def w4a4_gemv_ref(
    a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
    residual: torch.Tensor | None = None, gated: bool = False, norm_tail: NormTail | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w4a4_matmul_ref`` with the activation codes given as dp4a bytes (per-row scales): the decode
    kernel's twin. ``residual`` (M, N) of ``out_dtype`` is added to the rounded product (``residual + y``).
    ``gated``: the weight rows are an MLP's gate rows then its up rows, and the result is (M, N / 2)
    ``silu_mul_ref`` of the rounded product. ``norm_tail``: (the result, ``norm_tail_ref`` of it).
    With INT8 activations (W4A8, W8A8) it is the W8A8 product of the levels (``int8_gemm.w8a8_matmul``), INT4
    weights widened to int8. E4M3 activation planes (``e4m3_planes``: INT4 weights' order whatever the weights, as
    the tensor-core kernel's one-dot form takes them) give the product of the same codes, as do packed activation
    codes (uint8, ``check_packed_activations``) against weights of their element, INT4 or E2M1."""
    planes, packed = a_bytes.dtype == torch.float8_e4m3fn, a_bytes.dtype == torch.uint8
    if planes:
        check_e4m3_planes(a_element)
        a_bytes = a_bytes.float().to(torch.int8)  # exact: the planes hold the bytes' integer values
    order = "int4" if planes else w_element
    check_dp4a_args(check_packed_activations(a_bytes, a_element, w_element) if packed else a_bytes, a_scale,
                    w_packed, w_scale, a_element, order, bias, out_dtype, residual, gated)
    if norm_tail is not None:
        check_norm_tail(norm_tail, a_bytes.shape[0], w_packed.shape[0], out_dtype, gated)
    if packed:
        out = w4a4_matmul_ref(a_bytes, a_scale, w_packed, w_scale, a_element=a_element, w_element=w_element,
                              bias=bias, out_dtype=out_dtype)
    elif a_element == "int8":
        from .int8_gemm import w8a8_matmul

        levels = dp4a_values(a_bytes, a_element, order).to(torch.int8)
        out = w8a8_matmul(levels, a_scale, int8_weight_codes(w_packed, w_element), w_scale, bias, out_dtype)
    else:
        codes = packing.encode(dp4a_values(a_bytes, a_element, order), w4a4_element(a_element))
        out = w4a4_matmul_ref(packing.pack(codes), a_scale, w_packed, w_scale, a_element=a_element,
                              w_element=w_element, bias=bias, out_dtype=out_dtype)
    if gated:
        return silu_mul_ref(out)
    out = out if residual is None else residual + out
    return out if norm_tail is None else (out, *norm_tail_ref(out, norm_tail))


def int8_weight_codes(w: torch.Tensor, w_element: str) -> torch.Tensor:
    """The W8A8 product's weight operand (``int8_gemm.w8a8_matmul``): (N, K) INT8 weight bytes as they are, packed
    INT4 codes widened to their int8 levels."""
    if w_element == "int8":
        return w
    return packing.decode(packing.unpack(w), w4a4_element(w_element)).to(torch.int8)


def check_dp4a_args(
    a_bytes: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
    a_element: str, w_element: str, bias: torch.Tensor | None, out_dtype: torch.dtype,
    residual: torch.Tensor | None = None, gated: bool = False,
) -> None:
    """Raise ValueError unless the decode kernel can take these dp4a activation bytes and weights (packed 4-bit
    codes, or (N, K) bytes for INT8) and this residual: (M, N) of ``out_dtype``; ``gated`` (silu(gate) * up of
    the product's halves) takes an even N and no residual."""
    shape = (a_bytes.shape[0], w_packed.shape[0])
    if gated and (w_packed.shape[0] % 2 or residual is not None):
        raise ValueError(f"a gated product takes gate's rows then up's (an even N) and no residual, got "
                         f"N={w_packed.shape[0]}, residual {'given' if residual is not None else 'none'}")
    if residual is not None and (tuple(residual.shape) != shape or residual.dtype != out_dtype):
        raise ValueError(f"the residual must be a {shape} tensor of the output dtype {out_dtype}, got "
                         f"{residual.dtype} with shape {tuple(residual.shape)}")
    if a_bytes.dtype != torch.int8 or a_bytes.dim() != 2:
        raise ValueError(f"a_bytes must be a 2-D int8 tensor of dp4a activation bytes (reference.dp4a_bytes), "
                         f"got {a_bytes.dtype} with shape {tuple(a_bytes.shape)}")
    if a_bytes.shape[1] % 2:
        raise ValueError(f"a_bytes holds one byte per code: K must be even, got K={a_bytes.shape[1]}")
    if "int8" not in (a_element, w_element):
        a_packed = torch.empty(a_bytes.shape[0], a_bytes.shape[1] // 2, dtype=torch.uint8)  # shapes only
        check_matmul_args(a_packed, a_scale, w_packed, w_scale, a_element, w_element, 0, 0, bias, out_dtype)
        return
    if (a_element, w_element) not in DP4A_PAIRS:
        raise ValueError(f"the decode kernel multiplies INT8 activations with INT4 or INT8 weights (W4A8, W8A8), "
                         f"got {a_element} activations with {w_element} weights")
    m, k = a_bytes.shape
    bytes_per_row = k if w_element == "int8" else k // 2
    if w_packed.dtype not in (torch.uint8, torch.int8) or w_packed.dim() != 2 or w_packed.shape[1] != bytes_per_row:
        raise ValueError(f"{w_element} weights for K={k} must be a 2-D byte tensor with {bytes_per_row} bytes a "
                         f"row, got {w_packed.dtype} with shape {tuple(w_packed.shape)}")
    for name, scale, rows in (("a", a_scale, m), ("w", w_scale, w_packed.shape[0])):
        if tuple(scale.shape) != (rows, 1) or not scale.is_floating_point():
            raise ValueError(f"{name}_scale must be a float tensor of shape ({rows}, 1) (one scale a row), "
                             f"got {scale.dtype} with shape {tuple(scale.shape)}")
    _check_bias_and_out(bias, w_packed.shape[0], out_dtype)


def dequantize(packed: torch.Tensor, scale: torch.Tensor, element: str, group: int = 0) -> torch.Tensor:
    """fp32 values (rows, K) of packed codes times their per-row or per-group scales."""
    values = packing.decode(packing.unpack(packed), w4a4_element(element))
    s = scale.float()
    return values * (s.repeat_interleave(group, dim=1) if group else s)


def w4a4_matmul_ref(
    a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, a_group: int = 0, w_group: int = 0,
    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
    w_global_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dequantize(a) @ dequantize(w).T (+ bias)`` in fp32, cast to ``out_dtype``; the weight's scales as
    ``check_matmul_args`` takes them (``scale_values``)."""
    check_matmul_args(a_packed, a_scale, w_packed, w_scale, a_element, w_element, a_group, w_group, bias, out_dtype,
                      w_global_scale)
    weight = dequantize(w_packed, scale_values(w_scale, w_global_scale), w_element, w_group)
    out = dequantize(a_packed, a_scale, a_element, a_group) @ weight.T
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fpx_element(element: str, bits: int) -> NumberFormat:
    """The format of a weight-only element name of the FPx kernels, checked against ``bits``: an FP element, or
    INT4 (per-channel W4A16).

    The kernel decodes into the activations' dtype, so every value must be exact in
    float16: that excludes E5M0 (2^16).
    """
    if element == "int4":
        fmt = w4a4_element(element)
    else:
        fmt = packing.element_named(element)
        if (not isinstance(fmt, FPFormat) or fmt.bits not in FPX_BITS
                or fmt.max_value > torch.finfo(torch.float16).max):
            raise ValueError(f"fpx_matmul takes INT4 or FP elements of 4, 5 or 6 bits whose values fit float16 (e2m1, "
                             f"e3m0, e2m2, e3m1, e2m3, e3m2, ...), got {element!r}")
    if bits != fmt.bits:
        raise ValueError(f"element {element} has {fmt.bits}-bit codes, got bits={bits}")
    return fmt


def check_fpx_args(
    x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor, element: str,
    bits: int, bias: torch.Tensor | None, out_dtype: torch.dtype | None, group: int = 0,
    w_global_scale: torch.Tensor | None = None, gated: bool = False,
) -> None:
    """Raise ValueError unless ``fpx_matmul`` can take these arguments (x 2-D here; ``group``: the scales' group
    along K, 0 for one a row; ``w_global_scale``: E4M3 scales' (``check_weight_scales``); ``gated``: the weight rows
    are gate's then up's, as many of each)."""
    if x.dim() != 2:
        raise ValueError(f"activations must be 2-D (tokens, features), got shape {tuple(x.shape)}")
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"activations must be float16, bfloat16 or float32, got {x.dtype}")
    fpx_element(element, bits)
    widths = packing.plane_bits(bits)
    count = len(planes) if isinstance(planes, (tuple, list)) else None
    if count != len(widths):
        raise ValueError(f"{bits}-bit weights come as a tuple of {len(widths)} bit plane(s) (packing.pack_planes), "
                         f"got {type(planes).__name__ if count is None else count}")
    k = x.shape[1]
    multiple = packing.plane_multiple(bits)
    if k == 0 or k % multiple:
        raise ValueError(f"{bits}-bit bit planes need K to be a positive multiple of {multiple}, got K={k}")
    if any(plane.dim() != 2 for plane in planes):
        raise ValueError(f"planes must be 2-D (N, bytes along K), got shapes {[tuple(p.shape) for p in planes]}")
    n = planes[0].shape[0]
    for i, (plane, width) in enumerate(zip(planes, widths)):
        expected = (n, k * width // 8)
        if plane.dtype != torch.uint8 or tuple(plane.shape) != expected:
            raise ValueError(f"planes[{i}] must be the uint8 {width}-bit plane of shape (N, K*{width}/8) = {expected} "
                             f"for K={k} (the activations' K), got {plane.dtype} with shape {tuple(plane.shape)}")
    check_weight_scales(w_scale, n, k, element, group, "w_scale", w_global_scale)
    if group % 8:
        raise ValueError(f"the weight-only kernels take groups of scales of a multiple of 8 codes (a packed word's), "
                         f"got groups of {group}")
    if bias is not None and (tuple(bias.shape) != (n,) or not bias.is_floating_point()):
        raise ValueError(f"bias must be a float tensor of shape ({n},), got {bias.dtype} "
                         f"with shape {tuple(bias.shape)}")
    if out_dtype is not None and out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    if gated and n % 2:
        raise ValueError(f"a gated product takes an MLP's gate rows then as many up rows: N must be even, got N={n}")


def fpx_weight(planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor, element: str,
               bits: int, k: int) -> torch.Tensor:
    """fp32 weight (N, K): decoded codes times the per-channel scales."""
    codes = packing.unpack_planes(planes, bits, k)
    return packing.decode(codes, fpx_element(element, bits)) * w_scale.float().reshape(-1, 1)


def check_packed_weight_args(planes: tuple[torch.Tensor, ...] | list[torch.Tensor], scale: torch.Tensor, element: str,
                             bits: int, group: int, global_scale: torch.Tensor | None = None) -> None:
    """Raise ValueError unless ``packed_weight`` can take these planes and scales: an FPx element's planes
    (``packing.pack_planes``) with per-row scales, or packed INT4 / E2M1 codes with per-row or per-group ones."""
    fpx_element(element, bits)
    widths = packing.plane_bits(bits)
    if not isinstance(planes, (tuple, list)) or len(planes) != len(widths):
        raise ValueError(f"{bits}-bit weights come as a tuple of {len(widths)} bit plane(s) (packing.pack_planes), "
                         f"got {type(planes).__name__}")
    n, k = planes[0].shape[0], 2 * planes[0].shape[-1]
    for i, (plane, width) in enumerate(zip(planes, widths)):
        if plane.dtype != torch.uint8 or tuple(plane.shape) != (n, k * width // 8):
            raise ValueError(f"planes[{i}] must be the uint8 {width}-bit plane of shape (N, K*{width}/8) = "
                             f"{(n, k * width // 8)}, got {plane.dtype} with shape {tuple(plane.shape)}")
    check_weight_scales(scale, n, k, element, group, "the scales", global_scale)


def check_weight_scales(scale: torch.Tensor, n: int, k: int, element: str, group: int, name: str,
                        global_scale: torch.Tensor | None = None) -> None:
    """Raise ValueError unless ``scale`` (called ``name`` in the message) holds an (N, K) weight's scales: one a row,
    (N,) or (N, 1), or for INT4 and E2M1 codes one per ``group`` codes, (N, K // group): fp32 (or another float
    dtype), or in groups as a checkpoint encodes them (``ENCODED_SCALES``), E4M3 ones with their rows' (N,) fp32
    ``global_scale``."""
    if group and (element not in ELEMENTS or group < 0 or k % group):
        raise ValueError(f"groups of scales take packed INT4 or E2M1 codes and divide K={k}, got {element} in "
                         f"groups of {group}")
    encoding = ENCODED_SCALES.get(scale.dtype)
    shapes = [(n, k // group)] if group else [(n,), (n, 1)]
    if tuple(scale.shape) not in shapes or not (scale.is_floating_point() or encoding):
        what = "one per group of codes" if group else "one per output channel"
        raise ValueError(f"{name} must be a float tensor of shape {' or '.join(map(str, shapes))}, got "
                         f"{scale.dtype} with shape {tuple(scale.shape)} ({what})")
    if encoding and not group:
        raise ValueError(f"{name}: {encoding} scales ({scale.dtype}) come in groups along K (NVFP4's 16, MXFP4's "
                         f"32), got per-channel ones: pass group, or fp32 scales")
    if encoding == "e4m3" and (global_scale is None or tuple(global_scale.shape) != (n,)
                               or global_scale.dtype != torch.float32):
        got = None if global_scale is None else f"{global_scale.dtype} with shape {tuple(global_scale.shape)}"
        raise ValueError(f"{name}: E4M3 scales (NVFP4's) need their rows' fp32 global scales, shape ({n},), got "
                         f"{got}")
    if encoding != "e4m3" and global_scale is not None:
        raise ValueError(f"{name}: a global scale multiplies E4M3 scales (float8_e4m3fn) only, got {scale.dtype} "
                         f"scales: fold it into them, or pass none")


def scale_values(scale: torch.Tensor, global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 scales of their encoding (``check_weight_scales``): float ones as they are; E4M3 (NVFP4) times their
    rows' ``global_scale``; E8M0 biased exponents e (MXFP4, uint8) as 2^(e - 127), e = 0 the subnormal 2^-127.
    The kernels decode as they load them, to the same bits (``tile_loads._group_scales``)."""
    if scale.dtype == torch.uint8:
        bits = scale.to(torch.int32) << 23
        return torch.where(scale == 0, 1 << 22, bits).view(torch.float32)
    values = scale.float()
    if global_scale is not None:
        values = values * global_scale.float().reshape(-1, *(1,) * (values.dim() - 1))
    return values


def packed_weight(planes: tuple[torch.Tensor, ...] | list[torch.Tensor], scale: torch.Tensor, element: str,
                  bits: int = 4, group: int = 0, global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 (N, K) weight of packed codes (one 4-bit plane, plus the 1- or 2-bit plane of FP5 / FP6) times their
    per-row or per-group (INT4, E2M1) scales (``scale_values``): the twin of ``quant_kernels.dequantize_weight``."""
    check_packed_weight_args(planes, scale, element, bits, group, global_scale)
    if element in ELEMENTS:
        return dequantize(planes[0], scale_values(scale, global_scale).reshape(scale.shape[0], -1), element, group)
    return fpx_weight(planes, scale, element, bits, 2 * planes[0].shape[1])


def fpx_matmul_ref(
    x: torch.Tensor, planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor, *,
    element: str, bits: int, bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
    group: int = 0, w_global_scale: torch.Tensor | None = None, gated: bool = False,
) -> torch.Tensor:
    """``x.float() @ (decode(w) * w_scale).T (+ bias)`` in fp32, cast to ``out_dtype`` (default x's dtype).

    ``planes``: ``packing.pack_planes`` of the (N, K) weight codes; ``w_scale``: (N,) or (N, 1), or (N, K // group)
    for INT4 and E2M1 codes in groups (``packed_weight``), E4M3 ones times their rows' ``w_global_scale``.
    ``gated``: the weight rows are an MLP's gate rows then its up rows; the result (M, N / 2) is ``silu_mul_ref``
    of the product.
    """
    check_fpx_args(x, planes, w_scale, element, bits, bias, out_dtype, group, w_global_scale, gated)
    out = x.float() @ packed_weight(planes, w_scale, element, bits, group, w_global_scale).T
    if bias is not None:
        out = out + bias.float()
    out = out.to(out_dtype or x.dtype)
    return silu_mul_ref(out) if gated else out


def dequantized_product_excess(got: torch.Tensor, x: torch.Tensor,
                               planes: tuple[torch.Tensor, ...] | list[torch.Tensor], w_scale: torch.Tensor,
                               element: str, bits: int, bias: torch.Tensor | None = None, group: int = 0,
                               w_global_scale: torch.Tensor | None = None) -> float:
    """How far ``got``, x times the weight dequantized into x's half dtype (``dequant.dequantize_triton``), lies
    from ``fpx_matmul_ref`` in units of its roundings: half an ulp of each weight times |x| |w| summed, and half an
    ulp of the output, counted twice (the fp32 sums' order); at most 1 where the product is right."""
    half_ulp = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[x.dtype]
    want = fpx_matmul_ref(x, planes, w_scale, element=element, bits=bits, bias=bias, out_dtype=torch.float32,
                          group=group, w_global_scale=w_global_scale)
    weight = packed_weight(planes, w_scale, element, bits, group, w_global_scale)
    bound = half_ulp * (x.float().abs() @ weight.abs().T + 2 * want.abs()) + 1e-30
    return ((got.float() - want).abs() / bound).max().item()


def decode_attention_problem(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             mask: torch.Tensor | None) -> str | None:
    """Why ``quant_kernels.decode_attention`` cannot take these operands, or None when it can."""
    if q.dim() != 4 or key.dim() != 4 or key.shape != value.shape:
        return (f"decode attention takes q (B, Hkv, G, D) and key, value (B, Hkv, L, D) of one shape, got "
                f"{tuple(q.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    batch, heads_kv, _, dim = q.shape
    if key.shape[0] != batch or key.shape[1] != heads_kv or key.shape[3] != dim:
        return f"q {tuple(q.shape)} and key {tuple(key.shape)} disagree on batch, K/V heads or head dim"
    if q.dtype != key.dtype or key.dtype != value.dtype:
        return f"q, key and value must share a dtype, got {q.dtype}, {key.dtype}, {value.dtype}"
    return _head_dim_and_mask_problem(dim, mask, batch, key.shape[2])


def _head_dim_and_mask_problem(dim: int, mask: torch.Tensor | None, batch: int, length: int) -> str | None:
    """What both decode attentions refuse in the head dim and the mask, or None."""
    if not _is_power_of_two(dim) or dim < 16:
        return f"decode attention takes a power-of-two head dim of at least 16, got {dim}"
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1)
                             or mask.shape[0] not in (1, batch) or mask.shape[3] != length):
        return (f"decode attention takes a boolean mask of shape (B or 1, 1, 1, {length}), got {mask.dtype} "
                f"{tuple(mask.shape)}")
    return None


def decode_attention_ref(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                         scale: float) -> torch.Tensor:
    """SDPA of the (B, Hkv, G, D) query rows over their K/V head: ``quant_kernels.decode_attention``'s twin."""
    return torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scale)


# The 4-bit K/V elements the decode attention reads packed (``quant_layers.packed_kv_cache``): int4 two's
# complement codes (symmetric), uint4 codes that are the levels (asymmetric, under a zero point), e2m1.
PACKED_KV_ELEMENTS = ("int4", "uint4", "e2m1")
# A packed K or V: uint8 codes (B, Hkv, L, D // 2), float scales (B, Hkv, L, D // group) and zero points (same
# shape) or None.
PackedOperand = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def packed_kv_element(name: str) -> NumberFormat:
    """The element format of a packed K/V element name, or a ValueError naming the choices."""
    if name not in PACKED_KV_ELEMENTS:
        raise ValueError(f"unknown packed K/V element {name!r}: choose one of {', '.join(PACKED_KV_ELEMENTS)}")
    return packing.UINT4 if name == "uint4" else packing.element_named(name)


def decode_attention_packed_problem(q: torch.Tensor, key: PackedOperand, value: PackedOperand,
                                    mask: torch.Tensor | None, key_element: str, value_element: str) -> str | None:
    """Why ``decode_attention_packed`` cannot take these operands, or None when it can (shapes and dtypes only:
    it runs inside compiled decode steps)."""
    if q.dim() != 4 or q.dtype not in ACTIVATION_DTYPES:
        return f"q must be a (B, Hkv, G, D) float16, bfloat16 or float32 tensor, got {q.dtype} {tuple(q.shape)}"
    batch, heads_kv, _, dim = q.shape
    length = key[0].shape[2] if key[0].dim() == 4 else -1
    for name, (codes, scale, zero), element in (("key", key, key_element), ("value", value, value_element)):
        if element not in PACKED_KV_ELEMENTS:
            return f"unknown packed {name} element {element!r}: choose one of {', '.join(PACKED_KV_ELEMENTS)}"
        if codes.dtype != torch.uint8 or tuple(codes.shape) != (batch, heads_kv, length, dim // 2):
            return (f"packed {name} codes must be uint8 (B, Hkv, L, D // 2) = {(batch, heads_kv, length, dim // 2)}, "
                    f"got {codes.dtype} {tuple(codes.shape)}")
        if (not scale.is_floating_point() or scale.dim() != 4 or tuple(scale.shape[:3]) != (batch, heads_kv, length)
                or dim % scale.shape[3]):
            return (f"packed {name} scales must be float (B, Hkv, L, D // group) with a group dividing D={dim}, got "
                    f"{scale.dtype} {tuple(scale.shape)}")
        if zero is not None and (zero.shape != scale.shape or not zero.is_floating_point()):
            return (f"packed {name} zero points must be float and shaped as the scales, got {zero.dtype} "
                    f"{tuple(zero.shape)}")
    return _head_dim_and_mask_problem(dim, mask, batch, length)


def dequantize_kv(operand: PackedOperand, element: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, Hkv, L, D) values of a packed K or V: ``(level - zero) * scale`` in fp32 per group, then ``dtype``
    (``Quantizer.dequantize``, as the packed KV cache dequantizes)."""
    from quant_layers.packed_kv_cache import dequantize_codes  # late: it imports transformers' caches

    return dequantize_codes(*operand, packed_kv_element(element), dtype)


def decode_attention_packed_ref(q: torch.Tensor, key: PackedOperand, value: PackedOperand, mask: torch.Tensor | None,
                                scale: float, key_element: str, value_element: str) -> torch.Tensor:
    """``decode_attention_ref`` of the K and V that packed codes hold, dequantized to q's dtype first: the twin of
    the decode attention that reads a packed KV4 cache (``flash_decode.decode_attention_packed_triton``)."""
    key_values = dequantize_kv(key, key_element, q.dtype)
    return decode_attention_ref(q, key_values, dequantize_kv(value, value_element, q.dtype), mask, scale)
