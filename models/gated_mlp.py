"""Weight-only real-quantized MLPs whose fused gate/up product writes silu(gate) * up itself.

HF's MLP computes ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``. With gate and up fused into one
weight-only linear (FPx or W4A16 weights, ``quant_layers.fused_linear``), a compiled decode step still
launches a kernel of its own for silu(gate) * up between the two products: at batch 1 a launch, not its bytes,
sets its time. ``gate_mlp`` gives such an MLP a forward whose gate/up product returns silu(gate) * up
(``RealQuantLinear.gated_product``) where the product computes it in one launch: at decode rows on a GPU the FPx
row kernel's epilogue (``quant_kernels.fpx_matmul``'s ``gated``), and the twin on the CPU; other rows keep HF's
forward, whose silu(gate) * up a compiled step fuses into one kernel of its own. Each op rounds as the HF forward
rounds it, so on the CPU the output is HF's bit for bit. ``PTQ_FPX_GATED=0`` leaves the MLPs as they are.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from quant_kernels.switches import env_switch
from quant_layers.fused_linear import FusedGroup, fused_group_of

# transformers' SiLU module (``ACT2FN["silu"]``, ``F.silu``); older versions hand out ``nn.SiLU`` itself.
SILU_ACTIVATIONS = ("SiLUActivation",)


def is_silu(act_fn: nn.Module | None) -> bool:
    """Whether an MLP's ``act_fn`` is SiLU."""
    return isinstance(act_fn, nn.SiLU) or type(act_fn).__name__ in SILU_ACTIVATIONS


def gated_mlps_on() -> bool:
    """Whether ``gate_mlp`` installs the gated forward (``PTQ_FPX_GATED``, 1 by default)."""
    return env_switch("PTQ_FPX_GATED", True, {"1": "weight-only gate/up products write silu(gate) * up, the default",
                                              "0": "HF's MLP forward, silu(gate) * up a kernel of its own"})


def gated_group(mlp: nn.Module) -> FusedGroup | None:
    """The weight-only FusedGroup whose rows are this MLP's gate rows then as many up rows, under a SiLU, if any."""
    group = fused_group_of([getattr(mlp, name, None) for name in ("gate_proj", "up_proj")])
    if group is None or group.linear.act_scheme is not None or group.widths[0] != group.widths[1]:
        return None
    return group if is_silu(getattr(mlp, "act_fn", None)) else None


def _gated_forward(self, x: torch.Tensor) -> torch.Tensor:
    linear = self._gated_group.linear
    if not linear.gates_in_product(x):
        return type(self).__mro__[1].forward(self, x)
    return self.down_proj(linear.gated_product(x))


@lru_cache(maxsize=None)
def _gated_class(base: type) -> type:
    return type(f"Gated{base.__name__}", (base,), {"forward": _gated_forward})


def gate_mlp(mlp: nn.Module | None) -> bool:
    """Give ``mlp`` the gated forward where it fits (``gated_group``) and the switch is on; returns whether it has it.
    Call it after ``fuse_shared_input_linears``."""
    group = None if mlp is None or not gated_mlps_on() else gated_group(mlp)
    if group is None:
        return False
    if not hasattr(mlp, "_gated_group"):
        mlp.__class__ = _gated_class(type(mlp))
    mlp._gated_group = group
    return True
