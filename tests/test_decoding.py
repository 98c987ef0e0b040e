"""models.decoding: the static-cache decoder (CUDA-graph and compiled decode) that bench_model times."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from models.decoding import ARGMAX_CHUNK, StaticDecoder, cache_kwargs, greedy_token
from configs.recipe import QuantRecipe
from quant_layers.packed_kv_cache import PackedKVCache, StaticPackedKVCache
from quant_layers.quantizer import QuantSpec
from test_packed_kv_cache import KV4, loaded_w4a4kv4, quantized


@pytest.mark.parametrize("vocab", [ARGMAX_CHUNK * 5, ARGMAX_CHUNK * 5 + 3])
def test_greedy_token_is_argmax_ties_and_nan_included(vocab):
    """The two-stage argmax returns argmax's index: the first maximum, also across chunks, and the first NaN."""
    logits = torch.randn(4, vocab)
    logits[1, [7, ARGMAX_CHUNK + 7, 3 * ARGMAX_CHUNK]] = 9.0  # a tie inside chunk 0 and across chunks
    logits[2, [2 * ARGMAX_CHUNK + 1, 2 * ARGMAX_CHUNK + 5]] = 9.0  # a tie inside a later chunk
    logits[3, [ARGMAX_CHUNK + 2, 4 * ARGMAX_CHUNK]] = float("nan")
    got = greedy_token(logits)
    assert got.shape == (4, 1)
    assert torch.equal(got, logits.argmax(-1, keepdim=True))
    assert got[1].item() == 7 and got[2].item() == 2 * ARGMAX_CHUNK + 1 and got[3].item() == ARGMAX_CHUNK + 2


def test_cache_kwargs_names_the_cache_as_the_forward_takes_it(tinystories_dir):
    """The cache goes in under the keyword the model's forward declares (``cache`` where transformers renamed
    ``past_key_values``), so that no forward warns of the old name, and none ignores the cache once it is gone."""
    import warnings

    class Renamed(torch.nn.Module):
        def forward(self, input_ids, cache=None, **kwargs):
            return cache

    class Before(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, **kwargs):
            return past_key_values

    assert cache_kwargs(Renamed(), "c") == {"cache": "c"}
    assert cache_kwargs(Before(), "c") == {"past_key_values": "c"}
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    cache = DynamicCache(config=model.config)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", FutureWarning)
        model(torch.tensor([[1, 2, 3]]), **cache_kwargs(model, cache), use_cache=True)
    assert cache.get_seq_length() == 3  # the forward wrote the cache it was handed


def test_static_decoder_decodes_like_the_dynamic_cache(tinystories_dir):
    """Token and position updated in place, the cache static: the same greedy tokens as HF's dynamic cache."""
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    decoder = StaticDecoder(model, ids, steps=8)
    decoder.warm_up()  # as before a capture: must leave no trace
    got = torch.cat([decoder.step().clone() for _ in range(8)], dim=1)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        token = model(ids, **cache_kwargs(model, cache), use_cache=True).logits[:, -1:].argmax(-1)
        want = []
        for _ in range(8):
            token = model(token, **cache_kwargs(model, cache), use_cache=True).logits[:, -1:].argmax(-1)
            want.append(token)
    want = torch.cat(want, dim=1)
    assert len(set(want.flatten().tolist())) > 4  # a real continuation, not one repeated token
    assert torch.equal(got, want)


def test_static_decoder_prefill_computes_only_the_last_position_s_logits(tinystories_dir):
    """The prefill's head sees one position a sequence: all of them took 31 GiB at 64 sequences of 2048 tokens of
    a 128k vocabulary."""
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[:2])))
    decoder = StaticDecoder(model, ids, steps=2)
    with torch.no_grad():
        want = model(ids).logits[:, -1].argmax(-1, keepdim=True)
    assert seen[0] == (3, 1)
    assert torch.equal(decoder.token, want)


def test_released_compiled_steps_free_their_decoders_caches(tinystories_dir):
    """A compiled decoder and its step refer to each other: its static cache outlives ``del`` until
    bench_model's ``release_compiled_steps`` collects it (before the next batch or mode allocates its own)."""
    import gc
    import weakref

    from benchmarks.bench_model import release_compiled_steps

    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    gc.disable()
    try:
        decoder = StaticDecoder(model, torch.tensor([[1, 2, 3]]), steps=2, compile=True)
        cache = weakref.ref(decoder.cache)
        del decoder
        assert cache() is not None
        release_compiled_steps(torch.device("cpu"))
        assert cache() is None
    finally:
        gc.enable()


