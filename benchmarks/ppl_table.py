"""Perplexity of one model under a list of recipes, as one Markdown table and one JSON.

Each recipe is a line of driver flags (``model_quant.py`` by default, ``main.py`` with
``--driver main``); the model loads once per recipe through the same pipeline the drivers
use. Example (the issue-2 table on SmolLM2):

    python benchmarks/ppl_table.py --model models_local/SmolLM2-135M-Instruct \\
        --data_dir ../shared/assets/data --recipes benchmarks/recipes/foundation.txt \\
        --out benchmarks/results/smollm2_foundation
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main as fpq_driver  # noqa: E402
import model_quant  # noqa: E402
from benchmarks.result_files import write_result_files  # noqa: E402
from pipeline import run  # noqa: E402


DRIVERS = {"model_quant": model_quant, "main": fpq_driver}


def read_recipes(path: str) -> list[tuple[str, str]]:
    """Lines of ``name | flags``; blank lines and # comments skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, flags = line.partition("|")
                rows.append((name.strip(), flags.strip()))
    return rows


def write_table(args: argparse.Namespace, common: list[str], rows: list, results: list[dict]) -> list[str]:
    """Write PREFIX.md (one row per recipe) and PREFIX.json (every run's result); return the Markdown lines."""
    datasets = sorted({k for _, _, ppl, _ in rows for k in ppl})
    # Every run records its device and library versions; the table quotes the first run's.
    first = results[0]
    header = ["run", "recipe", *[f"{d} PPL" for d in datasets], "wall (s)"]
    select = f" --select {args.select}" if args.select else ""
    lines = [
        f"Device: {first['device']}. Date: {time.strftime('%Y-%m-%d')}. Versions: {first['versions']}.",
        f"Command: `python benchmarks/ppl_table.py --driver {args.driver} --recipes {args.recipes}{select} "
        f"--out {args.out} {' '.join(common)}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, label, ppl, wall in rows:
        lines.append("| " + " | ".join([name, f"`{label}`", *[f"{ppl.get(d, float('nan')):.2f}" for d in datasets],
                                        f"{wall:.1f}"]) + " |")
    write_result_files(args.out, results, "\n".join(lines) + "\n")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", required=True, help="file of 'name | model_quant.py flags' lines")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    p.add_argument("--runs_dir", help="where each run's JSON goes (default: PREFIX_runs)")
    p.add_argument("--select", help="comma list of fnmatch patterns: run only the recipes whose name matches")
    p.add_argument("--driver", choices=sorted(DRIVERS), default="model_quant",
                   help="whose flags the recipe lines hold")
    # Every other flag (model, data, dtype, device, ...) is passed to each recipe.
    args, common = p.parse_known_args(argv)
    driver = DRIVERS[args.driver]
    parser = driver.build_parser()
    rows, results = [], []
    recipes = [(n, f) for n, f in read_recipes(args.recipes)
               if not args.select or any(fnmatch.fnmatchcase(n, pat) for pat in args.select.split(","))]
    if not recipes:
        p.error(f"no recipe of {args.recipes} matches --select {args.select!r}")
    for name, flags in recipes:
        ns = parser.parse_args(common + shlex.split(flags) + ["--run_name", name, "--output_dir", args.runs_dir or args.out + "_runs"])
        cfg = driver.build_config(ns)
        t = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - t
        results.append(result.to_dict())
        ppl = result.metrics.get("ppl", {})
        rows.append((name, cfg.quant.label, ppl, wall))
        print(f"{name}: {ppl} ({wall:.1f} s)", flush=True)
        # Rewritten after every recipe, so a run cut short keeps the rows it finished.
        lines = write_table(args, common, rows, results)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
