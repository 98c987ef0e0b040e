"""Where every benchmark writes its figures: ``PREFIX.json`` beside ``PREFIX.md``."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import torch

from calib.progress import atomic_write_text
from pipeline.results import device_name, library_versions


def write_result_files(prefix: str, data, markdown: str) -> None:
    """Write the JSON and the Markdown table, each atomically (a cut run leaves no half file)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    atomic_write_text(prefix + ".json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(prefix + ".md", markdown)


def markdown_header(title: str, result: dict) -> list[str]:
    """A result table's opening lines: its title, then where, when and how it was measured (``result``'s device,
    date, versions, timing and command), each followed by a blank line where Markdown needs one."""
    return [f"# {title}", "", f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
            f"Timing: {result['timing']}.", f"Command: `{result['command']}`", ""]


# The prefix of the switches that change what a benchmark measures (PTQ_PDL, PTQ_E2M1_INT8, ...): a recorded
# command carries every one set.
MEASURED_ENV_PREFIX = "PTQ_"


def command_line(script: str, argv: list[str]) -> str:
    """The command that reproduces a run: ``python benchmarks/SCRIPT ARGS``, after the ``MEASURED_ENV_PREFIX``
    settings it ran under, by name; quoted for a shell, so an empty or ';'-separated argument pastes back whole."""
    env = [f"{name}={shlex.quote(value)}" for name, value in sorted(os.environ.items())
           if name.startswith(MEASURED_ENV_PREFIX)]
    return " ".join([*env, "python", f"benchmarks/{script}", *map(shlex.quote, argv)])


def run_header(script: str, argv: list[str] | None, device: torch.device) -> dict:
    """A result's first fields: the date, the device, the library versions and the command that reproduces the run
    (``command_line``; ``argv`` None: this process's)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device_name(device), "versions": library_versions(),
            "command": command_line(script, argv if argv is not None else sys.argv[1:])}
