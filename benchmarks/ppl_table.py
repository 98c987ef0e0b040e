"""Perplexity of one model under a list of recipes, as one Markdown table and one JSON.

Each recipe is a line of ``model_quant.py`` flags; the model loads once per recipe
through the same pipeline the drivers use. Example (the issue-2 table on SmolLM2):

    python benchmarks/ppl_table.py --model models_local/SmolLM2-135M-Instruct \\
        --data_dir ../shared/assets/data --recipes benchmarks/recipes/foundation.txt \\
        --out benchmarks/results/smollm2_foundation
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import model_quant  # noqa: E402
from pipeline import run  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", required=True, help="file of 'name | model_quant.py flags' lines")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    p.add_argument("--runs_dir", help="where each run's JSON goes (default: PREFIX_runs)")
    # Every other flag (model, data, dtype, device, ...) is passed to each recipe.
    args, common = p.parse_known_args(argv)
    parser = model_quant.build_parser()
    rows, results = [], []
    for name, flags in read_recipes(args.recipes):
        ns = parser.parse_args(common + shlex.split(flags) + ["--run_name", name, "--output_dir", args.runs_dir or args.out + "_runs"])
        cfg = model_quant.build_config(ns)
        t = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - t
        results.append(result.to_dict())
        ppl = result.metrics.get("ppl", {})
        rows.append((name, cfg.quant.label, ppl, wall))
        print(f"{name}: {ppl} ({wall:.1f} s)", flush=True)
    datasets = sorted({k for _, _, ppl, _ in rows for k in ppl})
    # Every run records its device and library versions; the table quotes the first run's.
    first = results[0] if results else {"device": "", "versions": {}}
    header = ["run", "recipe", *[f"{d} PPL" for d in datasets], "wall (s)"]
    lines = [
        f"Device: {first['device']}. Date: {time.strftime('%Y-%m-%d')}. Versions: {first['versions']}.",
        f"Command: `python benchmarks/ppl_table.py --recipes {args.recipes} --out {args.out} {' '.join(common)}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, label, ppl, wall in rows:
        lines.append("| " + " | ".join([name, f"`{label}`", *[f"{ppl.get(d, float('nan')):.2f}" for d in datasets],
                                        f"{wall:.1f}"]) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
