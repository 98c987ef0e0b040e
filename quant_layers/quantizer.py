"""Quantizers: a format plus a granularity plus an observer, as fake quantization.

A ``QuantSpec`` is the plain-data description that lives in recipes; ``Quantizer`` turns
it into the function that maps a tensor onto the quantized grid and back. Groups always
run along the last dimension: a weight row (output channel), an activation token, or a
head's ``head_dim`` slice of K/V.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .formats import (
    DEFAULT_FP_EXP_BITS,
    DEFAULT_MX_EXP_BITS,
    E2M1,
    E4M3,
    FPFormat,
    IntFormat,
    NumberFormat,
    e4m3_scale,
    e8m0_scale,
    fp_format,
)
from .observers import OBSERVERS, mse_shrink_search

FORMATS = ("int", "fp", "nvfp", "mxfp")
GRANULARITIES = ("tensor", "channel", "token", "group", "head")
BLOCK_GROUP_SIZE = {"nvfp": 16, "mxfp": 32}


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized.

    ``granularity``: ``tensor`` (one scale), ``channel``/``token`` (one scale per row of the
    last dimension), ``group`` (``group_size`` consecutive elements), ``head`` (one scale
    per head and token: a group of ``head_dim``, resolved when the model is known).
    ``static_tensor_scale`` (NVFP4 activations): the fp32 tensor scale comes from an absmax
    calibrated once per linear input (``StaticTensorScale``), as ModelOpt's and torchao's static
    NVFP4 flows keep it, instead of the absmax of each tensor as it comes: no token's codes then
    depend on the other tokens of its batch, and the kernel reads the activations once.
    """

    format: str = "int"
    bits: int = 4
    exp_bits: int | None = None
    granularity: str = "channel"
    group_size: int | None = None
    symmetric: bool = True
    observer: str = "minmax"
    clip_ratio: float = 1.0
    static_tensor_scale: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown granularity {self.granularity!r}: choose one of {', '.join(GRANULARITIES)}"
            )
        if self.observer not in OBSERVERS:
            raise ValueError(f"unknown observer {self.observer!r}: choose one of {', '.join(OBSERVERS)}")
        if not 0.0 < self.clip_ratio <= 1.0:
            raise ValueError(f"clip ratio must be in (0, 1], got {self.clip_ratio}")
        if self.format == "int":
            if not 2 <= self.bits <= 8:
                raise ValueError(f"INT quantization takes 2 to 8 bits (16 = off), got {self.bits}")
            if self.exp_bits is not None:
                raise ValueError("exponent bits apply to fp/mxfp formats, not int: drop the exponent bits or use --format fp")
        elif self.format == "fp":
            if not 3 <= self.bits <= 8:
                raise ValueError(f"FP quantization takes 3 to 8 bits (16 = off), got {self.bits}")
            if self.exp_bits is None:
                object.__setattr__(self, "exp_bits", DEFAULT_FP_EXP_BITS[self.bits])
            if not 1 <= self.exp_bits <= self.bits - 1:
                raise ValueError(
                    f"FP{self.bits} needs between 1 and {self.bits - 1} exponent bits, got {self.exp_bits}"
                )
        elif self.format == "nvfp":
            if self.bits != 4 or self.exp_bits not in (None, 2):
                raise ValueError("NVFP4 is 4-bit E2M1: use bits 4 (or --format fp/mxfp for other widths)")
            object.__setattr__(self, "exp_bits", 2)
        elif self.format == "mxfp":
            if self.bits not in DEFAULT_MX_EXP_BITS:
                raise ValueError(f"MXFP takes 4, 6 or 8 bits, got {self.bits}")
            if self.exp_bits is None:
                object.__setattr__(self, "exp_bits", DEFAULT_MX_EXP_BITS[self.bits])
            allowed = {4: (2,), 6: (2, 3), 8: (4, 5)}[self.bits]
            if self.exp_bits not in allowed:
                raise ValueError(f"MXFP{self.bits} elements take exponent bits {allowed}, got {self.exp_bits}")
        if self.format in BLOCK_GROUP_SIZE:
            block = BLOCK_GROUP_SIZE[self.format]
            if self.granularity == "tensor" or self.group_size not in (None, block):
                raise ValueError(
                    f"{self.format.upper()} scales groups of {block} elements: use group size {block}"
                )
            object.__setattr__(self, "granularity", "group")
            object.__setattr__(self, "group_size", block)
        if not self.symmetric and self.format != "int":
            raise ValueError("asymmetric (zero-point) quantization is only defined for int formats")
        if self.static_tensor_scale and self.format != "nvfp":
            raise ValueError(f"a static tensor scale is NVFP4's second-level scale: use --format nvfp, or drop "
                             f"--a_static_tensor_scale for {self.format}")
        if self.granularity == "group":
            if self.group_size is None or self.group_size < 1:
                raise ValueError(f"group granularity needs a positive group size, got {self.group_size}")
        elif self.granularity != "head" and self.group_size is not None:
            raise ValueError(f"group size {self.group_size} given with {self.granularity} granularity")

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``int4-g128``, ``e2m1-ch``, ``nvfp4``, ``int4-head-asym``."""
        if self.format in ("nvfp", "mxfp"):
            core = f"{self.format}{self.bits}"
            if self.format == "mxfp" and self.bits != 4:
                core += f"-e{self.exp_bits}m{self.bits - 1 - self.exp_bits}"
            return core + ("-static" if self.static_tensor_scale else "")
        core = f"int{self.bits}" if self.format == "int" else f"e{self.exp_bits}m{self.bits - 1 - self.exp_bits}"
        gran = {"tensor": "t", "channel": "ch", "token": "tok", "head": "head"}.get(
            self.granularity, f"g{self.group_size}"
        )
        out = f"{core}-{gran}"
        if not self.symmetric:
            out += "-asym"
        if self.observer != "minmax":
            out += f"-{self.observer}"
        if self.clip_ratio != 1.0:
            out += f"-clip{self.clip_ratio:g}"
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def element_format(self) -> NumberFormat:
        if self.format == "int":
            return IntFormat(self.bits, signed=self.symmetric)
        if self.format == "nvfp":
            return E2M1
        return fp_format(self.exp_bits, self.bits - 1 - self.exp_bits)

    def group_length(self, last_dim: int, head_dim: int | None = None) -> int:
        """Elements per scale along the last dimension (0 = the whole tensor)."""
        if self.granularity == "tensor":
            return 0
        if self.granularity in ("channel", "token"):
            return last_dim
        size = head_dim if self.granularity == "head" and self.group_size is None else self.group_size
        if size is None:
            raise ValueError("per-head quantization needs the head dimension")
        return size

    def check_dimension(self, last_dim: int, what: str, head_dim: int | None = None) -> None:
        """Raise if the groups do not tile ``last_dim`` (called before any heavy work)."""
        g = self.group_length(last_dim, head_dim)
        if g and last_dim % g:
            raise ValueError(
                f"group size {g} does not divide the {what} dimension {last_dim}: "
                f"choose a divisor of {last_dim}"
            )


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Fitted quantization parameters, one per scale group (shaped ``(..., 1)``).

    ``scale`` is the dequantization scale in the spec's own encoding (E8M0 powers of two
    for MXFP, E4M3 block scale times the fp32 tensor scale for NVFP4, plain float
    otherwise); ``zero`` is the integer zero point of asymmetric INT, ``None`` when
    symmetric; ``tensor_scale`` is NVFP4's fp32 tensor scale (what an exporter needs to
    split ``scale`` back into its E4M3 part). They broadcast against the values they quantize: a grouped tensor
    ``(groups, g)``, or one column ``(rows, 1)`` as GPTQ quantizes it.
    """

    scale: torch.Tensor
    zero: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None  # NVFP4's fp32 second-level scale (a scalar, or one per row)


