"""The one pipeline both drivers hand their recipe to.

load -> adapt -> transform -> calibrate -> evaluate -> record. Every check that can fail
(recipe, data files, model family, dimensions) runs before the weights are loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import torch
from transformers import AutoConfig

import corpora
from calib import distributed
from calib import LayerwiseConfig, calibrate_layerwise, calibration_windows, quantize_weights_rtn
from calib import fpq_search
from calib.tensor_scale import calibrate_static_tensor_scales
from configs import QuantRecipe, RunConfig
from evaluation import MAX_WINDOWS, evaluate_tasks, evaluation_tokens, perplexity, prepare_tasks
from export import (check_save_path, checkpoint_bytes, export_quantized, has_tokenizer, load_quantized,
                    read_quantization_config)
from models import adapter_for, load_config, load_model, load_tokenizer, resolve_device, resolve_dtype
from models.loading import dtype_name, locate
from models.placement import MemoryLimits, distribute, require_cuda
from transforms import apply_transform

from .fake_quant import attach_quantizers
from .fpq import calibrate_fpq, fpq_metadata, model_base
from .results import RunResult, check_wandb, check_writable_dir, device_name

log = logging.getLogger(__name__)


def default_run_name(cfg: RunConfig) -> str:
    if cfg.load_quantized:
        return f"{os.path.basename(os.path.abspath(cfg.load_quantized))}_real_quant"
    suffix = "_only_eval" if cfg.only_eval else ""
    return f"{model_base(cfg)}_{cfg.quant.label}{suffix}".replace("/", "_")


def progress_dir(cfg: RunConfig) -> str:
    """Where a GPTQ or FlatQuant run keeps its per-block progress (what ``--resume`` continues from)."""
    return os.path.join(cfg.output_dir, "progress", cfg.run_name or default_run_name(cfg))


def calibration_fingerprint(cfg: RunConfig, loc, dtype: torch.dtype) -> dict:
    """What must match for a resumed calibration to continue an earlier one."""
    source = loc.gguf_file or loc.path
    return {
        "model": os.path.abspath(source) if os.path.exists(source) else source,
        "dtype": dtype_name(dtype),
        "recipe": cfg.quant.to_dict(),
        "calib_dataset": cfg.calib_dataset,
        "nsamples": cfg.nsamples,
        "seqlen": cfg.seqlen,
        "seed": cfg.seed,
    }


def matrix_dir(cfg: RunConfig) -> str | None:
    """Where FlatQuant's per-block matrices go (--save_matrix) or come from (--reload_matrix)."""
    if not (cfg.save_matrix or cfg.reload_matrix):
        return None
    return cfg.matrix_path or os.path.join(cfg.output_dir, "flat_matrices", cfg.run_name or default_run_name(cfg))


def _calibrate_layerwise(cfg: RunConfig, model, adapter, windows: torch.Tensor, device, fingerprint: dict) -> dict:
    """GPTQ or FlatQuant through the layer-by-layer runner on the calibration ``windows``; returns its report as a
    dict."""
    report = calibrate_layerwise(model, adapter, windows, device, LayerwiseConfig(
        method=cfg.quant.method, gptq=cfg.quant.gptq, flatquant=cfg.quant.flatquant,
        offload_activations=cfg.offload_activations, batch_size=cfg.calib_batch_size,
        progress_dir=progress_dir(cfg), resume=cfg.resume, fingerprint=fingerprint,
        matrix_dir=matrix_dir(cfg), reload_matrix=cfg.reload_matrix,
    ))
    escalated = {k: v["escalations"] for k, v in report.per_linear.items() if v.get("escalations")}
    if escalated:
        log.warning("GPTQ raised the damping for %d linears: %s", len(escalated), escalated)
    summary = report.to_dict()
    kept = ("loss", "damp", "escalations", "seconds", "first_epoch_loss", "last_epoch_loss", "act_clip_ratio")
    summary["per_linear"] = {k: {m: v[m] for m in kept if m in v} for k, v in report.per_linear.items()}
    return summary


