"""Shared fixtures: the offline assets and tiny random Llama / Qwen2 / Qwen3 models."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("PTQ_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
TINYSTORIES = os.path.join(ASSETS, "models", "tinystories-656k")
DATA_DIR = os.path.join(ASSETS, "data")

TINY_CONFIGS = {
    "llama": dict(model_type="llama", tie_word_embeddings=True),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=False),
    "qwen3": dict(model_type="qwen3", tie_word_embeddings=True, head_dim=32),
}


@pytest.fixture(scope="session")
def tinystories_dir() -> str:
    if not os.path.isdir(TINYSTORIES):
        pytest.fail(f"offline assets missing: {TINYSTORIES} (expected ../shared/assets beside the checkout)")
    return TINYSTORIES


@pytest.fixture(scope="session")
def data_dir() -> str:
    return DATA_DIR


def make_tiny_model(root: str, family: str, seed: int = 0) -> str:
    """Save a randomly initialised 2-layer model of ``family`` with the TinyStories tokenizer."""
    path = os.path.join(root, f"tiny-{family}")
    if os.path.isdir(path):
        return path
    kwargs = dict(TINY_CONFIGS[family])
    model_type = kwargs.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **kwargs,
    )
    if family == "qwen2":
        config.attention_bias = True  # Qwen2's q/k/v biases (the class adds them regardless)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    for name in os.listdir(TINYSTORIES):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(TINYSTORIES, name), path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    root = str(tmp_path_factory.mktemp("tiny-models"))
    return {family: make_tiny_model(root, family) for family in TINY_CONFIGS}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is fastest, and robust on a busy shared CPU (``usefixtures``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
