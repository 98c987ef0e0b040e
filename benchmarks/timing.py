"""Timing for GPU benchmarks: median of CUDA-event repetitions (wall clock on the CPU)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

L2_FLUSH_BYTES = 256 * 2**20


def make_timer(
    device: torch.device, warmup: int, reps: int, flush_l2: bool, cuda_graph: bool
) -> Callable[[Callable[[], object]], float]:
    """A function timing a callable: median milliseconds (CUDA events on GPU, wall clock on CPU).

    With ``cuda_graph`` the call is captured once (after the warmup, which autotunes) and
    replayed, so host-side launch overhead drops out of the small-M timings.
    """
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if flush_l2 and device.type == "cuda" else None

    def time_ms(fn: Callable[[], object]) -> float:
        for _ in range(warmup):
            fn()
        if device.type != "cuda":
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            return statistics.median(times)
        torch.cuda.synchronize(device)
        if cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            fn = graph.replay
        events = []
        for _ in range(reps):
            if flush is not None:
                flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in events)

    return time_ms
