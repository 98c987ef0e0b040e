"""Per-block calibration progress on disk: atomic files, and resuming from them.

A progress directory holds one safetensors file per finished decoder block (the block's
parameters after calibration) and ``manifest.json``, which says which run wrote them
(its fingerprint), how many blocks are finished, their file names and per-linear
statistics. Every file is written under a temporary name in the same directory, flushed
to disk and then renamed over its final name (``os.replace``), and the manifest is
written after the block file it lists, so a crash at any moment leaves either the old
state or the new one, never a half-written file that looks valid.

Resuming is refused, before anything is touched, when the manifest's fingerprint
differs from this run's; starting a fresh run over existing progress is refused too,
so earlier work is never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from quant_layers import QuantLinear
from quant_layers.quantizer import QuantParams

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "ptq-harness-layerwise-progress"
VERSION = 1
_TMP_MARK = ".tmp-"


def block_file_name(index: int) -> str:
    return f"block_{index:05d}.safetensors"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{_TMP_MARK}{os.getpid()}")


def _commit(tmp: str, path: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        _commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` save with the same all-or-nothing guarantee as ``atomic_write_text``."""
    tmp = _tmp_path(path)
    try:
        save_file(tensors, tmp, metadata=metadata)
        _commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def normalize(value: Any) -> Any:
    """The JSON form of a fingerprint (tuples become lists, odd objects their ``str``)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint_diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (JSON-normalized) fingerprints."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(name)
            else:
                out.extend(fingerprint_diff(saved[key], current[key], name))
        return out
    return [] if saved == current else [prefix or "<fingerprint>"]


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "<absent>"
        d = d[part]
    return d


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ResumeState:
    """What a progress directory already holds: blocks ``0 .. finished-1`` are done."""

    finished: int = 0
    per_linear: dict[str, dict] = field(default_factory=dict)


class ProgressStore:
    """Progress of one layer-by-layer calibration in ``directory``.

    ``begin(resume)`` checks the directory and returns what is already finished;
    ``load_block`` puts a finished block's parameters back into the model;
    ``save_block`` records a newly finished block (block file, then manifest).
    """

    def __init__(self, directory: str, fingerprint: dict, num_blocks: int) -> None:
        self.directory = directory
        self.fingerprint = normalize(fingerprint)
        self.num_blocks = num_blocks
        self.manifest_path = os.path.join(directory, MANIFEST)
        self._manifest: dict | None = None

    # -- reading ---------------------------------------------------------------------

    def _read_manifest(self) -> dict | None:
        if not os.path.exists(self.manifest_path):
            return None
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"unreadable calibration progress manifest {self.manifest_path} ({e}): "
                f"choose another --output_dir, or delete {self.directory} to start over"
            ) from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(
                f"{self.manifest_path} is not a calibration progress manifest of this tool: "
                f"choose another --output_dir"
            )
        if manifest.get("version") != VERSION:
            raise ValueError(
                f"{self.manifest_path} was written by progress format version {manifest.get('version')}, "
                f"this code reads version {VERSION}: choose another --output_dir"
            )
        return manifest

    def begin(self, resume: bool) -> ResumeState:
        """Validate the directory against this run; nothing is written when this raises."""
        manifest = self._read_manifest()
        if manifest is None:
            if resume:
                log.info("no calibration progress in %s: starting from the first block", self.directory)
            if os.path.isdir(self.directory):
                self._remove_stale_temporaries()
            self._manifest = self._new_manifest()
            return ResumeState()
        done = int(manifest.get("finished_blocks", 0))
        if not resume:
            raise ValueError(
                f"calibration progress from an earlier run exists in {self.directory} "
                f"({done} of {manifest.get('num_blocks', '?')} blocks finished): pass --resume to continue it, "
                f"or choose another --output_dir (nothing was overwritten)"
            )
        diff = fingerprint_diff(manifest.get("fingerprint"), self.fingerprint)
        if diff:
            details = "; ".join(
                f"{key}: {_short(_lookup(manifest.get('fingerprint'), key))} saved, "
                f"{_short(_lookup(self.fingerprint, key))} now"
                for key in diff[:8]
            )
            more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
            raise ValueError(
                f"cannot resume from {self.directory}: its progress was written with different settings "
                f"({', '.join(diff[:8])}{more} differ: {details}). Choose another --output_dir, or drop "
                f"--resume and delete {self.directory} to start over (nothing was changed)"
            )
        files = manifest.get("files", [])
        if not 0 <= done <= self.num_blocks or len(files) < done:
            raise ValueError(
                f"corrupt calibration progress manifest {self.manifest_path} (finished_blocks={done}, "
                f"{len(files)} files for {self.num_blocks} blocks): choose another --output_dir"
            )
        for name in files[:done]:
            if not os.path.isfile(os.path.join(self.directory, name)):
                raise ValueError(
                    f"calibration progress in {self.directory} lists {name}, which is missing: "
                    f"choose another --output_dir, or delete {self.directory} to start over"
                )
        self._remove_stale_temporaries()
        self._manifest = manifest
        return ResumeState(finished=done, per_linear=dict(manifest.get("per_linear", {})))

    def load_block(self, index: int, block: nn.Module) -> None:
        """Copy the saved parameters of finished block ``index`` into ``block`` (in place)."""
        assert self._manifest is not None, "call begin() first"
        path = os.path.join(self.directory, self._manifest["files"][index])
        try:
            tensors = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise ValueError(
                f"cannot read calibration progress file {path} ({e}): choose another --output_dir, "
                f"or delete {self.directory} to start over"
            ) from e
        params = dict(block.named_parameters())
        restore_weight_params(block, {k: tensors.pop(k) for k in list(tensors) if WEIGHT_PARAMS_MARK in k})
        if set(tensors) != set(params):
            missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
            raise ValueError(
                f"calibration progress file {path} does not match block {index} of this model "
                f"(missing {missing[:4]}, unexpected {extra[:4]}): choose another --output_dir"
            )
        for name, param in params.items():
            saved = tensors[name]
            if saved.shape != param.shape or saved.dtype != param.dtype:
                raise ValueError(
                    f"calibration progress file {path}: {name} is {tuple(saved.shape)} {saved.dtype}, "
                    f"the model has {tuple(param.shape)} {param.dtype}: choose another --output_dir"
                )
            param.data.copy_(saved)

    # -- writing ---------------------------------------------------------------------

    def _new_manifest(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "num_blocks": self.num_blocks,
            "finished_blocks": 0,
            "complete": self.num_blocks == 0,
            "files": [],
            "per_linear": {},
        }

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a run that crashed mid-write (never valid, safe to drop)."""
        for name in os.listdir(self.directory):
            if name.startswith(".") and _TMP_MARK in name:
                try:
                    os.remove(os.path.join(self.directory, name))
                except OSError:
                    pass

    def save_block(self, index: int, block: nn.Module, per_linear: dict[str, dict], extra: dict | None = None) -> None:
        """Record block ``index`` as finished: its parameters, then the manifest that lists them."""
        assert self._manifest is not None, "call begin() first"
        manifest = self._manifest
        if index != manifest["finished_blocks"]:
            raise RuntimeError(f"block {index} saved out of order (expected {manifest['finished_blocks']})")
        os.makedirs(self.directory, exist_ok=True)
        name = block_file_name(index)
        tensors = {k: p.detach().to("cpu").contiguous() for k, p in block.named_parameters()}
        tensors.update(weight_params_tensors(block))
        atomic_save_tensors(os.path.join(self.directory, name), tensors, {"format": FORMAT, "block": str(index)})
        del tensors
        manifest["files"] = manifest["files"][:index] + [name]
        manifest["finished_blocks"] = index + 1
        manifest["complete"] = index + 1 == self.num_blocks
        manifest["per_linear"].update(normalize(per_linear))
        if extra:
            manifest.update(normalize(extra))
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def saved(self, key: str, default: Any = None) -> Any:
        """A top-level manifest entry (e.g. ``"execution"``), or ``default``."""
        return (self._manifest or {}).get(key, default)

    @property
    def complete(self) -> bool:
        return bool(self._manifest and self._manifest.get("complete"))



WEIGHT_PARAMS_MARK = ".weight_params."
_PARAM_FIELDS = ("scale", "zero", "tensor_scale")


def weight_params_tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    """The recorded weight scales of a block's quantized linears, as flat named tensors."""
    out = {}
    for name, module in block.named_modules():
        params = getattr(module, "weight_params", None)
        if isinstance(module, QuantLinear) and params is not None:
            for field in _PARAM_FIELDS:
                value = getattr(params, field)
                if value is not None:
                    out[f"{name}{WEIGHT_PARAMS_MARK}{field}"] = value.detach().to("cpu").contiguous()
    return out


def restore_weight_params(block: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put ``weight_params_tensors`` back onto the block's linears."""
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field = key.partition(WEIGHT_PARAMS_MARK)
        by_module.setdefault(name, {})[field] = value
    for name, fields in by_module.items():
        module = block.get_submodule(name)
        device = module.weight.device
        module.weight_params = QuantParams(**{f: (fields[f].to(device) if f in fields else None) for f in _PARAM_FIELDS})
