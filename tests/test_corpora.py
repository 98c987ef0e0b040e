"""Corpora and calibration windows."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

import corpora
from calib import calibration_windows


def test_wikitext_rows_follow_the_hf_dataset_rule(tmp_path):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.test.raw").write_text(" \n = Title = \n \n Some text .\n")
    src = corpora.resolve("wikitext2", "test", str(tmp_path))
    assert corpora.documents(src) == ["", " = Title = \n", "", " Some text .\n"]
    assert corpora.evaluation_text(src) == "\n\n = Title = \n\n\n\n\n Some text .\n"


def test_real_wikitext_file_has_the_published_size(data_dir):
    src = corpora.resolve("wikitext2", "test", data_dir)
    assert len("".join(corpora.documents(src)).encode()) < 1_290_590  # " \n" rows lose their bytes
    assert len(corpora.documents(src)) == 4358  # rows of the HF test split


def test_tinystories_stories_are_split_on_the_release_marker(data_dir):
    docs = corpora.documents(corpora.resolve("tinystories", "validation", data_dir))
    assert len(docs) == 1000 and not any("<|endoftext|>" in d for d in docs)


def test_c4_local_files(data_dir):
    assert len(corpora.documents(corpora.resolve("c4", "validation", data_dir))) == 2000
    assert len(corpora.documents(corpora.resolve("c4", "train", data_dir))) == 1000


def test_missing_local_file_and_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="wikitext2 \\(test split\\) not found"):
        corpora.resolve("wikitext2", "test", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="unknown dataset 'pile'"):
        corpora.resolve("pile", "train", str(tmp_path))


def test_calibration_windows_shape_and_seed(tinystories_dir, data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tinystories_dir)
    src = corpora.resolve("tinystories", "train", data_dir)
    a = calibration_windows(src, tok, 4, 64, seed=0)
    b = calibration_windows(src, tok, 4, 64, seed=0)
    c = calibration_windows(src, tok, 4, 64, seed=1)
    assert a.shape == (4, 64) and torch.equal(a, b) and not torch.equal(a, c)
    text = tmp_path / "calib.jsonl"
    text.write_text('{"text": "once upon a time"}\n')
    with pytest.raises(ValueError, match="fewer than one window"):
        calibration_windows(corpora.resolve(str(text), "train", None), tok, 2, 64, seed=0)
    with pytest.raises(ValueError, match="--nsamples must be at least 1"):
        calibration_windows(src, tok, 0, 64, seed=0)
