"""Layer-by-layer calibration: one decoder block on the device at a time, resumable.

The model stays where it was loaded (normally CPU). The runner

1. captures the inputs of every decoder block for all calibration windows in one cheap
   pass: only the embeddings and the rotary embedding go to the device, and every decoder
   block's ``forward`` is swapped for a stub that records what the model hands it (block
   0's hidden states, and each block's keyword arguments: position embeddings, attention
   mask, ...) and passes the hidden states through unchanged; the last stub aborts the
   pass, so neither the blocks, the final norm nor lm_head ever run. Keyword arguments are
   kept once per block and micro-batch size (they do not depend on the tokens), so
   per-layer masks (Qwen2's sliding-window layers) come out right; no KV cache is kept;
2. for each block: moves it to the device, switches activation and K/V quantization off
   inside it (weights are calibrated against full-precision activations, the QuaRot
   convention; online rotations stay on), and for each sequential group of linears
   (q/k/v, o, gate/up, down) collects one Hessian from the group's shared input, with the
   forward aborted as soon as every linear of the group has received its input, then
   quantizes each linear with GPTQ (or RTN, which needs no data). A final forward of the
   quantized block turns its inputs into the next block's inputs, in place, one
   micro-batch at a time. The block then goes back to where it was;
3. after each block, if a progress directory is given, writes the block's parameters and
   a manifest atomically (``calib.progress``). A resumed run loads the finished blocks,
   replays the captured inputs through them with the same micro-batches (bit-identical
   activations) and continues with the next block.

Under torchrun (``calib.distributed``) each rank captures and propagates only its share of
the windows (every N-th). A group's Hessian is each rank's average over its own rows,
combined into the average over all rows before GPTQ runs; every rank then solves the same
problem and takes rank 0's result, so all ranks hold identical weights. FlatQuant sums its
gradients the same way. Only rank 0 writes progress and matrices; the result equals a
single process's up to the order of float additions.

Quantized linears outside the decoder blocks (lm_head with ``quantize_lm_head``) are
rounded to nearest at the end, as ``calib.rtn`` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from calib import distributed, flatquant
from calib.flatquant import FlatQuantConfig
from calib.gptq import GPTQConfig, HessianAccumulator, gptq_quantize_with_params, split_params
from calib.progress import ProgressStore, ResumeState, atomic_save_tensors
from calib.rtn import quantize_linear_rtn
from quant_layers.linear import QuantLinear
from quant_layers.quantizer import QuantParams

log = logging.getLogger(__name__)

METHODS = ("gptq", "rtn", "flatquant")


@dataclass
class LayerwiseConfig:
    """How the layer-by-layer runner calibrates (see the module docstring)."""

    method: str = "gptq"  # "gptq", "rtn" or "flatquant" (then weights by flatquant.weight_method)
    gptq: GPTQConfig = field(default_factory=GPTQConfig)
    flatquant: FlatQuantConfig = field(default_factory=FlatQuantConfig)
    # FlatQuant: where each block's learned transforms and clips go (--save_matrix) or come from
    # (--reload_matrix, which skips training): one safetensors file per block.
    matrix_dir: str | None = None
    reload_matrix: bool = False
    offload_activations: bool = False  # keep block inputs/outputs on CPU, move per micro-batch
    batch_size: int = 1  # calibration windows per forward pass
    progress_dir: str | None = None  # where per-block progress goes (None = no checkpoints)
    resume: bool = False
    # recipe + calibration settings + model identity; a resume dir with a different one is refused
    fingerprint: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise ValueError(f"calibration batch size must be at least 1, got {self.batch_size}")
        if self.resume and not self.progress_dir:
            raise ValueError("--resume needs a progress directory: pass the --output_dir of the run to resume")
        if self.reload_matrix and not self.matrix_dir:
            raise ValueError("--reload_matrix needs the folder of saved matrices: pass --matrix_path")


@dataclass
class CalibrationReport:
    """What a layer-by-layer calibration did, for the results JSON."""

    blocks: int
    resumed_blocks: int
    seconds: float
    peak_gpu_bytes: int | None
    peak_cpu_rss_bytes: int
    per_linear: dict[str, dict]  # "layers.3.self_attn.q_proj": {"damp", "escalations", "loss", "seconds"}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class StopForward(Exception):
    """Raised by a hook to end a forward pass once it has seen what it needed."""


# ---------------------------------------------------------------------------------------
# Small context managers: device residency, weights-only quantization, forward stubs.


def _module_device(module: nn.Module) -> torch.device | None:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


@contextmanager
def resident(modules: list[nn.Module], device: torch.device) -> Iterator[None]:
    """Move ``modules`` to ``device`` for the duration, then back to where each was."""
    homes = [(m, _module_device(m)) for m in modules]
    try:
        for m, home in homes:
            if home is not None:
                m.to(device)
        yield
    finally:
        for m, home in homes:
            if home is not None:
                m.to(home)


@contextmanager
def _weights_only(block: nn.Module) -> Iterator[None]:
    """Switch activation and K/V quantization off inside ``block`` (online rotations stay)."""
    saved = []
    for m in block.modules():
        if isinstance(m, QuantLinear) and m.act_quantizer is not None:
            saved.append((m, "act_quantizer", m.act_quantizer))
        for attr in ("key_quantizer", "value_quantizer"):
            if getattr(m, attr, None) is not None:
                saved.append((m, attr, getattr(m, attr)))
    try:
        for m, attr, _ in saved:
            setattr(m, attr, None)
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


@contextmanager
def _forward_replaced(modules: list[nn.Module], make: Callable[[int], Callable]) -> Iterator[None]:
    """Give each module an instance-level ``forward`` (``make(index)``), restored afterwards."""
    saved = [(m, m.__dict__.get("forward")) for m in modules]
    try:
        for i, m in enumerate(modules):
            m.forward = make(i)
        yield
    finally:
        for m, old in saved:
            if old is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old


# ---------------------------------------------------------------------------------------
# Captured activations.


class BlockActivations:
    """Hidden states of this rank's windows at the current block boundary, and each block's kwargs."""

    def __init__(self, shard: distributed.Shard, batch_size: int) -> None:
        self.shard = shard  # which of all the calibration windows this rank holds
        self.nsamples = shard.size
        self.batch_size = batch_size
        self.hidden: torch.Tensor | None = None  # (nsamples, seqlen, hidden)
        self.block_inputs: dict[tuple[int, int], tuple[tuple, dict]] = {}  # (block, micro-batch) -> args, kwargs

    def spans(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.nsamples, self.batch_size):
            yield start, min(start + self.batch_size, self.nsamples)

    def _inputs(self, index: int, size: int) -> tuple[tuple, dict]:
        """The block's captured arguments for ``size`` windows.

        A size that was never captured (FlatQuant's --cali_bsz differs from
        --calib_batch_size) reuses another's: they do not depend on the tokens, so every
        batch-sized tensor is its first row broadcast to ``size``.
        """
        key = (index, size)
        if key not in self.block_inputs:
            (_, captured), (args, kwargs) = next((k, v) for k, v in self.block_inputs.items() if k[0] == index)

            def resize(value):
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == captured:
                    return value[:1].expand(size, *value.shape[1:])
                if isinstance(value, tuple):
                    return tuple(resize(v) for v in value)
                return value

            self.block_inputs[key] = (resize(args), {k: resize(v) for k, v in kwargs.items()})
        return self.block_inputs[key]

    def run_block(self, block: nn.Module, index: int, start: int, end: int, device: torch.device) -> torch.Tensor:
        x = self.hidden[start:end].to(device)
        args, kwargs = self._inputs(index, end - start)
        out = block(x, *args, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    def probe_block(self, block: nn.Module, index: int, device: torch.device,
                    before_window: Callable[[], None] | None = None) -> None:
        """Run ``block`` on every window for what its hooks record, each run ending where a hook raises
        StopForward; ``before_window`` runs before each window."""
        for start, end in self.spans():
            if before_window is not None:
                before_window()
            try:
                self.run_block(block, index, start, end, device)
            except StopForward:
                pass

    def propagate(self, block: nn.Module, index: int, device: torch.device) -> None:
        """Replace the stored inputs of ``block`` by its outputs, micro-batch by micro-batch."""
        for start, end in self.spans():
            out = self.run_block(block, index, start, end, device)
            self.hidden[start:end] = out.to(self.hidden.device)


def _stem_modules(model: nn.Module, adapter) -> list[nn.Module]:
    """What the model runs before block 0: the embeddings and the rotary embedding."""
    modules = [adapter.embeddings(model)]
    rotary_of = getattr(adapter, "rotary_embedding", None)
    rotary = rotary_of(model) if rotary_of is not None else getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is not None:
        modules.append(rotary)
    return modules


def capture_block_inputs(
    model: nn.Module,
    adapter,
    layers: nn.ModuleList,
    calib_ids: torch.Tensor,
    device: torch.device,
    config: LayerwiseConfig,
    shard: distributed.Shard | None = None,
) -> BlockActivations:
    """Block 0's hidden states for every window of ``shard`` (default: all), and every block's keyword arguments."""
    shard = shard or distributed.Shard(calib_ids.shape[0])
    calib_ids = shard.take(calib_ids)
    acts = BlockActivations(shard, config.batch_size)
    store = torch.device("cpu") if config.offload_activations else device
    last = len(layers) - 1
    seen: dict[str, torch.Tensor] = {}

    def make_stub(index: int) -> Callable:
        def stub(*args, **kwargs):
            if args:
                hidden, rest = args[0], tuple(args[1:])
            else:
                hidden, rest = kwargs.pop("hidden_states"), ()
            for name in ("cache", "past_key_values", "past_key_value"):  # the cache's keyword across transformers
                kwargs.pop(name, None)
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            acts.block_inputs.setdefault((index, hidden.shape[0]), (rest, kwargs))
            if index == 0:
                seen["hidden"] = hidden
            if index == last:
                raise StopForward
            return hidden

        return stub

    with resident(_stem_modules(model, adapter), device), _forward_replaced(list(layers), make_stub):
        for start, end in tqdm(list(acts.spans()), desc="capture block inputs", leave=False,
                               disable=not distributed.is_main()):
            try:
                model(input_ids=calib_ids[start:end].to(device), use_cache=False)
            except StopForward:
                pass
            else:
                raise RuntimeError("the model's forward never reached its last decoder block while capturing inputs")
            hidden = seen.pop("hidden")
            if acts.hidden is None:
                acts.hidden = torch.empty((acts.nsamples, *hidden.shape[1:]), dtype=hidden.dtype, device=store)
            acts.hidden[start:end] = hidden.to(store)
    return acts


# ---------------------------------------------------------------------------------------
# Quantizing one block.


def _stats_dict(stats) -> dict:
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    return dict(stats)


def _weight_targets(named: list[tuple[str, nn.Module]]) -> list[tuple[str, QuantLinear]]:
    return [(n, m) for n, m in named if isinstance(m, QuantLinear) and m.weight_quantizer is not None]


def _rtn_linears(named: list[tuple[str, nn.Module]], prefix: str, per_linear: dict) -> None:
    for name, module in _weight_targets(named):
        t = time.perf_counter()
        quantize_linear_rtn(module)
        per_linear[f"{prefix}{name}"] = {"method": "rtn", "seconds": time.perf_counter() - t}


def _gptq_group(
    block: nn.Module,
    index: int,
    group: tuple[str, ...],
    acts: BlockActivations,
    device: torch.device,
    config: LayerwiseConfig,
    per_linear: dict,
) -> None:
    """Hessian of the group's shared input over all windows, then GPTQ on each of its linears."""
    members = [(name, block.get_submodule(name)) for name in group]
    targets = _weight_targets(members)
    if not targets:
        return
    # Linears of a group read the same tensor; one Hessian per distinct online transform (normally one).
    accumulators: dict[int, tuple[HessianAccumulator, QuantLinear]] = {}
    key_of: dict[str, int] = {}
    for name, module in targets:
        key = id(module.input_transform)
        key_of[name] = key
        if key not in accumulators:
            accumulators[key] = (HessianAccumulator(module.in_features, device=device, dtype=config.gptq.torch_hessian_dtype), module)

    state: dict = {"x": None, "seen": set()}

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        if state["x"] is None:
            state["x"] = x
            for acc, representative in accumulators.values():
                acc.add_batch(representative.transformed_input(x))
        elif x is not state["x"] and not (x.shape == state["x"].shape and torch.equal(x, state["x"])):
            raise RuntimeError(
                f"linears {', '.join(group)} of block {index} do not read the same input: "
                f"the architecture adapter's sequential_groups() is wrong for this model"
            )
        state["seen"].add(id(module))
        if len(state["seen"]) == len(members):
            raise StopForward

    handles = [module.register_forward_pre_hook(hook) for _, module in members]
    try:
        acts.probe_block(block, index, device, lambda: state.update(x=None, seen=set()))
    finally:
        for h in handles:
            h.remove()
        state.clear()

    for acc, _ in accumulators.values():
        acc.nsamples = distributed.weighted_mean_(acc.hessian, acc.nsamples)
    for names, modules in _stackable(targets, key_of):
        acc = accumulators[key_of[names[0]]][0]
        if acc.nsamples == 0:
            raise RuntimeError(f"{', '.join(names)} of block {index} received no calibration input")
        t = time.perf_counter()
        # Linears sharing a Hessian and a per-row quantizer are one GPTQ problem stacked by rows
        # (rows are independent given H): one column loop instead of several.
        weights = [m.weight.data for m in modules]
        row_amax = torch.cat([w.abs().amax().float().expand(w.shape[0], 1) for w in weights])
        quantizer = modules[0].weight_quantizer
        stacked, stats, params = gptq_quantize_with_params(torch.cat(weights), acc.hessian, quantizer, config.gptq,
                                                           tensor_amax=row_amax if len(modules) > 1 else None)
        stacked, params = _rank0_result(stacked, params)
        groups_per_row = quantizer.grouped(weights[0][:1]).shape[0]
        parts = zip(stacked.split([w.shape[0] for w in weights]),
                    split_params(params, [w.shape[0] * groups_per_row for w in weights]))
        for module, (part, part_params) in zip(modules, parts):
            module.set_quantized_weight(part, part_params)
        del stacked
        record = _stats_dict(stats)
        record.setdefault("seconds", time.perf_counter() - t)
        record.update(method="gptq", nsamples=acc.nsamples)
        if len(names) > 1:
            record["stacked_with"] = list(names)
        for name in names:
            key = f"layers.{index}.{name}"
            per_linear[key] = {**per_linear.get(key, {}), **record}  # keeps FlatQuant's entries
    accumulators.clear()


