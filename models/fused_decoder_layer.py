"""Decode-sized forwards of real-quantized Llama / Qwen2 / Qwen3 decoder layers in fewer kernel launches.

At batch 1 a launch, not its bytes, sets a small kernel's time (about 2 us on the H200), and
a compiled W4A4 decode step ran fifteen a layer: the residual adds fused with the RMSNorms
by inductor, each norm's output quantized again by the activation kernel, silu(gate) * up
in its own kernel and quantized again too (``benchmarks/results/end_to_end_h200.md``). Here a
layer's decode forward (up to ``GEMV_MAX_M`` rows, ``TC_MAX_M`` when every linear's weights take
the tensor-core decode kernel: INT4, and E2M1 unless ``PTQ_TC_E2M1=0``) runs instead:

* the input RMSNorm and its quantization as one activation-kernel launch, whose codes go
  straight to the fused q/k/v product (``FusedGroup.provide`` serves HF's attention its
  slices); after a fused layer, that layer's down_proj computed them (last bullet);
* the attention's output quantized for o_proj by the decode attention's combining kernel, its last program to
  finish, for one row (``DecodePlan.attention_tail``, ``ATTENTION_TAIL_MAX_ROWS``, ``models.attention``; o_proj
  quantizes it where that kernel does not run);
* the attention's o_proj with the residual added in the decode kernel's epilogue, and the post-attention
  RMSNorm with gate/up's quantization of it (``DecodePlan.norm_tail``) in the same launch: the last of its
  programs to finish normalises and quantizes the whole output rows (``RealQuantLinear.add_residual_to_next``;
  where the tensor-core decode kernel takes o_proj's rows, or the MLP needs the normalised rows, the activation
  kernel does it in a launch of its own); then gate/up on those codes;
* silu(gate) * up quantized in one launch, and down_proj adding the residual in its epilogue. Where the
  CUDA-core decode kernel takes the rows (``w4a4_gemv.takes_gated``: up to 4 rows of INT4 weights on a GPU),
  gate/up's product writes silu(gate) * up itself, spread over its programs, and the activation kernel only
  quantizes it, split among programs: the one program a row that computed silu(gate) * up spent a single SM on
  its exponentials and divisions at Llama-3-8B's width. On the H200 this took 146-149 us off a 2320 us W4A4KV4
  decode step, about 4.6 us a layer (``benchmarks/results/end_to_end_h200.md``, run 19);
* down_proj's product also quantizes the next fused layer's input RMSNorm for its q/k/v (``DecodePlan.next_input_tail``,
  ``link_decode_layers``), in the decode kernel's last program where it runs; the codes go to that layer keyed by
  this layer's output, so a hook that replaces the output makes the next layer quantize its own norm. On the H200
  it took 30 launches out of a batch-1 step and left its time as it was (2090 against 2087 us, run 22).

Each step rounds as the HF layer does (the norm's output, the product before the residual,
the sum); on the CPU the kernels' twins run and the layer's output is the HF forward's bit
for bit. Longer inputs (prefill), and layers whose parts do not fit (online rotations on
those inputs, other activation schemes, unfused q/k/v or gate/up), keep HF's forward.

``fuse_decoder_layers(model)`` installs it by giving each eligible layer a subclass of its
own class (its modules, state dict and hooks stay as they are); weight-only layers keep HF's forward, their MLP's
gate/up product writing silu(gate) * up itself (``models.gated_mlp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

import quant_kernels
from models.gated_mlp import gate_mlp, is_silu
from quant_layers.fused_linear import FusedGroup, fused_group_of
from quant_layers.real_linear import RealQuantLinear

if TYPE_CHECKING:
    from quant_kernels.reference import NormTail

# HF RMSNorm classes whose forward is ``weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)`` (the twins' formula).
RMS_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
# Up to this many rows the decode attention's combining kernel quantizes o_proj's input (``DecodePlan.attention_tail``):
# its last program does every row on one SM. On the H200 (Llama-3-8B, W4A4KV4, 2048 cached tokens) that took 11 us off
# a batch-1 step and put 85 us on a batch-8 one, where o_proj's own quantization of its rows runs a program a row
# (``benchmarks/results/end_to_end_h200.md``, runs 22 and 24).
ATTENTION_TAIL_MAX_ROWS = 1


@torch.library.custom_op("ptq::rms_norm_quantize", mutates_args=())
def rms_norm_quantize(x: torch.Tensor, weight: torch.Tensor, eps: float, element: str, clip_ratio: float,
                      dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``quant_kernels.rms_norm_quantize`` as one opaque op for ``torch.compile``: (the codes the decode kernels take
    for ``dp4a_for`` weights at these rows, ``quant_kernels.decode_codes_form``; scales; normalised x)."""
    form, fp8_codes = quant_kernels.decode_codes_form(dp4a_for, x.shape[0], x.is_cuda)
    return quant_kernels.in_row_chunks(lambda rows: quant_kernels.rms_norm_quantize(
        rows, weight, eps, element, clip_ratio, dp4a_for=form, fp8_codes=fp8_codes), (x,), x.shape[1])