def test_static_decoder_with_a_packed_kv4_cache_decodes_like_the_growing_one(tinystories_dir):
    """The KV4 graph decode's cache: static packed buffers give the growing packed cache's greedy tokens."""
    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"), **KV4)
    model = quantized(tinystories_dir, recipe)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    decoder = StaticDecoder(model, ids, steps=8, kv4=True)
    assert isinstance(decoder.cache, StaticPackedKVCache)
    decoder.warm_up()
    got = torch.cat([decoder.step().clone() for _ in range(8)], dim=1)
    with torch.no_grad():
        cache = PackedKVCache(model)
        token = model(ids, **cache_kwargs(model, cache), use_cache=True).logits[:, -1:].argmax(-1)
        want = []
        for _ in range(8):
            token = model(token, **cache_kwargs(model, cache), use_cache=True).logits[:, -1:].argmax(-1)
            want.append(token)
    assert torch.equal(got, torch.cat(want, dim=1))


def test_compiled_static_decoder_decodes_like_the_eager_one(tinystories_dir, tmp_path, monkeypatch):
    """``torch.compile`` of the decode step of a loaded W4A4KV4 checkpoint (real-quantized linears as
    opaque custom ops, packed KV4 cache): one graph, no breaks, and the eager step's tokens; every layer's decode
    attention quantizes o_proj's input (``DecodePlan.attention_tail``) in both, and every layer's input norm but the
    first's is quantized by the layer before's down_proj (``DecodePlan.next_input_tail``)."""
    from torch._dynamo.utils import counters

    import models.fused_decoder_layer as fused_decoder_layer
    import quant_kernels

    tails, norms = [], []
    attention, norm_quantize = quant_kernels.decode_attention_packed, quant_kernels.rms_norm_quantize

    def counted(*args, **kwargs):
        tails.append(kwargs.get("norm_tail"))
        return attention(*args, **kwargs)

    def counted_norm(x, weight, *args, **kwargs):
        norms.append(weight)
        return norm_quantize(x, weight, *args, **kwargs)

    monkeypatch.setattr(quant_kernels, "decode_attention_packed", counted)
    monkeypatch.setattr(quant_kernels, "rms_norm_quantize", counted_norm)
    monkeypatch.setattr(fused_decoder_layer, "ATTENTION_TAIL_MAX_ROWS", 2)  # both sequences' rows
    model = loaded_w4a4kv4(tinystories_dir, tmp_path)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    eager = StaticDecoder(model, ids, steps=8, kv4=True)
    want = torch.cat([eager.step().clone() for _ in range(6)], dim=1)
    torch._dynamo.reset()
    counters.clear()
    compiled = StaticDecoder(model, ids, steps=8, kv4=True, compile=True)
    got = torch.cat([compiled.step().clone() for _ in range(6)], dim=1)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(set(want.flatten().tolist())) > 4  # a real continuation
    assert torch.equal(got, want)
    layers = model.config.num_hidden_layers
    assert len(tails) >= 12 * layers and all(tail is not None and tail.weight is None for tail in tails)
    first = model.model.layers[0].input_layernorm.weight
    assert layers > 1 and len(norms) >= 12 and all(weight is first for weight in norms)


def test_bench_model_dry_run_writes_its_tables(tmp_path):
    from benchmarks.bench_model import main

    prefix = str(tmp_path / "bench")
    assert main(["--random_mode", "--config", "smollm2-135m", "--cpu_dry_run", "--modes", "bf16,w4a4kv4,bf16_eager",
                 "--out", prefix]) == 0
    table = open(prefix + ".md").read()
    assert "| w4a4kv4 |" in table and "| bf16_eager |" in table and "decode b2 eager (tok/s)" in table
    assert json.load(open(prefix + ".json"))["gpu_uuid"] is None  # no card on the CPU


def test_device_uuid_names_the_card(monkeypatch):
    """The UUID a CUDA device reports, as text (model_table.py refuses to merge runs of two cards); None on the CPU
    or where torch reports none."""
    import types

    from pipeline.results import device_uuid

    assert device_uuid(torch.device("cpu")) is None
    for reported, want in (("4f2a-01", "4f2a-01"), (None, None)):
        props = types.SimpleNamespace(name="H100") if reported is None else types.SimpleNamespace(uuid=reported)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device, props=props: props)
        assert device_uuid(torch.device("cuda", 0)) == want


