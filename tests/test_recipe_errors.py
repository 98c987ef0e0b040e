"""Every validation error in recipes, presets, devices and model locations names the fix."""

from __future__ import annotations

import pytest
import torch

from configs import QuantRecipe, RunConfig, qbits_recipe
from models.loading import locate, resolve_device, resolve_dtype
from quant_layers import QuantSpec


def _main_config(*argv: str) -> RunConfig:
    import main

    return main.build_config(main.build_parser().parse_args(["--model", "m", *argv]))


@pytest.mark.parametrize("make, message", [
    (lambda: QuantRecipe(method="awq"), "unknown method 'awq'"),
    (lambda: QuantRecipe(transform="spin"), "unknown transform 'spin'"),
    (lambda: QuantRecipe(weight=QuantSpec("int", 4, granularity="token")), "not per token"),
    (lambda: QuantRecipe(activation=QuantSpec("int", 4, granularity="channel")), "not per channel"),
    (lambda: QuantRecipe(activation=QuantSpec("int", 4), lm_head_a_bits=8), "add --quantize_lm_head"),
    (lambda: QuantRecipe(weight=QuantSpec("int", 4), quantize_lm_head=True, lm_head_a_bits=8), "--a_bits below 16"),
    (lambda: QuantRecipe(activation=QuantSpec("int", 4), quantize_lm_head=True, lm_head_a_bits=0),
     "INT quantization takes 2 to 8 bits"),
    (lambda: QuantRecipe(weight=QuantSpec("int", 4), lm_head_w_bits=8), "add --quantize_lm_head"),
    (lambda: QuantRecipe(activation=QuantSpec("int", 4), quantize_lm_head=True, lm_head_w_bits=8),
     "--w_bits below 16"),
    (lambda: QuantRecipe(weight=QuantSpec("int", 4), quantize_lm_head=True, lm_head_w_bits=9),
     "INT quantization takes 2 to 8 bits"),
    (lambda: QuantRecipe(weight=QuantSpec("nvfp", 4), quantize_lm_head=True, lm_head_w_bits=8),
     "NVFP4 is 4-bit E2M1"),
    (lambda: RunConfig(model="m", seqlen=1), "--seqlen must be at least 2"),
    (lambda: RunConfig(model="m", eval_limit=0), "--eval_limit must be at least 1"),
    (lambda: RunConfig(model="m", eval_batch_size=0), "--eval_batch_size must be at least 1"),
    (lambda: RunConfig(model="m", nsamples=0), "--nsamples must be at least 1"),
    (lambda: RunConfig(model="m", calib_batch_size=0), "--calib_batch_size must be at least 1"),
    (lambda: _main_config("--hadamard_group_size", "16"), "--hadamard_group_size needs --rotate"),
    (lambda: qbits_recipe("FPQ_nonexistent", [4, 4, 4]), "unknown --quant_config 'FPQ_nonexistent'"),
    (lambda: qbits_recipe("RTN_config_llama", [4, 4]), "--qbits takes 3 numbers"),
    (lambda: qbits_recipe("RTN_config_llama", [4, 4, 4, 5, 2, 2]), "between 1 and 3 exponent bits"),
    (lambda: resolve_device("tpu"), "unknown device 'tpu'"),
    (lambda: resolve_dtype("int8", None, torch.device("cpu")), "unknown dtype 'int8'"),
    (lambda: locate(None), "no model given"),
])
def test_validation_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_says_use_cpu():
    with pytest.raises(RuntimeError, match="use --device cpu"):
        resolve_device("cuda")


def test_gguf_name_missing_in_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file m.gguf not found in"):
        locate(str(tmp_path), "m.gguf")


def test_qbits_mix_int_and_fp():
    recipe = qbits_recipe("RTN_config_llama", [4, 8, 16, 2, 0, 0])
    assert recipe.weight.format == "fp" and recipe.weight.exp_bits == 2
    assert recipe.activation.format == "int" and recipe.activation.bits == 8
    assert recipe.key is None and recipe.value is None
    assert QuantRecipe.from_dict(recipe.to_dict()) == recipe


def test_quantized_lm_head_is_in_the_label():
    w4a4 = dict(weight=QuantSpec("int", 4, granularity="channel"), activation=QuantSpec("int", 4, granularity="token"))
    assert QuantRecipe(**w4a4).label == "W[int4-ch]A[int4-tok]-rtn"
    assert QuantRecipe(**w4a4, quantize_lm_head=True).label == "W[int4-ch]A[int4-tok]-rtn-lmhead"
    head8 = QuantRecipe(**w4a4, quantize_lm_head=True, lm_head_a_bits=8)
    assert head8.label == "W[int4-ch]A[int4-tok]-rtn-lmhead-a8"
    assert head8.lm_head_activation == QuantSpec("int", 8, granularity="token") and head8.activation.bits == 4
    assert QuantRecipe.from_dict(head8.to_dict()) == head8
    w8a8 = QuantRecipe(**w4a4, quantize_lm_head=True, lm_head_w_bits=8, lm_head_a_bits=8)
    assert w8a8.label == "W[int4-ch]A[int4-tok]-rtn-lmhead-w8-a8"
    assert QuantRecipe(**w4a4, quantize_lm_head=True, lm_head_w_bits=8).label == "W[int4-ch]A[int4-tok]-rtn-lmhead-w8"
    assert w8a8.lm_head_weight == QuantSpec("int", 8, granularity="channel") and w8a8.weight.bits == 4
    assert QuantRecipe.from_dict(w8a8.to_dict()) == w8a8
    older = {k: v for k, v in head8.to_dict().items() if k != "lm_head_w_bits"}  # saved before the field existed
    assert QuantRecipe.from_dict(older) == head8
