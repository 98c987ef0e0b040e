"""Qwen2 / Qwen2.5: the Llama layout with biases on q/k/v."""

from .adapter import ArchAdapter, register

QWEN2 = register(ArchAdapter(family="qwen2", model_types=("qwen2",)))