def test_decode_step_bytes_by_hand():
    """The estimate behind bench_model's GB/s: Llama-3-8B's FP6 step as the forty-fourth session's write-up put it
    (6.6 GB: 6.84 GiB of weights and buffers less the 1.05 GB embedding table, plus 0.28 GB of bf16 K/V), and a tiny
    tied config's KV4 step counted by hand."""
    from benchmarks.bench_model import build_config, decode_step_bytes

    config = build_config("llama-3-8b", None, 2048)
    step = decode_step_bytes(config, int(6.84 * 2**30), False, 1, 2048, 128)
    kv = 32 * 8 * (2 * 128 * 2) * (2048 + 64.5)
    assert step == int(6.84 * 2**30) - (128256 - 1) * 4096 * 2 + kv and 6.5e9 < step < 6.7e9
    tiny = build_config("smollm2-135m", 2, 32)  # tied: lm_head reads the whole table, which model_bytes holds
    per_position = 2 * 3 * (64 + 4 + 8)  # layers x KV heads x (K and V codes, K's and V's scales, V's zero points)
    assert decode_step_bytes(tiny, 1000, True, 2, 32, 4) == 1000 + 2 * per_position * (32 + 2.5)


def test_bench_model_table_reports_the_decode_steps_bandwidth():
    from benchmarks.bench_model import markdown

    row = {"mode": "fp6", "model_bytes": 2**30, "prefill_ms": {}, "graph_prefill_ms": {}, "decode_tok_s": {},
           "graph_decode_tok_s": {1: 250.0, 8: 1000.0}, "graph_decode_step_bytes": {1: 6.5e9, 8: 7.0e9}}
    result = {"config": "llama-3-8b", "layers": 32, "seqlen": 2048, "decode_tokens": 256, "compile": True,
              "device": "GPU", "date": "today", "versions": {}, "command": "python benchmarks/bench_model.py",
              "rows": [row]}
    text = markdown(result)
    assert "fp6 b1: 6.50 GB in 4.00 ms, 1625 GB/s; fp6 b8: 7.00 GB in 8.00 ms, 875 GB/s." in text


def _bench_run(date: str, rows: list[dict], device: str = "GPU") -> dict:
    """A bench_model.py result as its JSON file holds it (batch sizes as strings)."""
    full = [{"prefill_ms": {}, "graph_prefill_ms": {}, "decode_tok_s": {}, "graph_decode_tok_s": {}, **row}
            for row in rows]
    return json.loads(json.dumps({"config": "llama-3-8b", "layers": 32, "seqlen": 2048, "decode_tokens": 256,
                                  "compile": True, "device": device, "date": date, "versions": {"torch": "2.11"},
                                  "command": f"python benchmarks/bench_model.py # {date}", "rows": full}))


