"""Element codes and their packing along the last dimension.

A code is the bit pattern of one element, as it sits in a real-quantized tensor:

- INT4 (signed, symmetric): two's complement, levels -8..7 -> codes 8..15, 0..7; INT8
  likewise, levels -128..127 -> one byte each.
- UINT4 (asymmetric INT4, with a zero point): the level 0..15 itself.
- FP ExMy of 3 to 8 bits with the default bias and every code finite (FP4 E2M1 / E3M0,
  FP5 E2M2 / E3M1, FP6 E3M2 / E2M3, ...): the format's own bit pattern, the sign at bit
  E+M, then the E exponent bits, then the M mantissa bits. For E2M1 (OCP layout) bits
  0-2 index the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.

4-bit codes pack two per byte (``pack``): element ``2i`` in the low nibble and ``2i + 1``
in the high nibble of byte ``i``. 5- and 6-bit codes are split into bit planes, as
FP6-LLM stores FP6 weights, so that a kernel reads whole, aligned bytes and storage is
exactly n bits per element (``pack_planes``): a 4-bit plane holding bits 0-3 of every
code (packed as ``pack`` does), then bit 4 eight codes per byte (5 bits, element ``8i + j``
in bit ``j`` of byte ``i``) or bits 4-5 four codes per byte (6 bits, element ``4i + j``
in bits ``2j``, ``2j + 1`` of byte ``i``). 8-bit codes are one plane, one code per byte.

Values must already lie on the grid (quantize first): encoding a value that is not on
it is an error, not a rounding.
"""

from __future__ import annotations

import torch

from .formats import FPFormat, IntFormat, NumberFormat, fp_format

INT4 = IntFormat(4)
INT8 = IntFormat(8)
UINT4 = IntFormat(4, signed=False)
SIGNED_INTS = (INT4, INT8)  # two's complement codes
CODE_BITS = range(3, 9)  # FP elements with codes: 3 to 8 bits
# Bits of a code held by each plane, by code width: the low 4 bits first.
PLANE_BITS = {4: (4,), 5: (4, 1), 6: (4, 2), 8: (8,)}


def _has_fp_codes(element: NumberFormat) -> bool:
    return (isinstance(element, FPFormat) and element.bias is None and element.special == "finite"
            and element.bits in CODE_BITS)


def code_values(element: NumberFormat) -> torch.Tensor:
    """The value of each of the 2^bits codes, float32, indexed by code (code 2^(bits-1) is -0.0)."""
    if element in SIGNED_INTS:
        codes = torch.arange(2**element.bits)
        return torch.where(codes < 2 ** (element.bits - 1), codes, codes - 2**element.bits).float()
    if element == UINT4:  # asymmetric INT4: the code is the level
        return torch.arange(16).float()
    if not _has_fp_codes(element):
        raise ValueError(f"codes exist for int4, int8 and for FP elements of 3 to 8 bits with the default bias and no "
                         f"NaN/inf codes (e2m1, e3m2, e2m3, ...), not {element.name}")
    man_bits = element.man_bits
    codes = torch.arange(2**element.bits)
    exponent = (codes >> man_bits) & (2**element.exp_bits - 1)
    mantissa = codes & (2**man_bits - 1)
    significand = torch.where(exponent > 0, mantissa + 2**man_bits, mantissa)  # implicit leading 1 when normal
    power = exponent.clamp(min=1) - element.default_bias - man_bits
    magnitude = significand.double() * torch.exp2(power.double())
    return torch.where(codes >> (element.bits - 1) == 1, -magnitude, magnitude).float()


def encode(values: torch.Tensor, element: NumberFormat, check: bool = True,
           table: torch.Tensor | None = None) -> torch.Tensor:
    """Codes (uint8, 0..2^bits-1) of values that lie on ``element``'s grid (any float dtype).

    ``check=False`` skips the test that they do, a host sync that a CUDA-graph capture or
    ``torch.compile`` cannot take: for values on the grid by construction (a quantizer's levels).
    ``table``: ``code_values(element)`` already on the values' device (as for ``decode``).
    """
    v = values.float()
    if element in SIGNED_INTS:
        low, high = element.min_level, element.max_level
        if check and (not torch.equal(v, v.round()) or v.min() < low or v.max() > high):
            raise ValueError(f"{element.name} encoding takes integers in [{low}, {high}]: quantize the tensor first")
        return (v.to(torch.int16) & (2**element.bits - 1)).to(torch.uint8)
    if element == UINT4:
        if check and (not torch.equal(v, v.round()) or v.min() < 0 or v.max() > 15):
            raise ValueError("uint4 encoding takes integers in [0, 15]: quantize the tensor first")
        return v.to(torch.uint8)
    half = 2 ** (element.bits - 1)
    magnitudes = (code_values(element).to(v.device) if table is None else table)[:half]  # increasing with the code
    magnitude = v.abs()
    index = torch.bucketize(magnitude, magnitudes).clamp(max=half - 1)
    if check and not torch.equal(magnitudes[index], magnitude):
        raise ValueError(f"{element.name} encoding takes values on its grid {magnitudes.tolist()} (times a sign): "
                         f"quantize the tensor first")
    sign = torch.signbit(v) & (magnitude > 0)
    return (index | (sign.to(torch.int64) << (element.bits - 1))).to(torch.uint8)


