"""benchmarks/gpu_suite.sh: every section it runs is described in its header and named when a section is unknown."""

from __future__ import annotations

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.sh")


def sections() -> list[str]:
    """The labels of the script's ``case`` over its sections."""
    return re.findall(r"^    ([a-z0-9_]+)\)$", open(SUITE).read(), re.MULTILINE)


def test_every_section_is_described_and_listed(tmp_path):
    text = open(SUITE).read()
    labels = sections()
    assert len(labels) == len(set(labels)) and {"kernels", "model", "attention", "attention_tiles"} <= set(labels)
    assert [label for label in labels if not re.search(rf"^#   {label} ", text, re.MULTILINE)] == []
    done = subprocess.run(["bash", SUITE, "no_such_section"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert done.returncode == 2
    listed = done.stderr.split("choose ", 1)[1].strip().split(", ")
    assert "unknown section no_such_section" in done.stderr and sorted(listed) == sorted(labels)


def test_targets_flush_gives_the_cold_first_step_the_longer_limit(tmp_path):
    """The first flush's step autotunes from cold (270 s ran out on an H100), the second reads the picks back."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text("#!/bin/sh\nexit 0\n")
    (stub / "python").chmod(0o755)

    def limits(**env):
        done = subprocess.run(["bash", SUITE, "targets_flush"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
                                   "TRITON_CACHE_DIR": str(tmp_path / "cache"), **env})
        assert done.returncode == 0, done.stderr
        return re.findall(r"^== (kernel_bench_targets_flush_\w+) \(limit (\d+)s\)$", done.stdout, re.MULTILINE)

    assert limits() == [("kernel_bench_targets_flush_write", "380"), ("kernel_bench_targets_flush_read", "200")]
    assert limits(LIMIT_TARGET_FLUSH="90") == [("kernel_bench_targets_flush_write", "90"),
                                               ("kernel_bench_targets_flush_read", "90")]