def test_model_table_merges_the_runs_of_one_machine(tmp_path, capsys):
    """model_table.py: runs that each timed part of the table merge by mode, a later figure replacing an earlier
    one, every ratio against bf16's figure in its column, a dash where no run timed it, every run named; runs of
    another device or another card of its kind and files that are no results are refused."""
    from benchmarks.model_table import main

    gib = 2**30
    runs = [_bench_run("t1", [{"mode": "bf16", "model_bytes": 15 * gib, "graph_prefill_ms": {1: 60.0, 4: 240.0},
                               "peak_bytes": 16 * gib},
                              {"mode": "w4a4kv4", "model_bytes": 5 * gib, "graph_prefill_ms": {1: 40.0, 4: 200.0},
                               "peak_bytes": 17 * gib}]),
            _bench_run("t2", [{"mode": "bf16", "model_bytes": 15 * gib, "graph_decode_tok_s": {1: 150.0},
                               "graph_decode_step_bytes": {1: 15e9}, "peak_bytes": 23 * gib},
                              {"mode": "fp6", "model_bytes": 7 * gib, "graph_decode_tok_s": {1: 270.0}}]),
            _bench_run("t3", [{"mode": "w4a4kv4", "model_bytes": 5 * gib, "graph_prefill_ms": {1: 39.0},
                               "graph_decode_tok_s": {1: 405.0}, "peak_bytes": 32 * gib}])]
    names = []
    for i, run in enumerate(runs):
        names.append(str(tmp_path / f"run{i}.json"))
        with open(names[-1], "w") as f:
            json.dump(run, f)
    prefix = str(tmp_path / "table")
    assert main([*names, "--out", prefix]) == 0
    table = open(prefix + ".md").read()
    assert "| bf16 | 15.00 | 60.0 (1.00×) | 240.0 (1.00×) | 150.0 (1.00×) | 23.00 |" in table
    assert "| w4a4kv4 | 5.00 | 39.0 (1.54×) | 200.0 (1.20×) | 405.0 (2.70×) | 32.00 |" in table
    assert "| fp6 | 7.00 | – | – | 270.0 (1.80×) | – |" in table
    assert "- run 1: t1, `python benchmarks/bench_model.py # t1`" in table and "- run 3: t3" in table
    assert "bf16 b1: 15.00 GB in 6.67 ms, 2250 GB/s" in table
    assert json.load(open(prefix + ".json"))["rows"][1]["graph_prefill_ms"] == {"1": 39.0, "4": 200.0}
    with open(names[1], "w") as f:
        json.dump({**runs[1], "device": "another GPU"}, f)
    with open(names[2], "w") as f:
        f.write("{}")
    other_card = str(tmp_path / "other_card.json")
    with open(other_card, "w") as f:
        json.dump({**runs[0], "gpu_uuid": "GPU-2"}, f)
    with open(names[0], "w") as f:
        json.dump({**runs[0], "gpu_uuid": "GPU-1"}, f)
    missing = str(tmp_path / "missing.json")
    for bad, message in ((names[:2], "the runs differ in device"), ([names[0], other_card], "differ in gpu_uuid"),
                         (names[2:], "is not a bench_model.py result"),
                         ([missing], f"cannot read {missing} as a bench_model.py result")):
        with pytest.raises(SystemExit) as stop:
            main([*bad, "--out", str(tmp_path / "bad")])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad.md")


def test_decode_match_compares_the_compiled_step_with_the_eager_one(tmp_path, capsys):
    """``decode_match.py`` on the CPU (both codes forms are the dp4a bytes there): the first decode step's logits
    eager and compiled within its tolerance, the greedy tokens compared, a table written; bad sizes refused."""
    from benchmarks.decode_match import main

    prefix = str(tmp_path / "match")
    assert main(["--config", "smollm2-135m", "--layers", "1", "--seqlen", "8", "--steps", "2", "--batches", "2",
                 "--device", "cpu", "--out", prefix]) == 0
    row = json.load(open(prefix + ".json"))["rows"][0]
    assert row["ok"] and row["finite"] and row["default eager vs bytes eager"]["relative_l2"] == 0.0
    # inductor rounds half-precision intermediates and divides as eager does (compile_options): the same logits
    assert row["default compiled vs default eager"]["relative_l2"] == 0.0
    assert len(row["greedy"]["first_parting_step_per_row"]) == 2 and "| fp4a4kv4 | 2 |" in open(prefix + ".md").read()
    for argv, message in ((["--steps", "0"], "--steps must be at least 1"), (["--batches", ""], "--batches is empty")):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--out", str(tmp_path / "bad")])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad.json")