def true_divide(t: torch.Tensor, value: float) -> torch.Tensor:
    """``t / value`` correctly rounded in t's dtype on every device, compiled or not.

    CUDA turns a division by a Python number into a multiplication by its rounded
    reciprocal, and so does ``torch.compile`` on a GPU for any divisor it can fold to a
    constant, a 0-d tensor made of one included. In t's own precision that can be an ulp
    off the division (and off the Triton kernels, which divide exactly): scales would
    differ by an ulp between CPU, GPU and compiled code, and values on a rounding tie would
    round differently (``benchmarks/results/end_to_end_h200.md``, run 7). So the quotient
    is taken in float64, by division or by reciprocal alike, and rounded once to t's dtype.
    That is the correctly rounded quotient for every divisor whose odd part has at most 24
    bits (the element maxima: 7, 6, 15, 2688, ...): unless ``value`` is a power of two
    (then any method is exact), no float32 or narrower t over it lies on a rounding
    midpoint of t's dtype, and none lies within float64's few ulps of one.
    """
    return (t.double() / value).to(t.dtype)


def nvfp_tensor_scale(tensor_amax: torch.Tensor) -> torch.Tensor:
    """NVFP4's fp32 tensor scale: it puts the largest block scale at E4M3's max (448)."""
    return true_divide(tensor_amax, E4M3.max_value * E2M1.max_value).clamp(min=1e-30)


