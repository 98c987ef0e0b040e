"""Timing for GPU benchmarks: median of CUDA-event repetitions (wall clock on the CPU)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

L2_FLUSH_BYTES = 256 * 2**20


def make_timer(
    device: torch.device, warmup: int, reps: int, flush_l2: bool, cuda_graph: bool, in_stream: int = 0,
) -> Callable[[Callable[[], object]], float]:
    """A function timing a callable: median milliseconds (CUDA events on GPU, wall clock on CPU).

    With ``cuda_graph`` the call is captured once (after the warmup, which autotunes) and
    replayed, so host-side launch overhead drops out of the small-M timings; each replay
    still pays the GPU's launch latency of a lone graph (a few microseconds), which in a
    captured model step overlaps the kernel before. ``in_stream`` R (on a GPU) times the
    call inside a stream of kernels instead: one graph of R calls, each after the L2 flush
    when ``flush_l2``, minus one graph of the R flushes alone, per call (median of
    ``reps`` replays of each).
    """
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if flush_l2 and device.type == "cuda" else None

    def captured(calls: int, fn: Callable[[], object] | None, flush_each: bool) -> torch.cuda.CUDAGraph:
        """One CUDA graph of ``calls`` calls of ``fn`` (None: none), each after the L2 flush if ``flush_each``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                if flush_each and flush is not None:
                    flush.zero_()
                if fn is not None:
                    fn()
        return graph

    def median_ms(run: Callable[[], object], flush_first: bool) -> float:
        """Median of ``reps`` CUDA-event timings of ``run``, each after an untimed L2 flush if ``flush_first``."""
        events = []
        for _ in range(reps):
            if flush_first and flush is not None:
                flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in events)

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
        if in_stream:
            flushes = median_ms(captured(in_stream, None, True).replay, False) if flush is not None else 0.0
            return (median_ms(captured(in_stream, fn, True).replay, False) - flushes) / in_stream
        return median_ms(captured(1, fn, False).replay if cuda_graph else fn, True)

    return time_ms


def gpu_stream_timer(parser: argparse.ArgumentParser, in_stream: int) -> tuple[torch.device, Callable]:
    """For a benchmark of CUDA kernels: the GPU (``parser``'s error without one) and ``make_timer``'s timer of one
    call in a stream of ``in_stream`` CUDA-graph calls, the L2 flushed before each (3 warm-up calls, median of 20)."""
    if not torch.cuda.is_available():
        parser.error("this benchmark times CUDA kernels: no GPU here")
    device = torch.device("cuda")
    return device, make_timer(device, warmup=3, reps=20, flush_l2=True, cuda_graph=True, in_stream=in_stream)
