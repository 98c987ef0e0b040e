"""The LLM-FP4 search's place in the pipeline: where its parameters go, what they record."""

from __future__ import annotations

import logging
import os

import torch

from calib import calibration_windows, fpq_search
from configs import RunConfig
from models.loading import dtype_name

log = logging.getLogger(__name__)


def model_base(cfg: RunConfig) -> str:
    """The model's short name (directory or GGUF file name)."""
    return os.path.basename((cfg.gguf_file or cfg.model or "model").rstrip("/")).removesuffix(".gguf")


def fpq_param_path(cfg: RunConfig) -> str:
    """Where a search saves its parameters, named from the recipe (LLM-FP4 style), e.g.
    ``<output_dir>/search_result/<model>/fpq/`` +
    ``W4A4KV4_E2E2E2_search_round3_search_intervals(0.01,1.2,100)_search_tokens256_calib(c4,32x2048,seed0)``
    ``.safetensors``.
    """
    q, f = cfg.quant, cfg.quant.fpq
    specs = (q.weight, q.activation, q.key)
    bits = "W{}A{}KV{}".format(*(s.bits if s is not None else 16 for s in specs))
    exps = "E{}E{}E{}".format(*(s.exp_bits or 0 if s is not None and s.format == "fp" else 0 for s in specs))
    if q.value != q.key:
        bits += f"V{q.value.bits if q.value is not None else 16}"
    parts = [f"{bits}_{exps}"]
    if f.search:
        g1, g2, n = f.search_intervals
        parts.append(f"search_round{f.search_round}_search_intervals({g1:g},{g2:g},{n})_search_tokens{f.search_tokens}")
    parts.append(f"calib({cfg.calib_dataset},{f.calib_size}x{cfg.seqlen},seed{cfg.seed})")
    if q.transform != "identity":
        parts.append(f"{q.transform_label}_seed{q.rotation_seed}")
    if f.module_bits:
        parts.append(f"module_bits{fpq_search.short_hash(f.module_bits)}")
    name = "_".join(parts).replace("/", "_")
    return os.path.join(cfg.output_dir, "search_result", model_base(cfg), f.variant, f"{name}.safetensors")


def calibrate_fpq(cfg: RunConfig, model, adapter, tokenizer, calib_source, device, meta: dict) -> dict:
    """LLM-FP4 search (or static MinMax) block by block; saves and returns where the parameters went."""
    windows = calibration_windows(calib_source, tokenizer, cfg.quant.fpq.calib_size, cfg.seqlen, cfg.seed)
    params, report = fpq_search.fpq_calibrate(model, adapter, windows, device, cfg.quant.fpq,
                                              batch_size=cfg.calib_batch_size,
                                              offload_activations=cfg.offload_activations)
    path = fpq_search.save_params(fpq_param_path(cfg), params, meta)
    log.info("saved %s parameters to %s", report.variant, path)
    return {**report.to_dict(), "ptq_param_path": path}


def fpq_metadata(cfg: RunConfig, loc, identity: dict, dtype: torch.dtype) -> dict:
    source = loc.gguf_file or loc.path
    return {
        "format": fpq_search.PARAM_FILE_FORMAT,
        "version": fpq_search.PARAM_FILE_VERSION,
        "model": {"name": os.path.basename(source.rstrip("/")), **identity},
        "dtype": dtype_name(dtype),
        "recipe": cfg.quant.to_dict(),
        "calibration": {"dataset": cfg.calib_dataset, "calib_size": cfg.quant.fpq.calib_size, "seqlen": cfg.seqlen,
                        "seed": cfg.seed},
    }