def _check_processes(cfg: RunConfig, splits_calibration: bool) -> None:
    """Several torchrun processes only make sense for the layer-by-layer calibration; --distribute needs CUDA."""
    world = distributed.world_size()
    if world > 1 and not splits_calibration:
        what = "a real-quantized checkpoint's evaluation" if cfg.load_quantized else f"this {cfg.quant.method} run"
        raise ValueError(f"{world} processes under torchrun split the calibration windows of GPTQ and FlatQuant; "
                         f"{what} has nothing to split: run it as one process (NPROC=1), and add --distribute to "
                         f"evaluate across GPUs")
    if cfg.distribute:
        require_cuda()


def _hand_over_to_main(device: torch.device) -> bool:
    """After a calibration over several ranks only rank 0 goes on (export, evaluation, results).

    The others free their GPU memory first (rank 0 may place the model there with
    --distribute) and return False.
    """
    if not distributed.is_main() and device.type == "cuda":
        torch.cuda.empty_cache()
    distributed.barrier()
    return distributed.is_main()


def _distribute(cfg: RunConfig, model, adapter):
    """--distribute: the model across the visible GPUs, within --max_memory."""
    return distribute(model, adapter, MemoryLimits.parse(cfg.max_memory) if cfg.max_memory else None)


def _device_label(cfg: RunConfig, device: torch.device) -> str:
    if cfg.distribute:
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (--distribute)"
    return device_name(device)


def _ppl_sources(cfg: RunConfig) -> list:
    """The perplexity corpora, resolved (their files checked) before any model loads."""
    return [corpora.resolve(name, corpora.EVAL_SPLIT.get(name, "test"), cfg.data_dir) for name in cfg.ppl_datasets]


def _check_outputs(cfg: RunConfig) -> None:
    """Where the run's results, checkpoint and FlatQuant matrices go, checked before any weight loads: they are
    written at its end or block by block."""
    check_writable_dir(cfg.output_dir)
    if cfg.save_matrix:
        check_writable_dir(matrix_dir(cfg), "--matrix_path")
    if cfg.save_path:
        check_save_path(cfg.save_path)
    if cfg.log_wandb:
        check_wandb()


