"""LLM-FP4 (Liu et al., EMNLP 2023): search-based FP post-training quantization.

Written from the paper. Two ideas:

1. **Exponent-bias / max-value search.** An FP format with a real-valued exponent bias
   ``b`` is the default grid scaled by ``2^(default_bias - b)``, so choosing the bias is
   choosing the scale (``Quantizer.scales``: scale = max value / element max) and every
   rounding goes through ``Quantizer.quantize_with``; nothing here rounds on its own.
   For each decoder linear the search picks a per-output-channel weight scale and one
   static per-tensor input scale among ``γ · minmax`` for ``n`` values of ``γ`` in
   ``[γ1, γ2]`` (``--search_intervals γ1 γ2 n``), minimising the squared error of the
   layer's output on the calibration tokens against the full-precision output of the
   same input, alternating weights and inputs for ``--search_round`` rounds (weights
   first, starting from min-max input scales). Each output channel's error depends only
   on its own weight row, so one pass over the candidates picks every channel's scale.
   INT formats go through the same search (``γ · absmax`` clipping).
2. **Pre-shifted exponent bias.** Activations vary a lot between channels and little
   within one. Each input channel ``c`` gets a power-of-two factor ``2^k_c`` with
   ``k_c = floor(log2(M / m_c))`` clamped to ``[0, 2^E - 1]`` (``M`` the tensor's and
   ``m_c`` the channel's calibration absmax, ``E`` the exponent bits; ``bits - 1`` for
   INT), i.e. the largest shift that keeps the channel within the tensor's range. The
   input is multiplied by ``2^k_c`` (an exponent add: per-channel exponent biases) and the
   weight's column ``c`` by ``2^-k_c``, which is exact in floating point; the input is then
   quantized per tensor with the searched static scale, so inference keeps one scale per
   activation tensor. Without quantization the fold changes nothing (tested bit-exact).

The KV cache (K and V after RoPE, per layer) gets one static scale each. Our attention
quantizes K and V, not Q or the softmax scores, so the search minimises the error of
the attention output (softmax(Q Kᵀ) V, i.e. o_proj's input) against the output with
unquantized K and V, alternating K and V for ``search_round`` rounds; it runs after
q/k/v are calibrated and before o_proj, whose input it shapes.

**Scoring on a sample.** Ranges (min-max, pre-shift exponents) come from every
calibration token, but each candidate is scored on ``--search_tokens`` tokens (default
256 of the 32 x 2048): the quarter with the largest magnitudes plus a weighted uniform
sample of the rest (``sample_tokens``), and for K/V a quarter as many query rows of two
windows. Scoring 100 candidates x 3 rounds on every token is hours per model on a
2-core CPU; ``--search_tokens 0`` does exactly that.

Calibration runs block by block like GPTQ (the layer-by-layer runner's capture: one
block on the device at a time): each sequential group's input is collected over all
windows with earlier groups already quantized, K/V are searched before o_proj, and the
quantized block's outputs feed the next block. The parameters (per-channel weight
scales, static input scales, pre-shift exponents, K/V scales) are saved as safetensors
(never pickle) with a JSON of the recipe and model identity; ``apply_fpq_params``
re-creates the same fake-quantized model from them bit for bit.

``FPQConfig(search=False)`` is the MinMax baseline: static min-max scales from the same
calibration pass, per output channel for weights, per tensor for inputs and K/V.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

# Private helpers of the layer-by-layer runner (capture of block inputs, residency, early stop).
from calib.layerwise import BlockActivations, LayerwiseConfig, StopForward, capture_block_inputs, resident
from quant_layers import QuantLinear, QuantSpec, Quantizer, ensure_quant_linear, install_attention_wrapper
from quant_layers.formats import FPFormat
from quant_layers.quantizer import QuantParams

log = logging.getLogger(__name__)

# Quantized tensors, as module_bits patterns name them: "layers.<i>.<linear>.weight",
# "layers.<i>.<linear>.input", "layers.<i>.<attention>.key", "layers.<i>.<attention>.value".
TENSOR_KINDS = ("weight", "input", "key", "value")
DEFAULT_GRANULARITY = {"weight": "channel", "input": "tensor", "key": "tensor", "value": "tensor"}
ALLOWED_GRANULARITY = {"weight": ("channel",), "input": ("tensor",), "key": ("tensor",), "value": ("tensor",)}
PARAM_FILE_FORMAT = "ptq-harness/fpq-params"
PARAM_FILE_VERSION = 1
METADATA_KEY = "fpq"
# Elements per chunk when an output error is accumulated over calibration tokens.
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class FPQConfig:
    """LLM-FP4 search settings (one per ``main.py`` flag), serialised in the recipe."""

    search: bool = True  # False: MinMax (static min-max scales, no search)
    preshift: bool = True  # per-channel power-of-two input shifts folded into the weights
    search_round: int = 3  # --search_round: alternations of weight and input searches
    search_intervals: tuple[float, float, int] = (0.01, 1.2, 100)  # --search_intervals γ1 γ2 n
    calib_size: int = 32  # --calib_size: calibration windows
    # --search_tokens: calibration tokens on which candidates are scored (0 = every token); see sample_tokens.
    search_tokens: int = 256
    # (pattern, bits, exp_bits): tensors whose name matches get that width (exp_bits 0 = INT,
    # bits 16 = full precision); later entries win. See TENSOR_KINDS for the names.
    module_bits: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "search_intervals", tuple(self.search_intervals))
        object.__setattr__(self, "module_bits", tuple(tuple(m) for m in self.module_bits))
        if isinstance(self.search_round, bool) or not isinstance(self.search_round, int) or self.search_round < 1:
            raise ValueError(f"--search_round must be an integer of at least 1, got {self.search_round!r}")
        if len(self.search_intervals) != 3:
            raise ValueError(f"--search_intervals takes 3 numbers (γ1 γ2 n), got {list(self.search_intervals)}")
        g1, g2, n = self.search_intervals
        if not (isinstance(n, int) or (isinstance(n, float) and n.is_integer())) or n < 2:
            raise ValueError(f"--search_intervals γ1 γ2 n needs an integer n >= 2 candidates, got n = {n}")
        object.__setattr__(self, "search_intervals", (float(g1), float(g2), int(n)))
        if not (math.isfinite(g1) and math.isfinite(g2) and 0 < g1 < g2):
            raise ValueError(
                f"--search_intervals γ1 γ2 n needs 0 < γ1 < γ2 (candidate max values γ·minmax), got γ1={g1} γ2={g2}"
            )
        if isinstance(self.calib_size, bool) or not isinstance(self.calib_size, int) or self.calib_size < 1:
            raise ValueError(f"--calib_size must be at least 1, got {self.calib_size!r}")
        if isinstance(self.search_tokens, bool) or not isinstance(self.search_tokens, int) or self.search_tokens < 0:
            raise ValueError(f"--search_tokens must be 0 (every token) or a positive count, got {self.search_tokens!r}")
        for entry in self.module_bits:
            if len(entry) != 3 or not isinstance(entry[0], str):
                raise ValueError(f"module_bits entries are (pattern, bits, exp_bits), got {entry!r}")
            pattern, bits, exp_bits = entry
            try:
                for kind in TENSOR_KINDS:
                    override_spec(None, kind, bits, exp_bits)
            except ValueError as err:
                raise ValueError(f"module_bits {pattern!r}: {err}") from None

    @property
    def variant(self) -> str:
        """``fpq`` (search + pre-shift), ``fpq_baseline`` (search only) or ``minmax``."""
        if not self.search:
            return "minmax"
        return "fpq" if self.preshift else "fpq_baseline"

    @property
    def label(self) -> str:
        """For recipe labels, e.g. ``fpq-r3``, ``fpq_baseline-r1``, ``minmax``."""
        label = self.variant
        if self.search:
            label += f"-r{self.search_round}"
            if self.search_intervals != FPQConfig.search_intervals:
                g1, g2, n = self.search_intervals
                label += f"-g{g1:g}_{g2:g}_{n}"
            if self.search_tokens != FPQConfig.search_tokens:
                label += f"-t{self.search_tokens}"
        if self.module_bits:
            label += f"-mb{short_hash(self.module_bits)}"
        return label

    def gammas(self) -> list[float]:
        """The candidate factors γ (n values from γ1 to γ2, both included)."""
        g1, g2, n = self.search_intervals
        return torch.linspace(g1, g2, n, dtype=torch.float64).tolist()

    def eval_identity(self) -> dict:
        """What must match to evaluate saved parameters (search settings do not)."""
        data = asdict(self)
        for key in ("search_round", "search_intervals", "calib_size", "search_tokens"):
            data.pop(key)
        data["module_bits"] = [list(m) for m in self.module_bits]
        return data


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:6]


# ---------------------------------------------------------------------------------------
# Which spec each tensor gets, and the checks the recipe runs.


def override_spec(base: QuantSpec | None, kind: str, bits: int, exp_bits: int) -> QuantSpec | None:
    """The spec ``(bits, exp_bits)`` gives a tensor of ``kind`` (granularity of ``base``)."""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (bits, exp_bits)):
        raise ValueError(f"bits and exp_bits must be integers, got ({bits!r}, {exp_bits!r})")
    if bits >= 16:
        return None
    granularity = base.granularity if base is not None else DEFAULT_GRANULARITY[kind]
    return QuantSpec("fp" if exp_bits else "int", bits, exp_bits=exp_bits or None, granularity=granularity)


def tensor_spec(name: str, kind: str, base: QuantSpec | None, module_bits) -> QuantSpec | None:
    """``base`` unless a ``module_bits`` pattern matches ``name`` (the last match wins)."""
    spec = base
    for pattern, bits, exp_bits in module_bits:
        if fnmatch.fnmatchcase(name, pattern):
            spec = override_spec(base, kind, bits, exp_bits)
    return spec


def check_search_spec(spec: QuantSpec | None, kind: str) -> None:
    """Raise unless the search can set this spec's scales (symmetric FP/INT, static granularity)."""
    if spec is None:
        return
    what = {"input": "activation"}.get(kind, kind)
    if spec.format not in ("fp", "int") or not spec.symmetric:
        raise ValueError(
            f"the LLM-FP4 search sets symmetric FP/INT scales, but the {what} spec is {spec.label}: "
            f"use plain FP ExMy or INT bits (e.g. --qbits 4 4 4 2 2 2)"
        )
    if spec.granularity not in ALLOWED_GRANULARITY[kind]:
        raise ValueError(
            f"the LLM-FP4 search quantizes {what}s per {' or per '.join(ALLOWED_GRANULARITY[kind])} with static "
            f"scales, not per {spec.granularity}"
        )
    if spec.observer != "minmax" or spec.clip_ratio != 1.0:
        raise ValueError(f"the LLM-FP4 search chooses the {what} range itself: drop the observer / clip ratio")


