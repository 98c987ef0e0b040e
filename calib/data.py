"""Calibration windows: ``nsamples`` random token windows of ``seqlen`` from a corpus."""

from __future__ import annotations

import torch

import corpora

# Enough text for any calibration set while keeping tokenization quick.
MAX_CALIB_CHARS = 20_000_000


def calibration_windows(
    source: corpora.CorpusSource, tokenizer, nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """(nsamples, seqlen) token ids, windows at random offsets of the joined corpus.

    Documents are joined with blank lines and tokenized once, so short documents
    (TinyStories) and long ones (C4) are treated alike; ``seed`` fixes the offsets.
    """
    if nsamples < 1:
        raise ValueError(f"--nsamples must be at least 1, got {nsamples}")
    if seqlen < 2:
        raise ValueError(f"--seqlen must be at least 2, got {seqlen}")
    text, total = [], 0
    for doc in corpora.documents(source):
        text.append(doc)
        total += len(doc)
        if total > MAX_CALIB_CHARS:
            break
    ids = tokenizer("\n\n".join(text), return_tensors="pt").input_ids[0]
    if ids.numel() <= seqlen:
        raise ValueError(
            f"calibration corpus {source.name} has {ids.numel()} tokens, fewer than one "
            f"window of {seqlen}: use a larger corpus or a smaller --seqlen"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen, (nsamples,), generator=gen)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])
