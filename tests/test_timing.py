"""The L2 flush (quant_kernels.l2_flush): by a read (the default; clean lines) or by a write (zero_; dirty lines),
named in the results' timing text, chosen with --l2_flush; and Triton's do_bench with the read, for the autotuners."""

import argparse
import os

import pytest
import torch

from benchmarks.timing import L2_FLUSH_BYTES, L2Flush, add_l2_flush_argument, flush_note, make_timer, replay_note
from quant_kernels import l2_flush


def test_a_read_flush_streams_the_buffer_and_leaves_it_as_it_was():
    flush = L2Flush(torch.device("cpu"))
    assert flush.by == "read" and flush.buffer.numel() * 4 == L2_FLUSH_BYTES
    flush.buffer[-1] = 7  # the read reaches the buffer's last line
    flush()
    assert flush.largest.item() == 7 and int(flush.buffer.sum()) == flush.buffer.numel() + 6


def test_a_write_flush_zeroes_the_buffer():
    flush = L2Flush(torch.device("cpu"), "write")
    flush()
    assert not flush.buffer.any()


def test_an_unknown_flush_is_refused_by_name():
    with pytest.raises(ValueError, match="the L2 is flushed by one of read, write, not 'dirty'"):
        L2Flush(torch.device("cpu"), "dirty")
    with pytest.raises(ValueError, match="not 'dirty'"):
        make_timer(torch.device("cuda"), 0, 1, True, False, flush_by="dirty")


def test_the_flag_defaults_to_a_read_and_refuses_other_words(capsys):
    parser = argparse.ArgumentParser()
    add_l2_flush_argument(parser)
    assert parser.parse_args([]).l2_flush == "read" and parser.parse_args(["--l2_flush", "write"]).l2_flush == "write"
    with pytest.raises(SystemExit):
        parser.parse_args(["--l2_flush", "zero"])
    assert "invalid choice: 'zero'" in capsys.readouterr().err
    assert flush_note("read") == "L2 flushed by a read of 256 MiB"


def test_stream_timer_note_words_the_stream_timers_counts_and_flush():
    from benchmarks.timing import STREAM_REPS, STREAM_WARMUP, stream_timer_note

    assert (STREAM_WARMUP, STREAM_REPS) == (3, 20)
    assert stream_timer_note(0, "read") == "median of 20 after 3 warmup calls, the L2 flushed by a read of 256 MiB " \
                                           "before each"
    assert stream_timer_note(20, "write").endswith("by a write of 256 MiB before each, in a stream: one CUDA graph "
                                                   "of 20 calls minus one of their L2 flushes, per call")


def test_replay_note_names_the_replays_and_the_flush_or_no_measurement():
    want = "median of 30 CUDA-graph replays after 5 warmup calls, L2 flushed by a write of 256 MiB"
    assert replay_note(30, 5, "write") == want
    assert replay_note(30, 5, "read", on_cpu=True) == "CPU, Triton interpreter: not a speed measurement"


def test_kernel_bench_names_its_flush(cli, tmp_path):
    prefix = str(tmp_path / "bench")
    for by in ("read", "write"):
        out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--ms", "", "--weight_only_ms", "1", "--shapes",
                  "40x128", "--weight_only_formats", "e3m2", "--reps", "1", "--warmup", "0", "--flush_l2",
                  "--l2_flush", by, "--out", prefix)
        assert out.returncode == 0, out.stderr
        assert f"L2 flushed by a {by} of 256 MiB before each" in open(prefix + ".md").read()
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--l2_flush", "write", "--out", prefix + "_unflushed")
    assert out.returncode == 2 and "--l2_flush write says how --flush_l2 flushes: give --flush_l2 too" in out.stderr
    assert not os.path.exists(prefix + "_unflushed.json")


def test_do_bench_read_flush_times_each_call_after_a_read_flush(monkeypatch):
    """Triton's method on a scripted clock (call i takes 1 + i % 4 ms): one untimed call, five calls to estimate
    (2.4 ms), 25 / 2.4 -> 10 warm-up calls, 100 / 2.4 -> 41 timed calls, each right after a read flush."""
    log, clock = [], {"ms": 0.0, "calls": 0}

    def fn():
        clock["ms"] += 1 + clock["calls"] % 4
        clock["calls"] += 1
        log.append("call")

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.ms = clock["ms"]
            log.append("record")

        def elapsed_time(self, end):
            return end.ms - self.ms

    class Flush:
        by = "read"

        def __call__(self):
            log.append("flush")

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setitem(l2_flush._read_flushes, torch.device("cuda", 0), Flush())
    times = l2_flush.do_bench_read_flush(fn, quantiles=[0.5, 0.2, 0.8])
    durations = [1 + i % 4 for i in range(16, 16 + 41)]  # the calls after 1 + 5 + 10
    assert clock["calls"] == 1 + 5 + 10 + 41 and log.count("flush") == 5 + 41
    timed = "".join({"call": "c", "record": "r", "flush": "f"}[e] for e in log[-41 * 4 - 1:])
    assert timed == "c" + "frcr" * 41  # the last warm-up call, then flush, start, call, end
    expected = torch.quantile(torch.tensor(durations, dtype=torch.float64), torch.tensor([0.5, 0.2, 0.8],
                                                                                         dtype=torch.float64))
    assert times == expected.tolist() and times[1] < times[0] < times[2]
    clock.update(ms=0.0, calls=0)
    # at least one warm-up call and one timed call: call 7 (from 0), 4 ms; their mean without quantiles
    assert l2_flush.do_bench_read_flush(fn, warmup=0, rep=1) == pytest.approx(4.0)
