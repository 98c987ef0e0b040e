"""models.fused_decoder_layer: decode-sized layers in fewer launches give the HF layers' outputs (CPU twins)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, AutoModelForCausalLM

import models.fused_decoder_layer as fused_decoder_layer
import quant_kernels
from benchmarks.bench_model import random_real_linear
from models import adapter_for
from models.attention import use_grouped_decode_attention
from models.fused_decoder_layer import decode_plan, fuse_decoder_layers
from quant_layers.fused_linear import fuse_shared_input_linears
from quant_layers.real_linear import RealQuantScheme

INT4 = RealQuantScheme("int4")


def tiny_model(model_type: str, dtype: torch.dtype = torch.float32, act: RealQuantScheme | None = INT4,
               weight: RealQuantScheme = INT4):
    """A two-layer random model of ``model_type`` with every decoder linear real-quantized, q/k/v and gate/up
    fused (as ``load_quantized`` leaves a checkpoint)."""
    config = AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=128, head_dim=16)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    adapter = adapter_for(config)
    generator = torch.Generator().manual_seed(1)
    for layer in adapter.decoder_layers(model):
        for name in adapter.linear_names():
            layer.set_submodule(name, random_real_linear(layer.get_submodule(name), weight, act, generator))
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.data.uniform_(0.5, 1.5, generator=generator)
    fuse_shared_input_linears(model)
    return model


def counting(monkeypatch) -> dict:
    """Count the fused kernels' calls (their twins on the CPU); ``gated``: silu(gate) * up written by gate/up's
    product and quantized as it is (the only dp4a bytes ``quantize_activations`` writes here); ``norm_tail``:
    o_proj's products that also quantize the post-attention norm and down_proj's that quantize the next layer's
    input norm (on a GPU in the decode kernel);
    ``attention_tail``: decode attentions that also quantize o_proj's input (on a GPU in the combining kernel)."""
    calls = {"rms_norm": 0, "silu_mul": 0, "gated": 0, "norm_tail": 0, "attention_tail": 0}
    originals = {name: getattr(quant_kernels, name) for name in (
        "rms_norm_quantize", "silu_mul_quantize", "quantize_activations", "w4a4_linear", "w4a4_matmul_dp4a",
        "decode_attention", "decode_attention_packed")}
    counts = {"rms_norm_quantize": lambda kwargs: ("rms_norm", True),
              "silu_mul_quantize": lambda kwargs: ("silu_mul", True),
              "quantize_activations": lambda kwargs: ("gated", kwargs.get("dp4a_for") is not None),
              "w4a4_linear": lambda kwargs: ("norm_tail", kwargs.get("norm_tail") is not None),
              "w4a4_matmul_dp4a": lambda kwargs: ("norm_tail", kwargs.get("norm_tail") is not None),
              "decode_attention": lambda kwargs: ("attention_tail", kwargs.get("norm_tail") is not None),
              "decode_attention_packed": lambda kwargs: ("attention_tail", kwargs.get("norm_tail") is not None)}

    def counted(name):
        def call(*args, **kwargs):
            key, hit = counts[name](kwargs)
            calls[key] += hit
            return originals[name](*args, **kwargs)
        return call

    for name in originals:
        monkeypatch.setattr(quant_kernels, name, counted(name))
    return calls


@pytest.mark.parametrize("model_type,dtype,grouped", [
    ("llama", torch.float32, False), ("qwen2", torch.float32, False), ("qwen3", torch.float32, False),
    ("llama", torch.bfloat16, False), ("llama", torch.float32, True), ("qwen2", torch.bfloat16, True)])