class Quantizer:
    """Fake quantization (quantize then dequantize) for one ``QuantSpec``.

    Two steps, usable apart: ``fit`` picks the scales of grouped rows (observer, clip
    ratio, scale encoding), ``quantize_with`` maps values onto the grid with given scales.
    ``fake_quantize`` is the two in a row; GPTQ fits a group once and then quantizes its
    columns one at a time.
    """

    def __init__(self, spec: QuantSpec, head_dim: int | None = None) -> None:
        self.spec = spec
        self.element = spec.element_format()
        self.head_dim = head_dim

    def __repr__(self) -> str:
        return f"Quantizer({self.spec.label})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fake_quantize(x)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """x as float32 rows, one row per scale group."""
        g = self.spec.group_length(x.shape[-1], self.head_dim)
        self.spec.check_dimension(x.shape[-1], "last", self.head_dim)
        xf = x.float()
        return xf.reshape(1, -1) if g == 0 else xf.reshape(-1, g)

    def fake_quantize(self, x: torch.Tensor, tensor_amax: torch.Tensor | None = None) -> torch.Tensor:
        """``fit`` then ``quantize_with``; ``tensor_amax`` as ``fit`` takes it."""
        xg = self.grouped(x)
        return self.quantize_with(xg, self.fit(xg, tensor_amax)).reshape(x.shape).to(x.dtype)

    def fit(self, xg: torch.Tensor, tensor_amax: torch.Tensor | None = None) -> QuantParams:
        """Scales (and zero points) for grouped rows ``xg``: one per row, along the last dim.

        ``tensor_amax`` is the absolute maximum of the whole tensor the rows belong to,
        which sets NVFP4's fp32 tensor scale; by default the maximum of ``xg`` itself.
        """
        if self.spec.symmetric:
            amax = xg.abs().amax(dim=-1, keepdim=True)
            if tensor_amax is None:
                tensor_amax = xg.abs().amax()
            if self.spec.observer == "mse":
                ratio = mse_shrink_search(
                    xg, lambda r: self.quantize_with(xg, self._symmetric_params(amax * r, tensor_amax))
                )
                amax = amax * ratio
            return self._symmetric_params(amax * self.spec.clip_ratio, tensor_amax)
        lo = xg.amin(dim=-1, keepdim=True).clamp(max=0)
        hi = xg.amax(dim=-1, keepdim=True).clamp(min=0)
        if self.spec.observer == "mse":
            ratio = mse_shrink_search(xg, lambda r: self.quantize_with(xg, self._asymmetric_params(lo * r, hi * r)))
            lo, hi = lo * ratio, hi * ratio
        return self._asymmetric_params(lo * self.spec.clip_ratio, hi * self.spec.clip_ratio)

    def quantize_with(self, x: torch.Tensor, params: QuantParams) -> torch.Tensor:
        """Fake-quantize ``x`` onto the grid with fixed ``params`` (elementwise, broadcasting)."""
        return self.dequantize(self.levels(x, params), params)

    def levels(self, x: torch.Tensor, params: QuantParams) -> torch.Tensor:
        """The grid values ``x`` rounds to (what a real-quantized tensor stores as codes).

        Symmetric: ``element.round(x / scale)``; asymmetric INT: the unsigned level
        ``round(x / scale) + zero``, clamped.
        """
        scale = params.scale
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        if params.zero is None:
            return self.element.round(x / safe)
        fmt = self.element
        return torch.clamp(torch.round(x / safe) + params.zero, fmt.min_level, fmt.max_level)

    @staticmethod
    def dequantize(levels: torch.Tensor, params: QuantParams) -> torch.Tensor:
        """Values of ``levels`` under ``params``: ``(levels - zero) * scale``."""
        return levels * params.scale if params.zero is None else (levels - params.zero) * params.scale

    def scales(self, amax: torch.Tensor, tensor_amax: torch.Tensor) -> torch.Tensor:
        """Dequantization scale per group, in the spec's own scale encoding."""
        if self.spec.format == "mxfp":
            return e8m0_scale(amax, self.element)
        if self.spec.format == "nvfp":
            global_scale = nvfp_tensor_scale(tensor_amax)
            return e4m3_scale(true_divide(amax, E2M1.max_value) / global_scale) * global_scale
        return true_divide(amax, self.element.max_value)

    def _symmetric_params(self, amax: torch.Tensor, tensor_amax: torch.Tensor) -> QuantParams:
        tensor_scale = nvfp_tensor_scale(tensor_amax) if self.spec.format == "nvfp" else None
        return QuantParams(self.scales(amax, tensor_amax), tensor_scale=tensor_scale)

    def _asymmetric_params(self, lo: torch.Tensor, hi: torch.Tensor) -> QuantParams:
        scale = true_divide(hi - lo, self.element.max_level)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return QuantParams(scale, torch.round(-lo / safe))


class StaticTensorScale(torch.nn.Module):
    """An NVFP4 activation quantizer whose tensor scale comes from a calibrated absmax (``QuantSpec``'s
    ``static_tensor_scale``) instead of each input's own; the block scales stay dynamic. Values above the
    calibrated range saturate: their block scale at E4M3's 448 times the tensor scale, their elements at E2M1's 6.
    A module, so that the absmax (a buffer) follows ``.to(device)``."""

    def __init__(self, quantizer: Quantizer, tensor_amax: torch.Tensor) -> None:
        super().__init__()
        if not quantizer.spec.static_tensor_scale:
            raise ValueError(f"{quantizer.spec.label} takes each input's own tensor scale, not a calibrated one")
        self.quantizer = quantizer
        self.register_buffer("tensor_amax", tensor_amax.detach().float().reshape(()).clone())

    @property
    def spec(self) -> QuantSpec:
        return self.quantizer.spec

    def extra_repr(self) -> str:
        return f"{self.spec.label}, tensor_amax={self.tensor_amax.item():.4g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.fake_quantize(x, self.tensor_amax)
