"""Qwen3: the Llama layout with RMSNorm on each query and key head (q_norm, k_norm)."""

from .adapter import ArchAdapter, register

QWEN3 = register(ArchAdapter(family="qwen3", model_types=("qwen3",), has_qk_norm=True))
