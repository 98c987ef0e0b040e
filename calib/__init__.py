"""Calibration: data, the layer-by-layer runner and the algorithms that set quantized weights."""

from .data import calibration_windows
from .gptq import GPTQConfig, GPTQStats, HessianAccumulator, gptq_quantize
from .layerwise import CalibrationReport, LayerwiseConfig, calibrate_layerwise
from .rtn import quantize_linear_rtn, quantize_weights_rtn

__all__ = [
    "CalibrationReport",
    "GPTQConfig",
    "GPTQStats",
    "HessianAccumulator",
    "LayerwiseConfig",
    "calibrate_layerwise",
    "calibration_windows",
    "gptq_quantize",
    "quantize_linear_rtn",
    "quantize_weights_rtn",
]
