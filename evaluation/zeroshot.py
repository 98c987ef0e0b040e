"""Zero-shot (or few-shot) accuracy of the in-memory model through lm-evaluation-harness.

``prepare_tasks`` resolves and checks the task names and loads their documents, before the
model loads; ``evaluate_tasks`` scores the model through lm-eval's ``HFLM``; ``summarize``
turns lm-eval's results into per-task metrics and the papers' average; ``markdown_table``
prints them.

With a tasks data folder (``--tasks_data_dir``, the layout of ``../shared/assets/data/tasks``)
the stock names (``piqa``, ``arc_easy``, ...) run our task YAMLs in ``lm_eval_tasks/``, named
``<stock>_local``: the stock prompts, choices and metrics over the local files. Without it,
any lm-eval task name runs the stock task from the hub.

``wikitext`` is a perplexity, not an accuracy: lm-eval's rolling log-likelihood of each whole
article, per word and per byte of the original text (``word_perplexity``, ...). It is reported
apart, as "lm-eval wikitext word perplexity", and never averaged; it is not the pipeline's
``ppl wikitext2`` (token-level, over fixed ``--seqlen`` windows of the joined test split).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import Any

LOCAL_TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm_eval_tasks")
LOCAL_SUFFIX = "_local"
# Columns of the table, in order; the average takes acc_norm where a task has it, else acc.
METRICS = ("acc", "acc_norm", "perplexity")
AVERAGED = ("acc_norm", "acc")
# lm-eval's rolling log-likelihood metrics (wikitext) and how they are named to a reader.
ROLLING_METRICS = {"word_perplexity": "word perplexity", "byte_perplexity": "byte perplexity",
                   "bits_per_byte": "bits per byte"}


@dataclass
class PreparedTasks:
    """The tasks of a run, loaded: ``names`` maps each requested name to lm-eval's."""

    names: dict[str, str]
    manager: Any  # lm_eval.tasks.TaskManager
    tasks: dict[str, Any]  # lm-eval name -> lm_eval.api.task.Task, documents loaded

    @property
    def local(self) -> bool:
        return any(n.endswith(LOCAL_SUFFIX) for n in self.names.values())


def _splits(cfg: dict) -> list[str]:
    """A task config's splits, in the order lm-eval falls back on for few-shot examples."""
    return [cfg[k] for k in ("fewshot_split", "training_split", "validation_split", "test_split") if cfg.get(k)]


def _unknown(name: str, known: list[str], where: str, fix: str) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown {where} task {name!r}{hint}: {fix}")


def _check_local_task(stock: str, cfg: dict, tasks_data_dir: str, num_fewshot: int) -> None:
    """Missing files and few-shot splits the local files lack, before anything is read."""
    from lm_eval.tasks._yaml_loader import load_yaml

    files = cfg["dataset_kwargs"]["files"]
    for relative in files.values():
        path = os.path.normpath(os.path.join(tasks_data_dir, relative))
        if not os.path.isfile(path):
            beside = " (this file lies beside the tasks folder, as in ../shared/assets/data)" \
                if relative.startswith("..") else ""
            raise FileNotFoundError(f"task file for {stock} not found: {path}{beside}; --tasks_data_dir must have the "
                                    f"layout of ../shared/assets/data/tasks")
    if num_fewshot > 0:
        import lm_eval.tasks

        stock_yaml = os.path.join(os.path.dirname(lm_eval.tasks.__file__), cfg["metadata"]["stock_yaml"])
        split = _splits(load_yaml(stock_yaml, resolve_func=False))[0]
        if split not in _splits(cfg):
            raise ValueError(f"--num_fewshot {num_fewshot}: {stock} draws its examples from the {split!r} split, "
                             f"which the local files lack (they hold {', '.join(_splits(cfg))}): use --num_fewshot 0, "
                             f"or the hub's {stock} (drop --tasks_data_dir)")


def prepare_tasks(names: tuple[str, ...], tasks_data_dir: str | None, num_fewshot: int = 0) -> PreparedTasks:
    """Resolve ``names``, check them and load their documents; raises before any model loads.

    Unknown names, missing task files and few-shot from a split the local files lack are
    ``ValueError``/``FileNotFoundError`` naming the fix.
    """
    from lm_eval.tasks import TaskManager

    if tasks_data_dir is not None:
        if not os.path.isdir(tasks_data_dir):
            raise FileNotFoundError(f"--tasks_data_dir {tasks_data_dir} is not a folder (expected the layout of "
                                    f"../shared/assets/data/tasks)")
        manager = TaskManager(include_path=LOCAL_TASKS_DIR, include_defaults=False,
                              metadata={"tasks_data_dir": os.path.abspath(tasks_data_dir)})
        stock_names = sorted(n.removesuffix(LOCAL_SUFFIX) for n in manager.all_tasks)
        resolved = {}
        for name in names:
            stock = name.removesuffix(LOCAL_SUFFIX)
            if stock not in stock_names:
                raise _unknown(name, stock_names, "local",
                               f"the local tasks are {', '.join(stock_names)}; drop --tasks_data_dir to run "
                               f"lm-eval's stock tasks from the hub")
            resolved[stock] = stock + LOCAL_SUFFIX
            _check_local_task(stock, manager.task_index[resolved[stock]].cfg, tasks_data_dir, num_fewshot)
        return PreparedTasks(resolved, manager, manager.load(list(resolved.values()))["tasks"])

    local = [name for name in names if name.endswith(LOCAL_SUFFIX)]
    if local:
        raise ValueError(f"{', '.join(local)} read local files: pass --tasks_data_dir (layout of "
                         f"../shared/assets/data/tasks)")
    manager = TaskManager()  # indexes every stock task: some seconds
    for name in names:
        if name not in manager.all_tasks:
            raise _unknown(name, manager.all_tasks, "lm-eval", "`lm_eval ls tasks` lists them")
    try:
        tasks = manager.load(list(names))["tasks"]
    except Exception as err:  # the hub's failures come in many types; all mean the same to the user
        raise OSError(f"could not load the lm-eval tasks {', '.join(names)} from the Hugging Face hub ({err}); "
                      f"offline, pass --tasks_data_dir with local copies (layout of ../shared/assets/data/tasks)"
                      ) from err
    return PreparedTasks({name: name for name in tasks}, manager, tasks)  # groups and tags expand to their tasks


