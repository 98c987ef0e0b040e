"""Evaluation of (fake- or real-) quantized models."""

from .perplexity import MAX_WINDOWS, evaluation_tokens, perplexity

__all__ = ["MAX_WINDOWS", "evaluation_tokens", "perplexity"]
