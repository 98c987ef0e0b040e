"""Real-quantized linears that read one input, run as one: one activation quantization, one GEMM.

HF attention calls ``q_proj(x)``, ``k_proj(x)`` and ``v_proj(x)`` on the same tensor, and
the MLP ``gate_proj(x)`` and ``up_proj(x)``. Run apart, each call quantizes ``x`` again and
launches its own GEMM; at decode sizes the launches, not the bytes, set the time.
``fuse_shared_input_linears`` replaces such a group by ``FusedSlice`` modules around one
``RealQuantLinear`` whose weight rows are the parts' rows: the first slice called computes
the fused product, each slice returns its columns, and the product is dropped once every
slice has taken its part. The HF modules are not changed, so the fusion holds under
``generate``, CUDA-graph capture and accelerate's device maps alike.
"""

from __future__ import annotations

import torch
from torch import nn

from .real_linear import RealQuantLinear


class FusedGroup(nn.Module):
    """One ``RealQuantLinear`` holding the rows of several that share their input."""

    def __init__(self, parts: list[RealQuantLinear]) -> None:
        super().__init__()
        first = parts[0]
        has_bias = any(p.bias is not None for p in parts)
        dtype = next((p.bias.dtype for p in parts if p.bias is not None), torch.float32)
        self.linear = RealQuantLinear(first.in_features, sum(p.out_features for p in parts), has_bias,
                                      first.weight_scheme, first.act_scheme, dtype).to(first.qweight.device)
        with torch.no_grad():
            for name, buffer in self.linear.named_buffers():
                # the calibrated absmax of the input the parts share (``_fusable``: equal), else their rows
                buffer.copy_(first.act_tensor_amax if name == "act_tensor_amax"
                             else torch.cat([getattr(p, name) for p in parts]))
            if has_bias:
                self.linear.bias.copy_(torch.cat([
                    p.bias if p.bias is not None else torch.zeros(p.out_features, dtype=dtype, device=p.qweight.device)
                    for p in parts]))
        self.linear.input_transform = first.input_transform
        self.widths = [p.out_features for p in parts]
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._taken: set[int] = set()

    def provide(self, x: torch.Tensor, output: torch.Tensor) -> None:
        """Serve ``output`` (x's rows, every part's columns) to the parts' next calls on x: the caller computed
        the fused product itself (``models.fused_decoder_layer``, from codes its norm kernel wrote)."""
        self._outputs = output.split(self.widths, dim=-1)
        self._input, self._taken = x, set()

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Part ``index``'s output for ``x``: computed with the whole group's on the first call for ``x``."""
        if x is not self._input or index in self._taken:
            self._outputs = self.linear(x).split(self.widths, dim=-1)
            self._input, self._taken = x, set()
        self._taken.add(index)
        out = self._outputs[index]
        if len(self._taken) == len(self.widths):  # every part served: let the activations go
            self._input, self._outputs = None, ()
        return out


class FusedSlice(nn.Module):
    """Stands where one part of a ``FusedGroup`` stood and returns that part's output columns."""

    def __init__(self, group: FusedGroup, index: int, in_features: int, out_features: int) -> None:
        super().__init__()
        if index == 0:
            self.group = group  # registered once: moved, counted and saved with the first part
        else:
            object.__setattr__(self, "group", group)
        self.index, self.in_features, self.out_features = index, in_features, out_features

    @property
    def weight_scheme(self):
        """The part's weight storage: the group's (fusion needs one scheme)."""
        return self.group.linear.weight_scheme

    @property
    def act_scheme(self):
        return self.group.linear.act_scheme

    def extra_repr(self) -> str:
        return f"part {self.index} of {self.group.widths}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.output(self.index, x)


def fused_group_of(slices: list[nn.Module | None]) -> FusedGroup | None:
    """The FusedGroup these slices are parts 0, 1, ... of, in order and all of them, if they are."""
    if not slices or not all(isinstance(s, FusedSlice) for s in slices):
        return None
    group = slices[0].group
    whole = all(s.group is group and s.index == i for i, s in enumerate(slices)) and len(group.widths) == len(slices)
    return group if whole else None


def _fusable(parts: list[nn.Module]) -> bool:
    first = parts[0]
    return len(parts) > 1 and all(
        isinstance(p, RealQuantLinear) and p.in_features == first.in_features
        and p.weight_scheme == first.weight_scheme and p.act_scheme == first.act_scheme
        and p.input_transform is first.input_transform and p.qweight.device == first.qweight.device
        and (first.act_scheme is None or not first.act_scheme.static_tensor_scale
             or torch.equal(p.act_tensor_amax, first.act_tensor_amax))
        for p in parts)


def fuse_shared_input_linears(model: nn.Module) -> int:
    """Fuse every group of real-quantized linears that read one input (q/k/v, gate/up); return how many."""
    from models import adapter_for  # late: models imports quant_layers

    adapter = adapter_for(model.config)
    fused = 0
    for layer in adapter.decoder_layers(model):
        for names in adapter.sequential_groups():
            parts = [layer.get_submodule(n) for n in names]
            if not _fusable(parts):
                continue
            group = FusedGroup(parts)
            for index, (name, part) in enumerate(zip(names, parts)):
                layer.set_submodule(name, FusedSlice(group, index, part.in_features, part.out_features))
            fused += 1
    return fused
