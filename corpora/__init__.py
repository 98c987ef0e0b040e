"""Text corpora for calibration and perplexity: from the hub, or from local files.

Each corpus is a name plus a split. With ``data_dir`` (the layout of
``../shared/assets/data``) the local file is read; without it the Hugging Face dataset
is loaded through ``datasets``. Any other name is taken as a path to a ``.txt``,
``.jsonl`` (a ``text`` field) or ``.parquet`` file. ``resolve`` checks that a local
file exists before any model is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

# name -> split -> path inside data_dir
LOCAL_FILES = {
    "wikitext2": {"test": "wikitext2/wiki.test.raw", "train": "wikitext2/wiki.train.raw"},
    "c4": {
        "validation": "c4/c4-validation.2k.parquet",
        "train": "c4/c4-train.00000-of-01024.first1000.jsonl",
    },
    "tinystories": {
        "validation": "tinystories/tinystories_val.first1000.txt",
        "train": "tinystories/tinystories_val.first1000.txt",
    },
}
EVAL_SPLIT = {"wikitext2": "test", "c4": "validation", "tinystories": "validation"}
# How many documents the standard C4 perplexity protocol (GPTQ) joins.
C4_EVAL_DOCS = 1100
# What joins documents into the one evaluation string (WikiText-2 rows: blank lines).
EVAL_JOINER = {"c4": " ", "tinystories": "\n"}
TINYSTORIES_SEPARATOR = "<|endoftext|>"


@dataclass(frozen=True)
class CorpusSource:
    name: str
    split: str
    path: str | None  # a local file, or None for the hub


def resolve(name: str, split: str, data_dir: str | None) -> CorpusSource:
    """Where a corpus comes from; raises at once if a needed local file is missing."""
    if name not in LOCAL_FILES:
        if not os.path.isfile(name):
            raise FileNotFoundError(
                f"unknown dataset {name!r}: use one of {', '.join(LOCAL_FILES)} or a path to a "
                f".txt/.jsonl/.parquet file"
            )
        return CorpusSource(os.path.basename(name), split, name)
    if data_dir is None:
        return CorpusSource(name, split, None)
    rel = LOCAL_FILES[name].get(split)
    path = os.path.join(data_dir, rel) if rel else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"{name} ({split} split) not found: expected {os.path.join(data_dir, rel or '?')} "
            f"under --data_dir {data_dir}. Point --data_dir at a folder with that layout "
            f"(e.g. ../shared/assets/data) or drop --data_dir to use the Hugging Face hub"
        )
    return CorpusSource(name, split, path)


def _read_file(path: str) -> list[str]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=["text"]).column("text").to_pylist()
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [f.read()]


def _wikitext_rows(path: str) -> list[str]:
    """The HF dataset's rows from the raw file: its lines, with ' \\n' lines made empty."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    return ["" if line == " \n" else line for line in lines]


def _hub_rows(name: str, split: str) -> list[str]:
    try:
        from datasets import load_dataset

        if name == "wikitext2":
            return load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
        if name == "c4":
            shard = {"train": "en/c4-train.00000-of-01024.json.gz", "validation": "en/c4-validation.00000-of-00008.json.gz"}[split]
            return load_dataset("allenai/c4", data_files={split: shard}, split=split)["text"]
        return load_dataset("roneneldan/TinyStories", split=split)["text"]
    except Exception as e:  # network, missing package, or a changed hub layout
        raise OSError(
            f"could not load {name} ({split}) from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Pass --data_dir with local copies (e.g. ../shared/assets/data)"
        ) from e


def documents(source: CorpusSource) -> list[str]:
    """The corpus as a list of documents (rows)."""
    if source.path is None:
        return _hub_rows(source.name, source.split)
    if source.name == "wikitext2" and source.path.endswith(".raw"):
        return _wikitext_rows(source.path)
    docs = _read_file(source.path)
    if source.name == "tinystories":
        # The release separates stories with a marker the models' tokenizers do not know.
        docs = [s.strip() for d in docs for s in d.split(TINYSTORIES_SEPARATOR) if s.strip()]
    return docs


def evaluation_text(source: CorpusSource) -> str:
    """The single string the standard perplexity protocol tokenizes."""
    docs = documents(source)
    if source.name == "c4":
        docs = docs[:C4_EVAL_DOCS]
    return EVAL_JOINER.get(source.name, "\n\n").join(docs)