def run(cfg: RunConfig) -> RunResult | None:
    """Load, quantize, evaluate and record one run; ``None`` on the ranks other than 0 of a torchrun calibration."""
    if cfg.load_quantized:
        return run_loaded(cfg)
    t_start = time.perf_counter()
    loc = locate(cfg.model, cfg.gguf_file)
    ppl_sources = _ppl_sources(cfg)
    _check_outputs(cfg)
    gptq = cfg.quant.method in ("gptq", "flatquant")  # the layer-by-layer runner
    fpq = cfg.quant.method == "fpq"
    static_scales = cfg.quant.activation is not None and cfg.quant.activation.static_tensor_scale
    calibrates = gptq or (fpq and not cfg.only_eval) or static_scales
    calib_source = corpora.resolve(cfg.calib_dataset, "train", cfg.data_dir) if calibrates else None
    _check_processes(cfg, splits_calibration=gptq)
    device = distributed.rank_device(resolve_device(cfg.device))
    config = load_config(loc)
    adapter = adapter_for(config)
    cfg.check_model(config, adapter)
    dtype = resolve_dtype(cfg.dtype, config, device)
    saved_meta = None
    if cfg.only_eval:
        # Refuse parameters of another model or recipe before loading anything heavy.
        saved_meta = fpq_search.read_meta(cfg.ptq_param_path)
        fpq_search.check_param_meta(saved_meta, cfg.quant.to_dict(), fpq_search.model_identity(config, adapter),
                                    cfg.ptq_param_path)
        saved = QuantRecipe.from_dict(saved_meta["recipe"])  # report the search settings actually used
        cfg = dataclasses.replace(cfg, quant=dataclasses.replace(cfg.quant, fpq=saved.fpq))
        if saved_meta.get("dtype") != dtype_name(dtype):
            log.warning("the parameters were searched in %s, evaluated now in %s: results will not be bit-identical",
                        saved_meta.get("dtype"), dtype)

    # Task names, files and few-shot splits are checked, and the documents read, before the weights load.
    lm_eval_tasks = prepare_tasks(cfg.tasks, cfg.tasks_data_dir, cfg.num_fewshot) if cfg.tasks else None

    timings = {}
    t = time.perf_counter()
    tokenizer = load_tokenizer(loc)
    # GPTQ and the LLM-FP4 search keep the model on the CPU and bring one block at a time to the device;
    # --distribute places it across the GPUs once it is quantized.
    model = load_model(loc, dtype, torch.device("cpu") if gptq or fpq or cfg.distribute else device)
    timings["load_s"] = time.perf_counter() - t
    fpq_meta = None
    if fpq:
        identity = {**fpq_search.model_identity(config, adapter),
                    "embedding_sha256": fpq_search.embedding_sha256(model, adapter)}
        if saved_meta is not None and saved_meta["model"].get("embedding_sha256") != identity["embedding_sha256"]:
            raise ValueError(
                f"--ptq_param_path {cfg.ptq_param_path} was searched on different weights "
                f"({saved_meta['model'].get('name')}, same architecture; or another --dtype): pass the --model "
                f"and --dtype of the search run, or search again"
            )
        fpq_meta = fpq_metadata(cfg, loc, identity, dtype)

    t = time.perf_counter()
    recipe = cfg.quant
    apply_transform(model, adapter, recipe.transform, seed=recipe.rotation_seed, group_size=recipe.hadamard_group_size)
    timings["transform_s"] = time.perf_counter() - t

    t = time.perf_counter()
    attach_quantizers(model, adapter, cfg.quant)
    # The windows the layer-by-layer runner and the static tensor scales calibrate on, tokenized once for both.
    windows = (calibration_windows(calib_source, tokenizer, cfg.nsamples, cfg.seqlen, cfg.seed)
               if gptq or static_scales else None)
    calibration = None
    if gptq:
        calibration = _calibrate_layerwise(cfg, model, adapter, windows, device,
                                           calibration_fingerprint(cfg, loc, dtype))
        if not _hand_over_to_main(device):
            return None
        if not cfg.distribute:
            model.to(device)
    elif fpq:
        q = cfg.quant
        fpq_search.configure_quantizers(model, adapter, q.weight, q.activation, q.key, q.value, q.fpq)
        if cfg.only_eval:
            model.to(device)  # parameters are applied where the search applied them
            fpq_search.apply_fpq_params(model, adapter, fpq_search.load_params(cfg.ptq_param_path))
            calibration = {"variant": q.fpq.variant, "ptq_param_path": cfg.ptq_param_path, "loaded": True}
        else:
            calibration = calibrate_fpq(cfg, model, adapter, tokenizer, calib_source, device, fpq_meta)
            if not cfg.distribute:
                model.to(device)
    elif cfg.quant.weight is not None:
        quantize_weights_rtn(model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timings["quantize_s"] = time.perf_counter() - t

    if static_scales:
        if cfg.distribute:
            model = _distribute(cfg, model, adapter)  # the calibration runs where the evaluation will
        t = time.perf_counter()
        amax = calibrate_static_tensor_scales(model, windows, cfg.calib_batch_size)
        timings["tensor_scale_s"] = time.perf_counter() - t
        calibration = {**(calibration or {}), "static_tensor_amax": amax}

    if cfg.save_path:
        t = time.perf_counter()
        checkpoint = export_quantized(model, tokenizer, cfg.quant, cfg.save_path)
        timings["export_s"] = time.perf_counter() - t
        size = checkpoint_bytes(checkpoint)
        log.info("wrote the real-quantized checkpoint %s (%.1f MiB)", checkpoint, size / 2**20)
        calibration = {**(calibration or {}), "checkpoint": checkpoint, "checkpoint_bytes": size}

    if cfg.distribute and not static_scales:
        model = _distribute(cfg, model, adapter)
    metrics = _evaluate(cfg, model, tokenizer, ppl_sources, lm_eval_tasks, timings)
    timings["total_s"] = time.perf_counter() - t_start
    return _record(cfg, loc.gguf_file or os.path.basename(loc.path.rstrip("/")), cfg.quant.to_dict(),
                   {**cfg.to_dict(), "quant_label": cfg.quant.label, "dtype_resolved": dtype_name(dtype)},
                   metrics, timings, _device_label(cfg, device), calibration)


def _evaluate(cfg: RunConfig, model, tokenizer, ppl_sources, lm_eval_tasks, timings: dict) -> dict[str, dict]:
    """Perplexity on each source, then the lm-eval tasks; adds their times to ``timings``."""
    metrics: dict[str, dict] = {}
    t = time.perf_counter()
    for source in ppl_sources:
        ids = evaluation_tokens(source, tokenizer)
        caps = [x for x in (cfg.eval_limit, MAX_WINDOWS.get(source.name)) if x is not None]
        limit = min(caps) if caps else None
        metrics.setdefault("ppl", {})[source.name] = perplexity(
            model, ids, cfg.seqlen, limit=limit, batch_size=cfg.eval_batch_size, desc=f"ppl {source.name}"
        )
    timings["eval_s"] = time.perf_counter() - t
    if lm_eval_tasks is not None:
        t = time.perf_counter()
        metrics["lm_eval"] = evaluate_tasks(model, tokenizer, lm_eval_tasks, num_fewshot=cfg.num_fewshot,
                                            batch_size=cfg.lm_eval_batch_size, limit=cfg.lm_eval_limit)
        timings["lm_eval_s"] = time.perf_counter() - t
    return metrics


def _record(cfg: RunConfig, model_name: str, recipe: dict, config: dict, metrics: dict, timings: dict,
            device: str, calibration: dict | None) -> RunResult:
    result = RunResult(
        run_name=cfg.run_name or default_run_name(cfg),
        model=model_name,
        recipe=recipe,
        config=config,
        metrics=metrics,
        timings={k: round(v, 3) for k, v in timings.items()},
        device=device,
        calibration=calibration,
    )
    path = result.write_json(cfg.output_dir)
    log.info("wrote %s", path)
    if cfg.log_wandb:
        result.log_wandb(cfg.wandb_project, cfg.wandb_group)
    return result


def run_loaded(cfg: RunConfig) -> RunResult:
    """Evaluate a real-quantized checkpoint (``--load_quantized``) on the kernels."""
    t_start = time.perf_counter()
    read_quantization_config(cfg.load_quantized)  # refuse a wrong or newer checkpoint before anything heavy
    cfg.check_seqlen(AutoConfig.from_pretrained(cfg.load_quantized))
    if not has_tokenizer(cfg.load_quantized):
        raise ValueError(f"{cfg.load_quantized} has no tokenizer files: export it again with its tokenizer")
    ppl_sources = _ppl_sources(cfg)
    _check_outputs(cfg)
    lm_eval_tasks = prepare_tasks(cfg.tasks, cfg.tasks_data_dir, cfg.num_fewshot) if cfg.tasks else None
    _check_processes(cfg, splits_calibration=False)
    device = resolve_device(cfg.device)
    timings = {}
    t = time.perf_counter()
    model, tokenizer, qc = load_quantized(cfg.load_quantized, torch.device("cpu") if cfg.distribute else device)
    if cfg.distribute:
        model = _distribute(cfg, model, adapter_for(model.config))
    timings["load_s"] = time.perf_counter() - t
    metrics = _evaluate(cfg, model, tokenizer, ppl_sources, lm_eval_tasks, timings)
    timings["total_s"] = time.perf_counter() - t_start
    recipe = QuantRecipe.from_dict(qc["recipe"])
    name = os.path.basename(os.path.abspath(cfg.load_quantized))
    return _record(cfg, name, qc["recipe"], {**cfg.to_dict(), "quant_label": recipe.label, "real_quant": True,
                                             "dtype_resolved": qc["dtype"]},
                   metrics, timings, _device_label(cfg, device), {"checkpoint": cfg.load_quantized,
                                              "checkpoint_bytes": checkpoint_bytes(cfg.load_quantized)})
