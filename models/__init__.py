"""Model families (architecture adapters) and loading."""

from . import llama, qwen2, qwen3  # noqa: F401  (registers the adapters)
from .adapter import ADAPTERS, ArchAdapter, adapter_for, supported_model_types
from .loading import load_config, load_model, load_tokenizer, resolve_device, resolve_dtype

__all__ = [
    "ADAPTERS",
    "ArchAdapter",
    "adapter_for",
    "load_config",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "supported_model_types",
]
