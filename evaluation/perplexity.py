"""Token-level perplexity with the standard protocol (GPTQ, QuaRot).

The test text is tokenized once; non-overlapping windows of ``seqlen`` tokens are
scored independently and the perplexity is exp of the mean token negative
log-likelihood over all windows (each window predicts its last ``seqlen - 1`` tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import corpora

# C4 perplexity (GPTQ protocol) scores the first 256 windows.
MAX_WINDOWS = {"c4": 256}


def evaluation_tokens(source: corpora.CorpusSource, tokenizer) -> torch.Tensor:
    """The whole test text as one row of token ids."""
    return tokenizer(corpora.evaluation_text(source), return_tensors="pt").input_ids[0]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    seqlen: int,
    limit: int | None = None,
    batch_size: int = 1,
    desc: str = "perplexity",
) -> float:
    """exp(mean NLL) over ``token_ids.numel() // seqlen`` windows (at most ``limit``)."""
    nwindows = token_ids.numel() // seqlen
    if limit is not None:
        nwindows = min(nwindows, limit)
    if nwindows < 1:
        raise ValueError(f"the evaluation text has {token_ids.numel()} tokens, fewer than one window of {seqlen}")
    windows = token_ids[: nwindows * seqlen].view(nwindows, seqlen)
    device = next(model.parameters()).device  # the first device of a model placed across GPUs
    nll_sum, count = 0.0, 0
    for start in tqdm(range(0, nwindows, batch_size), desc=desc, leave=False):
        batch = windows[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits[:, :-1, :].float()
        labels = batch[:, 1:].reshape(-1).to(logits.device)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="sum")
        nll_sum += nll.item()
        count += batch[:, 1:].numel()
    return math.exp(nll_sum / count)
