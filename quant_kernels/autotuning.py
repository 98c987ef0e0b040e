"""Triton's autotuner, with the sweep's fastest candidates timed again side by side before the pick.

Triton times each candidate config once, one after another (about 125 ms apiece), and keeps the lowest median. A
GPU that slows for a few seconds in the middle of a sweep (kernels_h200.md: the fortieth session's H200 run and the
forty-second's H100 one, every candidate of a shape 30-60 % slower for a few seconds) then hands the pick to a
config timed before or after the slow moment. ``RetimingAutotuner`` times the ``RETIME_TOP`` fastest candidates
again in ``RETIME_ROUNDS`` short rounds, in turn within each round (starting at a different candidate each round),
and picks the lowest median over the rounds: a slow moment now falls on every candidate alike.

``PTQ_AUTOTUNE_RETIME=0`` keeps Triton's own pick. ``PTQ_AUTOTUNE_READ_FLUSH=1`` times the candidates with the L2
flushed by a read (``l2_flush.do_bench_read_flush``) instead of Triton's write, as the benchmarks time them. With
``TRITON_CACHE_AUTOTUNING=1`` the disk cache keeps the re-timed pick (``retimed_timings``), under a key that names the
GPU (``device_name``) and a read flush: Triton's own key names only the architecture, so an H100's picks would
otherwise be read back on an H200 sharing the cache folder.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Hashable, Sequence

import triton
from triton.runtime.autotuner import Autotuner

from .l2_flush import do_bench_read_flush
from .switches import env_switch

RETIME_TOP = 4
RETIME_ROUNDS = 5
# Each round's timing of one candidate: Triton's do_bench, shorter than the sweep's 25 ms warm-up and 100 ms.
ROUND_WARMUP_MS = 5
ROUND_REP_MS = 20

Timing = list  # [median, 20th percentile, 80th percentile], in ms, as Triton's sweep records it


def device_name() -> str:
    """The current GPU's name, which the disk cache's key holds."""
    import torch

    return torch.cuda.get_device_name(torch.cuda.current_device())


def retime_on() -> bool:
    """Whether the autotuners time their fastest candidates again (``PTQ_AUTOTUNE_RETIME``, 1 by default)."""
    return env_switch("PTQ_AUTOTUNE_RETIME", True, {"1": f"the {RETIME_TOP} fastest candidates timed again side by "
                                                         f"side, the default", "0": "Triton's one sweep"})


def read_flush_on() -> bool:
    """Whether the autotuners flush the L2 by a read between timed calls (``PTQ_AUTOTUNE_READ_FLUSH``, 0 by
    default: Triton's ``do_bench``, which flushes by a write)."""
    return env_switch("PTQ_AUTOTUNE_READ_FLUSH", False, {
        "0": "Triton's do_bench, the L2 flushed by a write, the default",
        "1": "the L2 flushed by a read between timed calls, as the benchmarks flush it"})


def retime_candidates(timings: dict[Hashable, Timing], top: int = RETIME_TOP) -> list:
    """The ``top`` configs of a sweep with the lowest medians, fastest first, of those that ran (finite)."""
    ran = [c for c, t in timings.items() if math.isfinite(t[0])]
    return sorted(ran, key=lambda c: timings[c])[:top]


def timed_in_rounds(candidates: Sequence, time_one: Callable[[object], Timing], rounds: int = RETIME_ROUNDS
                    ) -> dict:
    """Each candidate's timings over ``rounds`` rounds, element by element the median of its rounds; round r times
    the candidates in turn from the r-th (so that none always runs first or last)."""
    per_round = {c: [] for c in candidates}
    for r in range(rounds):
        for i in range(len(candidates)):
            config = candidates[(r + i) % len(candidates)]
            per_round[config].append(time_one(config))
    return {c: [statistics.median(t[q] for t in times) for q in range(3)] for c, times in per_round.items()}


def retimed_timings(timings: dict[Hashable, Timing], retimed: dict[Hashable, Timing]) -> tuple[object, dict]:
    """The pick (the lowest re-timed median) and the sweep's timings with the re-timed candidates' entries replaced:
    their re-timed timings scaled so that the pick takes the sweep's lowest median, the others their re-timed ratio
    to it. The sweep's other configs, all slower than that median, keep theirs, so the lowest entry is the pick,
    which is how Triton's disk cache reads a pick back."""
    pick = min(retimed, key=lambda c: retimed[c])
    scale = min(t[0] for t in timings.values()) / retimed[pick][0]
    return pick, {c: [v * scale for v in retimed[c]] if c in retimed else t for c, t in timings.items()}


class RetimingAutotuner(Autotuner):
    """``triton.runtime.Autotuner`` whose sweep ends by timing its fastest candidates again (module docstring).

    ``benchmarker`` (Triton's ``do_bench`` signature: fn, warmup, rep, quantiles) times a config; tests pass one
    that scripts the times."""

    def __init__(self, fn, configs: list[triton.Config], key: list[str], *, prune_configs_by: dict | None = None,
                 reset_to_zero: list[str] | None = None, benchmarker: Callable | None = None):
        super().__init__(fn, fn.arg_names, configs, key, reset_to_zero, None, prune_configs_by=prune_configs_by)
        self._benchmarker = benchmarker
        self._round = False
        self._bench_call: tuple | None = None
        # Every sweep goes through check_disk_cache, which ends it with the re-timing, whether or not the disk
        # cache is on (Triton runs the sweep straight when it is off).
        self._disk_cache, self.cache_results = self.cache_results, True

    @property
    def do_bench(self) -> Callable:
        """The sweep's benchmark, or a round's shorter one while re-timing."""
        bench = self._benchmarker or (do_bench_read_flush if read_flush_on()
                                      else triton.runtime.driver.active.get_benchmarker())
        if self._round:
            return lambda kernel_call, quantiles: bench(kernel_call, warmup=ROUND_WARMUP_MS, rep=ROUND_REP_MS,
                                                        quantiles=quantiles)
        return lambda kernel_call, quantiles: bench(kernel_call, quantiles=quantiles)

    def _bench(self, *args, config, **meta):
        """Triton's timing of one config; the sweep's arguments kept for the rounds (here, not in ``run``, which
        every launch goes through)."""
        self._bench_call = (args, meta)
        return super()._bench(*args, config=config, **meta)

    def check_disk_cache(self, tuning_key, configs, bench_fn) -> bool:
        def sweep_then_retime():
            try:
                bench_fn()
                self._retime(tuning_key)
            finally:
                self._bench_call = None  # (it holds the tuning launch's tensors)

        if not self._disk_cache:
            sweep_then_retime()
            return False
        # the picks of one GPU model are not another's, nor those timed after a write flush those after a read
        device_key = (*tuning_key, device_name(), *(("L2 flushed by a read",) if read_flush_on() else ()))
        found = super().check_disk_cache(device_key, configs, sweep_then_retime)
        if found:  # Triton filed the pick under the key it was given
            self.cache[tuning_key] = self.cache.pop(device_key)
        return found

    def _retime(self, tuning_key) -> None:
        candidates = retime_candidates(self.configs_timings)
        if len(candidates) < 2 or not retime_on():
            return
        args, kwargs = self._bench_call
        self._round = True
        try:
            retimed = timed_in_rounds(candidates, lambda config: self._bench(*args, config=config, **kwargs))
        finally:
            self._round = False
        pick, self.configs_timings = retimed_timings(self.configs_timings, retimed)
        self.cache[tuning_key] = pick
        self.pre_hook({**self.nargs, **kwargs, **pick.all_kwargs()}, reset_only=True)


def autotune(configs: list[triton.Config], key: list[str], prune_configs_by: dict | None = None,
             reset_to_zero: list[str] | None = None) -> Callable[[object], RetimingAutotuner]:
    """``triton.autotune``'s decorator for a ``RetimingAutotuner``."""
    return lambda fn: RetimingAutotuner(fn, configs, key, prune_configs_by=prune_configs_by,
                                        reset_to_zero=reset_to_zero)
