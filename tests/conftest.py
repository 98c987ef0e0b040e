"""Shared fixtures: the offline assets and tiny random Llama / Qwen2 / Qwen3 models."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("PTQ_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
TINYSTORIES = os.path.join(ASSETS, "models", "tinystories-656k")
DATA_DIR = os.path.join(ASSETS, "data")


def pytest_configure(config):
    """Under pytest-xdist (``scripts/test.sh`` runs ``-n logical``) the workers share the cores: each
    worker's torch, and the scripts it starts, take an equal share of the threads torch would use
    alone (at least one), so that the workers do not take each other's time slices."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


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


@pytest.fixture
def no_model_load(monkeypatch):
    """A run that loads a model (``load_model``) or a checkpoint (``load_quantized``) fails the test: for the
    checks that must refuse bad input before any weight is read."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run loaded weights before refusing its input")

    run = importlib.import_module("pipeline.run")  # the module: ``pipeline.run`` the attribute is its function
    monkeypatch.setattr(run, "load_model", refuse)
    monkeypatch.setattr(run, "load_quantized", refuse)


@pytest.fixture
def cli(capsys):
    """``cli("model_quant.py", *args)``: a script's ``main(argv)`` run in this process and reported as
    ``python script.py args`` would be (a ``CompletedProcess``: exit code, stdout, stderr), without
    the seconds an interpreter takes to start and import torch. ``main`` returns the exit code;
    argparse errors raise ``SystemExit(2)``; ``SystemExit("message")`` is exit code 1 with the
    message on stderr. A few tests still start the scripts as subprocesses, for the entry points.
    """
    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
        capsys.readouterr()  # report only this call's output
        message = ""
        try:
            code = module.main(list(args))
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):
                code, message = 1, code + "\n"
        out = capsys.readouterr()
        return subprocess.CompletedProcess([script, *args], code or 0, out.out, out.err + message)

    return run
