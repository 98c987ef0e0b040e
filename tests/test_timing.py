"""benchmarks.timing's L2 flush: by a read (the default; clean lines) or by a write (zero_; dirty lines), named in
the results' timing text, and chosen with --l2_flush."""

import argparse

import pytest
import torch

from benchmarks.timing import L2_FLUSH_BYTES, L2Flush, add_l2_flush_argument, flush_note, make_timer


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


def test_kernel_bench_names_its_flush(cli, tmp_path):
    prefix = str(tmp_path / "bench")
    for by in ("read", "write"):
        out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--ms", "", "--weight_only_ms", "1", "--shapes",
                  "40x128", "--weight_only_formats", "e3m2", "--reps", "1", "--warmup", "0", "--flush_l2",
                  "--l2_flush", by, "--out", prefix)
        assert out.returncode == 0, out.stderr
        assert f"L2 flushed by a {by} of 256 MiB before each" in open(prefix + ".md").read()