def check_search_recipe(weight, activation, key, value, config: FPQConfig) -> None:
    for spec, kind in ((weight, "weight"), (activation, "input"), (key, "key"), (value, "value")):
        check_search_spec(spec, kind)
        for pattern, bits, exp_bits in config.module_bits:
            check_search_spec(override_spec(spec, kind, bits, exp_bits), kind)


def max_shift(spec: QuantSpec) -> int:
    """Largest pre-shift exponent: 2^E - 1 for FP (the exponent field's span), bits - 1 for INT."""
    return 2**spec.exp_bits - 1 if spec.format == "fp" else spec.bits - 1


def scale_to_exponent_bias(scale: float, element: FPFormat) -> float:
    """The real-valued exponent bias whose grid equals ``element``'s grid times ``scale``."""
    return element.default_bias - math.log2(scale)


# ---------------------------------------------------------------------------------------
# Static quantization at inference.


class StaticQuantizer(nn.Module):
    """Fake quantization with a fixed, calibrated scale and an optional per-channel pre-shift.

    ``x -> quantize_with(x * 2^shift, scale)`` with ``quantizer``'s element format
    (``shift`` along the last dimension, ``scale`` broadcasting, usually one per tensor).
    ``quantizer=None`` only shifts. A module, so its buffers follow ``.to(device)``.
    """

    def __init__(self, quantizer: Quantizer | None, scale: torch.Tensor | None, shift: torch.Tensor | None = None):
        super().__init__()
        self.quantizer = quantizer
        self.register_buffer("scale", None if scale is None else scale.detach().float().clone())
        self.register_buffer("shift", None if shift is None else shift.detach().to(torch.int8).clone())

    def extra_repr(self) -> str:
        spec = self.quantizer.spec.label if self.quantizer is not None else "shift only"
        scale = ""
        if self.scale is not None and self.scale.numel() == 1:
            scale = f", scale={self.scale.item():.4g}"
        return f"{spec}{scale}, preshift={self.shift is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.shift is not None:
            y = y * torch.exp2(self.shift.to(device=y.device, dtype=y.dtype))
        if self.quantizer is not None:
            y = self.quantizer.quantize_with(y, QuantParams(self.scale.to(y.device)))
        return y.to(x.dtype)