def test_fused_decode_layers_give_the_hf_layers_logits(model_type, dtype, grouped, monkeypatch):
    """Qwen2's q/k/v biases and Qwen3's q/k norms included: decode-sized rows (1, 2 and 16 sequences of one
    token, 2 of 12; INT4 weights take up to TC_MAX_M = 64 rows) take the fused path in every layer and give the
    unfused model's logits bit for bit, silu(gate) * up written by gate/up's product up to ``gated_rows`` (at
    least 4) and by the activation kernel above, the second layer's input norm quantized by the first's down_proj
    (so one norm launch a step); 2 prompts of 40 tokens keep HF's forward. ``grouped``: on the
    grouped decode attention (``models.attention``), whose one-token queries quantize o_proj's input too, up to
    ``ATTENTION_TAIL_MAX_ROWS`` rows (raised to 16 for bfloat16)."""
    model = tiny_model(model_type, dtype)
    if grouped:
        assert use_grouped_decode_attention(model)
    tail_rows = 16 if dtype == torch.bfloat16 else fused_decoder_layer.ATTENTION_TAIL_MAX_ROWS  # both, bit for bit
    monkeypatch.setattr(fused_decoder_layer, "ATTENTION_TAIL_MAX_ROWS", tail_rows)
    plain = copy.deepcopy(model)
    assert fuse_decoder_layers(model) == 2
    gated_rows = model.model.layers[0]._decode_plan.gated_rows
    assert gated_rows >= 4
    calls = counting(monkeypatch)
    with torch.no_grad():
        for batch, tokens in ((1, 1), (2, 1), (16, 1), (2, 12), (2, 40)):
            ids = torch.randint(0, 128, (batch, tokens), generator=torch.Generator().manual_seed(batch))
            before = dict(calls)
            got = model(ids).logits
            assert torch.equal(got, plain(ids).logits)
            fused, gated = tokens * batch <= 64, tokens * batch <= gated_rows
            assert calls == {"rms_norm": before["rms_norm"] + fused,
                             "silu_mul": before["silu_mul"] + 2 * (fused and not gated),
                             "gated": before["gated"] + 2 * gated, "norm_tail": before["norm_tail"] + 3 * fused,
                             "attention_tail": before["attention_tail"] + 2 * (grouped and tokens == 1
                                                                               and batch <= tail_rows)}


def test_layers_that_do_not_fit_keep_their_forward(monkeypatch):
    """Weight-only linears (no activation codes) and unfused q/k/v have no plan; refusing changes nothing (the
    weight-only layers' MLPs are gated unless PTQ_FPX_GATED=0)."""
    monkeypatch.setenv("PTQ_FPX_GATED", "0")
    weight_only = tiny_model("llama", act=None, weight=RealQuantScheme("e3m2", bits=6))
    assert fuse_decoder_layers(weight_only) == 0
    assert type(weight_only.model.layers[0].mlp).__name__ == "LlamaMLP"
    config = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    dense = AutoModelForCausalLM.from_config(config)
    assert decode_plan(dense.model.layers[0]) is None
    assert type(dense.model.layers[0]).__name__ == "LlamaDecoderLayer"


@pytest.mark.parametrize("model_type,dtype,weight", [
    ("llama", torch.bfloat16, RealQuantScheme("e3m2", bits=6)),
    ("qwen2", torch.float32, RealQuantScheme("e2m3", bits=6)),
    ("qwen3", torch.bfloat16, RealQuantScheme("int4", group=32))],
    ids=["llama-fp6", "qwen2-fp6-e2m3", "qwen3-w4a16-g32"])
