"""Fake-quantized linear layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import QuantParams, Quantizer


class QuantLinear(nn.Module):
    """An ``nn.Linear`` whose input is (optionally rotated, then) fake-quantized on every call.

    It shares the wrapped layer's parameters. ``input_transform`` is an online rotation
    (e.g. the Hadamard on down_proj's input) whose inverse is already folded into the
    weight; it runs before the activation quantizer. The weight is quantized once, in place, by a
    calibration algorithm (RTN, GPTQ, ...) through ``weight_quantizer``; the forward pass
    only quantizes the activation.
    """

    def __init__(
        self,
        linear: nn.Linear,
        weight_quantizer: Quantizer | None,
        act_quantizer: Quantizer | None,
    ) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        self.input_transform: nn.Module | None = None
        # The scales the weight was rounded with, in ``weight_quantizer.grouped`` order (what an
        # exporter turns into codes); set by whichever algorithm quantized the weight.
        self.weight_params: QuantParams | None = None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, w={self.weight_quantizer}, a={self.act_quantizer}"
        )

    @torch.no_grad()
    def set_quantized_weight(self, weight: torch.Tensor, params: QuantParams) -> None:
        """Install a weight already on the quantizer's grid and the scales it was rounded with."""
        self.weight.data.copy_(weight)
        self.weight_params = params

    def transformed_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the weight sees it (rotated, not yet quantized): what GPTQ's Hessian needs."""
        return x if self.input_transform is None else self.input_transform(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transformed_input(x)
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        return F.linear(x, self.weight, self.bias)


def ensure_quant_linear(parent: nn.Module, path: str) -> QuantLinear:
    """The ``QuantLinear`` at ``path`` inside ``parent``, wrapping a plain linear there first."""
    module = parent.get_submodule(path)
    if isinstance(module, QuantLinear):
        return module
    wrapped = QuantLinear(module, None, None)
    parent.set_submodule(path, wrapped)
    return wrapped
