"""Collect the run JSONs of a folder (a sweep) into one Markdown table and one PNG plot.

    python scripts/report.py RUNS_DIR [--out PREFIX]      # PREFIX defaults to RUNS_DIR/report

PREFIX.md has one row per run: run name, recipe label, each perplexity, the lm-eval average
and per-task accuracies, lm-eval's wikitext word perplexity, total time. PREFIX.png shows
perplexity per run (log scale) and, where runs have one, the lm-eval average accuracy; the
full-precision baseline (a run that quantizes nothing) is a horizontal line, not a bar.
Other JSON files in the folder are skipped with a warning; a folder without run JSONs is
exit code 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.zeroshot import rolling_label  # noqa: E402

RUN_KEYS = ("run_name", "config", "metrics")
QUANTIZED = ("weight", "activation", "key", "value")


def load_runs(runs_dir: str) -> list[dict]:
    """The run JSONs directly in ``runs_dir``, baselines first, then in the order they ran."""
    runs = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: skipping {path}: not readable as JSON ({err})", file=sys.stderr)
            continue
        if not isinstance(data, dict) or any(k not in data for k in RUN_KEYS):
            print(f"warning: skipping {path}: not a run JSON (a run's has {', '.join(RUN_KEYS)})", file=sys.stderr)
            continue
        runs.append(data)
    return sorted(runs, key=lambda r: (not is_baseline(r), r.get("date", ""), r["run_name"]))


def is_baseline(run: dict) -> bool:
    """A run that leaves every tensor in full precision."""
    recipe = run.get("recipe") or {}
    return bool(recipe) and not any(recipe.get(k) for k in QUANTIZED)


def _ppl_datasets(runs: list[dict]) -> list[str]:
    return list(dict.fromkeys(d for r in runs for d in r["metrics"].get("ppl", {})))


def _task_columns(runs: list[dict]) -> list[tuple[str, str]]:
    """(task, metric) of every averaged accuracy, in the order the runs list them."""
    return list(dict.fromkeys((task, metric) for r in runs
                              for task, metric in (r["metrics"].get("lm_eval") or {}).get("average", {})
                              .get("metric", {}).items()))


def _word_ppl_tasks(runs: list[dict]) -> list[str]:
    return list(dict.fromkeys(task for r in runs for task, row in (r["metrics"].get("lm_eval") or {})
                              .get("tasks", {}).items() if row.get("word_perplexity") is not None))


def _average(run: dict) -> float | None:
    return ((run["metrics"].get("lm_eval") or {}).get("average") or {}).get("value")


def _task_value(run: dict, task: str, key: str) -> float | None:
    return (run["metrics"].get("lm_eval") or {}).get("tasks", {}).get(task, {}).get(key)


def _num(value: float | None, scale: float = 1.0) -> str:
    if value is None:
        return ""
    value *= scale
    return f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"


def markdown(runs: list[dict]) -> str:
    """The table, and a note on what each perplexity is."""
    datasets, tasks, rolling = _ppl_datasets(runs), _task_columns(runs), _word_ppl_tasks(runs)
    has_average = any(_average(r) is not None for r in runs)
    head = ["run", "recipe", *[f"ppl {d}" for d in datasets], *(["lm-eval avg (%)"] if has_average else []),
            *[f"{t} {m} (%)" for t, m in tasks], *[rolling_label(t, "word_perplexity") for t in rolling], "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [r["run_name"], r["config"].get("quant_label", ""),
                 *[_num(r["metrics"].get("ppl", {}).get(d)) for d in datasets],
                 *([_num(_average(r), 100)] if has_average else []),
                 *[_num(_task_value(r, t, m), 100) for t, m in tasks],
                 *[_num(_task_value(r, t, "word_perplexity")) for t in rolling],
                 _num(r.get("timings", {}).get("total_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if datasets:
        seqlens = sorted({str(r["config"].get("seqlen")) for r in runs})
        limits = sorted({str(r["config"].get("eval_limit") or "all") for r in runs})
        notes.append(f"`ppl <dataset>`: our token-level perplexity over non-overlapping windows of "
                     f"{'/'.join(seqlens)} tokens ({'/'.join(limits)} windows).")
    if rolling:
        notes.append("lm-eval word perplexity: lm-eval's rolling log-likelihood of whole documents per word of the "
                     "original text; not comparable with `ppl`.")
    if has_average:
        notes.append("lm-eval avg: mean over tasks of acc_norm where a task has it, else acc.")
    return "\n".join(lines + ([""] + notes if notes else []))


def plot(runs: list[dict], path: str) -> None:
    """Bars per quantized run: perplexity (log scale) and average accuracy; baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = [r for r in runs if is_baseline(r)]
    quantized = [r for r in runs if not is_baseline(r)]
    base = baselines[0] if baselines else None
    names = [r["run_name"] for r in quantized]
    datasets = _ppl_datasets(runs)
    has_average = any(_average(r) is not None for r in runs)
    panels = (["ppl"] if datasets else []) + (["avg"] if has_average else [])
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(max(6.0, 0.9 * len(names) + 3) * max(len(panels), 1),
                                                              5), squeeze=False)
    axes = list(axes[0])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(len(datasets), 1)
    for panel, ax in zip(panels, axes):
        if panel == "ppl":
            for i, d in enumerate(datasets):
                color = colors[i % len(colors)]
                values = [r["metrics"].get("ppl", {}).get(d, float("nan")) for r in quantized]
                ax.bar([x + (i - (len(datasets) - 1) / 2) * width for x in range(len(names))], values, width,
                       label=f"ppl {d}", color=color)
                if base is not None and d in base["metrics"].get("ppl", {}):
                    ax.axhline(base["metrics"]["ppl"][d], color=color, linestyle="--",
                               label=f"{base['run_name']} (full precision) {d}")
            ax.set_yscale("log")
            ax.set_ylabel("perplexity (log scale)")
            ax.set_title("perplexity per run (lower is better)")
        else:
            values = [100 * _average(r) if _average(r) is not None else float("nan") for r in quantized]
            ax.bar(range(len(names)), values, 0.6, label="lm-eval average", color=colors[len(datasets) % len(colors)])
            if base is not None and _average(base) is not None:
                ax.axhline(100 * _average(base), color="black", linestyle="--",
                           label=f"{base['run_name']} (full precision)")
            ax.set_ylim(0, 100)
            ax.set_ylabel("average accuracy (%)")
            ax.set_title("lm-eval average accuracy (higher is better)")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, max(len(names), 1) - 0.5)  # a run without the metric keeps its place
        ax.legend(fontsize=8, loc="best")
    if not panels:
        axes[0].text(0.5, 0.5, "no perplexity or lm-eval average in these runs", ha="center", va="center")
        axes[0].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder holding the run JSONs (e.g. a sweep's)")
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.md and PREFIX.png (default RUNS_DIR/report)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.runs_dir):
        print(f"error: {args.runs_dir} is not a folder: pass the folder a sweep wrote its run JSONs to",
              file=sys.stderr)
        return 2
    runs = load_runs(args.runs_dir)
    if not runs:
        print(f"error: no run JSONs in {args.runs_dir} (each run writes <output_dir>/<run_name>.json): pass the "
              f"--output_dir of the runs, e.g. results/sweep-<date>-<time>", file=sys.stderr)
        return 2
    prefix = args.out or os.path.join(args.runs_dir, "report")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    table = markdown(runs)
    with open(f"{prefix}.md", "w", encoding="utf-8") as f:
        f.write(table + "\n")
    plot(runs, f"{prefix}.png")
    print(table)
    print(f"wrote {prefix}.md and {prefix}.png ({len(runs)} runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
