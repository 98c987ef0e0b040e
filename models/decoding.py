"""Greedy decoding from a static cache, one token per step: the fast decode path of a model.

``StaticDecoder`` prefills a static cache (``StaticPackedKVCache`` for a KV4 recipe: packed
codes written in place), then decodes one token per ``step()``: eagerly, or after
``capture()`` as replays of one captured CUDA graph, optionally of the ``torch.compile``d
step (real-quantized linears and the decode attention stay opaque custom ops; the rest
fuses). ``greedy_generate`` wraps it for ``scripts/generate.py``; ``benchmarks/bench_model.py``
times it.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from transformers import StaticCache

from quant_layers.packed_kv_cache import StaticPackedKVCache


def compile_options(extra: dict | None = None) -> dict:
    """Inductor options for a compiled decode step: ``x / y`` rounded like eager (``div_rn``) and half-precision
    intermediates rounded where eager rounds them (``emulate_precision_casts``), where this torch has the switches,
    independent kernels between two opaque ops launched as one (``combo_kernels``), then ``extra`` (e.g.
    ``{"combo_kernels": False}``; an unknown name is a ValueError).

    The step's K/V quantizers compile into its glue, and Triton's ``/`` is an approximate
    division (within 2 ulps): a value over its scale near a rounding tie could get another
    code than in the eager step, the kernels and the fake-quantized model. Likewise a fused bfloat16 chain (RMSNorm,
    RoPE) kept in fp32 without eager's roundings between its ops moved codes: on a random 1-layer Llama-3-8B the
    FP4 W4A4KV4 step's logits differed from eager's by 0.29 relative L2 (0.42 with 4 layers, also on the H200,
    ``benchmarks/results/decode_match_fp4_planes_h200.md``), and by 0 with the casts emulated, on the CPU and on an
    H100 (``decode_match_fp4_emulated_casts_h100.md``; the W4A4KV4 batch-1 step took 2540 us against 2539 without
    them, ``decode_profile_compiled_b1_emulated_casts_h100.md``). Between a layer's q/k/v product and its attention,
    inductor made four kernels (RoPE of Q, of K, the mask); as one launch a Llama-3-8B W4A4KV4 step on the H200 went
    from 2495 to 2337 us
    (``benchmarks/results/decode_profile_compiled_combo_llama3_8b_h200.md``).
    """
    from torch._inductor import config

    numerics = getattr(config, "eager_numerics", None)
    options = {"eager_numerics.division_rounding": True} if hasattr(numerics, "division_rounding") else {}
    if hasattr(config, "emulate_precision_casts"):
        options["emulate_precision_casts"] = True
    options["combo_kernels"] = True
    known = config.get_config_copy()
    for name in extra or {}:
        if name not in known:
            raise ValueError(f"unknown inductor option {name!r} for this torch ({torch.__version__}): see "
                             f"torch._inductor.config")
    return {**options, **(extra or {})}


def inductor_option(text: str) -> tuple[str, bool | int | float | str]:
    """``NAME=VALUE`` (a command-line inductor option) -> (name, value); VALUE is read as a bool, int or float
    where it is one (``combo_kernels=1`` -> True)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"an inductor option is NAME=VALUE (e.g. combo_kernels=1), got {text!r}")
    if value.lower() in ("1", "true", "0", "false"):
        return name, value.lower() in ("1", "true")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def cache_kwargs(model, cache) -> dict:
    """``cache`` as the keyword a forward (and ``generate``) of ``model`` takes it: ``cache`` where transformers has
    renamed it (5.25 has: ``past_key_values`` warns there, and once the alias goes, in 5.40 as it announces, it would
    fall into ``**kwargs`` unread, each step attending to its own token alone), ``past_key_values`` before."""
    parameters = inspect.signature(type(model).forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


ARGMAX_CHUNK = 256


def greedy_token(logits: torch.Tensor) -> torch.Tensor:
    """(batch, vocab) logits -> (batch, 1) argmax, found in two stages: each chunk of ``ARGMAX_CHUNK`` logits'
    maximum, then the first chunk holding the largest. The index is argmax's (the first maximum); a compiled
    step spreads the first stage over many programs, where one argmax over 128k logits ran as one program.
    """
    batch, vocab = logits.shape
    if vocab % ARGMAX_CHUNK:
        return logits.argmax(-1, keepdim=True)
    best, where = logits.view(batch, vocab // ARGMAX_CHUNK, ARGMAX_CHUNK).max(-1)
    chunk = best.argmax(-1, keepdim=True)
    return chunk * ARGMAX_CHUNK + where.gather(-1, chunk)


@contextmanager
def keeping_cache_length(cache):
    """Forwards inside leave the static cache's token count as it was: a cache that counts its own length
    (transformers >= 5.2x) gets its count back; the slots they wrote are written again by the next step."""
    counters = [(layer.cumulative_length, layer.cumulative_length.clone()) for layer in cache.layers
                if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)]
    try:
        yield
    finally:
        for counter, saved in counters:
            counter.copy_(saved)


class StaticDecoder:
    """Greedy decoding from a static cache, one token per ``step()``: eagerly, or after ``capture()`` as
    replays of one captured CUDA graph (the token and its position are updated in place between steps).

    ``compile``: the step's forward goes through ``torch.compile`` (the glue between the linears
    fuses; the real-quantized linears stay one opaque custom op each) before any capture.
    ``fused_write``: the packed KV4 cache's K/V write kernel (``StaticPackedKVCache``; None: on a GPU).
    ``inductor_options``: added to ``compile_options()`` for a compiled step.
    """

    @torch.no_grad()
    def __init__(self, model, ids: torch.Tensor, steps: int, kv4: bool = False, compile: bool = False,
                 fused_write: bool | None = None, inductor_options: dict | None = None) -> None:
        options = compile_options(inductor_options)  # checked before the prefill's time is spent
        seqlen = ids.shape[1]
        self.model = model
        length = seqlen + steps + 2
        self.cache = (StaticPackedKVCache(model, max_cache_len=length, fused_write=fused_write) if kv4
                      else StaticCache(config=model.config, max_cache_len=length))
        self.cache_kwargs = cache_kwargs(model, self.cache)  # looked up once, outside the compiled step
        # Only the last position's logits: all of them, (batch, seqlen, vocab), took 31 GiB at batch 64 of 2048
        # tokens of Llama-3-8B's 128k vocabulary, and ran the H100 out of memory.
        logits = model(ids, **self.cache_kwargs, cache_position=torch.arange(seqlen, device=ids.device),
                       logits_to_keep=1).logits
        self.token = greedy_token(logits[:, -1])
        self.position = torch.tensor([seqlen], device=ids.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.following: torch.Tensor | None = None
        self._forward = (torch.compile(self._eager_forward, options=options) if compile
                         else self._eager_forward)

    def logits(self) -> torch.Tensor:
        """The (batch, vocab) logits of the current token at its position (a forward that writes the token's cache
        slot: wrap it in ``keeping_cache_length`` to leave the cache's count as it was)."""
        return self.model(self.token, **self.cache_kwargs, cache_position=self.position).logits[:, -1]

    def _eager_forward(self) -> torch.Tensor:
        return greedy_token(self.logits())

    @torch.no_grad()
    def warm_up(self, times: int = 2) -> None:
        """Run the step's forward ``times`` without decoding (the Triton kernels autotune here).

        The forwards write the cache slot of the current position, which the next step writes
        again (``keeping_cache_length``).
        """
        with keeping_cache_length(self.cache):
            for _ in range(times):
                self._forward()

    @torch.no_grad()
    def capture(self) -> None:
        """Warm up on a side stream, then capture one step (capturing runs nothing)."""
        device = self.token.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self.warm_up()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.following = self._forward()

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Decode one token; returns it, (batch, 1)."""
        if self.graph is None:
            following = self._forward()
        else:
            self.graph.replay()
            following = self.following
        self.token.copy_(following)
        self.position.add_(1)
        return self.token


@torch.no_grad()
def greedy_generate(model, ids: torch.Tensor, max_new_tokens: int, kv4: bool = False, cuda_graph: bool = True,
                    compile: bool = False) -> torch.Tensor:
    """``ids`` (batch, prompt) followed by ``max_new_tokens`` greedy tokens, decoded from a static cache.

    ``cuda_graph``: on a CUDA device, each step replays one captured CUDA graph (ignored on the
    CPU); ``compile``: the step goes through ``torch.compile`` first. ``kv4``: the cache holds
    packed 4-bit K/V (the model's K/V quantizers must be installed, as a KV4 checkpoint loads).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    decoder = StaticDecoder(model, ids, max_new_tokens, kv4=kv4, compile=compile)
    if cuda_graph and ids.is_cuda:
        decoder.capture()
    tokens = [decoder.token.clone()]  # the prefill's prediction
    for _ in range(max_new_tokens - 1):
        tokens.append(decoder.step().clone())
    return torch.cat([ids, *tokens], dim=1)
