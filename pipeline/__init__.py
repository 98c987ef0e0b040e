"""The pipeline shared by ``main.py`` and ``model_quant.py``."""

from .fake_quant import attach_quantizers
from .results import RunResult
from .run import run

__all__ = ["RunResult", "attach_quantizers", "run"]
