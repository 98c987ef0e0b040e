"""Number formats: the grids that quantized values live on.

A format knows its grid, its largest magnitude and how to round a tensor onto the grid
(round to nearest, ties to even, saturating at the largest magnitude). Scales are not a
format's business: a quantizer divides by a scale, rounds with the format and multiplies
back. Every user of a grid (RTN, GPTQ, searches, exporters, kernel reference twins) goes
through these classes, so adding FP5 E2M2 or an MX element type is one line here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


class NumberFormat(ABC):
    """A finite set of representable values."""

    bits: int

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name, e.g. ``int4`` or ``e2m1``."""

    @property
    @abstractmethod
    def max_value(self) -> float:
        """Largest magnitude a scale maps the observed maximum onto."""

    @abstractmethod
    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest grid value (ties to even), saturating; computed in x's float dtype."""

    @abstractmethod
    def grid(self) -> torch.Tensor:
        """Every representable value, sorted, float64."""


@dataclass(frozen=True)
class IntFormat(NumberFormat):
    """Two's-complement (signed) or unsigned b-bit integers.

    Signed levels are [-2^(b-1), 2^(b-1)-1]; symmetric quantization maps the absolute
    maximum onto ``max_value`` = 2^(b-1)-1, so the most negative level is only reached by
    clipping. Unsigned levels [0, 2^b-1] serve asymmetric quantization with a zero point.
    """

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ValueError(f"INT formats take 2 to 16 bits, got {self.bits}")

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def min_level(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def max_level(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def max_value(self) -> float:
        return float(self.max_level)

    def round(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x).clamp_(self.min_level, self.max_level)

    def grid(self) -> torch.Tensor:
        return torch.arange(self.min_level, self.max_level + 1, dtype=torch.float64)


# How the top exponent field is used: "finite" spends every code on a finite value (the
# sub-8-bit OCP/MX element types); "fn" reserves only S.1111.111 for NaN (OCP E4M3,
# torch.float8_e4m3fn); "ieee" reserves the whole top exponent for inf/NaN (E5M2).
SPECIAL_VALUE_MODES = ("finite", "fn", "ieee")


@dataclass(frozen=True)
class FPFormat(NumberFormat):
    """Sign + ``exp_bits`` exponent + ``man_bits`` mantissa, with subnormals.

    ``bias`` defaults to 2^(E-1)-1. It may be any real number: LLM-FP4 searches a real
    valued bias, which scales the whole grid by a power of two relative to the default.
    """

    exp_bits: int
    man_bits: int
    bias: float | None = None
    special: str = "finite"

    def __post_init__(self) -> None:
        if self.exp_bits < 1 or self.man_bits < 0 or 1 + self.exp_bits + self.man_bits > 8:
            raise ValueError(
                f"FP formats need exponent bits >= 1, mantissa bits >= 0 and 1+E+M <= 8 "
                f"bits, got E{self.exp_bits}M{self.man_bits}"
            )
        if self.special not in SPECIAL_VALUE_MODES:
            raise ValueError(f"special must be one of {SPECIAL_VALUE_MODES}, got {self.special!r}")
        if self.special == "fn" and self.man_bits == 0:
            raise ValueError("the 'fn' convention needs at least one mantissa bit")

    @property
    def bits(self) -> int:  # type: ignore[override]
        return 1 + self.exp_bits + self.man_bits

    @property
    def default_bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def effective_bias(self) -> float:
        return float(self.default_bias if self.bias is None else self.bias)

    @property
    def name(self) -> str:
        suffix = "" if self.bias is None else f"b{self.bias:g}"
        return f"e{self.exp_bits}m{self.man_bits}{suffix}"

    @property
    def _max_exp_field(self) -> int:
        top = 2**self.exp_bits - 1
        return top - 1 if self.special == "ieee" else top

    @property
    def _max_mantissa(self) -> int:
        full = 2**self.man_bits - 1
        return full - 1 if self.special == "fn" else full

    @property
    def _default_max_value(self) -> float:
        """Largest value with the default (integer) bias."""
        exp = self._max_exp_field - self.default_bias
        return 2.0**exp * (1 + self._max_mantissa / 2**self.man_bits)

    @property
    def _shift(self) -> float:
        """Grid scale of this bias relative to the default bias: 2^(default - bias)."""
        return 2.0 ** (self.default_bias - self.effective_bias)

    @property
    def max_value(self) -> float:
        return self._default_max_value * self._shift

    @classmethod
    def with_max_value(cls, exp_bits: int, man_bits: int, max_value: float) -> "FPFormat":
        """The format whose (real-valued) bias puts the largest value at ``max_value``."""
        base = cls(exp_bits, man_bits)
        bias = base.default_bias + math.log2(base._default_max_value / max_value)
        return cls(exp_bits, man_bits, bias=bias)

    def round(self, x: torch.Tensor) -> torch.Tensor:
        shift = self._shift
        a = x.abs() / shift if shift != 1.0 else x.abs()
        # frexp gives a = m * 2^e with m in [0.5, 1): floor(log2 a) = e - 1, exactly.
        _, e = torch.frexp(a)
        min_normal_exp = 1 - self.default_bias
        exponent = torch.clamp(e - 1, min=min_normal_exp)
        step = torch.exp2((exponent - self.man_bits).to(a.dtype))
        q = torch.round(a / step) * step
        q = torch.clamp(q, max=self._default_max_value)
        if shift != 1.0:
            q = q * shift
        return torch.copysign(q, x)

    def grid(self) -> torch.Tensor:
        values = {0.0}
        for e in range(self._max_exp_field + 1):
            last_mantissa = self._max_mantissa if e == self._max_exp_field else 2**self.man_bits - 1
            for m in range(last_mantissa + 1):
                if e == 0:
                    v = 2.0 ** (1 - self.default_bias) * m / 2**self.man_bits
                else:
                    v = 2.0 ** (e - self.default_bias) * (1 + m / 2**self.man_bits)
                values.add(v * self._shift)
                values.add(-v * self._shift)
        return torch.tensor(sorted(values), dtype=torch.float64)


def fp_format(exp_bits: int, man_bits: int) -> FPFormat:
    """The standard format for an ExMy split: OCP conventions for FP8, all-finite below."""
    if (exp_bits, man_bits) == (4, 3):
        return FPFormat(4, 3, special="fn")
    if (exp_bits, man_bits) == (5, 2):
        return FPFormat(5, 2, special="ieee")
    return FPFormat(exp_bits, man_bits)


E2M1 = fp_format(2, 1)
E4M3 = fp_format(4, 3)
# The tensor dtypes NVFP4's E4M3 and MXFP4's E8M0 scales are stored and held in (E8M0: biased exponent bytes).
ENCODED_SCALE_DTYPES = {"e4m3": torch.float8_e4m3fn, "e8m0": torch.uint8}

# Default exponent bits of an FP element type, by total bits (FP6-LLM uses E3M2).
DEFAULT_FP_EXP_BITS = {3: 1, 4: 2, 5: 2, 6: 3, 7: 3, 8: 4}
# MX element types (OCP MX v1.0): MXFP6 defaults to E2M3, MXFP8 to E4M3.
DEFAULT_MX_EXP_BITS = {4: 2, 6: 2, 8: 4}


def e8m0_scale(amax: torch.Tensor, element: FPFormat) -> torch.Tensor:
    """MX shared scale: 2^(floor(log2 amax) - emax(element)), clamped to E8M0's range.

    The floor (not round) follows the OCP MX spec, so elements may land above the
    element's max value and saturate.
    """
    _, e = torch.frexp(amax)
    emax_element = math.floor(math.log2(element.max_value))
    exponent = torch.clamp(e - 1 - emax_element, -127, 127)
    return torch.exp2(exponent.to(torch.float32))


def e4m3_scale(scale: torch.Tensor) -> torch.Tensor:
    """NVFP4 block scale: the scale rounded onto FP8 E4M3 (saturating at 448)."""
    return E4M3.round(scale)
