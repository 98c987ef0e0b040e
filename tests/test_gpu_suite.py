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