def _rank0_result(weight: torch.Tensor, params: QuantParams) -> tuple[torch.Tensor, QuantParams]:
    """Rank 0's GPTQ result on every rank. All ranks solved the same problem, so this only
    guards against GPUs that round differently; a single process keeps its own."""
    if distributed.world_size() == 1:
        return weight, params
    same = [None if t is None else distributed.broadcast_(t.contiguous())
            for t in (params.scale, params.zero, params.tensor_scale)]
    return distributed.broadcast_(weight.contiguous()), QuantParams(*same)


def _stackable(targets: list[tuple[str, QuantLinear]], key_of: dict[str, int]) -> list[tuple[list[str], list]]:
    """Targets grouped into GPTQ problems: same input (Hessian) and same per-row quantizer spec.

    Per-tensor scales span the whole weight, so those linears stay alone.
    """
    problems: dict[tuple, tuple[list[str], list]] = {}
    for name, module in targets:
        spec = module.weight_quantizer.spec
        key = (key_of[name], spec) if spec.granularity != "tensor" else (name,)
        names, modules = problems.setdefault(key, ([], []))
        names.append(name)
        modules.append(module)
    return list(problems.values())


def _calibrate_block(
    block: nn.Module, index: int, adapter, acts: BlockActivations | None, device: torch.device,
    config: LayerwiseConfig, per_linear: dict,
) -> None:
    """Quantize one block's weights (activation and K/V quantization are off in here)."""
    if config.method == "rtn":
        _rtn_linears(list(adapter.linears(block).items()), f"layers.{index}.", per_linear)
        return
    if config.method == "flatquant" and config.flatquant.weight_method == "rtn":
        return  # FlatQuant rounded them at their learned clips
    for group in adapter.sequential_groups():
        _gptq_group(block, index, group, acts, device, config, per_linear)


