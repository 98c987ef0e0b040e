"""The recipe: everything a run does, as plain data both drivers build.

``QuantRecipe`` says how the model is quantized; ``RunConfig`` adds the model, the
evaluation and the bookkeeping. Both validate themselves on construction (cheap checks)
and against the model's config (``check_model``) before any weight is loaded. Their
``to_dict`` form is saved beside every result.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from calib.flatquant import FlatQuantConfig
from calib.fpq_search import FPQConfig, check_search_recipe
from calib.gptq import GPTQConfig
from quant_layers import QuantSpec
from transforms import TRANSFORM_CLASSES as TRANSFORMS
from transforms import check_transform
from transforms.rotation import DEFAULT_BLOCK_SIZE

# fpq: LLM-FP4 search (or static MinMax), settings in ``fpq``; flatquant: FlatQuant's trained
# transforms and clips, then weights by ``flatquant.weight_method`` (rtn or gptq)
METHODS = ("rtn", "gptq", "fpq", "flatquant")


@dataclass
class QuantRecipe:
    """Which tensors are quantized, how, and by which algorithm. ``None`` = full precision."""

    weight: QuantSpec | None = None
    activation: QuantSpec | None = None
    key: QuantSpec | None = None
    value: QuantSpec | None = None
    method: str = "rtn"
    transform: str = "identity"
    hadamard_group_size: int | None = None
    rotation_seed: int = 0
    quantize_lm_head: bool = False
    lm_head_a_bits: int | None = None  # lm_head's input bits with quantize_lm_head (None: the activations')
    lm_head_w_bits: int | None = None  # lm_head's weight bits with quantize_lm_head (None: the weights')
    gptq: GPTQConfig = field(default_factory=GPTQConfig)
    fpq: FPQConfig = field(default_factory=FPQConfig)
    flatquant: FlatQuantConfig = field(default_factory=FlatQuantConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.method == "fpq":
            check_search_recipe(self.weight, self.activation, self.key, self.value, self.fpq)
            if self.quantize_lm_head:
                raise ValueError("the LLM-FP4 search calibrates decoder linears only: drop --quantize_lm_head")
        if self.method == "flatquant":
            if self.transform != "identity":
                raise ValueError(f"FlatQuant learns its own transforms: drop --transform_class {self.transform} "
                                 f"(or use identity)")
            if self.weight is None and self.activation is None:
                raise ValueError("FlatQuant trains against weight and activation quantization: set --w_bits and/or "
                                 "--a_bits below 16")
            if self.flatquant.weight_method == "gptq" and self.weight is None:
                raise ValueError("--gptq after FlatQuant quantizes weights: set --w_bits below 16 or drop --gptq")
        if self.lm_head_a_bits is not None:
            if not self.quantize_lm_head or self.activation is None:
                raise ValueError("--lm_head_a_bits sets the bits of a quantized lm_head's input: add "
                                 "--quantize_lm_head and --a_bits below 16, or drop it")
            self.lm_head_activation  # built here so that QuantSpec refuses bits it cannot take
        if self.lm_head_w_bits is not None:
            if not self.quantize_lm_head or self.weight is None:
                raise ValueError("--lm_head_w_bits sets the bits of a quantized lm_head's weights: add "
                                 "--quantize_lm_head and --w_bits below 16, or drop it")
            self.lm_head_weight  # built here so that QuantSpec refuses bits it cannot take
        if self.method == "gptq" and self.weight is None:
            raise ValueError("GPTQ quantizes weights: set the weight bits below 16 (e.g. --w_bits 4) or drop --gptq")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}: choose one of {', '.join(TRANSFORMS)}")
        if self.hadamard_group_size is not None:
            if self.transform not in ("hadamard", "block_hadamard"):
                raise ValueError(
                    f"--hadamard_group_size applies to --transform_class hadamard or block_hadamard, "
                    f"not {self.transform}"
                )
            if self.hadamard_group_size < 2:
                raise ValueError(f"--hadamard_group_size must be at least 2, got {self.hadamard_group_size}")
        if self.weight is not None and self.weight.granularity in ("token", "head"):
            raise ValueError(f"weights are quantized per tensor, channel or group, not per {self.weight.granularity}")
        for spec, what in ((self.weight, "weights"), (self.key, "keys"), (self.value, "values")):
            if spec is not None and spec.static_tensor_scale:
                raise ValueError(f"a static tensor scale is calibrated for the activations of linears; the {what} "
                                 f"keep their own absmax as NVFP4's tensor scale")
        if self.activation is not None and self.activation.granularity in ("channel", "head"):
            raise ValueError(
                f"activations are quantized per tensor, token or group, not per {self.activation.granularity}"
            )

    @property
    def is_quantized(self) -> bool:
        return any(s is not None for s in (self.weight, self.activation, self.key, self.value))

    @property
    def lm_head_weight(self) -> QuantSpec | None:
        """How a quantized lm_head's weights are quantized: the weights' spec, at ``lm_head_w_bits`` if set."""
        if self.lm_head_w_bits is None or self.weight is None:
            return self.weight
        return replace(self.weight, bits=self.lm_head_w_bits)

    @property
    def lm_head_activation(self) -> QuantSpec | None:
        """How a quantized lm_head's input is quantized: the activations' spec, at ``lm_head_a_bits`` if set."""
        if self.lm_head_a_bits is None or self.activation is None:
            return self.activation
        return replace(self.activation, bits=self.lm_head_a_bits)

    @property
    def label(self) -> str:
        """e.g. ``W[int4-ch]A[int4-tok]K[int4-head]V[int4-head]-hadamard-rtn``; ``fp`` when nothing is quantized."""
        if not self.is_quantized:
            return "fp" if self.transform == "identity" else f"fp-{self.transform_label}"
        parts = [
            f"{tag}[{spec.label}]"
            for tag, spec in (("W", self.weight), ("A", self.activation), ("K", self.key), ("V", self.value))
            if spec is not None
        ]
        if self.method == "fpq":
            suffix = [self.fpq.label]
        elif self.method == "flatquant":
            suffix = [f"flatquant-{self.flatquant.weight_method}"]
        else:
            suffix = [self.method] if self.weight is not None else []
        if self.transform != "identity":
            suffix.insert(0, self.transform_label)
        if self.quantize_lm_head:
            head_bits = (("w", self.lm_head_w_bits), ("a", self.lm_head_a_bits))
            suffix.append("-".join(["lmhead", *(f"{tag}{bits}" for tag, bits in head_bits if bits is not None)]))
        return "".join(parts) + "".join(f"-{s}" for s in suffix)

    @property
    def transform_label(self) -> str:
        """e.g. ``hadamard``, ``block_hadamard64``, ``random_orthogonal``."""
        if self.transform == "block_hadamard" or self.hadamard_group_size is not None:
            return f"{self.transform}{self.hadamard_group_size or DEFAULT_BLOCK_SIZE}"
        return self.transform

    def check_model(self, config, adapter) -> None:
        """Raise before loading weights if a group size or rotation does not fit the model's dimensions."""
        check_transform(self.transform, config, adapter, self.hadamard_group_size)
        head_dim = adapter.head_dim(config)
        for name, width in adapter.linear_in_features(config).items():
            for spec, what in ((self.weight, "weight"), (self.activation, "activation")):
                if spec is not None:
                    spec.check_dimension(width, f"{what} input of {name} (in_features)")
        if self.quantize_lm_head:
            for spec in (self.lm_head_weight, self.lm_head_activation):
                if spec is not None:
                    spec.check_dimension(config.hidden_size, "lm_head input")
        for spec, what in ((self.key, "key head"), (self.value, "value head")):
            if spec is not None:
                spec.check_dimension(head_dim, what, head_dim)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantRecipe":
        specs = {k: QuantSpec(**data[k]) if data.get(k) else None for k in ("weight", "activation", "key", "value")}
        rest = {k: v for k, v in data.items() if k not in specs}
        if isinstance(rest.get("gptq"), dict):
            rest["gptq"] = GPTQConfig(**rest["gptq"])
        if isinstance(rest.get("fpq"), dict):
            rest["fpq"] = FPQConfig(**rest["fpq"])
        if isinstance(rest.get("flatquant"), dict):
            rest["flatquant"] = FlatQuantConfig(**rest["flatquant"])
        return cls(**specs, **rest)