@pytest.mark.parametrize("argv, message", [
    (["--prefill_batches", "0"], "counts are at least 1"),
    (["--decode_batches", "1,x"], "a comma list of whole numbers"),
    (["--prefill_batches", "", "--decode_batches", ""], "nothing to time"),
    (["--reps", "0"], "--reps must be at least 1"),
    (["--decode_tokens", "-1"], "--decode_tokens must be at least 1"),
    (["--layers", "0"], "--layers must be at least 1"),
    (["--seqlen", "0"], "--seqlen must be at least 1"),
    (["--modes", "bf16,w4a16_int4_g128"], "groups of 128 do not divide smollm2-135m's linear input width 576"),
])
def test_bench_model_refuses_sizes_it_cannot_time(tmp_path, capsys, argv, message):
    """Bad sizes are usage errors before anything is built or written, not a traceback from inside a timing."""
    from benchmarks.bench_model import main

    with pytest.raises(SystemExit) as stop:
        main(["--random_mode", "--config", "smollm2-135m", "--out", str(tmp_path / "bench"), *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_bench_model_bf16_eager_mode_runs_hf_eager_attention():
    from benchmarks.bench_model import build_config, build_model

    config = build_config("smollm2-135m", 1, 16)
    assert build_model(config, "bf16_eager", torch.device("cpu")).config._attn_implementation == "eager"
    assert build_model(config, "bf16", torch.device("cpu")).config._attn_implementation != "eager"


def test_bench_model_head_mode_quantizes_lm_head_and_keeps_the_tied_embeddings():
    from benchmarks.bench_model import build_config, build_model
    from quant_layers.real_linear import RealQuantLinear

    config = build_config("smollm2-135m", 1, 16)  # tie_word_embeddings=True
    cpu = torch.device("cpu")
    model = build_model(config, "w4a4kv4_head", cpu)
    assert isinstance(model.lm_head, RealQuantLinear) and model.lm_head.schemes == model.model.layers[0].mlp.down_proj.schemes
    assert isinstance(model.model.embed_tokens.weight, torch.nn.Parameter)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert not isinstance(build_model(config, "w4a4kv4", cpu).lm_head, RealQuantLinear)
    fp4 = build_model(config, "fp4a4kv4", cpu).model.layers[0].mlp.down_proj
    assert fp4.weight_scheme.element == "e2m1" and fp4.act_scheme.element == "e2m1"
    from benchmarks.bench_model import MODES
    from quant_kernels.switches import environment

    before = os.environ.get("PTQ_TC_E2M1")
    with environment(MODES["fp4a4kv4_cuda_core"].env):
        assert os.environ["PTQ_TC_E2M1"] == "0"
    assert os.environ.get("PTQ_TC_E2M1") == before  # restored
    from quant_kernels.flash_decode import ELEMENT_IDS, factored

    per_token = [(None, None, ELEMENT_IDS[element], 64, element == "uint4") for element in ("int4", "uint4")]
    assert factored(torch.bfloat16, 64, *per_token)  # the KV4 benchmark's cache, by default read in the factored form
    with environment(MODES["w4a4kv4_dequantized"].env):  # its tiles dequantized
        assert MODES["w4a4kv4_dequantized"].kv4 and not factored(torch.bfloat16, 64, *per_token)
    head8 = build_model(config, "w4a4kv4_head8", cpu).lm_head
    assert head8.act_scheme.element == "int8" and head8.weight_scheme.element == "int4"
    head_w8a8 = build_model(config, "w4a4kv4_head_w8a8", cpu).lm_head
    assert head_w8a8.act_scheme.element == "int8" and head_w8a8.weight_scheme.element == "int8"
    fp6_head = build_model(config, "fp6_head", cpu).lm_head  # weight-only, as the decoder linears
    assert fp6_head.weight_scheme.element == "e3m2" and fp6_head.act_scheme is None
    assert not isinstance(build_model(config, "fp6", cpu).lm_head, RealQuantLinear)
    e2m3 = build_model(config, "fp6_e2m3", cpu).model.layers[0].mlp.down_proj
    assert e2m3.weight_scheme.element == "e2m3" and e2m3.weight_scheme.bits == 6 and e2m3.act_scheme is None
    assert head_w8a8.qweight.shape == (config.vocab_size, config.hidden_size)  # one byte a weight
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
        x = torch.randn(1, 8, config.hidden_size, dtype=torch.bfloat16)
        head_logits = [head8(x), head_w8a8(x), fp6_head(x)]
    assert logits.shape == (1, 8, config.vocab_size) and bool(logits.isfinite().all()) and logits.std() > 0
    assert all(bool(out.isfinite().all()) and out.std() > 0 for out in head_logits)


def test_bench_model_table_has_graph_prefill_columns_and_capture_errors():
    """Graph-replayed prefill gets its own columns, its ratio against bf16 in the same column (wherever bf16 is in
    the modes); a failed capture is named by phase and batch."""
    from benchmarks.bench_model import markdown

    def row(mode, eager, graph, errors=None):
        return {"mode": mode, "model_bytes": 2**30, "prefill_ms": {1: eager}, "graph_prefill_ms": graph,
                "decode_tok_s": {}, "graph_decode_tok_s": {1: 100.0}, **({"graph_errors": errors} if errors else {})}

    result = {"config": "llama-3-8b", "layers": 32, "seqlen": 2048, "decode_tokens": 8, "compile": True,
              "device": "gpu", "date": "", "versions": {}, "command": "",
              "rows": [row("bf16", 60.0, {1: 50.0}), row("w4a4", 120.0, {1: 25.0}),
                       row("w4a4kv4", 180.0, {}, {"prefill b1": "capture failed"})]}
    table = markdown(result)
    assert "| prefill b1 (ms) | prefill b1 graph+compile (ms) |" in table
    assert "| w4a4 | 1.00 | 120.0 (0.50×) | 25.0 (2.00×) |" in table
    assert "| w4a4kv4 | 1.00 | 180.0 (0.33×) | – |" in table
    assert "w4a4kv4 prefill b1: capture failed" in table
    result["rows"] = result["rows"][1:] + result["rows"][:1]  # --modes w4a4,w4a4kv4,bf16: the ratios stay
    assert "| w4a4 | 1.00 | 120.0 (0.50×) | 25.0 (2.00×) |" in markdown(result)


def test_packed_kv4_decode_steps_build_no_code_tables(tinystories_dir, monkeypatch):
    """After the prefill, a decode step into the static packed cache (FP4 E2M1 K/V here) reuses the code
    tables it moved to the device: building one is a host-to-device copy, which a CUDA-graph capture refuses."""
    import quant_layers.packed_kv_cache as packed_kv_cache
    import quant_layers.packing as packing

    fp4 = QuantSpec("fp", 4, exp_bits=2, granularity="head")
    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"), key=fp4, value=fp4)
    model = quantized(tinystories_dir, recipe)
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(3))
    decoder = StaticDecoder(model, ids, steps=4, kv4=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a decode step built a code table")

    monkeypatch.setattr(packing, "code_values", refuse)
    monkeypatch.setattr(packed_kv_cache, "code_values", refuse)
    for _ in range(3):
        decoder.step()


def test_greedy_generate_needs_a_new_token(tinystories_dir):
    from models.decoding import greedy_generate

    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1, got 0"):
        greedy_generate(model, torch.tensor([[1, 2, 3]]), 0)


@pytest.mark.parametrize("argv,message", [
    (["--modes", "bf16,w3a3"], "unknown modes ['w3a3']: choose from bf16, bf16_eager, w4a16"),
    (["--modes", "bf16"], "needs a CUDA device"),
    (["--prefill", "--compile"], "--prefill profiles the eager forward bench_model times"),
    (["--inductor", "combo_kernels=1"], "--inductor sets options of the compiled step: add --compile"),
    (["--compile", "--inductor", "combo_kernels"], "an inductor option is NAME=VALUE"),
    (["--compile", "--inductor", "no_such_option=1"], "unknown inductor option 'no_such_option'"),
])
def test_decode_profile_refusals(argv, message, tmp_path, capsys):
    from benchmarks.decode_profile import main

    if torch.cuda.is_available() and "CUDA" in message:
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "profile")])
    assert message in capsys.readouterr().err