def matrix_file(matrix_dir: str, index: int) -> str:
    return os.path.join(matrix_dir, f"flat_matrices_{index:05d}.safetensors")


def _flatquant_block(block: nn.Module, index: int, adapter, acts: BlockActivations, device: torch.device,
                     config: LayerwiseConfig, per_linear: dict) -> None:
    """Train FlatQuant's transforms and clips on the block (or load them), fold them in, record them.

    The targets are the full-precision block's outputs on the current inputs; training runs
    the block with activations and K/V quantized (straight-through) and its weights through
    the learnable clips.
    """
    t = time.perf_counter()
    groups = adapter.sequential_groups()
    with _weights_only(block):
        targets = torch.cat([acts.run_block(block, index, s, e, device).to(acts.hidden.device)
                             for s, e in acts.spans()])
    saved = None
    if config.reload_matrix:
        path = matrix_file(config.matrix_dir, index)
        if not os.path.exists(path):
            raise ValueError(f"--reload_matrix: {path} is missing (block {index}): pass the --matrix_path of a run "
                             f"that saved every block with --save_matrix, or drop --reload_matrix to train")
        saved = load_file(path)
    block.requires_grad_(False)

    def run(start: int, end: int) -> torch.Tensor:
        return acts.run_block(block, index, start, end, device)

    with torch.enable_grad(), flatquant.straight_through_kv(block):
        result = flatquant.train_block(block, groups, run, targets, config.flatquant, saved=saved, seed=index,
                                       attention=_attention_path(block, adapter), shard=acts.shard)
    del targets
    if config.matrix_dir and not config.reload_matrix and distributed.is_main():
        os.makedirs(config.matrix_dir, exist_ok=True)
        atomic_save_tensors(matrix_file(config.matrix_dir, index), result["state"], {"block": str(index)})
    seconds = time.perf_counter() - t
    for group in groups:
        for name in group:
            module = block.get_submodule(name)
            ratio = module.act_quantizer.spec.clip_ratio if module.act_quantizer is not None else None
            per_linear[f"layers.{index}.{name}"] = {
                "method": "flatquant", "first_epoch_loss": result["first_epoch_loss"],
                "last_epoch_loss": result["last_epoch_loss"], "act_clip_ratio": ratio, "seconds": seconds,
                "reloaded": saved is not None}


