"""Loaders for the local task files (the layout of ``../shared/assets/data/tasks``).

Each loader is a task YAML's ``custom_dataset``: lm-eval calls it with the task's
``dataset_kwargs`` (``files``: split name -> path under the data folder) and the run's
metadata (``tasks_data_dir``). It returns the documents in the fields of the hub dataset
the stock task reads, so the YAMLs can use the stock prompts unchanged.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import os
import re

import datasets
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_process_docs
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_process_results
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

__all__ = ["arc", "boolq", "hellaswag", "hellaswag_process_docs", "lambada_openai", "openbookqa", "piqa",
           "wikitext", "wikitext_detokenizer", "wikitext_documents", "wikitext_process_results", "winogrande",
           "winogrande_gold"]


def _path(tasks_data_dir: str | None, relative: str) -> str:
    if not tasks_data_dir:
        raise ValueError("the local lm-eval tasks read --tasks_data_dir (layout of ../shared/assets/data/tasks): "
                         "pass it")
    path = os.path.join(tasks_data_dir, relative)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task file {path} not found: check --tasks_data_dir (layout of "
                                f"../shared/assets/data/tasks)")
    return path


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _labels(path: str) -> list[int]:
    with open(path, encoding="utf-8") as f:
        return [int(line) for line in f if line.strip()]


def _dataset(split: str, rows: list[dict]) -> datasets.DatasetDict:
    """One split built from ``rows``, fingerprinted by their content.

    The explicit fingerprint skips ``datasets``' pickling hash of the Arrow table, which
    fails on Python 3.12 with pyarrow 26 ("Can't pickle <class 'MonthDayNano'>").
    """
    fingerprint = hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    table = datasets.table.InMemoryTable.from_pylist(rows)
    return datasets.DatasetDict({split: datasets.Dataset(table, split=split, fingerprint=fingerprint)})


def piqa(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """``valid.jsonl`` (goal, sol1, sol2) with the answers from ``valid-labels.lst``."""
    rows = _jsonl(_path(tasks_data_dir, files["validation"]))
    labels = _labels(_path(tasks_data_dir, files["labels"]))
    if len(rows) != len(labels):
        raise ValueError(f"{files['validation']} has {len(rows)} questions but {files['labels']} {len(labels)} labels")
    return _dataset("validation", [{**row, "label": label} for row, label in zip(rows, labels)])


def arc(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """The AI2 release nests the stem and choices under ``question``; the hub flattens them."""
    rows = []
    for row in _jsonl(_path(tasks_data_dir, files["test"])):
        choices = row["question"]["choices"]
        rows.append({
            "id": row["id"], "question": row["question"]["stem"], "answerKey": row["answerKey"],
            "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        })
    return _dataset("test", rows)


def _split_hellaswag_context(context: str) -> tuple[str, str]:
    """Recover the hub's ``ctx_a`` and ``ctx_b`` from their join.

    The stock task capitalizes ``ctx_b``, the unfinished noun phrase an ActivityNet context
    ends in (WikiHow contexts end in a full sentence and have none). It follows the last
    sentence end; in this file every such phrase starts lower-case.
    """
    if context.endswith((".", "!", "?")):
        return context, ""
    cut = max(context.rfind(". "), context.rfind("! "), context.rfind("? "))
    if cut < 0:
        return "", context
    return context[:cut + 1], context[cut + 2:]


def hellaswag(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """Six lines per item: ``activity label: context``, gold index, four endings."""
    with bz2.open(_path(tasks_data_dir, files["validation"]), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{files['validation']}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
    rows = []
    for i in range(0, len(lines), 6):
        activity_label, context = lines[i].split(": ", 1)
        ctx_a, ctx_b = _split_hellaswag_context(context)
        rows.append({"activity_label": activity_label, "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "label": lines[i + 1].strip(), "endings": lines[i + 2:i + 6]})
    return _dataset("validation", rows)


def winogrande(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """llm-foundry's layout already holds what the stock task derives from ``sentence``:
    ``context_options`` (the sentence up to the blank, filled with each option),
    ``continuation`` (the rest) and the 0-based ``gold``."""
    return _dataset("validation", _jsonl(_path(tasks_data_dir, files["validation"])))


def winogrande_gold(doc: dict) -> int:
    """The index of the right context (the stock ``doc_to_text`` of this partial-scoring task)."""
    return doc["gold"]


def boolq(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """The SuperGLUE file's label is the string "true"/"false"; the hub's is 1/0."""
    rows = [{**row, "label": {"false": 0, "true": 1}[str(row["label"]).lower()]}
            for row in _jsonl(_path(tasks_data_dir, files["validation"]))]
    return _dataset("validation", rows)


def lambada_openai(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    return _dataset("test", _jsonl(_path(tasks_data_dir, files["test"])))


_OBQA_CHOICES = re.compile(r"\(A\) (.*?) \(B\) (.*?) \(C\) (.*?) \(D\) (.*)")


def openbookqa(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """The release's TSV writes the four choices as one ``(A) ... (B) ... (C) ... (D) ...`` field."""
    path = _path(tasks_data_dir, files["test"])
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            match = _OBQA_CHOICES.fullmatch(row["Choices"])
            if match is None:
                raise ValueError(f"{path}: question {row['ID']} does not list choices as (A) ... (D) ...")
            rows.append({"id": row["ID"], "question_stem": row["Question Stem"], "answerKey": row["Answer Key"],
                         "choices": {"text": list(match.groups()), "label": ["A", "B", "C", "D"]}})
    return _dataset("test", rows)


def _is_article_title(line: str) -> bool:
    """`` = Title = `` but not `` = = Section = = `` nor a table legend such as `` = National record ``.

    The rule of the hub's ``EleutherAI/wikitext_document_level`` builder: with the spaced
    section markers closed up (``= =`` -> ``==``), a title starts with ``= `` and ends with `` =``.
    """
    closed = line.replace("= = =", "===").replace("= =", "==").strip()
    return closed.startswith("= ") and closed.endswith(" =")


def wikitext_documents(text: str) -> list[str]:
    """Cut a raw WikiText file into articles, as ``EleutherAI/wikitext_document_level`` does.

    Each document runs from its title line up to the next title, lines joined with ``"\n"``
    (the blank line before the next title stays in the document). Text before the first
    title is dropped when it is blank; the last document is kept as it is.
    ``"\n".join([preamble, *documents])`` gives back ``text``.
    """
    documents, lines = [], []
    for line in text.split("\n"):
        if _is_article_title(line):
            page = "\n".join(lines)
            if page.strip():
                documents.append(page)
            lines = []
        lines.append(line)
    documents.append("\n".join(lines))
    return documents


def wikitext(files: dict[str, str], tasks_data_dir: str | None = None, **_) -> datasets.DatasetDict:
    """``wiki.test.raw`` (the wikitext2 folder beside the tasks folder) as one ``page`` per article."""
    with open(_path(tasks_data_dir, files["test"]), encoding="utf-8") as f:
        text = f.read()
    return _dataset("test", [{"page": page} for page in wikitext_documents(text)])
