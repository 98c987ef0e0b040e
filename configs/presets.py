"""Named recipe presets.

LLM-FP4-style configs (``--quant_config`` in ``main.py``) fix granularities and
observers; ``--qbits W A KV [Wexp Aexp KVexp]`` fills in widths and exponent splits
(no exponent bits, or 0, means INT). 16 bits leaves a tensor in full precision.

* ``RTN_config_llama``: per-channel min-max weights, dynamic per-token activations and
  per-head K/V; no calibration.
* ``FPQ_config_llama`` (LLM-FP4): per-channel weights and static per-tensor activations
  and K/V, scales searched on calibration data, activations pre-shifted per channel.
* ``FPQ_baseline_config_llama``: the same search without the pre-shift.
* ``MinMax_config_llama``: the same static granularities with min-max scales from the
  calibration set (no search).
"""

from __future__ import annotations

from typing import Callable

from calib.fpq_search import FPQConfig
from quant_layers import QuantSpec

from .recipe import QuantRecipe

# Per-tensor width overrides of the search configs, in the spirit of LLM-FP4's per-module
# bit dicts: an fnmatch pattern over the quantized tensor's name -> (bits, exp_bits), with
# exp_bits 0 = INT and bits 16 = full precision; later entries win. Names:
#   layers.<i>.self_attn.q_proj.weight / .input   (any linear: q/k/v/o_proj, mlp.gate/up/down_proj)
#   layers.<i>.self_attn.key / .value             (the KV cache)
# e.g. {"layers.*.mlp.down_proj.*": (8, 4), "layers.0.*": (8, 4)} keeps down_proj and the
# first block in FP8 E4M3. The overrides are part of the recipe (saved, and checked by --only_eval).
MODULE_BITS: dict[str, dict[str, tuple[int, int]]] = {
    "FPQ_config_llama": {},
    "FPQ_baseline_config_llama": {},
    "MinMax_config_llama": {},
}


def _spec(bits: int, exp_bits: int, **kwargs) -> QuantSpec | None:
    if bits >= 16:
        return None
    if exp_bits:
        return QuantSpec("fp", bits, exp_bits=exp_bits, **kwargs)
    return QuantSpec("int", bits, **kwargs)


def _specs(w: int, a: int, kv: int, w_exp: int, a_exp: int, kv_exp: int, activations: str, kv_cache: str) -> dict:
    """Per-channel weights; activations and K/V at the given granularities."""
    return dict(
        weight=_spec(w, w_exp, granularity="channel"),
        activation=_spec(a, a_exp, granularity=activations),
        key=_spec(kv, kv_exp, granularity=kv_cache),
        value=_spec(kv, kv_exp, granularity=kv_cache),
    )


def rtn_config_llama(w: int, a: int, kv: int, w_exp: int = 0, a_exp: int = 0, kv_exp: int = 0) -> QuantRecipe:
    """RTN: per-channel min-max weights, dynamic per-token activations, per-head K/V."""
    return QuantRecipe(**_specs(w, a, kv, w_exp, a_exp, kv_exp, "token", "head"), method="rtn")


def _search_recipe(name: str, search: bool, preshift: bool, w: int, a: int, kv: int, w_exp: int, a_exp: int,
                   kv_exp: int) -> QuantRecipe:
    module_bits = tuple((pattern, bits, exp_bits) for pattern, (bits, exp_bits) in MODULE_BITS[name].items())
    return QuantRecipe(**_specs(w, a, kv, w_exp, a_exp, kv_exp, "tensor", "tensor"), method="fpq",
                       fpq=FPQConfig(search=search, preshift=preshift, module_bits=module_bits))


def fpq_config_llama(w: int, a: int, kv: int, w_exp: int = 0, a_exp: int = 0, kv_exp: int = 0) -> QuantRecipe:
    """LLM-FP4: searched exponent biases (scales) and pre-shifted per-channel activation biases."""
    return _search_recipe("FPQ_config_llama", True, True, w, a, kv, w_exp, a_exp, kv_exp)


def fpq_baseline_config_llama(w: int, a: int, kv: int, w_exp: int = 0, a_exp: int = 0, kv_exp: int = 0) -> QuantRecipe:
    """LLM-FP4's baseline: searched exponent biases, per-tensor activations without pre-shift."""
    return _search_recipe("FPQ_baseline_config_llama", True, False, w, a, kv, w_exp, a_exp, kv_exp)


def minmax_config_llama(w: int, a: int, kv: int, w_exp: int = 0, a_exp: int = 0, kv_exp: int = 0) -> QuantRecipe:
    """Static min-max: per-channel weights, per-tensor activations and K/V, from the calibration set."""
    return _search_recipe("MinMax_config_llama", False, False, w, a, kv, w_exp, a_exp, kv_exp)


QBITS_CONFIGS: dict[str, Callable[..., QuantRecipe]] = {
    "RTN_config_llama": rtn_config_llama,
    "FPQ_config_llama": fpq_config_llama,
    "FPQ_baseline_config_llama": fpq_baseline_config_llama,
    "MinMax_config_llama": minmax_config_llama,
}


def qbits_recipe(config_name: str, qbits: list[int]) -> QuantRecipe:
    """The recipe for ``--quant_config NAME --qbits W A KV [Wexp Aexp KVexp]``."""
    if config_name not in QBITS_CONFIGS:
        raise ValueError(f"unknown --quant_config {config_name!r}: choose one of {', '.join(QBITS_CONFIGS)}")
    if len(qbits) not in (3, 6):
        raise ValueError(f"--qbits takes 3 numbers (W A KV) or 6 (W A KV Wexp Aexp KVexp), got {len(qbits)}")
    return QBITS_CONFIGS[config_name](*qbits)
