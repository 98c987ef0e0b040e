"""Loading Hugging Face causal LMs from a hub id, a local directory or a GGUF file.

Offline, the same code takes directories and files. A hub id that is neither cached nor
reachable fails at once with a message saying to pass a local directory, rather than
after transformers' minute of retries.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from .adapter import adapter_for

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
DTYPE_CHOICES = ("auto", *DTYPES)
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelLocation:
    """Where from_pretrained looks: a hub id or directory, plus a GGUF file name in it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.path)


def locate(model: str | None, gguf_file: str | None = None) -> ModelLocation:
    """Turn ``--model`` / ``--gguf_file`` into a location, checking local paths exist."""
    if model and model.endswith(".gguf") and gguf_file is None:
        model, gguf_file = None, model
    if gguf_file is not None and (model is None or os.path.isfile(gguf_file)):
        if not os.path.isfile(gguf_file):
            raise FileNotFoundError(f"GGUF file not found: {gguf_file}")
        return ModelLocation(os.path.dirname(os.path.abspath(gguf_file)), os.path.basename(gguf_file))
    if not model:
        raise ValueError("no model given: pass --model (hub id or directory) or --gguf_file")
    # A hub id is "name" or "org/name"; anything else is meant as a directory.
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_like_path and not os.path.isdir(os.path.expanduser(model)):
        raise FileNotFoundError(f"model directory not found: {model}")
    if gguf_file is not None and os.path.isdir(model) and not os.path.isfile(os.path.join(model, gguf_file)):
        raise FileNotFoundError(f"GGUF file {gguf_file} not found in {model}")
    return ModelLocation(os.path.expanduser(model), gguf_file)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_error(loc: ModelLocation, cause: Exception) -> OSError:
    return OSError(
        f"cannot load {loc.path!r}: it is not a local directory, it is not in the Hugging Face "
        f"cache, and the hub cannot be reached. Pass a local model directory instead "
        f"(--model /path/to/model), e.g. one written by scripts/prepare_smollm2.sh "
        f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    )


def _from_pretrained(factory, loc: ModelLocation, **kwargs):
    """factory.from_pretrained with the cache first and a fast, clear offline failure."""
    kwargs = {**kwargs, **({"gguf_file": loc.gguf_file} if loc.gguf_file else {})}
    if loc.is_local:
        return factory.from_pretrained(loc.path, **kwargs)
    try:
        return factory.from_pretrained(loc.path, local_files_only=True, **kwargs)
    except OSError as cached_miss:
        if not _hub_reachable():
            raise _offline_error(loc, cached_miss) from cached_miss
    return factory.from_pretrained(loc.path, **kwargs)


def load_config(loc: ModelLocation) -> PretrainedConfig:
    """The model's config; also checks that its family is supported."""
    config = _from_pretrained(AutoConfig, loc)
    adapter_for(config)
    return config


def load_tokenizer(loc: ModelLocation):
    return _from_pretrained(AutoTokenizer, loc)


def resolve_device(device: str) -> torch.device:
    if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for, but no CUDA GPU is available: use --device cpu")
    return torch.device(device)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the spelling of ``--dtype`` and of saved results)."""
    return str(dtype).replace("torch.", "")


def resolve_dtype(dtype: str, config: PretrainedConfig, device: torch.device) -> torch.dtype:
    """``auto``: the checkpoint's half-precision dtype on GPU (bf16 if it is fp32), float32 on CPU."""
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        stored = DTYPES.get(dtype_name(stored), stored)
        return stored if stored in (torch.float16, torch.bfloat16) else torch.bfloat16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[dtype]


def _drop_gguf_quantizer(model: torch.nn.Module) -> None:
    """transformers dequantizes GGUF weights into plain linears but still marks the model as
    GGUF-quantized, which blocks saving it; the marks describe nothing left, so drop them."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        del model.quantization_method
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_model(loc: ModelLocation, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    model = _from_pretrained(AutoModelForCausalLM, loc, dtype=dtype)
    if loc.gguf_file:
        _drop_gguf_quantizer(model)
    model.to(device)
    model.eval()
    return model
