"""What a run leaves behind: a JSON per run, a Markdown line, optional wandb logging."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field

import torch

from evaluation.zeroshot import markdown_table


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "accelerate", "datasets", "triton", "lm_eval"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            continue
    return versions


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_uuid(device: torch.device) -> str | None:
    """The GPU's UUID (which card, where ``device_name`` says only which kind), or None off CUDA or where this
    torch does not report it."""
    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return None if uuid is None else str(uuid)


def _numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested metrics, keyed by their path (``lm_eval/tasks/piqa/acc``)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def check_writable_dir(path: str, flag: str = "--output_dir") -> None:
    """Create the directory ``path`` (given as ``flag``) and check that it takes files, before a run loads any
    weight: what goes there is written later, after the quantization and evaluation it records."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file: choose a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {path} cannot hold files ({err.strerror or err}): choose a directory you can "
                         f"write") from err


def check_wandb() -> None:
    """``--log_wandb`` needs the wandb package: checked before a run loads any weight, since it logs at the end."""
    if importlib.util.find_spec("wandb") is None:
        raise ValueError("--log_wandb needs the wandb package: pip install wandb (WANDB_MODE=offline logs without an "
                         "account), or drop --log_wandb")


@dataclass
class RunResult:
    """One run: recipe, model, metrics (e.g. ``{"ppl": {"wikitext2": 5.47}}``), timings."""

    run_name: str
    model: str
    recipe: dict
    config: dict
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    device: str = ""
    calibration: dict | None = None  # the layer-by-layer runner's report (GPTQ runs)
    date: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict = field(default_factory=library_versions)

    def to_dict(self) -> dict:
        return asdict(self)

    def write_json(self, output_dir: str) -> str:
        """Write ``<output_dir>/<run_name>.json`` atomically; returns the path."""
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, f"{self.run_name}.json")
        fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    def markdown(self) -> str:
        """A header and one table row: model, recipe, each perplexity, the zero-shot average,
        total time; then the per-task lm-eval table when the run scored tasks."""
        ppl = self.metrics.get("ppl", {})
        lm_eval = self.metrics.get("lm_eval")
        average = lm_eval["average"]["value"] if lm_eval else None
        avg_col = ["zero-shot avg (%)"] if average is not None else []
        cols = ["model", "recipe", *[f"ppl {k}" for k in ppl], *avg_col, "time (s)"]
        row = [self.model, self.config["quant_label"], *[f"{v:.2f}" for v in ppl.values()],
               *([f"{average * 100:.2f}"] if average is not None else []), f"{self.timings.get('total_s', 0):.1f}"]
        text = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), "| " + " | ".join(row) + " |"])
        return f"{text}\n\n{markdown_table(lm_eval)}" if lm_eval else text

    def log_wandb(self, project: str, group: str | None) -> None:
        import wandb

        run = wandb.init(project=project, name=self.run_name, group=group, config={**self.config, "recipe": self.recipe},
                         reinit="finish_previous")
        run.log({**_numbers(self.metrics), **{f"time/{k}": v for k, v in self.timings.items()}})
        run.finish()
