"""The L2 flush before a timed kernel call, by a read or by a write, and Triton's ``do_bench`` with the read.

A write (``zero_``, as Triton's ``do_bench`` and nvbench flush) leaves the L2 full of dirty lines, whose write-backs
the timed kernel then shares DRAM with: on an H100 it made cuBLAS bf16's 128 x 4096 x 4096 product 26 % slower and
FP6's 4 % (``benchmarks/results/kernels_h200.md``, sixty-fourth session). A read leaves clean lines, as the weight
reads of a model step's previous kernel do.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

L2_FLUSH_BYTES = 256 * 2**20
L2_FLUSHES = ("read", "write")


class L2Flush:
    """Evicts the L2 cache by streaming ``L2_FLUSH_BYTES`` through it, by a read (the default) or by a write."""

    def __init__(self, device: torch.device, by: str = "read"):
        if by not in L2_FLUSHES:
            raise ValueError(f"the L2 is flushed by one of {', '.join(L2_FLUSHES)}, not {by!r}")
        self.by = by
        self.buffer = torch.ones(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
        self.largest = torch.empty((), dtype=torch.int32, device=device)

    def __call__(self) -> None:
        if self.by == "write":
            self.buffer.zero_()
        else:
            torch.amax(self.buffer, dim=0, out=self.largest)


def flushed_call_times(fn: Callable[[], object], calls: int, flush: Callable[[], None] | None) -> list[float]:
    """The milliseconds (CUDA events) of ``calls`` calls of ``fn``, each after an untimed ``flush`` (None: none)."""
    events = []
    for _ in range(calls):
        if flush is not None:
            flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


_read_flushes: dict[torch.device, L2Flush] = {}


def do_bench_read_flush(fn: Callable[[], object], warmup: float = 25, rep: float = 100,
                        quantiles: Sequence[float] | None = None) -> list[float] | float:
    """Triton's ``do_bench`` (its signature and its method: five calls to estimate a call's time, then ``warmup`` ms
    of calls, then ``rep`` ms of timed ones, each after a flush), the L2 flushed by a read instead of its write.
    Milliseconds: the ``quantiles`` of the timed calls, or their mean."""
    device = torch.device("cuda", torch.cuda.current_device())
    if device not in _read_flushes:
        _read_flushes[device] = L2Flush(device)
    flush = _read_flushes[device]
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end) / 5, 1e-6)
    for _ in range(max(1, int(warmup / estimate_ms))):
        fn()
    times = torch.tensor(flushed_call_times(fn, max(1, int(rep / estimate_ms)), flush), dtype=torch.float64)
    if quantiles is None:
        return times.mean().item()
    return torch.quantile(times, torch.tensor(quantiles, dtype=torch.float64)).tolist()
