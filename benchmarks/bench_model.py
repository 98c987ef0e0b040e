"""Whole-model speed: prefill latency, decode tokens/s, peak memory and size, per quantization mode.

``--random_mode`` builds the model from a real config's shapes with random weights (no
download); quantized modes replace every decoder linear by a ``RealQuantLinear`` holding
random packed codes and scales, which is what the kernels' speed depends on, and run q/k/v
and gate/up fused, as a loaded checkpoint does. Modes:

* ``bf16``: the dense model (HF SDPA attention, single-token queries grouped per K/V head as in
  ``models.attention``, like every mode but the next);
* ``bf16_eager``: the dense model on HF's eager attention (matmul, softmax, matmul; K/V
  repeated per query head), labelled, as a second bf16 reference;
* ``w4a16``: FP4 E2M1 weights per channel on the FPx weight-only kernel, bf16 activations; ``w4a16_int4`` the same
  with INT4 weights per channel (their levels placed by the same kernels), ``w4a16_int4_g128`` in groups of 128
  (GPTQ's; the row kernel up to 4 rows, the tensor-core kernel above, the dequantized weight from 1024 rows),
  ``w4a16_nvfp4`` / ``w4a16_mxfp4`` E2M1 weights as NVFP4 / MXFP4 store them (groups of 16 with E4M3 scales and
  a global scale, of 32 with E8M0 ones), their scales held so (``RealQuantLinear.encoded_scales``);
* ``w4a4``: INT4 weights per channel, INT4 activations per token (W4A4 GEMM); ``nvfp4a4`` / ``mxfp4a4``: weights
  and activations in NVFP4 / MXFP4 (``quant_kernels.w4a4_linear``'s dequantized path on a GPU: the activations
  dequantized, then the weight-only product);
* ``w4a4kv4``: ``w4a4`` with K/V quantized to INT4 per head (V asymmetric), decoding from
  the packed KV4 cache (decode steps read its codes in the attention kernel, which applies the cache's per-token
  scales to scores and probabilities: ``quant_kernels.flash_decode.factored``); ``w4a4kv4_dequantized`` runs with
  ``PTQ_KV4_FACTORED=0``: the attention dequantizes each K and V tile instead;
* ``w4a4kv4_head`` / ``w4a4kv4_head8`` / ``w4a4kv4_head_w8a8``: ``w4a4kv4`` with lm_head quantized
  too (``--quantize_lm_head``): W4A4, W4A8 (``--lm_head_a_bits 8``: INT8 activations) or W8A8 (also
  ``--lm_head_w_bits 8``: INT8 weights), the last two on the decode kernel's byte products. QuaRot and
  FlatQuant keep lm_head in 16 bits, so these are modes of their own;
* ``fp4a4kv4`` / ``fp4a4kv4_cuda_core``: ``w4a4kv4`` with FP4 E2M1 weights (per channel) and activations (per
  token), its decode products of 5 to 64 rows on the FP8 tensor cores (``quant_kernels.w4a4_gemv``);
  ``_cuda_core`` runs with ``PTQ_TC_E2M1=0``: the CUDA-core decode kernel up to 8 rows, ``w4a4_gemm`` above;
* ``fp6`` / ``fp5``: E3M2 / E2M2 weight-only on the FPx kernel (``fp6_e2m3``: FP6 E2M3); ``fp6_head`` with lm_head in FP6 too (``--format fp
  --w_bits 6 --w_exp_bits 3 --a_bits 16 --quantize_lm_head``), a mode of its own as the ``_head`` ones above: at
  batch 1 lm_head's 1 GB of bfloat16 weight is about a sixth of what ``fp6``'s decode step reads (on SmolLM2-135M
  an FP6 E3M2 lm_head adds 4.2 % perplexity, an E2M3 one 0.8 %: ``results/smollm2_fp6_lm_head_cpu.md``).

Prefill: one forward over ``batch x seqlen`` tokens without a cache, timed eagerly (Python
launches every kernel: on the H200 a W4A4 forward's kernels ran 49 ms of its 117 ms,
``benchmarks/results/prefill_profile_b1_llama3_8b_h200.md``) and, with ``--graph_prefill``
(CUDA only), as replays of the forward captured in a CUDA graph (of the ``torch.compile``d
forward with ``--compile``), for every mode alike. Decode: a prefill of
``seqlen`` tokens into a cache, then ``--decode_tokens`` greedy steps, timed two ways:

* ``graph`` (CUDA only; the strong baseline the ratios use): a static cache and one decode
  step captured as a CUDA graph after two warm-up steps (which also autotune the Triton
  kernels), replayed once per token. KV4 decodes from a static packed cache
  (``StaticPackedKVCache``: codes and scales written in place, read packed by the
  decode-attention kernel, ``quant_kernels.decode_attention_packed``).
  With ``--compile`` the step goes through ``torch.compile`` first, for every mode alike
  (``models.decoding.StaticDecoder``).
* ``eager``: one Python forward per token with a dynamic cache (launch-bound, labelled).

``--hf_generate`` also times HF ``generate`` for bf16 at batch 1, labelled.

    python benchmarks/bench_model.py --random_mode --config llama-3-8b --out benchmarks/results/bench_model_llama3_8b
    python benchmarks/bench_model.py --random_mode --config smollm2-135m --cpu_dry_run --out /tmp/bench_model_dry
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.kernel_bench import counts  # noqa: E402
from benchmarks.result_files import command_line, write_result_files  # noqa: E402
from benchmarks.timing import make_timer  # noqa: E402
from models import adapter_for, resolve_device  # noqa: E402
from models.attention import use_grouped_decode_attention  # noqa: E402
from models.decoding import StaticDecoder, cache_kwargs  # noqa: E402
from models.fused_decoder_layer import fuse_decoder_layers  # noqa: E402
from pipeline.results import device_name, device_uuid, library_versions  # noqa: E402
from quant_kernels.switches import environment  # noqa: E402
from quant_layers import Quantizer, QuantSpec, install_kv_quantization  # noqa: E402
from quant_layers.fused_linear import fuse_shared_input_linears  # noqa: E402
from quant_layers.packed_kv_cache import PackedKVCache  # noqa: E402
from quant_layers.packing import code_values, element_named, encode, pack_planes  # noqa: E402
from quant_layers.real_linear import RealQuantLinear, RealQuantScheme  # noqa: E402

# Shapes of the real models (hidden, intermediate, layers, heads, KV heads, vocab, RoPE theta).
CONFIGS = {
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                         tie_word_embeddings=True),
}


@dataclass(frozen=True)
class BenchMode:
    """What a mode quantizes: the decoder linears' weight scheme (None: bf16) and activation scheme (None:
    weight-only), whether K/V decode from the packed KV4 cache, whether lm_head is quantized too
    (``--quantize_lm_head``), and then its activation and weight schemes (None: the decoder linears';
    ``--lm_head_a_bits``, ``--lm_head_w_bits``)."""

    weight: RealQuantScheme | None = None
    act: RealQuantScheme | None = None
    kv4: bool = False
    lm_head: bool = False
    lm_head_act: RealQuantScheme | None = None
    lm_head_weight: RealQuantScheme | None = None
    env: tuple[tuple[str, str], ...] = ()  # environment variables the mode is built and timed under


INT4 = RealQuantScheme("int4")
INT8 = RealQuantScheme("int8", bits=8)
E2M1 = RealQuantScheme("e2m1")
FP6 = RealQuantScheme("e3m2", bits=6)
NVFP4 = RealQuantScheme("e2m1", group=16, scale_kind="e4m3")
MXFP4 = RealQuantScheme("e2m1", group=32, scale_kind="e8m0")
MODES = {
    "bf16": BenchMode(),
    "bf16_eager": BenchMode(),
    "w4a16": BenchMode(E2M1),
    "w4a16_int4": BenchMode(INT4),
    "w4a16_int4_g128": BenchMode(RealQuantScheme("int4", group=128)),
    "w4a16_nvfp4": BenchMode(NVFP4),
    "w4a16_mxfp4": BenchMode(MXFP4),
    "nvfp4a4": BenchMode(NVFP4, NVFP4),
    "mxfp4a4": BenchMode(MXFP4, MXFP4),
    "w4a4": BenchMode(INT4, INT4),
    "w4a4kv4": BenchMode(INT4, INT4, kv4=True),
    "w4a4kv4_dequantized": BenchMode(INT4, INT4, kv4=True, env=(("PTQ_KV4_FACTORED", "0"),)),
    "fp4a4kv4": BenchMode(E2M1, E2M1, kv4=True),
    "fp4a4kv4_cuda_core": BenchMode(E2M1, E2M1, kv4=True, env=(("PTQ_TC_E2M1", "0"),)),
    "w4a4kv4_head": BenchMode(INT4, INT4, kv4=True, lm_head=True),
    "w4a4kv4_head8": BenchMode(INT4, INT4, kv4=True, lm_head=True, lm_head_act=INT8),
    "w4a4kv4_head_w8a8": BenchMode(INT4, INT4, kv4=True, lm_head=True, lm_head_act=INT8, lm_head_weight=INT8),
    "fp6": BenchMode(FP6),
    "fp6_head": BenchMode(FP6, lm_head=True),
    "fp6_e2m3": BenchMode(RealQuantScheme("e2m3", bits=6)),
    "fp5": BenchMode(RealQuantScheme("e2m2", bits=5)),
}
# Modes on another attention implementation than SDPA.
ATTENTION = {"bf16_eager": "eager"}
KV4 = (QuantSpec("int", 4, granularity="head"), QuantSpec("int", 4, granularity="head", symmetric=False))


def build_config(name: str, layers: int | None, seqlen: int):
    kwargs = dict(CONFIGS[name])
    model_type = kwargs.pop("model_type")
    if layers:
        kwargs["num_hidden_layers"] = layers
    return AutoConfig.for_model(model_type, max_position_embeddings=max(8192, seqlen * 2), **kwargs)


def linear_input_widths(config) -> set[int]:
    """The input widths of a decoder layer's linears: q/k/v and gate/up read the hidden size, o_proj the heads'
    width, down_proj the intermediate size."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {config.hidden_size, config.num_attention_heads * head_dim, config.intermediate_size}


