"""Evaluation of (fake- or real-) quantized models: perplexity and lm-eval tasks."""

from .perplexity import MAX_WINDOWS, evaluation_tokens, perplexity
from .zeroshot import PreparedTasks, evaluate_tasks, markdown_table, prepare_tasks

__all__ = ["MAX_WINDOWS", "PreparedTasks", "evaluate_tasks", "evaluation_tokens", "markdown_table", "perplexity",
           "prepare_tasks"]