def evaluate_tasks(model, tokenizer, prepared: PreparedTasks, *, num_fewshot: int = 0, batch_size: int | str = 1,
                   limit: int | float | None = None) -> dict:
    """Score the in-memory (fake-quantized) model on the prepared tasks; returns ``summarize``'s dict."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=list(prepared.tasks.values()), num_fewshot=num_fewshot, limit=limit,
                          task_manager=prepared.manager, log_samples=False)
    summary = summarize(out, prepared.names)
    summary.update(num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, local=prepared.local)
    return summary


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def rolling_label(task: str, metric: str) -> str:
    """How a rolling metric is shown, e.g. "lm-eval wikitext word perplexity"."""
    return f"lm-eval {task} {ROLLING_METRICS[metric]}"


def summarize(out: dict, names: dict[str, str]) -> dict:
    """Per task: acc, acc_norm and perplexity (LAMBADA) or the rolling metrics (wikitext),
    with their stderr (those the task has), the samples scored and lm-eval's task name; and
    the average over tasks of acc_norm where a task has it, else acc (``average.metric`` says
    which, per task). Tasks without an accuracy, such as wikitext, are not averaged."""
    tasks, used = {}, {}
    for name, lm_name in names.items():
        raw = out["results"][lm_name]
        row: dict[str, Any] = {"task": lm_name, "samples": out.get("n-samples", {}).get(lm_name, {}).get("effective")}
        for metric in (*METRICS, *ROLLING_METRICS):
            if f"{metric},none" in raw:
                row[metric] = _number(raw[f"{metric},none"])
                row[f"{metric}_stderr"] = _number(raw.get(f"{metric}_stderr,none"))
        tasks[name] = row
        metric = next((m for m in AVERAGED if row.get(m) is not None), None)
        if metric is not None:
            used[name] = metric
    value = sum(tasks[n][m] for n, m in used.items()) / len(used) if used else None
    return {"tasks": tasks, "average": {"value": value, "metric": used}}


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 1e5 else f"{x:.3g}"  # a broken model's LAMBADA perplexity


def _cell(row: dict, metric: str, percent: bool) -> str:
    value = row.get(metric)
    if value is None:
        return ""
    scale = 100 if percent else 1
    stderr = row.get(f"{metric}_stderr")
    text = _fmt(value * scale)
    return text if stderr is None else f"{text} ± {_fmt(stderr * scale)}"


def _rolling_line(name: str, row: dict) -> str:
    """e.g. "lm-eval wikitext word perplexity: 41.20 (byte perplexity 1.98, bits per byte 0.98, 62 documents)"."""
    first, *rest = [m for m in ROLLING_METRICS if row.get(m) is not None]
    details = [f"{ROLLING_METRICS[m]} {_cell(row, m, False)}" for m in rest]
    if row.get("samples"):
        details.append(f"{row['samples']} documents")
    return f"{rolling_label(name, first)}: {_cell(row, first, False)}" + (f" ({', '.join(details)})" if details else "")


def markdown_table(summary: dict) -> str:
    """Accuracies in percent (± stderr); the last row is the average, and the last column
    says which metric of each task it takes. Rolling perplexities (wikitext) follow on lines
    of their own, labelled so they are not read as the pipeline's token-level ``ppl``."""
    tasks = summary["tasks"]
    scored = {name: row for name, row in tasks.items() if any(m in row for m in METRICS)}
    rolling = {name: row for name, row in tasks.items() if any(row.get(m) is not None for m in ROLLING_METRICS)}
    lines = []
    if scored:
        shown = [m for m in METRICS if any(m in row for row in scored.values())]
        heads = [f"{m} (%)" if m != "perplexity" else m for m in shown]
        lines += ["| task | n | " + " | ".join(heads) + " | averaged |", "|---|---|" + "---|" * len(shown) + "---|"]
        used = summary["average"]["metric"]
        for name, row in scored.items():
            cells = [_cell(row, m, m != "perplexity") for m in shown]
            lines.append(f"| {name} | {row.get('samples') or ''} | " + " | ".join(cells)
                         + f" | {used.get(name, '')} |")
        average = summary["average"]["value"]
        if average is not None:
            lines.append("| average | | " + " | ".join("" for _ in shown) + f" | {average * 100:.2f} |")
    if rolling:
        if lines:
            lines.append("")
        lines += [_rolling_line(name, row) for name, row in rolling.items()]
        lines.append("(whole documents, lm-eval's rolling log-likelihood; not `ppl wikitext2`, our token-level "
                     "perplexity over --seqlen windows)")
    shots = summary.get("num_fewshot")
    if shots is not None:
        lines.append("")
        lines.append(f"{shots}-shot" + (f", limit {summary['limit']} per task" if summary.get("limit") else "")
                     + (", local task files" if summary.get("local") else ""))
    return "\n".join(lines)