def fill_weight_scales(module: RealQuantLinear, value: float) -> None:
    """Every weight scale of ``module`` set to ``value`` (E8M0: the nearest power of two), in the encoding it holds
    (``RealQuantLinear.encoded_scales``): NVFP4's as E4M3 256 times a global scale ``value`` / 256."""
    if not module.encoded_scales:
        module.weight_scale.fill_(value)
    elif module.weight_scheme.scale_kind == "e4m3":
        module.weight_scale.fill_(256.0)
        module.weight_global_scale.fill_(value / 256)
    else:
        module.weight_scale.fill_(round(math.log2(value)) + 127)


def random_real_linear(linear: nn.Linear, weight: RealQuantScheme, act: RealQuantScheme | None,
                       generator: torch.Generator) -> RealQuantLinear:
    """A ``RealQuantLinear`` of ``linear``'s shape with random codes (of finite values) and small scales."""
    device = linear.weight.device
    module = RealQuantLinear(linear.in_features, linear.out_features, linear.bias is not None, weight, act,
                             linear.weight.dtype).to(device)
    element = element_named(weight.element)
    codes = torch.randint(0, 2**weight.bits, (linear.out_features, linear.in_features), generator=generator,
                          device=device)
    values = code_values(element).to(device)[codes]
    planes = pack_planes(encode(values, element), weight.bits)
    module.qweight.copy_(planes[0])
    if len(planes) > 1:  # the 1- or 2-bit plane of 5- and 6-bit codes
        module.qweight_high.copy_(planes[1])
    fill_weight_scales(module, 0.02 / element.max_value)
    if linear.bias is not None:
        module.bias.data.copy_(linear.bias.data)
    return module


