"""Programmatic dependent launch (PDL, Hopper and later) for the decode step's kernels.

A decode step at batch 1 is a chain of short dependent kernels (a Llama-3-8B layer: four
activation quantizations, four decode products, the K/V write, two attention kernels), so
the time between one kernel's end and the next one's start is a large part of the step.
Launched as a programmatic dependent launch, a kernel's programs may start while the kernel
before it still runs, once every program of that one has signalled ``launch_dependents``
(here: at its start). Each program then does what needs no input from that kernel (the
decode product loads its first weight words) and waits (``wait_for_producer``) until the
kernels before it have finished and their writes are visible.

Every kernel launched this way waits in every program before it reads anything another kernel
writes and before it writes anything, so its end implies its producer's end: a kernel after it
in the stream, launched as PDL or not, sees the writes of all kernels before it.

``PTQ_PDL`` chooses the kernels: ``all`` (default) the activation quantization, the decode
product, the K/V write and both attention kernels; ``gemv`` only the decode product after
the activation kernel (run 8's arrangement, ``benchmarks/results/end_to_end_h200.md``);
``off`` none; or a comma-separated list of ``PDL_KERNELS``. Under the interpreter and on the
CPU nothing launches this way. (The FPx one-row product launched this way, its first words
prefetched into L2 before it waited, ran its batch-1 decode step 8 % slower: ``kernels_h200.md``,
nineteenth run; waiting first and prefetching nothing, 5.4 % slower on the H100: 250.3 against 264.5 tok/s,
fifty-fourth session.)
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import triton
import triton.language as tl

INTERPRET = triton.knobs.runtime.interpret
PDL_KERNELS = ("act_quant", "gemv", "kv_write", "attention")
# PTQ_PDL's named modes and the kernels each launches that way (any other value: a list of PDL_KERNELS).
PDL_MODES = {"all": PDL_KERNELS, "gemv": ("gemv",), "off": ()}


def pdl_kernels() -> frozenset[str]:
    """The kernels ``PTQ_PDL`` (default ``all``) launches as programmatic dependent launches, checked."""
    mode = os.environ.get("PTQ_PDL", "all")
    named = PDL_MODES.get(mode)
    if named is None:
        named = tuple(name.strip() for name in mode.split(","))
        if not all(name in PDL_KERNELS for name in named):
            raise ValueError(f"PTQ_PDL={mode!r}: choose one of {', '.join(PDL_MODES)} or a comma-separated list of "
                             f"{', '.join(PDL_KERNELS)}")
    return frozenset(named)


@lru_cache(maxsize=None)
def _pdl_capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def uses_pdl(device: torch.device, kernel: str) -> bool:
    """Whether ``kernel`` (one of ``PDL_KERNELS``) on ``device`` launches as a programmatic dependent launch:
    compiled, on Hopper or later, and chosen by ``PTQ_PDL``."""
    if kernel not in PDL_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(PDL_KERNELS)}")
    if kernel not in pdl_kernels():
        return False
    return not INTERPRET and device.type == "cuda" and _pdl_capable(device.index if device.index is not None
                                                                    else torch.cuda.current_device())


def pdl_flags(device: torch.device, kernel: str) -> dict:
    """The launch's ``USE_GDC`` flag, and ``launch_pdl`` when it is set."""
    pdl = uses_pdl(device, kernel)
    return {"USE_GDC": pdl, **({"launch_pdl": True} if pdl else {})}


@triton.jit
def launch_dependents(USE_GDC: tl.constexpr):
    """Let the next kernel's programs start (a no-op unless it is a programmatic dependent launch)."""
    if USE_GDC:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait_for_producer(USE_GDC: tl.constexpr):
    """Under programmatic dependent launch, wait until the kernels before this one have finished and their
    writes are visible (a no-op otherwise)."""
    if USE_GDC:
        tl.extra.cuda.gdc_wait()
