"""Placing one model across several GPUs for evaluation (``--distribute``, ``--max_memory``).

Whole decoder layers go to GPUs in order (accelerate's balanced ``device_map="auto"``, never
splitting a layer), within per-device memory limits; what does not fit stays on the CPU
and is streamed to the first GPU when it runs (slow, but it runs). Inputs go to the first
device; the logits come back there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?", re.IGNORECASE)
_EXAMPLE = "e.g. --max_memory 70GiB (every GPU) or --max_memory 0=70GiB,1=70GiB,cpu=200GiB"


def parse_size(text: str) -> int:
    """``"70GiB"`` -> bytes (GiB/MiB: powers of 2, GB/MB: of 10; a bare number is bytes)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"--max_memory: {text!r} is not a size: write a number with a unit such as 70GiB, 500MiB or "
                         f"80GB ({_EXAMPLE})")
    number, unit = match.groups()
    size = int(float(number) * UNITS[(unit or "").upper()])
    if size <= 0:
        raise ValueError(f"--max_memory: {text!r} is not a positive size ({_EXAMPLE})")
    return size


@dataclass(frozen=True)
class MemoryLimits:
    """``--max_memory``: limits per GPU index, one for every GPU, and the CPU's (bytes)."""

    gpus: dict[int, int] = field(default_factory=dict)
    every_gpu: int | None = None
    cpu: int | None = None

    @classmethod
    def parse(cls, text: str) -> MemoryLimits:
        """``"0=70GiB,1=70GiB,cpu=200GiB"``, or a bare size for every GPU (``"70GiB"``, ``"70GiB,cpu=200GiB"``)."""
        gpus: dict[int, int] = {}
        every_gpu = cpu = None
        entries = [e.strip() for e in text.split(",")]
        if not text.strip() or any(not e for e in entries):
            raise ValueError(f"--max_memory {text!r} has an empty entry ({_EXAMPLE})")
        for entry in entries:
            key, sep, value = entry.rpartition("=")
            key = key.strip().lower()
            if not sep:
                if every_gpu is not None:
                    raise ValueError(f"--max_memory {text!r} gives two sizes for every GPU: give one ({_EXAMPLE})")
                every_gpu = parse_size(value)
            elif key == "cpu":
                if cpu is not None:
                    raise ValueError(f"--max_memory {text!r} names cpu twice ({_EXAMPLE})")
                cpu = parse_size(value)
            elif key.isdigit():
                if int(key) in gpus:
                    raise ValueError(f"--max_memory {text!r} names GPU {key} twice ({_EXAMPLE})")
                gpus[int(key)] = parse_size(value)
            else:
                raise ValueError(f"--max_memory: unknown device {key!r} in {entry!r}: name a GPU index (0, 1, ...) or "
                                 f"cpu ({_EXAMPLE})")
        if every_gpu is not None and gpus:
            raise ValueError(f"--max_memory {text!r} mixes a size for every GPU with per-GPU sizes: use one form "
                             f"({_EXAMPLE})")
        return cls(gpus, every_gpu, cpu)

    def for_devices(self, gpu_count: int) -> dict[int | str, int] | None:
        """accelerate's ``max_memory`` for ``gpu_count`` visible GPUs; ``None`` where nothing was limited."""
        wrong = sorted(i for i in self.gpus if i >= gpu_count)
        if wrong:
            raise ValueError(f"--max_memory names GPU {wrong[0]}, but {gpu_count} GPUs are visible "
                             f"(0-{gpu_count - 1}): name only those")
        if self.every_gpu is not None:
            limits: dict[int | str, int] = {i: self.every_gpu for i in range(gpu_count)}
        else:
            limits = dict(sorted(self.gpus.items()))
        if self.cpu is not None:
            limits["cpu"] = self.cpu
        return limits or None


def require_cuda() -> None:
    """``--distribute`` needs CUDA GPUs; checked before any weight loads."""
    if not torch.cuda.is_available():
        raise ValueError("--distribute places the model across CUDA GPUs, but none is available here: drop "
                         "--distribute (the model then runs on --device)")


def device_map(model: nn.Module, adapter, max_memory: dict[int | str, int] | None) -> dict[str, int | str]:
    """Where each top-level part of ``model`` goes: whole decoder layers, balanced over the GPUs.

    ``max_memory`` as accelerate takes it (``{0: bytes, 1: bytes, "cpu": bytes}``; ``None``:
    what is free now). Raises when the model does not fit in the GPUs and the CPU together.
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted({type(layer).__name__ for layer in adapter.decoder_layers(model)})
    balanced = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split)
    placement = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split)
    if "disk" in placement.values():
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
        raise ValueError(f"the model ({size:.1f} MiB) does not fit in the GPUs and CPU memory allowed by "
                         f"--max_memory ({max_memory}): raise the limits, or add cpu=SIZE")
    return placement


def distribute(model: nn.Module, adapter, limits: MemoryLimits | None) -> nn.Module:
    """Place ``model`` across the visible GPUs (``device_map``) with accelerate's hooks; returns it."""
    from accelerate import dispatch_model

    require_cuda()
    max_memory = limits.for_devices(torch.cuda.device_count()) if limits is not None else None
    placement = device_map(model, adapter, max_memory)
    on_cpu = [name for name, where in placement.items() if where == "cpu"]
    if on_cpu:
        log.warning("%d parts of the model do not fit on the GPUs and stay on the CPU (streamed to the GPU at every "
                    "forward: slow), e.g. %s", len(on_cpu), on_cpu[:3])
    dispatch_model(model, placement)
    for name, where in placement.items():
        if isinstance(where, int):
            # Triton launches on the current CUDA device, not on its tensors': follow each part's GPU.
            model.get_submodule(name).register_forward_pre_hook(lambda *_, index=where: torch.cuda.set_device(index))
    gpus = sorted({w for w in placement.values() if isinstance(w, int)})
    log.info("placed the model on GPUs %s%s", gpus, " and the CPU" if on_cpu else "")
    return model