# ---------------------------------------------------------------------------------------
# The search, on one linear layer's calibration input.


def preshift_exponents(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Per-channel exponents k_c = clamp(floor(log2(M / m_c)), 0, max_shift) of an input ``x`` (tokens, in)."""
    m = x.abs().amax(dim=0).float()
    top = m.max()
    if top <= 0:
        return torch.zeros_like(m, dtype=torch.int8)
    k = torch.floor(torch.log2(top / m.clamp(min=torch.finfo(torch.float32).tiny)))
    k = torch.where(m > 0, k, torch.zeros_like(k))
    return k.clamp(0, max_shift(spec)).to(torch.int8)


def _pow2(k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.exp2(k.to(device=like.device, dtype=like.dtype))


def sample_tokens(
    x: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A stratified sample of ``count`` rows of ``x`` (tokens, features) for scoring candidates.

    Scoring every candidate scale on every calibration token costs (candidates x rounds)
    passes over all of them, which is hours per model on a CPU. The sample keeps the
    error estimate faithful where it matters: the ``count // 4`` tokens with the largest
    absolute value (where clipping errors live) are always in it, and the rest is drawn
    uniformly from the other tokens, each weighted by how many tokens it stands for, so the
    weighted squared error is an unbiased estimate of the error over all tokens.
    Returns ``(index, weight)``, or ``(None, None)`` for every token (``count`` 0 or >= tokens).
    """
    n = x.shape[0]
    if count <= 0 or count >= n:
        return None, None
    top = count // 4
    peak = x.abs().amax(dim=1).float().cpu()
    order = torch.argsort(peak, descending=True, stable=True)
    rest = order[top:]
    drawn = rest[torch.randperm(rest.numel(), generator=generator)[: count - top]]
    index = torch.cat([order[:top], drawn]).to(x.device)
    weight = torch.ones(count, dtype=torch.float64, device=x.device)
    weight[top:] = (n - top) / (count - top)
    return index, weight


@torch.no_grad()
def output_error(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
    token_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per output channel, sum over tokens of (x Wᵀ + b - target)^2 (times ``token_weight``), in float64."""
    rows = max(1, CHUNK_ELEMENTS // max(weight.shape[0], x.shape[-1]))
    total = torch.zeros(weight.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], rows):
        d = (F.linear(x[start : start + rows], weight, bias) - target[start : start + rows]).double().pow(2)
        if token_weight is not None:
            d = d * token_weight[start : start + rows, None]
        total += d.sum(dim=0)
    return total


# Quantized candidates kept across search rounds, per tensor, at most this many bytes.
CANDIDATE_CACHE_BYTES = 1 << 30


def candidate_cache(t: torch.Tensor, config: FPQConfig) -> dict | None:
    """An empty cache for ``t``'s quantized candidates, or None when they would not fit."""
    fits = t.numel() * 4 * config.search_intervals[2] <= CANDIDATE_CACHE_BYTES
    return {} if fits and config.search_round > 1 else None


def _quantized(quantizer: Quantizer, t: torch.Tensor, amax: torch.Tensor, tensor_amax: torch.Tensor):
    scale = quantizer.scales(amax, tensor_amax)
    return scale, quantizer.quantize_with(t, QuantParams(scale))


def _candidate(cache: dict | None, g: float, make):
    if cache is None:
        return make(g)
    if g not in cache:
        cache[g] = make(g)
    return cache[g]


@torch.no_grad()
def search_weight_scale(
    weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
    quantizer: Quantizer, gammas: list[float], token_weight: torch.Tensor | None = None,
    cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel, the scale among ``quantizer.scales(γ · row absmax)`` with the least output error.

    ``x`` is the (already quantized) input; returns ``(scale (out, 1), γ (out,))``. ``cache``
    keeps each candidate's quantized weight for the next round (only the input changes).
    """
    amax = weight.abs().amax(dim=1, keepdim=True)
    best_err = torch.full((weight.shape[0],), math.inf, dtype=torch.float64, device=weight.device)
    best_scale = torch.zeros_like(amax)
    best_gamma = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
    for g in gammas:
        scale, wq = _candidate(cache, g, lambda g: _quantized(quantizer, weight, amax * g, amax.max() * g))
        err = output_error(x, wq, bias, target, token_weight)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better.unsqueeze(1), scale, best_scale)
        best_gamma = torch.where(better, torch.full_like(best_gamma, g), best_gamma)
    return best_scale, best_gamma


@torch.no_grad()
def search_input_scale(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
    quantizer: Quantizer, gammas: list[float], amax: torch.Tensor | None = None,
    token_weight: torch.Tensor | None = None, cache: dict | None = None,
) -> tuple[torch.Tensor, float]:
    """The per-tensor input scale among ``quantizer.scales(γ · absmax)`` with the least output error.

    ``weight`` is the (already quantized) weight; returns ``(scale (1, 1), γ)``. ``cache``
    keeps each candidate's quantized input for the next round (only the weight changes).
    """
    amax = (x.abs().amax() if amax is None else amax).reshape(1, 1).float()
    best = (math.inf, None, None)
    for g in gammas:
        scale, xq = _candidate(cache, g, lambda g: _quantized(quantizer, x, amax * g, amax * g))
        err = output_error(xq, weight, bias, target, token_weight).sum().item()
        if err < best[0]:
            best = (err, scale, g)
    return best[1], best[2]


@dataclass
class LinearParams:
    """One linear's calibrated parameters (``None`` where that tensor is not quantized)."""

    weight_scale: torch.Tensor | None = None  # (out, 1)
    input_scale: torch.Tensor | None = None  # (1, 1)
    input_shift: torch.Tensor | None = None  # (in,) int8 exponents
    stats: dict = field(default_factory=dict)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        names = {"weight_scale": self.weight_scale, "input_scale": self.input_scale, "input_shift": self.input_shift}
        return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in names.items() if v is not None}


@torch.no_grad()
def search_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor,
    weight_quantizer: Quantizer | None, input_quantizer: Quantizer | None, config: FPQConfig,
    generator: torch.Generator | None = None,
) -> LinearParams:
    """Pre-shift, then alternate weight and input scale searches on calibration input ``x`` (tokens, in).

    Pre-shift exponents and min-max ranges come from every token; candidates are scored on
    ``config.search_tokens`` of them (``sample_tokens``). The stats' errors are over that sample.
    """
    w = weight.float()
    b = None if bias is None else bias.float()
    shift = None
    if config.preshift and input_quantizer is not None:
        shift = preshift_exponents(x, input_quantizer.spec)
        w_shifted = w * _pow2(-shift.to(torch.int16), w)
    a_amax = None
    if input_quantizer is not None:
        a_amax = x.abs().amax(dim=0).float()
        if shift is not None:
            a_amax = a_amax * _pow2(shift, a_amax)
        a_amax = a_amax.max().reshape(1, 1)
    index, token_weight = sample_tokens(x, config.search_tokens, generator)
    xs = (x if index is None else x[index]).float()
    target = F.linear(xs, w, b)
    if shift is not None:
        xs = xs * _pow2(shift, xs)
        w = w_shifted
    w_scale = weight_quantizer.scales(w.abs().amax(1, keepdim=True), w.abs().amax()) if weight_quantizer else None
    a_scale = input_quantizer.scales(a_amax, a_amax) if input_quantizer else None

    def quantized_input(scale_a):
        return input_quantizer.quantize_with(xs, QuantParams(scale_a)) if input_quantizer else xs

    def quantized_weight(scale_w):
        return weight_quantizer.quantize_with(w, QuantParams(scale_w)) if weight_quantizer else w

    def error(scale_w, scale_a) -> float:
        return output_error(quantized_input(scale_a), quantized_weight(scale_w), b, target, token_weight).sum().item()

    norm = target.double().pow(2)
    norm = max((norm if token_weight is None else norm * token_weight[:, None]).sum().item(), 1e-30)
    stats = {"rel_err_minmax": error(w_scale, a_scale) / norm, "search_tokens": xs.shape[0]}
    if config.search:
        gammas = config.gammas()
        w_cache, x_cache = candidate_cache(w, config), candidate_cache(xs, config)
        stats["round_seconds"] = []
        for _ in range(config.search_round):
            t = time.perf_counter()
            if weight_quantizer is not None:
                w_scale, w_gamma = search_weight_scale(w, quantized_input(a_scale), b, target, weight_quantizer, gammas,
                                                       token_weight, w_cache)
                stats["weight_gamma_mean"] = w_gamma.mean().item()
            if input_quantizer is not None:
                a_scale, stats["input_gamma"] = search_input_scale(xs, quantized_weight(w_scale), b, target,
                                                                   input_quantizer, gammas, a_amax, token_weight,
                                                                   x_cache)
            stats["round_seconds"].append(time.perf_counter() - t)
            if weight_quantizer is None or input_quantizer is None:
                break  # nothing to alternate with
    stats["rel_err"] = error(w_scale, a_scale) / norm
    if shift is not None:
        stats["shift_mean"] = shift.float().mean().item()
    return LinearParams(w_scale, a_scale, shift, stats)


@torch.no_grad()
def apply_linear_params(module: QuantLinear, params: LinearParams) -> None:
    """Fold the pre-shift into the weight, quantize it, install the static input quantizer.

    Uses ``module.weight_quantizer`` / ``act_quantizer`` (plain ``Quantizer``s) for the
    element formats; the same code runs after a search and when loading saved parameters.
    """
    w = module.weight.data.float()
    if params.input_shift is not None:
        w = w * _pow2(-params.input_shift.to(torch.int16), w)
    if module.weight_quantizer is not None:
        weight_params = QuantParams(params.weight_scale.to(w.device))
        module.set_quantized_weight(module.weight_quantizer.quantize_with(w, weight_params).to(module.weight.dtype),
                                    weight_params)
    else:
        module.weight.data.copy_(w.to(module.weight.dtype))
    if module.act_quantizer is not None:
        aq = module.act_quantizer
        if isinstance(aq, StaticQuantizer):
            aq = aq.quantizer
        module.act_quantizer = StaticQuantizer(aq, params.input_scale, params.input_shift).to(w.device)


# ---------------------------------------------------------------------------------------
# Per-tensor quantizers from the recipe (with module_bits overrides).


def _path_in(layer: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in layer.named_modules() if m is module)


def _searched_linears(layer: nn.Module, adapter) -> dict[str, QuantLinear]:
    return {n: m for n, m in adapter.linears(layer).items()
            if isinstance(m, QuantLinear) and (m.weight_quantizer is not None or m.act_quantizer is not None)}


def configure_quantizers(model: nn.Module, adapter, weight, activation, key, value, config: FPQConfig) -> None:
    """Give every decoder linear and attention its own quantizers (``module_bits`` applied).

    Linears no quantizer reaches stay as they are; a plain linear that an override
    quantizes is wrapped. Scales come later (search or saved parameters).
    """
    head_dim = adapter.head_dim(model.config)
    any_kv = False
    for i, layer in enumerate(adapter.decoder_layers(model)):
        for name in adapter.linear_names():
            wspec = tensor_spec(f"layers.{i}.{name}.weight", "weight", weight, config.module_bits)
            aspec = tensor_spec(f"layers.{i}.{name}.input", "input", activation, config.module_bits)
            if wspec is None and aspec is None and not isinstance(layer.get_submodule(name), QuantLinear):
                continue
            linear = ensure_quant_linear(layer, name)
            linear.weight_quantizer = Quantizer(wspec) if wspec is not None else None
            linear.act_quantizer = Quantizer(aspec) if aspec is not None else None
        attn = adapter.attention(layer)
        path = _path_in(layer, attn)
        for kind, base in (("key", key), ("value", value)):
            spec = tensor_spec(f"layers.{i}.{path}.{kind}", kind, base, config.module_bits)
            setattr(attn, f"{kind}_quantizer", Quantizer(spec, head_dim) if spec is not None else None)
            any_kv |= spec is not None
    if any_kv:
        install_attention_wrapper(model)


# ---------------------------------------------------------------------------------------
# Block-by-block calibration.


def _group_input(block: nn.Module, index: int, first: nn.Module, acts: BlockActivations, device) -> torch.Tensor:
    """The input of ``first`` (a group's first linear) for every calibration window, as (tokens, in)."""
    seen: list[torch.Tensor] = []

    def hook(module, args):
        seen.append(args[0].detach())
        raise StopForward

    handle = first.register_forward_pre_hook(hook)
    try:
        acts.probe_block(block, index, device)
    finally:
        handle.remove()
    if len(seen) != len(list(acts.spans())):
        raise RuntimeError(f"block {index}: a linear of the group never received its input")
    return torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])


