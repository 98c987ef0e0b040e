"""A linear layer that holds packed 4-bit weights and runs on the W4A4 kernels.

``RealQuantLinear`` is what a loaded real-quantized checkpoint is made of: packed codes
(two per byte, ``quant_layers.packing``) and scales for the weight, and a
description of how its input is quantized on the fly. NVFP4 and MXFP4 weights keep their scales as the checkpoint
encodes them (E4M3 with a global scale a row, E8M0 bytes: a quarter of fp32's bytes), which the kernels decode as
they load them (``quant_kernels.tile_loads``); the others hold fp32 scales. The same module runs everywhere:
``quant_kernels`` dispatches to Triton on CUDA and to the pure-torch reference twins on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

import quant_kernels

from .formats import ENCODED_SCALE_DTYPES
from .packing import plane_bits
from .quantizer import BLOCK_GROUP_SIZE, QuantSpec

if TYPE_CHECKING:
    from quant_kernels.reference import NormTail

SCALE_KINDS = {"nvfp": "e4m3", "mxfp": "e8m0"}


FPX_BITS = (4, 5, 6)  # weight-only FP elements the FPx kernel takes (FP6-LLM's formats and their FP5/FP4 kin)


@dataclass(frozen=True)
class RealQuantScheme:
    """How one tensor of a real-quantized linear is stored or quantized (JSON-able).

    ``element``: ``int4`` or an FP element name (``e2m1``; weight-only also ``e3m2``,
    ``e2m3``, ``e2m2``, ``e3m1``, ``e3m0``); ``bits``: code width (5 and 6 are stored as a
    4-bit plus a 1- or 2-bit plane); ``group``: elements per scale along the input
    dimension, 0 = one scale per row (output channel / token); ``scale_kind``: ``float``
    (fp32), ``e4m3`` (NVFP4 block scales times an fp32 tensor scale) or ``e8m0`` (MXFP4);
    ``clip_ratio``: activations only; ``static_tensor_scale`` (NVFP4 activations): the tensor scale comes from the
    linear's calibrated ``act_tensor_amax`` (``QuantSpec.static_tensor_scale``).
    """

    element: str
    group: int = 0
    scale_kind: str = "float"
    clip_ratio: float = 1.0
    bits: int = 4
    static_tensor_scale: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: QuantSpec, what: str, in_features: int, weight_only: bool = False) -> "RealQuantScheme":
        """The scheme of a recipe's ``QuantSpec``, or a ValueError saying why it has no kernel.

        ``weight_only``: the linear's input is not quantized, so FP weights of 4 to 6 bits
        per channel run on the FPx kernels (``quant_kernels.fpx_matmul``, as every weight-only scheme does).
        """
        fpx = weight_only and what == "weight" and spec.format == "fp" and spec.granularity == "channel"
        int8 = (not weight_only and spec.format == "int" and spec.bits == 8
                and spec.granularity == ("channel" if what == "weight" else "token"))
        problems = []
        if spec.bits not in (FPX_BITS if fpx else (8,) if int8 else (4,)):
            problems.append(f"{spec.bits}-bit")
        if spec.format in ("fp", "mxfp") and spec.exp_bits != 2 and not fpx:
            problems.append(f"E{spec.exp_bits}M{spec.bits - 1 - spec.exp_bits} elements")
        if not spec.symmetric:
            problems.append("asymmetric (zero-point)")
        if spec.observer != "minmax" and what == "activation":
            problems.append(f"the {spec.observer} observer on activations")
        if what == "activation" and spec.granularity == "tensor":
            problems.append("per-tensor activation scales")
        if spec.granularity == "head":
            problems.append("per-head scales")
        if problems:
            raise ValueError(
                f"real quantization has no kernel for {what}s quantized as {spec.label} ({', '.join(problems)}): "
                f"the kernels take 4-bit symmetric INT4 / FP4 E2M1 per channel, per token or in groups, NVFP4 and "
                f"MXFP4, weight-only FP4/FP5/FP6 per channel (e.g. --format fp --w_bits 6 --w_exp_bits 3), and W8A8 and "
                f"W4A8: INT8 activations per token with INT8 or INT4 weights per channel"
            )
        if spec.format == "int":
            element = f"int{spec.bits}"
        else:
            element = f"e{spec.exp_bits}m{spec.bits - 1 - spec.exp_bits}"
        if spec.format in BLOCK_GROUP_SIZE:
            group = BLOCK_GROUP_SIZE[spec.format]
        elif spec.granularity == "group":
            group = spec.group_size
        else:
            group = 0
        if group and (group % 16 or (in_features and in_features % group)):
            raise ValueError(f"real quantization needs {what} groups that are a multiple of 16 and divide "
                             f"{in_features}, got {group}")
        if what == "activation" and group & (group - 1):
            raise ValueError(f"the activation-quantization kernel takes power-of-two groups (16, 32, 64, 128, ...), "
                             f"got {group}")
        clip = spec.clip_ratio if what == "activation" else 1.0
        return cls(element, group, SCALE_KINDS.get(spec.format, "float"), clip, spec.bits, spec.static_tensor_scale)


def check_scheme_pair(weight: RealQuantScheme, act: RealQuantScheme | None,
                      fix: str = "use --w_bits 8 --a_bits 8 or --w_bits 4 --a_bits 8 with --format int, "
                                 "or 4-bit formats") -> None:
    """INT8 weights go only with INT8 activations (W8A8); INT8 activations with INT8 or per-channel INT4 weights
    (W4A8, on the decode kernel's byte products). ``fix`` ends the error: the flags that choose the pair."""
    act_int8 = act is not None and act.element == "int8"
    w4a8 = act_int8 and weight.element == "int4" and weight.group == 0
    if (weight.element == "int8") != act_int8 and not w4a8:
        raise ValueError(f"real quantization runs INT8 as W8A8 (INT8 weights per channel with INT8 activations "
                         f"per token) or W4A8 (INT4 weights per channel), got {weight.element} weights"
                         f"{f' in groups of {weight.group}' if weight.group else ''} with "
                         f"{'unquantized' if act is None else act.element} activations: {fix}")


def check_real_quant_recipe(recipe) -> None:
    """Raise (before any model loads) if a recipe's linears cannot be packed and run on the kernels."""
    if recipe.weight is None:
        raise ValueError("real quantization packs 4-bit weights: set --w_bits 4 (or --qbits 4 ...)")
    weight = RealQuantScheme.from_spec(recipe.weight, "weight", 0, weight_only=recipe.activation is None)
    act = None if recipe.activation is None else RealQuantScheme.from_spec(recipe.activation, "activation", 0)
    check_scheme_pair(weight, act)
    head_weight, head_act = recipe.lm_head_weight, recipe.lm_head_activation
    if recipe.quantize_lm_head and (head_weight != recipe.weight or head_act != recipe.activation):
        check_scheme_pair(RealQuantScheme.from_spec(head_weight, "weight", 0, weight_only=head_act is None),
                          None if head_act is None else RealQuantScheme.from_spec(head_act, "activation", 0),
                          "for lm_head use --lm_head_w_bits 8 --lm_head_a_bits 8 (W8A8), --lm_head_a_bits 8 with "
                          "INT4 weights per channel (W4A8), or neither")


class RealQuantLinear(nn.Module):
    """``y = Q(T(x)) @ dequant(W).T + b`` with W stored packed; Q is skipped when ``act`` is None.

    ``T`` is an optional online rotation (``input_transform``) applied before the
    activation quantizer, as in ``QuantLinear``. Without activation quantization (W4A16)
    the weight is dequantized on the fly and multiplied densely.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, weight: RealQuantScheme,
                 act: RealQuantScheme | None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if in_features % 2:
            raise ValueError(f"packed 4-bit weights need an even input dimension, got {in_features}")
        if weight.group and in_features % weight.group:
            raise ValueError(f"weight scales in groups of {weight.group} must divide the input dimension "
                             f"{in_features}: choose a group that divides it, or per-channel scales (group 0)")
        check_scheme_pair(weight, act)
        self.in_features, self.out_features = in_features, out_features
        self.weight_scheme, self.act_scheme = weight, act
        # NVFP4 / MXFP4 weights: the scales as the checkpoint encodes them (the module docstring).
        self.encoded_scales = weight.group > 0 and weight.scale_kind in ENCODED_SCALE_DTYPES
        self.schemes = schemes_key(weight, act)  # the custom op's description of both (a str, set once)
        groups = in_features // weight.group if weight.group else 1
        # Bit planes (packing.plane_bits): 4 bits per code, plus a 1- or 2-bit plane for 5/6-bit codes; 8-bit
        # codes are one byte each.
        low, *high = plane_bits(weight.bits)
        self.register_buffer("qweight", torch.zeros(out_features, in_features * low // 8, dtype=torch.uint8))
        if high:
            self.register_buffer("qweight_high", torch.zeros(out_features, in_features * high[0] // 8,
                                                             dtype=torch.uint8))
        if self.encoded_scales:  # (formats.ENCODED_SCALE_DTYPES)
            self.register_buffer("weight_scale", torch.zeros(out_features, groups, dtype=ENCODED_SCALE_DTYPES[
                weight.scale_kind]))
            if weight.scale_kind == "e4m3":  # a row each, so that fused linears keep their parts' own
                self.register_buffer("weight_global_scale", torch.zeros(out_features, dtype=torch.float32))
        else:
            self.register_buffer("weight_scale", torch.zeros(out_features, groups, dtype=torch.float32))
        if act is not None and act.static_tensor_scale:  # the calibrated absmax (RealQuantScheme)
            self.register_buffer("act_tensor_amax", torch.zeros((), dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None
        self.input_transform: nn.Module | None = None
        self._residual: torch.Tensor | None = None  # see add_residual_to_next
        self._norm_tail: NormTail | None = None  # for the next call (add_residual_to_next)
        self._norm_codes: tuple[torch.Tensor, torch.Tensor] | None = None  # what it wrote (take_norm_codes)
        # The quantization of this call's input that its producer may write (want_input_codes), and what it wrote.
        self.input_codes_wanted: NormTail | None = None
        self._input_codes: tuple[torch.Tensor, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"w={self.weight_scheme}, a={self.act_scheme}")

    def add_residual_to_next(self, residual: torch.Tensor, norm_tail: NormTail | None = None) -> None:
        """The next call returns ``residual + self(x)`` (x's shape but the output width), the sum taken in the
        product's epilogue where the decode kernel runs: a decoder layer hands its residual to the linear
        that ends a block it does not call itself (``models.fused_decoder_layer``). ``norm_tail``
        (``quant_kernels.reference.NormTail``, W4A4 layers, ``takes_norm_tail``): that call also quantizes the next
        RMSNorm of its output, in the decode kernel's last program where it runs; ``take_norm_codes`` hands over
        the codes."""
        if norm_tail is not None:
            self._check_takes_norm_tail()
        self._residual, self._norm_tail = residual, norm_tail

    def takes_norm_tail(self) -> bool:
        """Whether ``add_residual_to_next`` and ``on_codes`` take a norm tail: INT4 / E2M1 weights and activations."""
        elements = ("int4", "e2m1")
        return (self.act_scheme is not None and self.act_scheme.element in elements
                and self.weight_scheme.element in elements)

    def _check_takes_norm_tail(self) -> None:
        if not self.takes_norm_tail():
            raise ValueError(f"a norm tail follows a W4A4 product (INT4 / E2M1 weights and activations), not "
                             f"w={self.weight_scheme}, a={self.act_scheme}")

    def input_tail(self) -> NormTail | None:
        """The quantization of this linear's input that the kernel computing that input can write instead (a
        ``NormTail`` without a norm: per-token dp4a bytes for the decode kernel), where there is one: 4-bit
        activations with float per-token scales, 4-bit per-channel weights, no online rotation of the input, K a
        multiple of 8; else None."""
        from quant_kernels.reference import NormTail  # late: quant_kernels.reference imports quant_layers

        weight, act = self.weight_scheme, self.act_scheme
        if not (act is not None and act.element in ("int4", "e2m1") and act.group == 0 and act.scale_kind == "float"
                and weight.element in ("int4", "e2m1") and weight.group == 0 and self.input_transform is None
                and self.in_features % 8 == 0):
            return None
        return NormTail(None, 0.0, act.element, act.clip_ratio, weight.element)

    def want_input_codes(self, tail: NormTail) -> None:
        """Let the kernel that computes the next call's input quantize it too (``input_tail``): a decode layer's
        attention does it for o_proj (``models.attention``), handing the codes over with ``provide_input_codes``;
        if it does not, the next call quantizes its input itself."""
        if tail != self.input_tail():
            raise ValueError(f"a producer writes this linear's input codes as input_tail() gives them "
                             f"({self.input_tail()}), got {tail}")
        self.input_codes_wanted = tail

    def provide_input_codes(self, codes: torch.Tensor, scales: torch.Tensor) -> None:
        """The (dp4a bytes, per-token scales) of the next call's input, as ``input_codes_wanted`` asked."""
        if self.input_codes_wanted is None:
            raise RuntimeError("input codes were provided that no want_input_codes asked for")
        self._input_codes = (codes, scales)

    def take_norm_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (dp4a bytes, per-token scales) the last call's norm tail wrote (``add_residual_to_next``)."""
        taken, self._norm_codes = self._norm_codes, None
        if taken is None:
            raise RuntimeError("no norm codes to take: call add_residual_to_next(residual, norm_tail) before the "
                               "product that computes them")
        return taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, self._residual = self._residual, None
        tail, self._norm_tail = self._norm_tail, None
        given, self._input_codes, self.input_codes_wanted = self._input_codes, None, None
        if self.input_transform is not None:
            x = self.input_transform(x)
        if tail is not None:
            out, codes, scales = torch.ops.ptq.real_quant_matmul_norm(
                x, self.qweight, self.weight_scale, self.bias, residual, tail.weight, tail.eps, self.schemes,
                tail.element, tail.clip_ratio, tail.dp4a_for, *(given or (None, None)),
                getattr(self, "weight_global_scale", None))
            self._norm_codes = (codes, scales)
            return out
        if given is not None:
            rows = None if residual is None else residual.reshape(-1, residual.shape[-1])
            return self.on_codes(*given, x.dtype, rows).view(*x.shape[:-1], self.out_features)
        high = getattr(self, "qweight_high", None)  # the 1- or 2-bit plane of 5- and 6-bit codes
        return torch.ops.ptq.real_quant_matmul(x, self.qweight, high, self.weight_scale, self.bias, residual,
                                               self.schemes, getattr(self, "act_tensor_amax", None),
                                               getattr(self, "weight_global_scale", None))

    def gates_in_product(self, x: torch.Tensor) -> bool:
        """Whether ``gated_product(x)`` computes silu(gate) * up with the product in one launch
        (``quant_kernels.fpx_gates_in_product``): a weight-only linear at decode rows on a GPU, or on the CPU."""
        planes = weight_planes(self.qweight, getattr(self, "qweight_high", None))
        return self.act_scheme is None and self.input_transform is None and quant_kernels.fpx_gates_in_product(
            x, planes, bits=self.weight_scheme.bits, group=self.weight_scheme.group)

    def gated_product(self, x: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of this weight-only linear's product, its rows an MLP's gate rows then as many up rows:
        (..., N / 2), rounded as HF's ``act_fn(gate_proj(x)) * up_proj(x)`` (``quant_kernels.fpx_matmul``'s
        ``gated``)."""
        if self.act_scheme is not None:
            raise ValueError(f"a gated product is a weight-only linear's (FPx or W4A16 weights); this one quantizes "
                             f"its activations ({self.act_scheme.element}): use the fused decoder layer's gating")
        if self.input_transform is not None:
            x = self.input_transform(x)
        return torch.ops.ptq.real_quant_matmul(x, self.qweight, getattr(self, "qweight_high", None), self.weight_scale,
                                               self.bias, None, self.schemes, None,
                                               getattr(self, "weight_global_scale", None), True)

    def on_codes(self, a_bytes: torch.Tensor, a_scale: torch.Tensor, out_dtype: torch.dtype,
                 residual: torch.Tensor | None = None, gated: bool = False,
                 norm_tail: NormTail | None = None) -> torch.Tensor:
        """The (M, N) product for activations already quantized as this linear quantizes them, given as the
        decode kernel's codes (M, K) and per-row scales, in the form ``quant_kernels.decode_codes_form`` gives this
        weight at M rows (as the fused layers' ``rms_norm_quantize`` and its kin write them for
        ``dp4a_for=weight_scheme.element``); ``residual`` (M, N) is added as in ``add_residual_to_next``.
        ``gated`` (an MLP's gate rows then its up rows): (M, N / 2) silu(gate) * up instead
        (``quant_kernels.w4a4_matmul_dp4a``). ``norm_tail`` (``takes_norm_tail``): the product also quantizes the
        next RMSNorm of its output, as in ``add_residual_to_next``; ``take_norm_codes`` hands over the codes."""
        if norm_tail is None:
            return torch.ops.ptq.real_quant_gemv(a_bytes, a_scale, self.qweight, self.weight_scale, self.bias,
                                                 residual, out_dtype, self.schemes, gated)
        self._check_takes_norm_tail()
        out, codes, scales = torch.ops.ptq.real_quant_gemv_norm(
            a_bytes, a_scale, self.qweight, self.weight_scale, self.bias, residual, out_dtype, self.schemes,
            norm_tail.weight, norm_tail.eps, norm_tail.element, norm_tail.clip_ratio, norm_tail.dp4a_for)
        self._norm_codes = (codes, scales)
        return out


def schemes_key(weight: RealQuantScheme, act: RealQuantScheme | None) -> str:
    """The weight and activation schemes as one string, the form a custom op's argument can take."""
    return json.dumps([weight.to_dict(), act.to_dict() if act else None])


def weight_planes(qweight: torch.Tensor, qweight_high: Optional[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A weight's bit planes as ``quant_kernels.fpx_matmul`` takes them: the 4-bit plane, then the 1- or 2-bit plane
    of 5- and 6-bit codes where there is one."""
    return (qweight,) if qweight_high is None else (qweight, qweight_high)


@lru_cache(maxsize=None)
def parse_schemes(key: str) -> tuple[RealQuantScheme, RealQuantScheme | None]:
    weight, act = json.loads(key)
    return RealQuantScheme(**weight), RealQuantScheme(**act) if act else None


@torch.library.custom_op("ptq::real_quant_matmul", mutates_args=())
def real_quant_matmul(x: torch.Tensor, qweight: torch.Tensor, qweight_high: Optional[torch.Tensor],
                      weight_scale: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                      schemes: str, act_tensor_amax: Optional[torch.Tensor] = None,
                      weight_global_scale: Optional[torch.Tensor] = None, gated: bool = False) -> torch.Tensor:
    """``RealQuantLinear``'s product, (..., K) -> (..., N) in x's dtype; plus ``residual`` (..., N) when given;
    ``act_tensor_amax``: NVFP4 activations' calibrated absmax (``RealQuantScheme.static_tensor_scale``);
    ``weight_global_scale``: NVFP4 weights' rows' global scales, beside their E4M3 ``weight_scale``; ``gated``
    (weight-only, no residual): (..., N / 2) silu(gate) * up of it (``RealQuantLinear.gated_product``).

    A custom op so that ``torch.compile`` treats it as one opaque call: the kernels choose
    their path and autotune in Python, which is not for tracing, while everything around
    the linears (norms, RoPE, residuals) compiles and fuses.
    """
    weight, act = parse_schemes(schemes)
    if gated and (act is not None or residual is not None):
        raise ValueError("a gated product is a weight-only linear's, without a residual")
    rows = x.reshape(-1, x.shape[-1])
    residual_rows = None if residual is None else residual.reshape(rows.shape[0], -1)
    width = max(rows.shape[1], weight_scale.shape[0])
    act_tensor_amax = _whole_rows_amax(rows, act, width, act_tensor_amax)

    def product(x_rows: torch.Tensor, residual_rows: torch.Tensor | None) -> torch.Tensor:
        if act is None:
            out = quant_kernels.fpx_matmul(x_rows, weight_planes(qweight, qweight_high), weight_scale,
                                           element=weight.element, bits=weight.bits, bias=bias, out_dtype=x.dtype,
                                           group=weight.group, w_global_scale=weight_global_scale, gated=gated)
        elif act.element == "int8":
            linear = quant_kernels.w8a8_linear if weight.element == "int8" else quant_kernels.w4a8_linear
            out = linear(x_rows, qweight, weight_scale, clip_ratio=act.clip_ratio, bias=bias, out_dtype=x.dtype)
        else:
            return _w4a4_linear(x_rows, qweight, weight_scale, bias, residual_rows, weight, act,
                                a_tensor_amax=act_tensor_amax, w_global_scale=weight_global_scale)
        return out if residual_rows is None else residual_rows + out

    out = quant_kernels.in_row_chunks(product, (rows, residual_rows), width)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _whole_rows_amax(rows: torch.Tensor, act: RealQuantScheme | None, width: int,
                     given: torch.Tensor | None) -> torch.Tensor | None:
    """NVFP4 activations' tensor absmax for a product run in row chunks (``quant_kernels.in_row_chunks``): all the
    rows', which the kernel would otherwise take from each chunk alone; ``given`` (a calibrated one) or None
    otherwise."""
    if act is not None and act.scale_kind == "e4m3" and given is None and rows.shape[0] > \
            quant_kernels.row_chunk_rows(width):
        return rows.abs().amax().float()
    return given


def _product_on_codes(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor,
                      weight_scale: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                      out_dtype: torch.dtype, weight: RealQuantScheme, act: RealQuantScheme, gated: bool = False,
                      norm_tail: NormTail | None = None):
    """``quant_kernels.w4a4_matmul_dp4a`` of activation rows already quantized as ``act`` (dp4a bytes and per-row
    scales) by this weight."""
    return quant_kernels.w4a4_matmul_dp4a(a_bytes, a_scale, qweight, weight_scale, a_element=act.element,
                                          w_element=weight.element, bias=bias, out_dtype=out_dtype, residual=residual,
                                          gated=gated, norm_tail=norm_tail)


def _product_on_codes_in_chunks(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor,
                                weight_scale: torch.Tensor, bias: Optional[torch.Tensor],
                                residual: Optional[torch.Tensor], out_dtype: torch.dtype, schemes: str, **kwargs):
    """The ``ptq::real_quant_gemv`` ops' ``_product_on_codes`` (``kwargs``: gated or norm_tail), in row chunks where
    the rows are many (``quant_kernels.in_row_chunks``)."""
    def product(a_bytes, a_scale, residual):
        return _product_on_codes(a_bytes, a_scale, qweight, weight_scale, bias, residual, out_dtype,
                                 *parse_schemes(schemes), **kwargs)

    return quant_kernels.in_row_chunks(product, (a_bytes, a_scale, residual),
                                       max(a_bytes.shape[1], weight_scale.shape[0]))


def _w4a4_linear(x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor],
                 residual: Optional[torch.Tensor], weight: RealQuantScheme, act: RealQuantScheme,
                 norm_tail: NormTail | None = None, given: tuple[torch.Tensor, torch.Tensor] | None = None,
                 a_tensor_amax: torch.Tensor | None = None, w_global_scale: torch.Tensor | None = None):
    """``quant_kernels.w4a4_linear`` of x's rows, x's leading shape restored (the norm tail's codes stay rows);
    ``given``: x's rows already quantized (``RealQuantLinear.input_tail``'s dp4a bytes and scales), multiplied by
    ``quant_kernels.w4a4_matmul_dp4a``; ``a_tensor_amax``: as ``real_quant_matmul``'s; ``w_global_scale``: E4M3
    weight scales' (``quant_kernels.w4a4_linear``)."""
    rows = x.reshape(-1, x.shape[-1])
    residual = None if residual is None else residual.reshape(rows.shape[0], -1)
    if given is not None:
        out = _product_on_codes(*given, qweight, weight_scale, bias, residual, x.dtype, weight, act,
                                norm_tail=norm_tail)
    else:
        out = quant_kernels.w4a4_linear(rows, qweight, weight_scale, a_element=act.element, w_element=weight.element,
                                        a_group=act.group, w_group=weight.group, scale_kind=act.scale_kind,
                                        clip_ratio=act.clip_ratio, bias=bias, out_dtype=x.dtype, residual=residual,
                                        norm_tail=norm_tail, a_tensor_amax=a_tensor_amax,
                                        w_global_scale=w_global_scale)
    if norm_tail is None:
        return out.reshape(*x.shape[:-1], out.shape[-1])
    out, codes, scales = out
    return out.reshape(*x.shape[:-1], out.shape[-1]), codes, scales


@real_quant_matmul.register_fake
def _(x: torch.Tensor, qweight: torch.Tensor, qweight_high: Optional[torch.Tensor], weight_scale: torch.Tensor,
      bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], schemes: str,
      act_tensor_amax: Optional[torch.Tensor] = None,
      weight_global_scale: Optional[torch.Tensor] = None, gated: bool = False) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight_scale.shape[0] // 2 if gated else weight_scale.shape[0])


@torch.library.custom_op("ptq::real_quant_matmul_norm", mutates_args=())
def real_quant_matmul_norm(x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor,
                           bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], norm_weight: torch.Tensor,
                           eps: float, schemes: str, element: str, clip_ratio: float, dp4a_for: str,
                           a_bytes: Optional[torch.Tensor] = None, a_scale: Optional[torch.Tensor] = None,
                           weight_global_scale: Optional[torch.Tensor] = None,
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A W4A4 ``real_quant_matmul`` with a norm tail (``RealQuantLinear.add_residual_to_next``): (the product
    plus ``residual``, the codes (``quant_kernels.decode_codes_form``) and per-token scales of the next RMSNorm of
    it); ``quant_kernels.w4a4_linear`` with ``norm_tail``. ``a_bytes``, ``a_scale``: x's rows already quantized
    (``RealQuantLinear.input_tail``); ``weight_global_scale``: as ``real_quant_matmul``'s."""
    from quant_kernels.reference import NormTail  # late: quant_kernels.reference imports quant_layers

    weight, act = parse_schemes(schemes)
    rows = x.reshape(-1, x.shape[-1])
    tail = NormTail(norm_weight, eps, element, clip_ratio,
                    *quant_kernels.decode_codes_form(dp4a_for, rows.shape[0], x.is_cuda))
    residual_rows = None if residual is None else residual.reshape(rows.shape[0], -1)
    width = max(rows.shape[1], weight_scale.shape[0])
    act_tensor_amax = None if a_bytes is not None else _whole_rows_amax(rows, act, width, None)

    def product(x_rows, residual_rows, a_bytes, a_scale):
        return _w4a4_linear(x_rows, qweight, weight_scale, bias, residual_rows, weight, act, tail,
                            None if a_bytes is None else (a_bytes, a_scale), a_tensor_amax=act_tensor_amax,
                            w_global_scale=weight_global_scale)

    out, codes, scales = quant_kernels.in_row_chunks(product, (rows, residual_rows, a_bytes, a_scale), width)
    return out.reshape(*x.shape[:-1], out.shape[-1]), codes, scales


@real_quant_matmul_norm.register_fake
def _(x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor],
      residual: Optional[torch.Tensor], norm_weight: torch.Tensor, eps: float, schemes: str, element: str,
      clip_ratio: float, dp4a_for: str, a_bytes: Optional[torch.Tensor] = None,
      a_scale: Optional[torch.Tensor] = None,
      weight_global_scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = weight_scale.shape[0]
    rows = x.numel() // x.shape[-1]
    return (x.new_empty(*x.shape[:-1], n), quant_kernels.decode_codes_like(x, rows, n, dp4a_for),
            x.new_empty(rows, 1, dtype=torch.float32))


@torch.library.custom_op("ptq::real_quant_gemv", mutates_args=())
def real_quant_gemv(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor,
                    bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], out_dtype: torch.dtype,
                    schemes: str, gated: bool = False) -> torch.Tensor:
    """``RealQuantLinear.on_codes``: (M, K) dp4a activation bytes -> (M, N), through
    ``quant_kernels.w4a4_matmul_dp4a``."""
    return _product_on_codes_in_chunks(a_bytes, a_scale, qweight, weight_scale, bias, residual, out_dtype, schemes,
                                       gated=gated)


@real_quant_gemv.register_fake
def _(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor,
      bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], out_dtype: torch.dtype,
      schemes: str, gated: bool = False) -> torch.Tensor:
    width = weight_scale.shape[0] // 2 if gated else weight_scale.shape[0]
    return a_bytes.new_empty(a_bytes.shape[0], width, dtype=out_dtype)


@torch.library.custom_op("ptq::real_quant_gemv_norm", mutates_args=())
def real_quant_gemv_norm(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor,
                         weight_scale: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                         out_dtype: torch.dtype, schemes: str, norm_weight: Optional[torch.Tensor], eps: float,
                         element: str, clip_ratio: float, dp4a_for: str,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``RealQuantLinear.on_codes`` with a norm tail: (the product plus ``residual``, the dp4a bytes and per-token
    scales of the next RMSNorm of it), through ``quant_kernels.w4a4_matmul_dp4a``."""
    from quant_kernels.reference import NormTail  # late: quant_kernels.reference imports quant_layers

    tail = NormTail(norm_weight, eps, element, clip_ratio,
                    *quant_kernels.decode_codes_form(dp4a_for, a_bytes.shape[0], a_bytes.is_cuda))
    return _product_on_codes_in_chunks(a_bytes, a_scale, qweight, weight_scale, bias, residual, out_dtype, schemes,
                                       norm_tail=tail)


@real_quant_gemv_norm.register_fake
def _(a_bytes: torch.Tensor, a_scale: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor,
      bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], out_dtype: torch.dtype, schemes: str,
      norm_weight: Optional[torch.Tensor], eps: float, element: str, clip_ratio: float,
      dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = a_bytes.shape[0], weight_scale.shape[0]
    return (a_bytes.new_empty(m, n, dtype=out_dtype), quant_kernels.decode_codes_like(a_bytes, m, n, dp4a_for),
            a_bytes.new_empty(m, 1, dtype=torch.float32))
