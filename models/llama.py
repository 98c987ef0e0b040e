"""Llama (and Llama-layout models such as SmolLM2, TinyStories Llama)."""

from .adapter import ArchAdapter, register

LLAMA = register(ArchAdapter(family="llama", model_types=("llama",)))