@rms_norm_quantize.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float, element: str, clip_ratio: float,
      dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, k = x.shape
    return (quant_kernels.decode_codes_like(x, m, k, dp4a_for), x.new_empty(m, 1, dtype=torch.float32),
            torch.empty_like(x))


@torch.library.custom_op("ptq::silu_mul_quantize", mutates_args=())
def silu_mul_quantize(x: torch.Tensor, element: str, clip_ratio: float,
                      dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``quant_kernels.silu_mul_quantize`` as one opaque op for ``torch.compile``: (codes, as
    ``rms_norm_quantize``'s; scales)."""
    form, fp8_codes = quant_kernels.decode_codes_form(dp4a_for, x.shape[0], x.is_cuda)
    return quant_kernels.in_row_chunks(lambda rows: quant_kernels.silu_mul_quantize(
        rows, element, clip_ratio, dp4a_for=form, fp8_codes=fp8_codes), (x,), x.shape[1])


@silu_mul_quantize.register_fake
def _(x: torch.Tensor, element: str, clip_ratio: float, dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    return quant_kernels.decode_codes_like(x, m, k // 2, dp4a_for), x.new_empty(m, 1, dtype=torch.float32)


@torch.library.custom_op("ptq::quantize_rows", mutates_args=())
def quantize_rows(x: torch.Tensor, element: str, clip_ratio: float, dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``quant_kernels.quantize_activations`` per token, in the codes the decode kernels take (as
    ``rms_norm_quantize``'s), as one opaque op for ``torch.compile``."""
    form, fp8_codes = quant_kernels.decode_codes_form(dp4a_for, x.shape[0], x.is_cuda)
    return quant_kernels.in_row_chunks(lambda rows: quant_kernels.quantize_activations(
        rows, element, 0, "float", clip_ratio, fp8_codes=fp8_codes, dp4a_for=form), (x,), x.shape[1])


@quantize_rows.register_fake
def _(x: torch.Tensor, element: str, clip_ratio: float, dp4a_for: str) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    return quant_kernels.decode_codes_like(x, m, k, dp4a_for), x.new_empty(m, 1, dtype=torch.float32)


@dataclass
class DecodePlan:
    """The modules of one layer that its decode forward drives (checked by ``decode_plan``)."""

    qkv: FusedGroup
    o_proj: RealQuantLinear
    gate_up: FusedGroup
    down: RealQuantLinear | None  # None: the MLP's own forward from gate/up on (down_proj does not fit)
    max_rows: int  # the most rows the decode kernels take for every linear here (``w4a4_gemv.max_rows``)
    gated_rows: int = 0  # up to this many rows gate/up's product writes silu(gate) * up (``w4a4_gemv.takes_gated``)
    # The post-attention RMSNorm and gate/up's quantization of it, run by o_proj's product (its decode kernel's
    # last program where it runs, ``RealQuantLinear.add_residual_to_next``); None: a launch of their own.
    norm_tail: NormTail | None = None
    # o_proj's input quantization, run by the decode attention's combining kernel (``models.attention``,
    # ``RealQuantLinear.want_input_codes``); None: o_proj quantizes its input itself.
    attention_tail: NormTail | None = None
    # The next layer's input RMSNorm and its q/k/v's quantization of it, run by down_proj's product (its decode
    # kernel's last program where it runs) and handed to ``next_layer`` (``link_decode_layers``); None: the next
    # layer's own launch.
    next_input_tail: NormTail | None = None
    next_layer: nn.Module | None = None


def _takes_codes(linear: RealQuantLinear) -> bool:
    """Whether the decode kernel takes this linear's product on dp4a bytes quantized outside it
    (``RealQuantLinear.input_tail``)."""
    return linear.input_tail() is not None


def _group_of(slices: list[nn.Module]) -> FusedGroup | None:
    """The FusedGroup these slices are parts 0, 1, ... of, in order, if it takes codes."""
    group = fused_group_of(slices)
    return group if group is not None and _takes_codes(group.linear) else None


def decode_plan(layer: nn.Module) -> DecodePlan | None:
    """The plan of a Llama / Qwen2 / Qwen3 decoder layer whose decode forward can be fused, else None."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    norms = [getattr(layer, name, None) for name in ("input_layernorm", "post_attention_layernorm")]
    if attn is None or mlp is None or not all(type(n).__name__ in RMS_NORMS for n in norms):
        return None
    qkv = _group_of([getattr(attn, name, None) for name in ("q_proj", "k_proj", "v_proj")])
    gate_up = _group_of([getattr(mlp, name, None) for name in ("gate_proj", "up_proj")])
    o_proj, down = getattr(attn, "o_proj", None), getattr(mlp, "down_proj", None)
    if qkv is None or gate_up is None or not isinstance(o_proj, RealQuantLinear) or o_proj.act_scheme is None:
        return None
    fused_down = is_silu(getattr(mlp, "act_fn", None)) and isinstance(down, RealQuantLinear) and _takes_codes(down)
    if not fused_down and not isinstance(down, RealQuantLinear):
        return None
    from quant_kernels.reference import NormTail
    from quant_kernels.w4a4_gemv import GEMV_MAX_M, max_rows, takes_gated

    linears = (qkv.linear, o_proj, gate_up.linear, down)
    rows = min(max_rows(linear.weight_scheme.element) for linear in linears)
    gated = fused_down and gate_up.widths[0] == gate_up.widths[1]
    element = gate_up.linear.weight_scheme.element
    gated_rows = max((m for m in range(1, GEMV_MAX_M + 1) if gated and takes_gated(m, element)), default=0)
    norm, act = layer.post_attention_layernorm, gate_up.linear.act_scheme
    tail = NormTail(norm.weight, float(norm.variance_epsilon), act.element, act.clip_ratio,
                    gate_up.linear.weight_scheme.element) if fused_down and o_proj.takes_norm_tail() else None
    return DecodePlan(qkv, o_proj, gate_up, down if fused_down else None, rows, min(gated_rows, rows), tail,
                      o_proj.input_tail())


def next_input_tail(plan: DecodePlan, next_layer: nn.Module) -> NormTail | None:
    """The NormTail by which ``plan``'s down_proj quantizes ``next_layer``'s input norm for its q/k/v (which then
    run on those codes, as on the norm kernel's), where both layers are fused and down_proj takes a norm tail."""
    from quant_kernels.reference import NormTail

    following = getattr(next_layer, "_decode_plan", None)
    if plan.down is None or following is None or not plan.down.takes_norm_tail():
        return None
    norm, qkv = next_layer.input_layernorm, following.qkv.linear
    return NormTail(norm.weight, float(norm.variance_epsilon), qkv.act_scheme.element, qkv.act_scheme.clip_ratio,
                    qkv.weight_scheme.element)


def link_decode_layers(layers: list[nn.Module]) -> None:
    """Give each fused layer's plan the next layer's input tail (``next_input_tail``), where it has one."""
    for layer, following in zip(layers, layers[1:] + [None]):
        plan = getattr(layer, "_decode_plan", None)
        if plan is None:
            continue
        tail = None if following is None else next_input_tail(plan, following)
        plan.next_input_tail, plan.next_layer = tail, following if tail is not None else None


def _quantize_norm(norm: nn.Module, rows: torch.Tensor, linear: RealQuantLinear) -> tuple:
    act = linear.act_scheme
    return torch.ops.ptq.rms_norm_quantize(rows, norm.weight, float(norm.variance_epsilon), act.element,
                                           act.clip_ratio, linear.weight_scheme.element)


def _decode_forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The layer's forward: fused as the module docstring says for up to ``DecodePlan.max_rows`` rows, HF's
    otherwise."""
    plan: DecodePlan = self._decode_plan
    given, self._given_input = self._given_input, None  # the previous layer's down_proj's codes of our input norm
    width = hidden_states.shape[-1]
    rows = hidden_states.reshape(-1, width)
    if (args or not 1 <= rows.shape[0] <= plan.max_rows or self.input_layernorm.weight.dtype != hidden_states.dtype
            or self.post_attention_layernorm.weight.dtype != hidden_states.dtype):
        return type(self).__mro__[1].forward(self, hidden_states, *args, **kwargs)
    if given is not None and given[0] is hidden_states:
        codes, scales = given[1:]
        normed = hidden_states  # only the key under which q/k/v's slices are served (FusedGroup.provide)
    else:
        codes, scales, normed = _quantize_norm(self.input_layernorm, rows, plan.qkv.linear)
        normed = normed.view_as(hidden_states)
    plan.qkv.provide(normed, plan.qkv.linear.on_codes(codes, scales, hidden_states.dtype).view(
        *hidden_states.shape[:-1], -1))
    plan.o_proj.add_residual_to_next(hidden_states, plan.norm_tail)
    if plan.attention_tail is not None and rows.shape[0] <= ATTENTION_TAIL_MAX_ROWS:
        plan.o_proj.want_input_codes(plan.attention_tail)
    hidden_states, _ = self.self_attn(hidden_states=normed, **kwargs)  # o_proj's output: residual + attention
    rows = hidden_states.reshape(-1, width)
    if plan.norm_tail is not None:
        codes, scales = plan.o_proj.take_norm_codes()
    else:
        codes, scales, normed = _quantize_norm(self.post_attention_layernorm, rows, plan.gate_up.linear)
    if rows.shape[0] <= plan.gated_rows:
        act = plan.down.act_scheme
        hidden = plan.gate_up.linear.on_codes(codes, scales, hidden_states.dtype, gated=True)  # silu(gate) * up
        codes, scales = torch.ops.ptq.quantize_rows(hidden, act.element, act.clip_ratio,
                                                    plan.down.weight_scheme.element)
        return _down(plan, codes, scales, rows, hidden_states)
    gate_up = plan.gate_up.linear.on_codes(codes, scales, hidden_states.dtype)
    if plan.down is None:
        normed = normed.view_as(hidden_states)
        plan.gate_up.provide(normed, gate_up.view(*hidden_states.shape[:-1], -1))
        self.mlp.down_proj.add_residual_to_next(hidden_states)
        return self.mlp(normed)
    act = plan.down.act_scheme
    codes, scales = torch.ops.ptq.silu_mul_quantize(gate_up, act.element, act.clip_ratio,
                                                    plan.down.weight_scheme.element)
    return _down(plan, codes, scales, rows, hidden_states)


def _down(plan: DecodePlan, codes: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor,
          hidden_states: torch.Tensor) -> torch.Tensor:
    """down_proj on its input codes plus the residual rows, in hidden_states' shape; with the plan's next input
    tail, the next layer's input-norm codes go to that layer, keyed by this output."""
    out = plan.down.on_codes(codes, scales, hidden_states.dtype, residual=rows,
                             norm_tail=plan.next_input_tail).view_as(hidden_states)
    if plan.next_input_tail is not None:
        plan.next_layer._given_input = (out, *plan.down.take_norm_codes())
    return out


@lru_cache(maxsize=None)
def _fused_class(base: type) -> type:
    return type(f"DecodeFused{base.__name__}", (base,), {"forward": _decode_forward})


def fuse_decoder_layers(model: nn.Module) -> int:
    """Give every decoder layer that fits (``decode_plan``) the fused decode forward, and every other one's weight-only
    MLP the gated forward where it fits (``models.gated_mlp.gate_mlp``); returns how many layers took either.

    Call it after ``fuse_shared_input_linears`` (the plan needs q/k/v and gate/up fused)."""
    from models import adapter_for  # late: models imports this module's neighbours

    fused = 0
    layers = list(adapter_for(model.config).decoder_layers(model))
    for layer in layers:
        plan = decode_plan(layer)
        if plan is None:
            fused += gate_mlp(getattr(layer, "mlp", None))
            continue
        if not hasattr(layer, "_decode_plan"):
            layer.__class__ = _fused_class(type(layer))
        layer._decode_plan, layer._given_input = plan, None
        fused += 1
    link_decode_layers(layers)
    return fused