# K/V candidates are scored on the query rows of at most this many windows (every window
# still sets the min-max range): quantizing the keys of every window once per candidate
# would dominate the search.
KV_SEARCH_WINDOWS = 2


def rows_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Causal softmax attention for the query rows at ``positions`` (GQA: heads grouped as HF does).

    ``query`` (batch, q_heads, rows, dim) holds those rows, ``key``/``value`` (batch, kv_heads,
    seq, dim) every position; returns (batch, q_heads, rows, dim) in float32.
    """
    b, hq, r, d = query.shape
    hkv = key.shape[1]
    q = query.float().reshape(b, hkv, (hq // hkv) * r, d)
    scores = torch.matmul(q, key.float().transpose(-1, -2)) * scaling
    future = torch.arange(key.shape[2], device=key.device)[None, :] > positions.to(key.device)[:, None]
    scores = scores.masked_fill(future.repeat(hq // hkv, 1), float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), value.float())
    return out.reshape(b, hq, r, value.shape[-1])


@torch.no_grad()
def search_kv(
    block: nn.Module, index: int, attn: nn.Module, acts: BlockActivations, device, config: FPQConfig,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Static per-tensor K and V scales minimising the error of the attention output (o_proj's input).

    K and V are read where the cache holds them (after RoPE and any Q/K rotation), with
    q/k/v_proj already quantized. The min-max range comes from every calibration window;
    candidates are scored on ``config.search_tokens // 4`` query rows (all rows with 0) of
    the first ``KV_SEARCH_WINDOWS`` windows (all windows with 0), attending causally to
    every key of their window. Installs the static quantizers on ``attn``; returns
    ``({"key": scale, "value": scale}, stats)`` for the quantized ones, or None.
    """
    quantizers = {k: getattr(attn, f"{k}_quantizer", None) for k in ("key", "value")}
    quantizers = {k: q for k, q in quantizers.items() if q is not None}
    if not quantizers:
        return None
    exact = config.search_tokens == 0
    kept: dict[str, list[torch.Tensor]] = {"query": [], "key": [], "value": []}
    amax = {k: torch.zeros((), device=device) for k in quantizers}
    state: dict = {}

    def probe(module, query, key, value, attention_mask, kwargs):
        tensors = {"key": key, "value": value}
        for k in quantizers:
            amax[k] = torch.maximum(amax[k], tensors[k].detach().abs().amax().float())
        if exact or sum(t.shape[0] for t in kept["query"]) < KV_SEARCH_WINDOWS:
            for name, t in (("query", query), *tensors.items()):
                kept[name].append(t.detach().float())
        state["scaling"] = kwargs.get("scaling") or module.scaling
        raise StopForward

    attn.attention_probe = probe
    try:
        acts.probe_block(block, index, device)
    finally:
        del attn.attention_probe
    if not kept["query"]:
        raise RuntimeError(f"block {index}: the attention never reached the KV-cache wrapper (install_attention_wrapper)")
    windows = None if exact else KV_SEARCH_WINDOWS
    query, key, value = (torch.cat(kept[n])[:windows] for n in ("query", "key", "value"))
    seq = query.shape[2]
    rows = seq if exact else max(1, min(seq, config.search_tokens // 4 // query.shape[0]))
    positions = torch.sort(torch.randperm(seq, generator=generator)[:rows]).values.to(device)
    query_rows = query[:, :, positions]
    scaling = float(state["scaling"])
    ref = rows_attention(query_rows, key, value, positions, scaling)
    full = {"key": key, "value": value}
    amax = {k: m.reshape(1, 1) for k, m in amax.items()}

    def error(kv: dict[str, torch.Tensor]) -> float:
        out = rows_attention(query_rows, kv["key"], kv["value"], positions, scaling)
        return (out - ref).double().pow(2).sum().item()

    scales = {k: quantizers[k].scales(amax[k], amax[k]) for k in quantizers}
    # K and V as the attention reads them: quantized with the current scales (or not at all).
    current = {**full, **{k: quantizers[k].quantize_with(full[k], QuantParams(s)) for k, s in scales.items()}}
    norm = max(ref.double().pow(2).sum().item(), 1e-30)
    stats = {"rel_err_minmax": error(current) / norm, "search_rows": int(rows * query.shape[0])}
    if config.search:
        gammas = config.gammas()
        caches = {k: candidate_cache(full[k], config) for k in quantizers}
        stats["round_seconds"] = []
        for _ in range(config.search_round):
            t = time.perf_counter()
            for k in quantizers:
                best = (math.inf, None, None, None)
                for g in gammas:
                    scale, quantized = _candidate(caches[k], g,
                                                  lambda g: _quantized(quantizers[k], full[k], amax[k] * g, amax[k] * g))
                    err = error({**current, k: quantized})
                    if err < best[0]:
                        best = (err, scale, quantized, g)
                _, scales[k], current[k], stats[f"{k}_gamma"] = best
            stats["round_seconds"].append(time.perf_counter() - t)
            if len(quantizers) == 1:
                break  # nothing to alternate with
    stats["rel_err"] = error(current) / norm
    for k, q in quantizers.items():
        setattr(attn, f"{k}_quantizer", StaticQuantizer(q, scales[k]).to(device))
    return scales, stats


@dataclass
class FPQReport:
    """What the search did, for the results JSON."""

    variant: str
    blocks: int
    seconds: float
    per_linear: dict[str, dict]
    kv: dict[str, dict]

    @property
    def round_seconds(self) -> list[float]:
        """Search time of each round, summed over every linear and K/V search (the rest: forwards, ranges)."""
        totals: list[float] = []
        for stats in (*self.per_linear.values(), *self.kv.values()):
            for r, sec in enumerate(stats.get("round_seconds", [])):
                if r == len(totals):
                    totals.append(0.0)
                totals[r] += sec
        return totals

    def to_dict(self) -> dict:
        return {**asdict(self), "round_seconds": self.round_seconds}


@torch.no_grad()
def fpq_calibrate(
    model: nn.Module, adapter, calib_ids: torch.Tensor, device: torch.device | str, config: FPQConfig,
    batch_size: int = 1, offload_activations: bool = False,
) -> tuple[dict[str, torch.Tensor], FPQReport]:
    """Search every decoder block's scales, block by block, and apply them in place.

    Call ``configure_quantizers`` first. Returns the parameters (for ``save_params``) and a
    report. The model stays where it is; one block at a time goes to ``device``.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    if calib_ids.dim() != 2 or calib_ids.numel() == 0:
        raise ValueError(f"calibration ids must be a non-empty (windows, seqlen) tensor, got {tuple(calib_ids.shape)}")
    layers = adapter.decoder_layers(model)
    o_path = adapter.attention_linears[3]
    params: dict[str, torch.Tensor] = {}
    per_linear: dict[str, dict] = {}
    kv: dict[str, dict] = {}
    was_training = model.training
    model.eval()
    try:
        acts = capture_block_inputs(model, adapter, layers, calib_ids.long(), device,
                        LayerwiseConfig(batch_size=batch_size, offload_activations=offload_activations))
        for i in tqdm(range(len(layers)), desc=f"{config.variant} blocks"):
            block = layers[i]
            # Each block samples its scoring tokens from its own seed: runs are reproducible.
            generator = torch.Generator().manual_seed(i)
            attn = adapter.attention(block)
            attn_path = _path_in(block, attn)
            with resident([block], device):
                targets = _searched_linears(block, adapter)
                for group in adapter.sequential_groups():
                    if o_path in group:
                        result = search_kv(block, i, attn, acts, device, config, generator)
                        if result:
                            scales, stats = result
                            for k, s in scales.items():
                                params[f"layers.{i}.{attn_path}.{k}_scale"] = s.detach().cpu().contiguous()
                            kv[f"layers.{i}.{attn_path}"] = stats
                    members = [n for n in group if n in targets]
                    if not members:
                        continue
                    x_group = _group_input(block, i, targets[members[0]], acts, device)
                    for name in members:
                        module = targets[name]
                        t = time.perf_counter()
                        found = search_linear(module.weight, module.bias, module.transformed_input(x_group),
                                              module.weight_quantizer, module.act_quantizer, config, generator)
                        apply_linear_params(module, found)
                        params.update(found.tensors(f"layers.{i}.{name}"))
                        per_linear[f"layers.{i}.{name}"] = {**found.stats, "seconds": time.perf_counter() - t}
                    del x_group
                if i + 1 < len(layers):
                    acts.propagate(block, i, device)
        del acts
    finally:
        model.train(was_training)
    report = FPQReport(config.variant, len(layers), time.perf_counter() - t_start, per_linear, kv)
    if per_linear:
        mean = {k: sum(v[k] for v in per_linear.values()) / len(per_linear) for k in ("rel_err_minmax", "rel_err")}
        log.info("%s: mean relative output error of %d linears %.4g (min-max scales %.4g), %.1f s (search rounds: %s)",
                 config.variant, len(per_linear), mean["rel_err"], mean["rel_err_minmax"], report.seconds,
                 ", ".join(f"{sec:.1f} s" for sec in report.round_seconds) or "none")
    return params, report


# ---------------------------------------------------------------------------------------
# Saved parameters.


@torch.no_grad()
def apply_fpq_params(model: nn.Module, adapter, params: dict[str, torch.Tensor]) -> None:
    """Install saved parameters on a model prepared by ``configure_quantizers``.

    Raises ValueError, before touching any weight, if the file lacks a tensor the model's
    quantizers need or holds one they do not use (a different recipe or model).
    """
    plan = []
    used = set()

    def take(name: str) -> torch.Tensor:
        if name not in params:
            raise ValueError(f"the parameter file has no {name}: it was written for a different recipe or model")
        used.add(name)
        return params[name]

    for i, layer in enumerate(adapter.decoder_layers(model)):
        for name, module in _searched_linears(layer, adapter).items():
            prefix = f"layers.{i}.{name}"
            p = LinearParams(
                weight_scale=take(f"{prefix}.weight_scale") if module.weight_quantizer is not None else None,
                input_scale=take(f"{prefix}.input_scale") if module.act_quantizer is not None else None,
                input_shift=params.get(f"{prefix}.input_shift") if module.act_quantizer is not None else None,
            )
            if p.input_shift is not None:
                used.add(f"{prefix}.input_shift")
                if p.input_shift.shape != (module.in_features,):
                    raise ValueError(f"{prefix}.input_shift has shape {tuple(p.input_shift.shape)}, "
                                     f"expected ({module.in_features},): a different model")
            if p.weight_scale is not None and p.weight_scale.shape[0] not in (1, module.out_features):
                raise ValueError(f"{prefix}.weight_scale has shape {tuple(p.weight_scale.shape)}, "
                                 f"expected ({module.out_features}, 1): a different model")
            plan.append((module, p))
        attn = adapter.attention(layer)
        path = _path_in(layer, attn)
        for kind in ("key", "value"):
            q = getattr(attn, f"{kind}_quantizer", None)
            if q is not None:
                plan.append((attn, kind, q, take(f"layers.{i}.{path}.{kind}_scale")))
    extra = sorted(set(params) - used)
    if extra:
        raise ValueError(
            f"the parameter file holds {len(extra)} tensors this recipe does not quantize (e.g. {extra[0]}): "
            f"it was written for a different recipe or model"
        )
    for item in plan:
        if len(item) == 2:
            module, p = item
            device = module.weight.device
            apply_linear_params(module, LinearParams(*(None if t is None else t.to(device) for t in
                                                       (p.weight_scale, p.input_scale, p.input_shift))))
        else:
            attn, kind, q, scale = item
            device = next(attn.parameters()).device
            setattr(attn, f"{kind}_quantizer", StaticQuantizer(q, scale.to(device)).to(device))


def save_params(path: str, params: dict[str, torch.Tensor], meta: dict) -> str:
    """Write ``path`` (safetensors, ``meta`` in its header) and ``<path stem>.json``, each atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    text = json.dumps(meta, indent=2, sort_keys=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
    json_path = os.path.splitext(path)[0] + ".json"
    for target, write in ((path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: text})),
                          (json_path, lambda tmp: open(tmp, "w").write(text + "\n"))):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(target)[1])
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def read_meta(path: str) -> dict:
    """The recipe and model identity stored in a parameter file (reads only its header)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--ptq_param_path {path} not found: pass the .safetensors file a search run wrote")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # not a safetensors file
        raise ValueError(f"--ptq_param_path {path} is not a safetensors file ({type(err).__name__}: {err})") from None
    meta = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    if meta.get("format") != PARAM_FILE_FORMAT:
        raise ValueError(f"--ptq_param_path {path} was not written by an LLM-FP4 search of this harness")
    if meta.get("version") != PARAM_FILE_VERSION:
        raise ValueError(f"--ptq_param_path {path} has format version {meta.get('version')}, "
                         f"this harness reads {PARAM_FILE_VERSION}: search again")
    return meta


def load_params(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)


def model_identity(config, adapter) -> dict:
    """The architecture, from the config alone (checked before loading)."""
    return {
        "model_type": config.model_type,
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
        "head_dim": adapter.head_dim(config),
        "vocab_size": config.vocab_size,
    }


def embedding_sha256(model: nn.Module, adapter) -> str:
    """A fingerprint of the checkpoint's weights: sha256 of the embedding matrix (as float32)."""
    weight = adapter.embeddings(model).weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


