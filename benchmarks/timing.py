"""Timing for GPU benchmarks: median of CUDA-event repetitions (wall clock on the CPU)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from quant_kernels.l2_flush import L2_FLUSH_BYTES, L2_FLUSHES, L2Flush, flushed_call_times


def flush_note(by: str) -> str:
    """The timing text's words for the flush ``by`` (an ``L2_FLUSHES`` name)."""
    return f"L2 flushed by a {by} of {L2_FLUSH_BYTES // 2**20} MiB"


# ``gpu_stream_timer``'s warm-up calls and timed repetitions.
STREAM_WARMUP, STREAM_REPS = 3, 20


def in_stream_note(calls: int) -> str:
    """How ``--in_stream`` timed, for the result's timing line."""
    return f", in a stream: one CUDA graph of {calls} calls minus one of their L2 flushes, per call" if calls else ""


def stream_timer_note(in_stream: int, flush_by: str) -> str:
    """The timing text of ``gpu_stream_timer(parser, in_stream, flush_by)``'s timer."""
    return (f"median of {STREAM_REPS} after {STREAM_WARMUP} warmup calls, the {flush_note(flush_by)} before each"
            f"{in_stream_note(in_stream)}")


def replay_note(reps: int, warmup: int, flush_by: str, on_cpu: bool = False) -> str:
    """The timing text of a benchmark that times CUDA-graph replays with the L2 flushed ``flush_by`` (or, ``on_cpu``,
    runs under the Triton interpreter, which measures no speed)."""
    if on_cpu:
        return "CPU, Triton interpreter: not a speed measurement"
    return f"median of {reps} CUDA-graph replays after {warmup} warmup calls, {flush_note(flush_by)}"


def add_l2_flush_argument(parser: argparse.ArgumentParser) -> None:
    """``--l2_flush {read,write}``: how the timers flush the L2 (``L2Flush``)."""
    parser.add_argument("--l2_flush", default="read", choices=L2_FLUSHES,
                        help=f"flush the L2 by reading a {L2_FLUSH_BYTES // 2**20} MiB buffer (default: clean lines, "
                             "as a model step's weight reads leave it) or by writing it (zero_, as Triton's do_bench: "
                             "dirty lines whose write-backs the timed kernel shares DRAM with; earlier results used "
                             "it; in a stream it also credits a kernel that leaves DRAM idle with the write-backs that "
                             "drain while it runs)")


def make_timer(
    device: torch.device, warmup: int, reps: int, flush_l2: bool, cuda_graph: bool, in_stream: int = 0,
    flush_by: str = "read",
) -> Callable[[Callable[[], object]], float]:
    """A function timing a callable: median milliseconds (CUDA events on GPU, wall clock on CPU).

    With ``cuda_graph`` the call is captured once (after the warmup, which autotunes) and
    replayed, so host-side launch overhead drops out of the small-M timings; each replay
    still pays the GPU's launch latency of a lone graph (a few microseconds), which in a
    captured model step overlaps the kernel before. ``in_stream`` R (on a GPU) times the
    call inside a stream of kernels instead: one graph of R calls, each after the L2 flush
    when ``flush_l2``, minus one graph of the R flushes alone, per call (median of
    ``reps`` replays of each). ``flush_by`` names the flush (``L2Flush``). In a stream a write's dirty lines drain
    during the next call, where a flush alone pays for them, so the subtraction credits a kernel that leaves DRAM
    idle with them (FP6 at 128 rows: 19.8-20.8 us in a stream against 24.4-25.4 replayed alone, both by a write).
    """
    flush = L2Flush(device, flush_by) if flush_l2 and device.type == "cuda" else None

    def captured(calls: int, fn: Callable[[], object] | None, flush_each: bool) -> torch.cuda.CUDAGraph:
        """One CUDA graph of ``calls`` calls of ``fn`` (None: none), each after the L2 flush if ``flush_each``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                if flush_each and flush is not None:
                    flush()
                if fn is not None:
                    fn()
        return graph

    def median_ms(run: Callable[[], object], flush_first: bool) -> float:
        """Median of ``reps`` CUDA-event timings of ``run``, each after an untimed L2 flush if ``flush_first``."""
        return statistics.median(flushed_call_times(run, reps, flush if flush_first else None))

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


def gpu_stream_timer(parser: argparse.ArgumentParser, in_stream: int, flush_by: str) -> tuple[torch.device, Callable]:
    """For a benchmark of CUDA kernels: the GPU (``parser``'s error without one) and ``make_timer``'s timer of one
    call in a stream of ``in_stream`` CUDA-graph calls, the L2 flushed by ``flush_by`` before each (STREAM_WARMUP
    warm-up calls, median of STREAM_REPS; ``stream_timer_note`` words it)."""
    if not torch.cuda.is_available():
        parser.error("this benchmark times CUDA kernels: no GPU here")
    device = torch.device("cuda")
    return device, make_timer(device, warmup=STREAM_WARMUP, reps=STREAM_REPS, flush_l2=True, cuda_graph=True,
                              in_stream=in_stream, flush_by=flush_by)