def test_inductor_options_are_read_and_checked():
    from models.decoding import compile_options, inductor_option

    assert inductor_option("combo_kernels=1") == ("combo_kernels", True)
    assert inductor_option("max_autotune=false") == ("max_autotune", False)
    assert inductor_option("combo_kernel_allow_mixed_sizes=2") == ("combo_kernel_allow_mixed_sizes", 2)
    assert compile_options({"combo_kernels": True})["combo_kernels"] is True
    assert compile_options()["emulate_precision_casts"] is True  # this torch has the switch (2.13)
    with pytest.raises(ValueError, match="unknown inductor option 'combo_kernel'"):
        compile_options({"combo_kernel": True})


def test_decode_profile_lists_the_autotuned_configs(monkeypatch):
    import triton

    from benchmarks.decode_profile import markdown, tuned_configs
    from quant_kernels import fpx_gemm, w4a4_gemv

    pick = triton.Config(dict(BLOCK_N=16, BLOCK_KW=256), num_warps=8, num_stages=2)
    monkeypatch.setattr(w4a4_gemv._gemv_autotuned, "cache", {(1, 4096, 512, True, True, 1): pick})
    fpx_pick = triton.Config(dict(BLOCK_N=32, BLOCK_KW=128), num_warps=8, num_stages=2)
    monkeypatch.setattr(fpx_gemm._fpx_row_autotuned, "cache", {(4096, 512, 6, 2): fpx_pick})
    tc_pick = triton.Config(dict(BLOCK_N=64, BLOCK_KB=256, SPLIT_K=2), num_warps=4, num_stages=3)
    monkeypatch.setattr(w4a4_gemv._tc_autotuned, "cache", {(8, 4096, 14336): tc_pick})
    configs = tuned_configs()
    assert configs["w4a4_gemv"] == [f"(1, 4096, 512, True, True, 1): {pick}"]
    assert configs["w4a4_tc"] == [f"(8, 4096, 14336): {tc_pick}"]
    assert configs["fpx_row"] == [f"(4096, 512, 6, 2): {fpx_pick}"]
    row = {"mode": "w4a4", "batch": 1, "step_us": 10.0, "kernel_us": 8.0, "tuned_configs": configs,
           "kernels": {"_w4a4_gemv_kernel": {"count": 1, "us": 8.0}}}
    text = markdown({"config": "llama-3-8b", "batch": 1, "seqlen": 8, "device": "cpu", "date": "", "versions": {},
                     "command": "", "rows": [row]}, top=5)
    assert "BLOCK_KW: 256" in text and "Autotuned `w4a4_gemv` configs" in text
    assert "step 10 us (100000.0 tok/s)" in text
    prefill = markdown({"config": "llama-3-8b", "batch": 1, "seqlen": 8, "device": "cpu", "date": "", "versions": {},
                        "command": "", "prefill": True, "rows": [row]}, top=5)
    assert prefill.startswith("# Prefill profile") and "forward 10 us, kernels 8 us" in prefill