def _spec_label(spec: dict | None) -> str:
    return "none (full precision)" if spec is None else QuantSpec(**spec).label


def check_param_meta(meta: dict, recipe_dict: dict, identity: dict, path: str) -> None:
    """Raise ValueError if saved parameters belong to a different model or recipe."""
    saved_model = meta.get("model", {})
    diffs = [f"{k} {saved_model.get(k)} (file) vs {v} (now)" for k, v in identity.items() if saved_model.get(k) != v]
    if diffs:
        raise ValueError(
            f"--ptq_param_path {path} was searched on a different model ({saved_model.get('name')}): "
            f"{'; '.join(diffs)}. Pass the --model of the search run, or search again"
        )
    saved, now = _eval_recipe(meta["recipe"]), _eval_recipe(recipe_dict)
    diffs = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if key in ("weight", "activation", "key", "value"):
            diffs.append(f"{key}: {_spec_label(a)} (file) vs {_spec_label(b)} (now)")
        else:
            diffs.append(f"{key}: {a} (file) vs {b} (now)")
    if diffs:
        raise ValueError(
            f"--ptq_param_path {path} was searched with a different recipe ({'; '.join(diffs)}): pass the "
            f"--quant_config, --qbits and --rotate flags of the search run (its recipe: "
            f"{os.path.splitext(path)[0]}.json)"
        )


def _eval_recipe(recipe: dict) -> dict:
    data = {k: v for k, v in recipe.items() if k != "gptq"}
    data["fpq"] = FPQConfig(**recipe.get("fpq", {})).eval_identity()
    return data