@dataclass
class RunConfig:
    """A whole run: model, recipe, evaluation, calibration data and output."""

    model: str | None
    quant: QuantRecipe = field(default_factory=QuantRecipe)
    gguf_file: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    ppl_datasets: tuple[str, ...] = ("wikitext2",)
    seqlen: int = 2048
    eval_limit: int | None = None
    eval_batch_size: int = 1
    data_dir: str | None = None
    tasks: tuple[str, ...] = ()  # lm-eval tasks, scored after perplexity; empty = none
    num_fewshot: int = 0
    lm_eval_batch_size: int | str = 1  # or "auto" / "auto:N" (lm-eval finds the largest that fits)
    lm_eval_limit: int | float | None = None  # documents per task; a float below 1 is a fraction
    tasks_data_dir: str | None = None  # local task files (layout of ../shared/assets/data/tasks); None = hub
    calib_dataset: str = "c4"
    nsamples: int = 128
    calib_batch_size: int = 1
    offload_activations: bool = False
    resume: bool = False
    save_matrix: bool = False  # FlatQuant: keep each block's learned transforms and clips
    reload_matrix: bool = False  # FlatQuant: load them instead of training
    matrix_path: str | None = None  # their folder (default: OUTPUT_DIR/flat_matrices/RUN_NAME)
    only_eval: bool = False  # evaluate saved LLM-FP4 search parameters instead of searching
    ptq_param_path: str | None = None  # the .safetensors an earlier search wrote
    seed: int = 0
    output_dir: str = "results"
    run_name: str | None = None
    save_path: str | None = None  # write a real-quantized checkpoint here after quantizing
    load_quantized: str | None = None  # evaluate this real-quantized checkpoint (its recipe) instead
    distribute: bool = False  # evaluate with the model placed across the visible GPUs (accelerate)
    max_memory: str | None = None  # --distribute's limits, e.g. "0=70GiB,1=70GiB,cpu=200GiB" or "70GiB"
    log_wandb: bool = False
    wandb_project: str = "ptq-harness"
    wandb_group: str | None = None

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise ValueError(f"--seqlen must be at least 2, got {self.seqlen}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"--eval_limit must be at least 1, got {self.eval_limit}")
        if self.eval_batch_size < 1:
            raise ValueError(f"--eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.nsamples < 1:
            raise ValueError(f"--nsamples must be at least 1, got {self.nsamples}")
        if self.calib_batch_size < 1:
            raise ValueError(f"--calib_batch_size must be at least 1, got {self.calib_batch_size}")
        if self.resume and self.quant.method not in ("gptq", "flatquant"):
            raise ValueError("--resume continues a layer-by-layer GPTQ or FlatQuant calibration: add --gptq or the "
                             "FlatQuant flags (RTN needs no resume)")
        if (self.save_matrix or self.reload_matrix or self.matrix_path) and self.quant.method != "flatquant":
            raise ValueError("--save_matrix, --reload_matrix and --matrix_path keep FlatQuant's transforms: add "
                             "--cali_trans / --add_diag / --lwc / --lac")
        if self.save_matrix and self.reload_matrix:
            raise ValueError("--reload_matrix loads saved matrices and --save_matrix writes new ones: pass one")
        if self.only_eval:
            if not self.ptq_param_path:
                raise ValueError(
                    "--only_eval needs --ptq_param_path PATH: the .safetensors an earlier search wrote "
                    "(under --output_dir/search_result/)"
                )
            if self.quant.method != "fpq":
                raise ValueError(
                    "--only_eval evaluates saved LLM-FP4 search parameters: use --quant_config FPQ_config_llama, "
                    "FPQ_baseline_config_llama or MinMax_config_llama"
                )
        elif self.ptq_param_path:
            raise ValueError("--ptq_param_path is read with --only_eval: add --only_eval, or drop it to search again")
        self.ppl_datasets = tuple(self.ppl_datasets)
        self.tasks = tuple(self.tasks)
        self._check_lm_eval()
        self._check_real_quant()
        self._check_distribute()

    def _check_distribute(self) -> None:
        if self.max_memory is not None:
            if not self.distribute:
                raise ValueError("--max_memory sets the limits of --distribute: add --distribute")
            from models.placement import MemoryLimits

            MemoryLimits.parse(self.max_memory)
        if self.distribute and self.device == "cpu":
            raise ValueError("--distribute places the model across GPUs, --device cpu keeps it on the CPU: drop one")

    def _check_real_quant(self) -> None:
        if self.load_quantized:
            if self.save_path or self.resume or self.only_eval:
                raise ValueError("--load_quantized evaluates a saved real-quantized checkpoint: drop --save_path, "
                                 "--resume and --only_eval")
            return
        if self.save_path:
            from quant_layers.real_linear import check_real_quant_recipe

            check_real_quant_recipe(self.quant)

    def _check_lm_eval(self) -> None:
        if self.num_fewshot < 0:
            raise ValueError(f"--num_fewshot must be 0 or more, got {self.num_fewshot}")
        batch = self.lm_eval_batch_size
        batch_ok = batch >= 1 if isinstance(batch, int) else bool(re.fullmatch(r"auto(:\d+)?", str(batch)))
        if not batch_ok:
            raise ValueError(f"--lm_eval_batch_size must be a positive integer, auto or auto:N, got {batch!r}")
        limit = self.lm_eval_limit
        limit_ok = limit is None or (limit >= 1 if isinstance(limit, int) else 0 < limit < 1)
        if not limit_ok:
            raise ValueError(
                f"--lm_eval_limit must be a document count (1 or more) or a fraction between 0 and 1, got {limit}"
            )
        if not self.tasks and (self.num_fewshot or limit is not None):
            raise ValueError("--num_fewshot and --lm_eval_limit apply to lm-eval tasks: add --tasks "
                             "(e.g. --tasks piqa)")

    def check_model(self, config, adapter) -> None:
        self.check_seqlen(config)
        self.quant.check_model(config, adapter)

    def check_seqlen(self, config) -> None:
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and self.seqlen > limit:
            raise ValueError(
                f"--seqlen {self.seqlen} exceeds the model's max_position_embeddings {limit}: "
                f"pass --seqlen {limit} or less"
            )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quant"] = self.quant.to_dict()
        data["ppl_datasets"] = list(self.ppl_datasets)
        data["tasks"] = list(self.tasks)
        return data