def test_recorded_commands_carry_the_ptq_switches(monkeypatch):
    from benchmarks.result_files import command_line

    for name in [name for name in os.environ if name.startswith("PTQ_")]:
        monkeypatch.delenv(name)
    assert command_line("decode_profile.py", ["--compile"]) == "python benchmarks/decode_profile.py --compile"
    monkeypatch.setenv("PTQ_PDL", "gemv")
    monkeypatch.setenv("PTQ_E2M1_PLANES", "0")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # not a switch of ours
    assert (command_line("bench_model.py", ["--modes", "bf16"])
            == "PTQ_E2M1_PLANES=0 PTQ_PDL=gemv python benchmarks/bench_model.py --modes bf16")
    monkeypatch.setenv("PTQ_PDL", "a b")
    assert (command_line("fpx_row_sweep.py", ["--prefill_batches", "", "--extra", "1,2;3,4"])
            == "PTQ_E2M1_PLANES=0 PTQ_PDL='a b' python benchmarks/fpx_row_sweep.py --prefill_batches '' "
               "--extra '1,2;3,4'")


def test_pdl_check_needs_a_gpu(tmp_path):
    from benchmarks.pdl_check import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit, match="no CUDA device: programmatic dependent launch exists only on a GPU"):
        main(["--out", str(tmp_path / "check")])


def test_pdl_check_refuses_an_unknown_mode(tmp_path, capsys):
    from benchmarks.pdl_check import main

    with pytest.raises(SystemExit):
        main(["--modes", "all,some", "--out", str(tmp_path / "check")])
    assert "unknown modes ['some'] in --modes: choose from all, gemv, off" in capsys.readouterr().err


def test_bench_model_nvfp4_and_mxfp4_modes_hold_encoded_scales():
    """``w4a16_nvfp4`` / ``w4a16_mxfp4`` build linears with E4M3 scales and a global scale a row / E8M0 bytes, each
    weight scaled by 0.02 / 6 (E8M0: the nearest power of two), and a model that runs to finite, varied logits;
    ``nvfp4a4`` / ``mxfp4a4`` the same weights with activations in the same format."""
    from benchmarks.bench_model import build_config, build_model
    from quant_kernels.reference import scale_values

    config = build_config("smollm2-135m", 1, 16)
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    for mode, dtype, value in (("w4a16_nvfp4", torch.float8_e4m3fn, 0.02 / 6), ("w4a16_mxfp4", torch.uint8, 2.0**-8),
                               ("nvfp4a4", torch.float8_e4m3fn, 0.02 / 6), ("mxfp4a4", torch.uint8, 2.0**-8)):
        model = build_model(config, mode, torch.device("cpu"))
        down = model.model.layers[0].mlp.down_proj
        assert down.encoded_scales and down.weight_scale.dtype == dtype
        assert down.act_scheme == (None if mode.startswith("w4a16") else down.weight_scheme), mode
        scales = scale_values(down.weight_scale, getattr(down, "weight_global_scale", None))
        torch.testing.assert_close(scales, torch.full_like(scales, value), rtol=1e-6, atol=0)
        with torch.no_grad():
            logits = model(ids).logits
        assert bool(logits.isfinite().all()) and logits.std() > 0