def test_weight_only_mlps_gate_in_their_product(model_type, dtype, weight, monkeypatch):
    """Weight-only layers (FPx, W4A16 in groups) keep HF's forward, their MLP's fused gate/up product returning
    silu(gate) * up (``models.gated_mlp``): one gated product an MLP where the product gates in one launch (the twin
    here, for decode rows and prompts alike; HF's MLP forward where it would not), and the logits of the model
    without it bit for bit; PTQ_FPX_GATED=0 installs none, a GELU MLP or unequal gate and up widths are left as they
    are."""
    from models.gated_mlp import gate_mlp, gated_group

    model = tiny_model(model_type, dtype, act=None, weight=weight)
    plain = copy.deepcopy(model)
    monkeypatch.setenv("PTQ_FPX_GATED", "0")
    assert fuse_decoder_layers(plain) == 0
    monkeypatch.delenv("PTQ_FPX_GATED")
    assert fuse_decoder_layers(model) == 2 and fuse_decoder_layers(model) == 2  # installed once, class kept
    assert type(model.model.layers[0].mlp).__name__.startswith("Gated") and decode_plan(model.model.layers[0]) is None
    gated = []
    original = quant_kernels.fpx_matmul

    def counted(*args, **kwargs):
        gated.append(kwargs.get("gated", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(quant_kernels, "fpx_matmul", counted)
    with torch.no_grad():
        for batch, tokens in ((1, 1), (3, 1), (2, 12)):
            ids = torch.randint(0, 128, (batch, tokens), generator=torch.Generator().manual_seed(batch))
            gated.clear()
            got = model(ids).logits
            assert gated.count(True) == 2
            assert torch.equal(got, plain(ids).logits)
    monkeypatch.setattr(quant_kernels, "fpx_gates_in_product", lambda *args, **kwargs: False)
    with torch.no_grad():
        gated.clear()
        ids = torch.randint(0, 128, (1, 1), generator=torch.Generator().manual_seed(5))
        assert torch.equal(model(ids).logits, plain(ids).logits) and gated.count(True) == 0
    mlp = copy.deepcopy(plain.model.layers[0].mlp)
    assert gated_group(mlp) is not None
    mlp.act_fn = torch.nn.GELU()
    assert not gate_mlp(mlp) and type(mlp).__name__ == type(plain.model.layers[0].mlp).__name__
    mlp = copy.deepcopy(plain.model.layers[0].mlp)
    mlp.gate_proj.group.widths = [40, 56]
    assert gated_group(mlp) is None
    linear, x = mlp.gate_proj.group.linear, torch.zeros(1, 64, dtype=dtype)
    with pytest.raises(ValueError, match="a gated product is a weight-only linear's, without a residual"):
        torch.ops.ptq.real_quant_matmul(x, linear.qweight, getattr(linear, "qweight_high", None), linear.weight_scale,
                                        None, torch.zeros(1, 192, dtype=dtype), linear.schemes, None, None, True)
    w4a4 = tiny_model("llama").model.layers[0].mlp.gate_proj.group.linear
    with pytest.raises(ValueError, match="quantizes its activations .int4.: use the fused decoder layer's gating"):
        w4a4.gated_product(torch.zeros(1, 64))


def test_an_online_rotation_on_down_proj_keeps_the_mlp_forward(monkeypatch):
    """down_proj's input rotated online (QuaRot): gate/up still run on the norm kernel's codes, the MLP's own
    forward does the rest, and down_proj adds the residual; the logits stay the HF layers'."""
    from transforms.rotation import HadamardRotation

    model = tiny_model("llama")
    for layer in model.model.layers:
        layer.mlp.down_proj.input_transform = HadamardRotation(96)
    plain = copy.deepcopy(model)
    assert fuse_decoder_layers(model) == 2
    assert all(layer._decode_plan.down is None for layer in model.model.layers)
    calls = counting(monkeypatch)
    ids = torch.randint(0, 128, (2, 1), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    assert calls == {"rms_norm": 4, "silu_mul": 0, "gated": 0, "norm_tail": 0, "attention_tail": 0}
    assert all(layer._decode_plan.gated_rows == 0 for layer in model.model.layers)


def test_fusing_twice_keeps_one_subclass():
    model = tiny_model("llama")
    fuse_decoder_layers(model)
    classes = [type(layer) for layer in model.model.layers]
    assert fuse_decoder_layers(model) == 2
    assert [type(layer) for layer in model.model.layers] == classes
    assert type(model.model.layers[0]).__mro__[1].__name__ == "LlamaDecoderLayer"


def test_the_plan_takes_the_rows_every_linear_s_decode_kernel_takes(monkeypatch):
    """INT4 and E2M1 weights: up to TC_MAX_M rows (the tensor-core decode kernel), where 16 sequences take the
    fused path and give the HF layers' logits; E2M1 weights with PTQ_TC_E2M1=0: up to GEMV_MAX_M."""
    from quant_kernels.w4a4_gemv import GEMV_MAX_M, TC_MAX_M, takes_gated

    e2m1 = RealQuantScheme("e2m1")
    for weight, flag, rows in ((INT4, "0", TC_MAX_M), (e2m1, "0", GEMV_MAX_M), (e2m1, "1", TC_MAX_M)):
        monkeypatch.setenv("PTQ_TC_E2M1", flag)
        model = tiny_model("llama", weight=weight)
        assert fuse_decoder_layers(model) == 2
        assert {layer._decode_plan.max_rows for layer in model.model.layers} == {rows}
        gated = max(m for m in range(1, GEMV_MAX_M + 1) if takes_gated(m, weight.element))
        assert {layer._decode_plan.gated_rows for layer in model.model.layers} == {gated}
    monkeypatch.delenv("PTQ_TC_E2M1")
    model = tiny_model("llama", act=e2m1, weight=e2m1)
    plain = copy.deepcopy(model)
    assert fuse_decoder_layers(model) == 2
    assert {layer._decode_plan.max_rows for layer in model.model.layers} == {TC_MAX_M}
    calls = counting(monkeypatch)
    ids = torch.randint(0, 128, (16, 1), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    assert calls == {"rms_norm": 1, "silu_mul": 2, "gated": 0, "norm_tail": 3, "attention_tail": 0}
    monkeypatch.setenv("PTQ_TC_E2M1", "yes")
    with pytest.raises(ValueError, match="PTQ_TC_E2M1='yes': choose 0"):
        fuse_decoder_layers(tiny_model("llama", weight=e2m1))


def test_the_norm_tail_follows_w4a4_products_only():
    """o_proj takes the post-attention norm's quantization where it multiplies 4-bit activations; a weight-only
    linear refuses it, and codes are handed over once, after the product that wrote them."""
    model = tiny_model("llama")
    fuse_decoder_layers(model)
    plan = model.model.layers[0]._decode_plan
    assert plan.norm_tail is not None and plan.norm_tail.weight is model.model.layers[0].post_attention_layernorm.weight
    with pytest.raises(RuntimeError, match="no norm codes to take"):
        plan.o_proj.take_norm_codes()
    weight_only = tiny_model("llama", act=None, weight=RealQuantScheme("e3m2", bits=6)).model.layers[0].self_attn
    with pytest.raises(ValueError, match="norm tail follows a W4A4 product"):
        weight_only.o_proj.add_residual_to_next(torch.zeros(1, 64), plan.norm_tail)
    x, residual = torch.randn(2, 64), torch.randn(2, 64)
    plan.o_proj.add_residual_to_next(residual, plan.norm_tail)
    out = plan.o_proj(x)
    codes, scales = plan.o_proj.take_norm_codes()
    norm = model.model.layers[0].post_attention_layernorm
    want = quant_kernels.rms_norm_quantize(out, norm.weight, norm.variance_epsilon, "int4", dp4a_for="int4")
    assert torch.equal(codes, want[0]) and torch.equal(scales, want[1])
    plan.o_proj.add_residual_to_next(residual)
    assert torch.equal(plan.o_proj(x), out)
    with pytest.raises(RuntimeError, match="no norm codes to take"):
        plan.o_proj.take_norm_codes()


def test_down_proj_quantizes_the_next_layer_s_input_norm(monkeypatch):
    """Each fused layer's down_proj quantizes the next fused layer's input norm for its q/k/v (the last layer's
    none); the codes serve only the tensor they were computed from: a hook that replaces the first layer's output
    makes the second layer quantize its own norm, and the logits stay the HF layers' either way."""
    model = tiny_model("llama")
    plain = copy.deepcopy(model)
    fuse_decoder_layers(model)
    first, second = model.model.layers
    tail = first._decode_plan.next_input_tail
    norm = second.input_layernorm
    assert tail == quant_kernels.reference.NormTail(norm.weight, norm.variance_epsilon, "int4", 1.0, "int4")
    assert first._decode_plan.next_layer is second and second._decode_plan.next_input_tail is None
    x, residual = torch.randn(2, 96), torch.randn(2, 64)
    codes, scales = quant_kernels.rms_norm_quantize(x, torch.ones(96), 1e-6, "int4", dp4a_for="int4")[:2]
    down = first._decode_plan.down
    out = down.on_codes(codes, scales, torch.float32, residual=residual, norm_tail=tail)
    assert torch.equal(out, down.on_codes(codes, scales, torch.float32, residual=residual))
    want = quant_kernels.rms_norm_quantize(out, tail.weight, tail.eps, "int4", dp4a_for="int4")
    assert all(torch.equal(got, expected) for got, expected in zip(down.take_norm_codes(), want[:2]))
    weight_only = tiny_model("llama", act=None, weight=RealQuantScheme("e3m2", bits=6)).model.layers[0].mlp.down_proj
    with pytest.raises(ValueError, match="norm tail follows a W4A4 product"):
        weight_only.on_codes(codes, scales, torch.float32, norm_tail=tail)
    ids = torch.randint(0, 128, (2, 1), generator=torch.Generator().manual_seed(6))
    for hooked in (False, True):
        if hooked:
            for m in (model, plain):
                m.model.layers[0].register_forward_hook(lambda module, args, output: output * 2)
        calls = counting(monkeypatch)
        with torch.no_grad():
            assert torch.equal(model(ids).logits, plain(ids).logits)
        assert calls["rms_norm"] == 1 + hooked and calls["norm_tail"] == 3
        assert second._given_input is None


def test_o_proj_takes_input_codes_only_as_it_would_quantize_its_input():
    """The plan's attention tail is o_proj's own input quantization (none under an online rotation); codes come
    only when asked for, are used once (the product on them equals the product on x), and without them the call
    quantizes x itself."""
    from transforms.rotation import HadamardRotation

    model = tiny_model("llama")
    fuse_decoder_layers(model)
    o_proj = model.model.layers[0]._decode_plan.o_proj
    tail = model.model.layers[0]._decode_plan.attention_tail
    assert tail == quant_kernels.reference.NormTail(None, 0.0, "int4", 1.0, "int4") == o_proj.input_tail()
    with pytest.raises(RuntimeError, match="no want_input_codes asked for"):
        o_proj.provide_input_codes(torch.zeros(1, 64, dtype=torch.int8), torch.ones(1, 1))
    with pytest.raises(ValueError, match="as input_tail\\(\\) gives them"):
        o_proj.want_input_codes(quant_kernels.reference.NormTail(None, 0.0, "e2m1", 1.0, "int4"))
    x = torch.randn(2, 1, 64)
    plain = o_proj(x)
    o_proj.want_input_codes(tail)
    assert torch.equal(o_proj(x), plain) and o_proj.input_codes_wanted is None  # nothing provided: x quantized
    o_proj.want_input_codes(tail)
    o_proj.provide_input_codes(*quant_kernels.reference.norm_tail_ref(x.reshape(2, 64), tail))
    assert torch.equal(o_proj(torch.full_like(x, float("nan"))), plain)  # the codes, not x
    assert torch.equal(o_proj(x), plain)
    o_proj.input_transform = HadamardRotation(64)
    assert o_proj.input_tail() is None
    fuse_decoder_layers(model)
    assert model.model.layers[0]._decode_plan.attention_tail is None


def test_the_launch_probe_variants_change_the_plan():
    """launch_cost_probe's ``untailed`` and ``post_norm`` plans leave the norm to its own launch, ``ungated``
    leaves silu(gate) * up to the activation kernel, ``attention_untailed`` o_proj's input quantization to
    o_proj, ``down_untailed`` each layer's input norm to its own launch; ``control`` restores the plan."""
    import models.fused_decoder_layer as fused
    from benchmarks import launch_cost_probe as probe

    layer = tiny_model("llama").model.layers[0]
    try:
        for variant, tails in (("untailed", (False, True, True)), ("post_norm", (False, True, True)),
                               ("ungated", (True, False, True)), ("attention_untailed", (True, True, False)),
                               ("control", (True, True, True))):
            probe.patch(variant)
            plan = fused.decode_plan(layer)
            got = (plan.norm_tail is not None, plan.gated_rows > 0, plan.attention_tail is not None)
            assert got == tails, variant
        for variant, linked in (("down_untailed", False), ("control", True)):
            probe.patch(variant)
            model = tiny_model("llama")
            fused.fuse_decoder_layers(model)
            assert (model.model.layers[0]._decode_plan.next_input_tail is not None) == linked, variant
    finally:
        probe.patch("control")
    assert fused.decode_plan is probe.PLAN and fused.next_input_tail is probe.NEXT_INPUT_TAIL


def test_the_probe_s_logits_digest_takes_the_fused_path(monkeypatch):
    """``decode_profile.logits_digest``, which the probe compares between variants: a one-token forward without a
    cache runs every fused layer and its tails, and digests the unfused model's logits; other tokens differ."""
    from benchmarks.decode_profile import logits_digest

    model = tiny_model("llama")
    assert use_grouped_decode_attention(model)
    plain = copy.deepcopy(model)
    fuse_decoder_layers(model)
    ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(7))
    calls = counting(monkeypatch)
    with torch.no_grad():
        digest = logits_digest(model, ids)
        assert digest == logits_digest(plain, ids) != logits_digest(model, ids + 1)
    assert calls["norm_tail"] == 2 * 3 and calls["attention_tail"] == 2 * 2


class OpCalls(TorchDispatchMode):
    """The first call of each of our custom ops (``ptq::``) run inside: ``first[op] = (args, kwargs)``."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "ptq":
            self.first.setdefault(func, (args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def test_e4m3_planes_at_the_tensor_core_rows_give_the_dp4a_bytes_logits(monkeypatch):
    """As on a GPU (``decode_codes_form`` told it runs on one): at the tensor-core decode kernel's rows (16 sequences
    of one token) E2M1 weights' products take E4M3 planes from the RMSNorm and silu(gate) * up kernels, the
    attention's tail and the norm tails, and the twins give the dp4a bytes' logits bit for bit, eagerly and
    compiled (as one graph, against the bytes' compiled logits, whose fused glue rounds otherwise than eager's); the
    fake of every custom op that writes codes gives the planes' dtype, as the op does (``opcheck``)."""
    from torch._dynamo.utils import counters

    e2m1 = RealQuantScheme("e2m1")
    model = tiny_model("llama", act=e2m1, weight=e2m1)
    assert use_grouped_decode_attention(model) and fuse_decoder_layers(model) == 2
    monkeypatch.setattr(fused_decoder_layer, "ATTENTION_TAIL_MAX_ROWS", 16)
    ids = torch.randint(0, 128, (16, 1), generator=torch.Generator().manual_seed(3))
    forward = lambda ids: model(ids, use_cache=False).logits  # noqa: E731
    with torch.no_grad():
        want, want_compiled = forward(ids), torch.compile(forward)(ids)
    form, product, codes = quant_kernels.decode_codes_form, quant_kernels.w4a4_matmul_dp4a, []

    def recorded(a_bytes, *args, **kwargs):
        codes.append(a_bytes.dtype)
        return product(a_bytes, *args, **kwargs)

    monkeypatch.setattr(quant_kernels, "decode_codes_form", lambda w_element, m, on_gpu: form(w_element, m, True))
    monkeypatch.setattr(quant_kernels, "w4a4_matmul_dp4a", recorded)
    with torch.no_grad():
        with OpCalls() as calls:
            got = forward(ids)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(forward)(ids)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(codes) >= 8 and set(codes) == {torch.float8_e4m3fn}  # every product of both layers, on planes
    assert torch.equal(got, want) and torch.equal(compiled, want_compiled)
    writers = {"rms_norm_quantize", "silu_mul_quantize", "decode_attention_codes", "real_quant_matmul_norm",
               "real_quant_gemv_norm"}
    assert writers <= {op.__name__.split(".")[0] for op in calls.first}
    for op, (args, kwargs) in calls.first.items():  # each fake's outputs as the op's: the planes' dtype included
        torch.library.opcheck(op, args, kwargs, test_utils="test_faketensor")