def decode(codes: torch.Tensor, element: NumberFormat, table: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 values of uint8 codes.

    ``table``: ``code_values(element)`` kept on the codes' device by a caller that decodes
    often, sparing the host-to-device copy of the table (which a CUDA-graph capture cannot take).
    """
    table = code_values(element).to(codes.device) if table is None else table
    return table[codes.long()]


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dimension (which must be even)."""
    if codes.shape[-1] % 2:
        raise ValueError(f"packing two 4-bit codes per byte needs an even last dimension, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """Codes from packed bytes: the last dimension doubles."""
    low = packed & 0xF
    high = packed >> 4
    return torch.stack([low, high], dim=-1).flatten(-2)


def plane_bits(bits: int) -> tuple[int, ...]:
    """Bits per code held by each plane of ``bits``-bit codes (4, 5, 6 or 8)."""
    if bits not in PLANE_BITS:
        raise ValueError(f"bit planes hold 4-, 5-, 6- or 8-bit codes, got bits={bits}")
    return PLANE_BITS[bits]


def plane_multiple(bits: int) -> int:
    """What the packed length must be a multiple of: every plane holds whole bytes."""
    return 8 // min(plane_bits(bits))


def _pack_fields(fields: torch.Tensor, width: int) -> torch.Tensor:
    """``width``-bit fields, 8 // width per byte, element ``j`` of a byte at bit ``j * width``."""
    per_byte = 8 // width
    grouped = fields.reshape(*fields.shape[:-1], -1, per_byte).to(torch.int32)
    shifts = torch.arange(per_byte, device=fields.device, dtype=torch.int32) * width
    return (grouped << shifts).sum(dim=-1).to(torch.uint8)


def _unpack_fields(plane: torch.Tensor, width: int) -> torch.Tensor:
    per_byte = 8 // width
    shifts = torch.arange(per_byte, device=plane.device, dtype=torch.uint8) * width
    return ((plane.unsqueeze(-1) >> shifts) & (2**width - 1)).flatten(-2)


def pack_planes(codes: torch.Tensor, bits: int) -> tuple[torch.Tensor, ...]:
    """uint8 bit planes of ``bits``-bit codes along the last dimension (see the module docstring).

    4 bits gives one plane, equal to ``pack(codes)``; 5 and 6 bits give two; 8 bits one, the codes.
    """
    widths, multiple = plane_bits(bits), plane_multiple(bits)
    length = codes.shape[-1]
    if length % multiple:
        raise ValueError(f"packing {bits}-bit codes in bit planes needs a last dimension that is a multiple of "
                         f"{multiple}, got {length}")
    c = codes.to(torch.int32)
    if c.numel() and (c.min() < 0 or c.max() >= 2**bits):
        raise ValueError(f"{bits}-bit codes lie in [0, {2**bits - 1}], got values in [{c.min()}, {c.max()}]")
    planes, shift = [], 0
    for width in widths:
        planes.append(_pack_fields((c >> shift) & (2**width - 1), width))
        shift += width
    return tuple(planes)


def unpack_planes(planes: tuple[torch.Tensor, ...] | list[torch.Tensor], bits: int, length: int) -> torch.Tensor:
    """uint8 codes (..., length) from the planes ``pack_planes`` made."""
    widths, multiple = plane_bits(bits), plane_multiple(bits)
    if length % multiple:
        raise ValueError(f"{bits}-bit bit planes hold a length that is a multiple of {multiple}, got {length}")
    if len(planes) != len(widths):
        raise ValueError(f"{bits}-bit codes have {len(widths)} plane(s), got {len(planes)}")
    codes, shift = None, 0
    for plane, width in zip(planes, widths):
        expected = length * width // 8
        if plane.dtype != torch.uint8 or plane.shape[-1] != expected or plane.shape[:-1] != planes[0].shape[:-1]:
            raise ValueError(f"the {width}-bit plane of {length} {bits}-bit codes is uint8 with last dimension "
                             f"{expected} (leading dimensions as the first plane's), got {plane.dtype} with shape "
                             f"{tuple(plane.shape)}")
        part = _unpack_fields(plane, width) << shift
        codes = part if codes is None else codes | part
        shift += width
    return codes


def _element_names() -> dict[str, NumberFormat]:
    """int4, int8 and every FP ExMy with codes, e.g. e2m1, e3m2, e2m3 (not OCP FP8 E4M3 / E5M2: they have NaN codes)."""
    names: dict[str, NumberFormat] = {"int4": INT4, "int8": INT8}
    for bits in CODE_BITS:
        for exp_bits in range(1, bits):
            fmt = fp_format(exp_bits, bits - 1 - exp_bits)
            if _has_fp_codes(fmt):
                names[fmt.name] = fmt
    return names


ELEMENT_OF = _element_names()


def element_named(name: str) -> NumberFormat:
    """The element format a checkpoint or kernel names (``int4``, ``e2m1``, ``e3m2``, ...)."""
    if name not in ELEMENT_OF:
        raise ValueError(f"unknown element {name!r}: choose one of {', '.join(ELEMENT_OF)}")
    return ELEMENT_OF[name]
