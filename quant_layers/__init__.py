"""Number formats, quantizers and fake-quantized modules."""

from .formats import E2M1, E4M3, FPFormat, IntFormat, NumberFormat, fp_format
from .kv_cache import install_attention_wrapper, install_kv_quantization
from .linear import QuantLinear, ensure_quant_linear
from .quantizer import FORMATS, GRANULARITIES, QuantSpec, Quantizer, StaticTensorScale

__all__ = [
    "E2M1",
    "E4M3",
    "FORMATS",
    "FPFormat",
    "GRANULARITIES",
    "IntFormat",
    "NumberFormat",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "StaticTensorScale",
    "ensure_quant_linear",
    "fp_format",
    "install_attention_wrapper",
    "install_kv_quantization",
]