def _attention_path(block: nn.Module, adapter) -> flatquant.AttentionPath:
    v_proj, o_proj = adapter.attention_linears[2], adapter.attention_linears[3]
    return flatquant.AttentionPath(v_proj.rpartition(".")[0], v_proj, o_proj, adapter.attention(block).head_dim)


def _prepare_resumed_block(block: nn.Module, adapter, config: LayerwiseConfig) -> None:
    """Give a fresh block FlatQuant's transforms before a finished block's parameters load into it."""
    if config.method != "flatquant":
        return
    flatquant.attach_transforms(block, adapter.sequential_groups(), config.flatquant, _attention_path(block, adapter))


def _restore_act_clips(block: nn.Module, index: int, adapter, config: LayerwiseConfig, per_linear: dict) -> None:
    """After a finished FlatQuant block's parameters loaded: its learned activation clip ratios."""
    if config.method != "flatquant":
        return
    for group in adapter.sequential_groups():
        for name in group:
            ratio = per_linear.get(f"layers.{index}.{name}", {}).get("act_clip_ratio")
            if ratio is not None:
                flatquant.set_act_clip(block.get_submodule(name), ratio)


# ---------------------------------------------------------------------------------------
# The runner.


def _check_inputs(model: nn.Module, calib_ids: torch.Tensor | None, config: LayerwiseConfig) -> None:
    LayerwiseConfig.__post_init__(config)  # fields may have been changed after construction
    if calib_ids is None:
        if config.method == "rtn":
            return
        raise ValueError(f"{config.method} calibration needs calibration windows: pass token ids (--nsamples >= 1)")
    if calib_ids.numel() == 0:
        raise ValueError(
            f"the calibration set is empty (shape {tuple(calib_ids.shape)}): --nsamples and --seqlen must be at least 1"
        )
    if calib_ids.dim() != 2:
        raise ValueError(f"calibration ids must be (nsamples, seqlen), got shape {tuple(calib_ids.shape)}")
    if calib_ids.dtype.is_floating_point or calib_ids.dtype == torch.bool:
        raise ValueError(f"calibration ids must be integer token ids, got {calib_ids.dtype}")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and calib_ids.shape[1] > limit:
        raise ValueError(
            f"calibration sequence length {calib_ids.shape[1]} exceeds the model's limit of {limit} positions "
            f"(max_position_embeddings): lower --seqlen to at most {limit}"
        )


