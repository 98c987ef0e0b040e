"""Architecture adapters: where a model family keeps its layers, linears and norms.

Transforms and calibration ask an adapter for "the linears that read the residual
stream" and never spell out ``model.model.layers[i].mlp``. A new family is one small
file that subclasses ``ArchAdapter`` and registers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ADAPTERS: dict[str, "ArchAdapter"] = {}


@dataclass(frozen=True)
class ArchAdapter:
    """Decoder-only family with HF's Llama layout (``model.model.layers[i].self_attn/mlp``)."""

    family: str
    model_types: tuple[str, ...]
    has_qk_norm: bool = False

    # Linears of one decoder layer in execution order, by their path inside the layer.
    attention_linears: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    mlp_linears: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.model.embed_tokens

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.model.norm

    def lm_head(self, model: nn.Module) -> nn.Linear:
        return model.lm_head

    def untie_lm_head(self, model: nn.Module) -> None:
        """Give lm_head its own weight when it shares the embeddings' (to rotate or quantize it alone)."""
        head, emb = self.lm_head(model), self.embeddings(model)
        if head.weight is emb.weight or head.weight.data_ptr() == emb.weight.data_ptr():
            head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
            for cfg in (model.config, model.config.get_text_config()):
                cfg.tie_word_embeddings = False

    def attention(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    def mlp(self, layer: nn.Module) -> nn.Module:
        return layer.mlp

    def input_norm(self, layer: nn.Module) -> nn.Module:
        return layer.input_layernorm

    def post_attention_norm(self, layer: nn.Module) -> nn.Module:
        return layer.post_attention_layernorm

    def linear_names(self) -> tuple[str, ...]:
        return self.attention_linears + self.mlp_linears

    def sequential_groups(self) -> tuple[tuple[str, ...], ...]:
        """Linears grouped by shared input, in execution order (GPTQ's true-sequential order).

        Linears in one group read the same tensor, so they can share one Hessian.
        """
        return (self.attention_linears[:3], self.attention_linears[3:], self.mlp_linears[:2], self.mlp_linears[2:])

    def linears(self, layer: nn.Module) -> dict[str, nn.Module]:
        """Every linear of a decoder layer, in execution order."""
        return {name: layer.get_submodule(name) for name in self.linear_names()}

    def norm_readers(self, layer: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
        """Each RMSNorm of a layer with the linears that read its output."""
        return [
            (self.input_norm(layer), [layer.get_submodule(n) for n in self.attention_linears[:3]]),
            (self.post_attention_norm(layer), [layer.get_submodule(n) for n in self.mlp_linears[:2]]),
        ]

    def residual_readers(self, layer: nn.Module) -> list[nn.Module]:
        """Linears whose input is the (normed) residual stream."""
        return [linear for _, readers in self.norm_readers(layer) for linear in readers]

    def residual_writers(self, layer: nn.Module) -> list[nn.Module]:
        """Linears whose output is added to the residual stream."""
        return [layer.get_submodule(n) for n in ("self_attn.o_proj", "mlp.down_proj")]

    @staticmethod
    def head_dim(config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def linear_in_features(self, config) -> dict[str, int]:
        """Input width of every linear, from the config alone (for checks before loading)."""
        hd = self.head_dim(config)
        widths = {n: config.hidden_size for n in self.linear_names()}
        widths["self_attn.o_proj"] = config.num_attention_heads * hd
        widths["mlp.down_proj"] = config.intermediate_size
        return widths


def register(adapter: ArchAdapter) -> ArchAdapter:
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter
    return adapter


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def adapter_for(config) -> ArchAdapter:
    """The adapter for a HF config, or a clear error naming the supported families."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(
            f"unsupported model family {model_type!r}: supported model types are "
            f"{', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type]
