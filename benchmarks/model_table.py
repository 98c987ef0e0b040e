"""One model table from several ``bench_model.py`` runs on one machine.

Issue 10's table (bf16, W4A16, W4A4, W4A4KV4, FP6 and FP5; prefill at batch 1, 4 and 16; decode at batch 1, 8 and
64) takes more than one device call of ten minutes: each mode compiles a step per batch. Runs of one warm machine
(``gpu_suite.sh model`` with ``MODES``, ``PREFILL_BATCHES`` and ``DECODE_BATCHES``) merge here into one table, each
mode's figures from the runs that timed them (a later run's figure replaces an earlier one's), its ratios against
bf16's figure in the same column. The runs must share the device (its kind and, where the runs recorded it, the
card's UUID), the versions and the sizes (model, sequence, decode steps, compilation); the table names every run.

usage: python benchmarks/model_table.py RUN.json... --out PREFIX
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_model import markdown  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402

# What every merged run must share, so that its figures belong in one table: the card itself too (``gpu_uuid``; runs
# written before bench_model recorded it have none), since two machines of one kind time differently.
SHARED = ("config", "layers", "seqlen", "decode_tokens", "compile", "device", "gpu_uuid", "versions")
# A row's figures by batch size (JSON keeps the sizes as strings).
BY_BATCH = ("prefill_ms", "graph_prefill_ms", "decode_tok_s", "graph_decode_tok_s", "graph_decode_step_bytes")


def _row_by_batch(row: dict) -> dict:
    return {**row, **{key: {int(b): v for b, v in row.get(key, {}).items()} for key in BY_BATCH}}


def merge_results(runs: list[dict], names: list[str]) -> dict:
    """The runs' rows merged by mode (first appearance orders them; a later run's figure for a batch replaces an
    earlier one's; the peak is the largest); a ValueError naming the field and the runs where they differ in
    ``SHARED``."""
    for name, run in zip(names, runs):
        if not isinstance(run, dict) or not isinstance(run.get("rows"), list) or any(
                not isinstance(row, dict) or "mode" not in row or "model_bytes" not in row for row in run["rows"]):
            raise ValueError(f"{name} is not a bench_model.py result (a list of rows, each with its mode)")
    for field in SHARED:
        values = {json.dumps(run.get(field), sort_keys=True) for run in runs}
        if len(values) > 1:
            found = ", ".join(f"{name}: {run.get(field)}" for name, run in zip(names, runs))
            raise ValueError(f"the runs differ in {field} ({found}): merge only runs of one machine and one setup")
    rows: dict[str, dict] = {}
    for run in runs:
        for row in map(_row_by_batch, run["rows"]):
            merged = rows.setdefault(row["mode"], {"mode": row["mode"], **{key: {} for key in BY_BATCH}})
            merged["model_bytes"] = row["model_bytes"]
            for key in BY_BATCH:
                merged[key].update(row[key])
            if "peak_bytes" in row:
                merged["peak_bytes"] = max(merged.get("peak_bytes", 0), row["peak_bytes"])
            for key in ("graph_errors", "hf_generate_tok_s"):
                if key in row:
                    merged[key] = row[key]
    return {**{field: runs[0].get(field) for field in SHARED}, "date": runs[-1].get("date"),
            "runs": [{"date": run.get("date"), "command": run.get("command")} for run in runs],
            "rows": list(rows.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="bench_model.py JSON results, in the order they ran")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    runs = []
    for name in args.runs:
        try:
            with open(name) as f:
                runs.append(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            p.error(f"cannot read {name} as a bench_model.py result: {err}")
    try:
        merged = merge_results(runs, args.runs)
    except ValueError as err:
        p.error(str(err))
    merged["command"] = command_line("model_table.py", argv if argv is not None else sys.argv[1:])
    table = markdown(merged)
    write_result_files(args.out, merged, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
