"""Calibration: data and the algorithms that set quantized weights."""

from .data import calibration_windows
from .rtn import quantize_weights_rtn

__all__ = ["calibration_windows", "quantize_weights_rtn"]