def run_fingerprint(config: LayerwiseConfig, calib_ids: torch.Tensor | None, num_blocks: int) -> dict:
    """The caller's fingerprint plus what the runner itself knows: method, GPTQ settings, data."""
    data = None
    if calib_ids is not None and config.method != "rtn":  # RTN does not read the data
        ids = calib_ids.detach().to("cpu", torch.int64).contiguous()
        data = {"shape": list(ids.shape), "sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest()}
    return {
        **config.fingerprint,
        "layerwise": {
            "method": config.method,
            "gptq": dataclasses.asdict(config.gptq) if config.method == "gptq" or (
                config.method == "flatquant" and config.flatquant.weight_method == "gptq") else None,
            "flatquant": dataclasses.asdict(config.flatquant) if config.method == "flatquant" else None,
            "blocks": num_blocks,
            "calibration_ids": data,
        },
    }


def _peak_cpu_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def calibrate_layerwise(
    model: nn.Module, adapter, calib_ids: torch.Tensor | None, device: torch.device | str, config: LayerwiseConfig
) -> CalibrationReport:
    """Calibrate every decoder block's quantized weights in place, one block on ``device`` at a time.

    ``calib_ids`` is ``(nsamples, seqlen)`` token ids (may be ``None`` for RTN, which
    reads no data), all of them on every rank. Returns what happened; see the module
    docstring for how.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    _check_inputs(model, calib_ids, config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    layers = adapter.decoder_layers(model)
    num_blocks = len(layers)

    shard = distributed.shard(calib_ids.shape[0]) if calib_ids is not None else None
    store = None
    state = ResumeState()
    if config.progress_dir:
        store = ProgressStore(config.progress_dir, run_fingerprint(config, calib_ids, num_blocks), num_blocks)
        state = store.begin(config.resume)  # raises, touching nothing, on a mismatch
        distributed.barrier()  # every rank has read the progress before rank 0 writes any
    per_linear: dict[str, dict] = dict(state.per_linear)
    done = state.finished
    execution = {"batch_size": config.batch_size, "offload_activations": config.offload_activations}
    if distributed.world_size() > 1:
        execution["world_size"] = distributed.world_size()
    if done and store.saved("execution", execution) != execution:
        log.warning(
            "resuming with %s where the earlier run used %s: the result may differ in rounding from an "
            "uninterrupted run", execution, store.saved("execution", execution),
        )
    # GPTQ needs block inputs, RTN none; nothing at all when no block linear has a weight quantizer.
    # FlatQuant trains transforms for every wrapped linear, quantized or not.
    needs_data = config.method != "rtn" and any(
        _weight_targets(list(adapter.linears(layer).items())) if config.method == "gptq" else
        any(isinstance(m, QuantLinear) for m in adapter.linears(layer).values())
        for layer in layers
    )

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(done):
                _prepare_resumed_block(layers[i], adapter, config)
                store.load_block(i, layers[i])
                _restore_act_clips(layers[i], i, adapter, config, per_linear)
            acts = None
            if done < num_blocks and needs_data:
                acts = capture_block_inputs(model, adapter, layers, calib_ids.long(), device, config, shard)
                for i in tqdm(range(done), desc="replay finished blocks", leave=False,
                              disable=not distributed.is_main()):
                    with resident([layers[i]], device), _weights_only(layers[i]):
                        acts.propagate(layers[i], i, device)
            bar = tqdm(range(done, num_blocks), total=num_blocks, initial=done, desc=f"{config.method} blocks",
                       disable=not distributed.is_main())
            for i in bar:
                block = layers[i]
                block_stats: dict[str, dict] = {}
                with resident([block], device):
                    if config.method == "flatquant":
                        _flatquant_block(block, i, adapter, acts, device, config, block_stats)
                    with _weights_only(block):
                        _calibrate_block(block, i, adapter, acts, device, config, block_stats)
                        if acts is not None and i + 1 < num_blocks:
                            acts.propagate(block, i, device)
                per_linear.update(block_stats)
                if store is not None and distributed.is_main():
                    store.save_block(i, block, block_stats, extra={"execution": execution})
            del acts
            # Quantized linears outside the blocks (lm_head): round to nearest, as calib.rtn does.
            block_modules = {id(m) for layer in layers for m in layer.modules()}
            outside = [(n, m) for n, m in model.named_modules() if id(m) not in block_modules]
            _rtn_linears(outside, "", per_linear)
        distributed.barrier()  # rank 0's files are complete when any rank returns
    finally:
        model.train(was_training)

    return CalibrationReport(
        blocks=num_blocks,
        resumed_blocks=done,
        seconds=time.perf_counter() - t_start,
        peak_gpu_bytes=int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        peak_cpu_rss_bytes=_peak_cpu_rss_bytes(),
        per_linear=per_linear,
    )
