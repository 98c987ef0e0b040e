"""Named recipe presets.

LLM-FP4-style configs (``--quant_config`` in ``main.py``) fix granularities and
observers; ``--qbits W A KV [Wexp Aexp KVexp]`` fills in widths and exponent splits
(no exponent bits, or 0, means INT). 16 bits leaves a tensor in full precision.
"""

from __future__ import annotations

from typing import Callable

from quant_layers import QuantSpec

from .recipe import QuantRecipe


def _spec(bits: int, exp_bits: int, **kwargs) -> QuantSpec | None:
    if bits >= 16:
        return None
    if exp_bits:
        return QuantSpec("fp", bits, exp_bits=exp_bits, **kwargs)
    return QuantSpec("int", bits, **kwargs)


def rtn_config_llama(w: int, a: int, kv: int, w_exp: int = 0, a_exp: int = 0, kv_exp: int = 0) -> QuantRecipe:
    """RTN: per-channel min-max weights, dynamic per-token activations, per-head K/V."""
    return QuantRecipe(
        weight=_spec(w, w_exp, granularity="channel"),
        activation=_spec(a, a_exp, granularity="token"),
        key=_spec(kv, kv_exp, granularity="head"),
        value=_spec(kv, kv_exp, granularity="head"),
        method="rtn",
    )


QBITS_CONFIGS: dict[str, Callable[..., QuantRecipe]] = {
    "RTN_config_llama": rtn_config_llama,
}


def qbits_recipe(config_name: str, qbits: list[int]) -> QuantRecipe:
    """The recipe for ``--quant_config NAME --qbits W A KV [Wexp Aexp KVexp]``."""
    if config_name not in QBITS_CONFIGS:
        raise ValueError(f"unknown --quant_config {config_name!r}: choose one of {', '.join(QBITS_CONFIGS)}")
    if len(qbits) not in (3, 6):
        raise ValueError(f"--qbits takes 3 numbers (W A KV) or 6 (W A KV Wexp Aexp KVexp), got {len(qbits)}")
    return QBITS_CONFIGS[config_name](*qbits)