def build_model(config, mode: str, device: torch.device, seed: int = 0) -> nn.Module:
    """The model built on ``device`` directly (random initialisation of 8B weights on a CPU takes minutes)."""
    torch.manual_seed(seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                 attn_implementation=ATTENTION.get(mode, "sdpa")).eval()
    use_grouped_decode_attention(model)  # every SDPA mode, bf16 included: no K/V copies per query head
    bench_mode = MODES[mode]
    weight, act = bench_mode.weight, bench_mode.act
    adapter = adapter_for(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    if weight is not None:
        for layer in adapter.decoder_layers(model):
            for name in adapter.linear_names():
                layer.set_submodule(name, random_real_linear(layer.get_submodule(name), weight, act, generator))
        if bench_mode.lm_head:  # a new module: tied embeddings keep their own weight
            model.lm_head = random_real_linear(adapter.lm_head(model), bench_mode.lm_head_weight or weight,
                                               bench_mode.lm_head_act or act, generator)
        fuse_shared_input_linears(model)  # as load_quantized does: q/k/v and gate/up run as one,
        fuse_decoder_layers(model)  # and decode-sized layers in fewer launches
    if bench_mode.kv4:
        head_dim = adapter.head_dim(config)
        install_kv_quantization(model, [adapter.attention(layer) for layer in adapter.decoder_layers(model)],
                                Quantizer(KV4[0], head_dim), Quantizer(KV4[1], head_dim))
    return model.to(device)


def model_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def decode_step_bytes(config, model_bytes: int, kv4: bool, batch: int, seqlen: int, steps: int) -> float:
    """Bytes one graph decode step reads, estimated: every weight and buffer but the embedding table, of which each
    sequence reads one row (the whole table is read where lm_head shares it), plus each sequence's K and V at the
    decode's mean context, ``seqlen + (steps + 1) / 2`` positions: bfloat16, or for KV4 (``KV4``: per head) 4-bit
    codes, an fp32 scale a head each and V's fp32 zero points. The attention kernels' reads past the context and
    the activations are left out."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    embedding_row = config.hidden_size * 2  # bfloat16
    weights = model_bytes
    if not config.tie_word_embeddings:
        weights -= (config.vocab_size - batch) * embedding_row
    per_head = head_dim + 4 + 8 if kv4 else 2 * head_dim * 2  # K and V of one position of one KV head
    kv = config.num_hidden_layers * config.num_key_value_heads * per_head * (seqlen + (steps + 1) / 2)
    return weights + batch * kv


def new_cache(model: nn.Module, mode: str):
    return PackedKVCache(model) if MODES[mode].kv4 else DynamicCache(config=model.config)


@torch.no_grad()
def decode_tokens_per_s(model, mode: str, batch: int, seqlen: int, steps: int, device: torch.device) -> float:
    """Greedy decode after a ``seqlen`` prefill: generated tokens per second over ``steps`` (eager loop)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), device=device)
    cache = cache_kwargs(model, new_cache(model, mode))
    logits = model(ids, **cache, use_cache=True, logits_to_keep=1).logits
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(logits.argmax(-1), **cache, use_cache=True).logits[:, -1:]
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def graph_decode_tokens_per_s(model, mode: str, batch: int, seqlen: int, steps: int, device: torch.device,
                              compile: bool = False) -> float:
    """Greedy decode with a static cache (packed for KV4), each step one replay of a captured CUDA graph
    (of the ``torch.compile``d step with ``compile``)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), device=device)
    decoder = StaticDecoder(model, ids, steps, kv4=MODES[mode].kv4, compile=compile)
    decoder.capture()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        decoder.step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def hf_generate_tokens_per_s(model, seqlen: int, steps: int, device: torch.device) -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, seqlen), device=device)
    _sync(device)
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0)
    _sync(device)
    return steps / (time.perf_counter() - start)


def graph_prefill_ms(model, ids: torch.Tensor, device: torch.device, reps: int, compile: bool = False) -> float:
    """Median milliseconds of one prefill forward (no cache) replayed from a CUDA graph, captured after two
    warm-up forwards (which autotune, and compile the forward first with ``compile``)."""
    from models.decoding import compile_options

    def forward() -> torch.Tensor:
        return model(ids, use_cache=False).logits

    run = torch.compile(forward, options=compile_options(), dynamic=False) if compile else forward
    return make_timer(device, warmup=2, reps=reps, flush_l2=False, cuda_graph=True)(run)


def release_compiled_steps(device: torch.device) -> None:
    """Free the last decoders and their memory: a ``StaticDecoder`` and its compiled step refer to each other, so
    only the cycle collector frees it, with the model and its static cache (at batch 64 a bf16 cache of 2306 tokens
    is 19 GB: FP6 and FP5 ran out of memory on the H100 after W4A16's run). The reset lets each mode compile its own
    steps, not against the last mode's recompilation limit."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_mode(config, mode: str, args, device: torch.device, time_ms) -> dict:
    release_compiled_steps(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(config, mode, device)
    row = {"mode": mode, "model_bytes": model_bytes(model), "prefill_ms": {}, "graph_prefill_ms": {},
           "decode_tok_s": {}, "graph_decode_tok_s": {}}
    with torch.no_grad():
        for batch in args.prefill_batches:
            ids = torch.randint(0, config.vocab_size, (batch, args.seqlen), device=device)
            row["prefill_ms"][batch] = time_ms(lambda: model(ids, use_cache=False))
            if args.graph_prefill and device.type == "cuda":
                try:
                    row["graph_prefill_ms"][batch] = graph_prefill_ms(model, ids, device, args.reps, args.compile)
                except RuntimeError as err:  # recorded, not fatal: the eager figure stands
                    row.setdefault("graph_errors", {})[f"prefill b{batch}"] = str(err).splitlines()[0][:200]
        for batch in args.decode_batches:
            if not args.no_eager:
                row["decode_tok_s"][batch] = decode_tokens_per_s(model, mode, batch, args.seqlen,
                                                                 args.decode_tokens, device)
            if device.type == "cuda":
                try:  # a capture that fails (a host sync in the step, e.g.) leaves the eager figure
                    row["graph_decode_tok_s"][batch] = graph_decode_tokens_per_s(
                        model, mode, batch, args.seqlen, args.decode_tokens, device, compile=args.compile)
                    row.setdefault("graph_decode_step_bytes", {})[batch] = decode_step_bytes(
                        config, row["model_bytes"], MODES[mode].kv4, batch, args.seqlen, args.decode_tokens)
                except RuntimeError as err:  # recorded, not fatal: the eager figure stands
                    row.setdefault("graph_errors", {})[f"decode b{batch}"] = str(err).splitlines()[0][:200]
                release_compiled_steps(device)  # this batch's static cache, before the next batch's
        if args.hf_generate and mode == "bf16":
            row["hf_generate_tok_s"] = hf_generate_tokens_per_s(model, args.seqlen, args.decode_tokens, device)
    if device.type == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated(device)
    return row


def _batches(rows: list[dict], *keys: str) -> list[str]:
    """The batch sizes any row times under any of ``keys``, in order (rows merged from several runs may differ)."""
    return [str(b) for b in sorted({int(b) for r in rows for key in keys for b in r.get(key, {})})]


def _cell(value: float | None, base: float | None, higher_is_better: bool) -> str:
    """A figure with its ratio to bf16's in parentheses (speed-up either way), or a dash where it was not timed."""
    if value is None:
        return "–"
    ratio = f" ({(value / base if higher_is_better else base / value):.2f}×)" if base else ""
    return f"{value:.1f}{ratio}"


def markdown(result: dict) -> str:
    rows = result["rows"]
    prefill = _batches(rows, "prefill_ms")
    decode = _batches(rows, "graph_decode_tok_s", "decode_tok_s")
    eager = any(r["decode_tok_s"] for r in rows)
    base = next((r for r in rows if r["mode"] == "bf16"), None)  # wherever --modes put it
    graphs = any(r.get("graph_decode_tok_s") for r in rows)
    graph = "graph+compile" if result.get("compile") else "graph"
    graph_prefill = _batches(rows, "graph_prefill_ms")
    compiled = "; the step torch.compile-d for every mode, each real-quantized linear one opaque op" \
        if result.get("compile") else ""
    header = (["mode", "weights+buffers (GiB)"] + [f"prefill b{b} (ms)" for b in prefill]
              + [f"prefill b{b} {graph} (ms)" for b in graph_prefill]
              + ([f"decode b{b} {graph} (tok/s)" for b in decode] if graphs else [])
              + ([f"decode b{b} eager (tok/s)" for b in decode] if eager else []) + ["peak (GiB)"])
    lines = [f"# Model speed: {result['config']} ({result['layers']} layers), random weights",
             "", f"Device: {result['device']}. Date: {result['date']}. Versions: {result['versions']}.",
             f"Prefill: {result['seqlen']} tokens, no cache ('{graph}': one captured forward replayed). "
             f"Decode: {result['decode_tokens']} greedy steps after a "
             f"{result['seqlen']}-token prefill: 'graph' replays one captured CUDA-graph step per token (static "
             f"cache{compiled}), "
             f"'eager' runs one Python forward per token (dynamic cache, launch-bound).",
             f"Command: `{result['command']}`"]
    lines += [f"- run {i}: {run['date']}, `{run['command']}`" for i, run in enumerate(result.get("runs", []), 1)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def figures(r: dict | None, key: str, b: str) -> float | None:
        return (r or {}).get(key, {}).get(int(b))

    for r in rows:
        cells = [r["mode"], f"{r['model_bytes'] / 2**30:.2f}"]
        cells += [_cell(figures(r, "prefill_ms", b), figures(base, "prefill_ms", b), False) for b in prefill]
        cells += [_cell(figures(r, "graph_prefill_ms", b), figures(base, "graph_prefill_ms", b), False)
                  for b in graph_prefill]
        if graphs:
            cells += [_cell(figures(r, "graph_decode_tok_s", b), figures(base, "graph_decode_tok_s", b), True)
                      for b in decode]
        cells += [_cell(figures(r, "decode_tok_s", b), figures(base, "decode_tok_s", b), True)
                  for b in (decode if eager else [])]
        cells.append(f"{r['peak_bytes'] / 2**30:.2f}" if "peak_bytes" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    read = [f"{r['mode']} b{b}: {n / 1e9:.2f} GB in {b / r['graph_decode_tok_s'][b] * 1e3:.2f} ms, "
            f"{n * r['graph_decode_tok_s'][b] / b / 1e9:.0f} GB/s"
            for r in rows for b, n in r.get("graph_decode_step_bytes", {}).items()]
    if read:
        lines += ["", "Bytes a graph decode step reads (estimated: the weights and buffers less the embedding table, "
                      "whose rows the tokens read, plus the K/V at the mean context; `decode_step_bytes`): "
                  + "; ".join(read) + "."]
    hf = [r for r in rows if "hf_generate_tok_s" in r]
    if hf:
        lines += ["", f"HF `generate` (bf16, batch 1, dynamic cache): {hf[0]['hf_generate_tok_s']:.1f} tok/s."]
    errors = [f"{r['mode']} {what}: {e}" for r in rows for what, e in r.get("graph_errors", {}).items()]
    if errors:
        lines += ["", "CUDA-graph capture failed (eager figure only): " + "; ".join(errors) + "."]
    lines += ["", "Ratios in parentheses are against bf16 in the same column (prefill: bf16 time / mode time). "
                  "KV4 graph decode reads a static packed cache inside the attention kernel (by default its codes "
                  "the dots' operands, its scales applied to scores and probabilities: flash_decode.factored)."]
    return "\n".join(lines) + "\n"


def mode_list(text: str) -> list[str]:
    """``--modes``: a comma list of ``MODES`` names (argparse type; an unknown name is a usage error)."""
    modes = text.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown modes {unknown}: choose from {', '.join(MODES)}")
    return modes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random_mode", action="store_true", help="random weights with the config's shapes")
    p.add_argument("--config", default="llama-3-8b", choices=sorted(CONFIGS))
    p.add_argument("--layers", type=int, help="decoder layers to build (default: the config's)")
    p.add_argument("--modes", type=mode_list, default=list(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--prefill_batches", type=counts, default=[1, 4, 16])
    p.add_argument("--decode_batches", type=counts, default=[1, 8, 64])
    p.add_argument("--decode_tokens", type=int, default=256)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the graph decode step (and with --graph_prefill the prefill forward) of every "
                        "mode (bf16 included) before capturing it")
    p.add_argument("--no_eager", action="store_true", help="skip the eager (launch-bound) decode timing")
    p.add_argument("--graph_prefill", action="store_true",
                   help="also time each prefill as a captured CUDA graph (compiled first with --compile), CUDA only")
    p.add_argument("--hf_generate", action="store_true", help="also time HF generate for bf16 at batch 1")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--cpu_dry_run", action="store_true",
                   help="tiny run on the CPU (2 layers, 32 tokens, 4 steps): checks the paths, times mean nothing")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    if not args.random_mode:
        p.error("only --random_mode is implemented: pass --random_mode")
    for flag in ("layers", "seqlen", "decode_tokens", "reps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not args.prefill_batches and not args.decode_batches:
        p.error("--prefill_batches and --decode_batches are both empty: there is nothing to time")
    if args.cpu_dry_run:
        args.device, args.layers, args.seqlen, args.decode_tokens, args.reps = "cpu", 2, 32, 4, 1
        args.prefill_batches, args.decode_batches = [1, 2], [1, 2]
    device = resolve_device(args.device)
    config = build_config(args.config, args.layers, args.seqlen)
    for mode, group, width in ((mode, MODES[mode].weight.group, width) for mode in args.modes if MODES[mode].weight
                               for width in linear_input_widths(config)):
        if group and width % group:
            p.error(f"mode {mode}: weight scales in groups of {group} do not divide {args.config}'s linear input "
                    f"width {width}; leave the mode out for this config")
    time_ms = make_timer(device, warmup=1, reps=args.reps, flush_l2=False, cuda_graph=False)
    result = {"config": args.config, "layers": config.num_hidden_layers, "seqlen": args.seqlen,
              "decode_tokens": args.decode_tokens, "compile": args.compile, "device": device_name(device),
              "gpu_uuid": device_uuid(device), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "versions": library_versions(),
              "command": command_line("bench_model.py", argv if argv is not None else sys.argv[1:]),
              "rows": []}
    for mode in args.modes:  # the files are rewritten after each mode: a run cut short keeps the modes it finished
        with environment(MODES[mode].env):
            result["rows"].append(bench_mode(config, mode, args, device, time_ms))
        print(result["rows"][-1], flush=True)
        write_result_files(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
