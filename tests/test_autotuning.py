"""The autotuner's re-timing of its fastest candidates (quant_kernels.autotuning), on a small kernel run by the
interpreter and timed by a scripted benchmark: a sweep misled by a slow moment, then the rounds that correct it."""

from __future__ import annotations

import os
import weakref

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from quant_kernels import autotuning  # noqa: E402

BLOCKS = (16, 32, 64, 128, 256)
# A sweep in which BLOCK 32 ran in a fast moment and the others in a slow one; side by side, 16 is the fastest.
SWEEP_MS = {16: 3.0, 32: 1.0, 64: 2.0, 128: 2.5, 256: 4.0}
ROUND_MS = {16: 0.5, 32: 1.0, 64: 0.8, 128: 0.9, 256: 0.1}


@triton.jit
def _add_kernel(x_ptr, out_ptr, tag_ptr, n, BLOCK: tl.constexpr):
    """out += x (atomically, so that a run it was not zeroed before shows); the config's BLOCK into tag."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.atomic_add(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)
    tl.store(tag_ptr, BLOCK)


class ScriptedBench:
    """Triton's do_bench, with times from a script: it runs the kernel once and answers the sweep's time for the
    config it ran (read from the kernel's tag) or, with a round's ``rep``, the round's."""

    def __init__(self, tag: torch.Tensor):
        self.tag, self.calls = tag, []

    def __call__(self, kernel_call, warmup=25, rep=100, quantiles=None):
        kernel_call()
        block = int(self.tag[0])
        in_round = rep == autotuning.ROUND_REP_MS
        self.calls.append((block, in_round))
        ms = (ROUND_MS if in_round else SWEEP_MS)[block]
        return [ms, 0.9 * ms, 1.2 * ms]


def _tuned(monkeypatch, retime: str, disk_cache: bool = False):
    monkeypatch.setenv("PTQ_AUTOTUNE_RETIME", retime)
    x = torch.randn(100)
    out, tag = torch.zeros(100), torch.zeros(1, dtype=torch.int32)
    bench = ScriptedBench(tag)
    tuner = autotuning.RetimingAutotuner(_add_kernel, [triton.Config(dict(BLOCK=b)) for b in BLOCKS], ["n"],
                                         reset_to_zero=["out_ptr"], benchmarker=bench)
    if disk_cache:  # as TRITON_CACHE_AUTOTUNING=1 sets it on a GPU (Triton never caches under the interpreter)
        tuner._disk_cache = True
    tuner[lambda meta: (triton.cdiv(100, meta["BLOCK"]),)](x, out, tag, 100)
    return tuner, bench, x, out


def test_rounds_overturn_a_pick_made_in_a_slow_moment(monkeypatch):
    tuner, bench, x, out = _tuned(monkeypatch, "1")
    assert tuner.best_config.kwargs["BLOCK"] == 16  # the sweep alone picks 32
    rounds = [block for block, in_round in bench.calls if in_round]
    assert sorted(set(rounds)) == [16, 32, 64, 128]  # the four fastest of the sweep; 256 is not timed again
    assert len(rounds) == autotuning.RETIME_TOP * autotuning.RETIME_ROUNDS
    # The first run of each round moves along the candidates.
    assert rounds[::autotuning.RETIME_TOP] == [32, 64, 128, 16, 32]
    # Zeroed again after the rounds: the output holds one run's sum.
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    # What Triton's disk cache keeps: the pick is the lowest entry, at the sweep's lowest median.
    timings = {c.kwargs["BLOCK"]: t for c, t in tuner.configs_timings.items()}
    assert min(timings, key=timings.get) == 16 and timings[16][0] == pytest.approx(1.0)
    assert timings[64][0] == pytest.approx(1.6) and timings[256] == [4.0, 3.6, 4.8]


def test_retiming_switched_off_keeps_the_sweeps_pick(monkeypatch):
    tuner, bench, x, out = _tuned(monkeypatch, "0")
    assert tuner.best_config.kwargs["BLOCK"] == 32
    assert not any(in_round for _, in_round in bench.calls)
    torch.testing.assert_close(out, x, rtol=0, atol=0)


def test_retiming_switch_rejects_other_values(monkeypatch):
    monkeypatch.setenv("PTQ_AUTOTUNE_RETIME", "yes")
    with pytest.raises(ValueError, match="PTQ_AUTOTUNE_RETIME='yes': choose 1 .*or 0"):
        autotuning.retime_on()


def test_a_slow_round_moves_no_median():
    calls = []

    def time_one(config):
        calls.append(config)
        slow = 10.0 if len(calls) in (5, 6, 7, 8) else 1.0  # the whole second round in a slow moment
        return [config * slow, 0.0, 0.0]

    retimed = autotuning.timed_in_rounds([1.0, 2.0, 3.0, 4.0], time_one, rounds=3)
    assert {c: t[0] for c, t in retimed.items()} == {1.0: 1.0, 2.0: 2.0, 3.0: 3.0, 4.0: 4.0}


def test_candidates_skip_configs_that_did_not_run():
    timings = {"a": [2.0, 0, 0], "b": [float("inf")] * 3, "c": [1.0, 0, 0], "d": [3.0, 0, 0]}
    assert autotuning.retime_candidates(timings, top=2) == ["c", "a"]


def test_tuning_keeps_no_tensor_of_its_launch(monkeypatch):
    tuner, _, x, out = _tuned(monkeypatch, "1")
    launched = weakref.ref(x)
    del x, out
    assert launched() is None and tuner.best_config.kwargs["BLOCK"] == 16


def test_disk_cache_keeps_the_retimed_pick_per_gpu(monkeypatch, tmp_path):
    """The disk cache (``TRITON_CACHE_AUTOTUNING=1``): a sweep files its re-timed pick under a key naming the GPU; a
    new tuner on the same GPU reads it back without timing anything; one on another GPU of the same architecture
    tunes afresh. (Stand-ins for what the interpreter lacks: the JIT kernel's source key and the backend's hash.)"""
    import triton.compiler.compiler as compiler
    import triton.runtime.autotuner as triton_autotuner
    from triton.runtime.interpreter import InterpretedFunction

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(triton_autotuner, "JITFunction", InterpretedFunction)
    monkeypatch.setattr(InterpretedFunction, "cache_key", "add-kernel-source", raising=False)
    monkeypatch.setattr(triton_autotuner, "driver", type("Driver", (), {"active": type("Active", (), {
        "get_current_target": staticmethod(lambda: "sm_90")})}))
    monkeypatch.setattr(compiler, "make_backend", lambda target: type("Backend", (), {"hash": lambda self: "cuda"})())
    gpu = {"name": "NVIDIA H100 80GB HBM3"}
    monkeypatch.setattr(autotuning, "device_name", lambda: gpu["name"])

    tuner, bench, x, out = _tuned(monkeypatch, "1", disk_cache=True)
    assert tuner.best_config.kwargs["BLOCK"] == 16 and any(in_round for _, in_round in bench.calls)
    assert len(list(tmp_path.rglob("*.autotune.json"))) == 1
    tuner, bench, x, out = _tuned(monkeypatch, "1", disk_cache=True)
    assert tuner.best_config.kwargs["BLOCK"] == 16 and bench.calls == []  # read back, nothing timed
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    gpu["name"] = "NVIDIA H200"
    tuner, bench, x, out = _tuned(monkeypatch, "1", disk_cache=True)
    assert any(in_round for _, in_round in bench.calls) and len(list(tmp_path.rglob("*.autotune.json"))) == 2
    monkeypatch.setenv("PTQ_AUTOTUNE_READ_FLUSH", "1")  # picks timed after a read flush are filed apart
    tuner, bench, x, out = _tuned(monkeypatch, "1", disk_cache=True)
    assert any(in_round for _, in_round in bench.calls) and len(list(tmp_path.rglob("*.autotune.json"))) == 3
    tuner, bench, x, out = _tuned(monkeypatch, "1", disk_cache=True)
    assert bench.calls == [] and len(list(tmp_path.rglob("*.autotune.json"))) == 3


def test_the_read_flush_switch_picks_the_benchmark(monkeypatch):
    """``PTQ_AUTOTUNE_READ_FLUSH=1``: the sweep and the rounds time with ``do_bench_read_flush``; unset, with
    Triton's benchmarker (its do_bench, a write flush); any other value is refused by name."""
    import triton.runtime

    used = []
    monkeypatch.setattr(autotuning, "do_bench_read_flush", lambda fn, **kw: used.append(("read", kw)))
    monkeypatch.setattr(triton.runtime, "driver", type("Driver", (), {"active": type("Active", (), {
        "get_benchmarker": staticmethod(lambda: lambda fn, **kw: used.append(("triton", kw)))})}))
    tuner = autotuning.RetimingAutotuner(_add_kernel, [triton.Config(dict(BLOCK=b)) for b in BLOCKS], ["n"])
    monkeypatch.delenv("PTQ_AUTOTUNE_READ_FLUSH", raising=False)
    tuner.do_bench(None, quantiles=(0.5,))
    monkeypatch.setenv("PTQ_AUTOTUNE_READ_FLUSH", "1")
    tuner.do_bench(None, quantiles=(0.5,))
    tuner._round = True
    tuner.do_bench(None, quantiles=(0.5,))
    assert used == [("triton", {"quantiles": (0.5,)}), ("read", {"quantiles": (0.5,)}),
                    ("read", {"warmup": autotuning.ROUND_WARMUP_MS, "rep": autotuning.ROUND_REP_MS,
                              "quantiles": (0.5,)})]
    monkeypatch.setenv("PTQ_AUTOTUNE_READ_FLUSH", "read")
    with pytest.raises(ValueError, match="PTQ_AUTOTUNE_READ_FLUSH='read': choose 0 .*or 1"):
        tuner.do_bench(None, quantiles=(0.5,))
