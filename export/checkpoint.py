"""Real-quantized checkpoints: write a fake-quantized model as packed 4-bit tensors, load it back.

A checkpoint is a directory any machine can load:

- ``config.json``: the model's Hugging Face config plus ``quantization_config``: the
  format name and version, the recipe, and for every packed linear its weight and
  activation scheme and its online transform;
- ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` shards with
  ``model.safetensors.index.json``): the unquantized tensors in the model's dtype, and per
  packed linear ``<name>.qweight`` (uint8, two codes per byte), ``<name>.weight_scale``
  in its own encoding (float32; float8_e4m3fn for NVFP4 with ``<name>.weight_global_scale``;
  uint8 biased exponents for MXFP4's E8M0), ``<name>.act_tensor_amax`` (float32) where NVFP4 activations take
  a calibrated static tensor scale, and online-transform tensors;
- the tokenizer files.

It is written to a temporary directory beside the target and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from configs import QuantRecipe
from models import adapter_for
from models.attention import NAME as GROUPED_SDPA
from models.attention import use_grouped_decode_attention
from models.fused_decoder_layer import fuse_decoder_layers
from quant_kernels.reference import scale_values
from quant_layers import QuantLinear, Quantizer, StaticTensorScale, install_attention_wrapper, install_kv_quantization
from quant_layers.formats import E4M3, ENCODED_SCALE_DTYPES
from quant_layers.fused_linear import fuse_shared_input_linears
from quant_layers.packing import encode, pack_planes, plane_bits
from quant_layers.quantizer import QuantParams
from quant_layers.real_linear import RealQuantLinear, RealQuantScheme, check_scheme_pair
from transforms.flatquant import KeyTransform, KroneckerAffine
from transforms.rotation import DenseRotation, HadamardRotation

FORMAT = "ptq-harness-real-quant"
FORMAT_VERSION = 2  # 2: activation schemes say static_tensor_scale, with <name>.act_tensor_amax where true
INDEX = "model.safetensors.index.json"
# What every quantization_config holds (``export_quantized`` writes them all), and the dtypes it names.
QUANTIZATION_CONFIG_KEYS = ("recipe", "dtype", "attn_implementation", "modules", "attention_transforms")
CHECKPOINT_DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_SHARD_BYTES = 4 * 2**30


# -- writing ----------------------------------------------------------------------------


def _scheme_of(module: QuantLinear, name: str) -> tuple[RealQuantScheme, RealQuantScheme | None]:
    if module.weight_quantizer is None:
        raise ValueError(f"{name} quantizes its input but not its weight: real quantization packs 4-bit weights "
                         f"(quantize the weights too, e.g. --w_bits 4)")
    if type(module.act_quantizer) not in (Quantizer, StaticTensorScale, type(None)):
        raise ValueError(f"{name} uses {type(module.act_quantizer).__name__} (LLM-FP4's static per-tensor input "
                         f"scales): real-quantized export takes dynamic per-token or per-group activations")
    if isinstance(module.act_quantizer, Quantizer) and module.act_quantizer.spec.static_tensor_scale:
        raise ValueError(f"{name}: its NVFP4 activations' static tensor scale was not calibrated "
                         f"(calib.tensor_scale.calibrate_static_tensor_scales): calibrate before exporting")
    weight = RealQuantScheme.from_spec(module.weight_quantizer.spec, "weight", module.in_features,
                                       weight_only=module.act_quantizer is None)
    act = None
    if module.act_quantizer is not None:
        act = RealQuantScheme.from_spec(module.act_quantizer.spec, "activation", module.in_features)
    check_scheme_pair(weight, act)
    return weight, act


def packed_weight(module: QuantLinear, name: str) -> dict[str, torch.Tensor]:
    """``qweight`` and scales (in their own encoding) of a fake-quantized linear."""
    params = module.weight_params
    if params is None:
        raise ValueError(f"{name} has no recorded weight scales (its weight was not quantized by this version's "
                         f"RTN/GPTQ/search, e.g. resumed from older progress): quantize again to export it")
    quantizer = module.weight_quantizer
    n, k = module.out_features, module.in_features
    grouped = quantizer.grouped(module.weight.data)
    scale = params.scale.float().to(grouped.device).expand(grouped.shape[0], 1) if params.scale.numel() == 1 \
        else params.scale.float().to(grouped.device)
    values = quantizer.levels(grouped, QuantParams(scale))
    rebuilt = quantizer.dequantize(values, QuantParams(scale))
    if not torch.allclose(rebuilt, grouped, rtol=2**-6, atol=0):
        raise ValueError(f"{name}: the weight is not on the grid of its recorded scales; was it changed after "
                         f"quantization? quantize again to export it")
    codes = encode(values, quantizer.element).reshape(n, k)
    scale = scale.reshape(n, -1)
    planes = pack_planes(codes, quantizer.element.bits)
    out = {"qweight": planes[0].cpu()}
    if len(planes) > 1:
        out["qweight_high"] = planes[1].cpu()
    out.update({key: value.cpu() for key, value in encode_weight_scales(quantizer.spec.format, scale,
                                                                        params.tensor_scale, name).items()})
    return out


def encode_weight_scales(fmt: str, scale: torch.Tensor, tensor_scale: torch.Tensor | None,
                         name: str) -> dict[str, torch.Tensor]:
    """A weight's fp32 (rows, groups) scales in its format's own encoding (``QuantParams.scale``, and NVFP4's
    ``tensor_scale``): ``weight_scale`` as E4M3 block scales with one fp32 ``weight_global_scale`` (NVFP4), E8M0
    biased exponent bytes (MXFP4) or fp32; ``quant_kernels.reference.scale_values`` decodes them."""
    if fmt == "nvfp":
        g = tensor_scale.float().reshape(-1)
        if g.numel() > 1 and not torch.equal(g, g[:1].expand_as(g)):
            raise ValueError(f"{name}: NVFP4 tensor scales differ between rows of one weight")
        g = g[:1].to(scale.device)
        return {"weight_scale": E4M3.round(scale / g).to(torch.float8_e4m3fn), "weight_global_scale": g}
    if fmt == "mxfp":
        exponent = torch.log2(scale)
        if not torch.equal(exponent, exponent.round()):
            raise ValueError(f"{name}: MXFP4 scales are not powers of two")
        return {"weight_scale": (exponent.round() + 127).to(torch.uint8)}
    return {"weight_scale": scale.contiguous()}


def decode_weight_scale(scheme: RealQuantScheme, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """fp32 scales from their stored encoding (``quant_kernels.reference.scale_values``)."""
    stored = tensors["weight_scale"]
    if scheme.scale_kind == "e4m3":
        return scale_values(stored, tensors["weight_global_scale"].float().reshape(-1).expand(stored.shape[0]))
    return scale_values(stored)


def _load_weight_scales(module: RealQuantLinear, parts: dict[str, torch.Tensor], name: str, path: str) -> None:
    """``module``'s scales from a checkpoint's: as stored where it keeps them encoded (``encoded_scales``), with
    NVFP4's one global scale given to every row; else decoded to fp32."""
    stored = parts["weight_scale"]
    scheme = module.weight_scheme
    want = ENCODED_SCALE_DTYPES.get(scheme.scale_kind)
    if tuple(stored.shape) != tuple(module.weight_scale.shape) or (
            stored.dtype != want if want is not None else not stored.is_floating_point()):
        raise ValueError(f"checkpoint {path}: {name}.weight_scale is {stored.dtype} {tuple(stored.shape)}, its "
                         f"{scheme.scale_kind} scales need {want or 'a float dtype'} "
                         f"{tuple(module.weight_scale.shape)}: export it again")
    if scheme.scale_kind in ENCODED_SCALE_DTYPES and _invalid_codes(stored, scheme.scale_kind):
        raise ValueError(f"checkpoint {path}: {name}.weight_scale holds {scheme.scale_kind} codes that are NaN or "
                         f"negative, no scale: the file is damaged, export it again")
    if scheme.scale_kind == "e4m3" and parts.get("weight_global_scale", torch.empty(0)).numel() != 1:
        raise ValueError(f"checkpoint {path}: {name}.weight_global_scale (NVFP4's tensor scale) is missing or not one "
                         f"value: export it again")
    if not module.encoded_scales:
        module.weight_scale.copy_(decode_weight_scale(scheme, parts))
        return
    module.weight_scale.copy_(stored)
    if scheme.scale_kind == "e4m3":
        module.weight_global_scale.copy_(parts["weight_global_scale"].float().reshape(()).expand(module.out_features))


def _invalid_codes(stored: torch.Tensor, scale_kind: str) -> bool:
    """Whether encoded scales hold a code no scale has: E4M3's NaN (S.1111.111) or a sign bit, E8M0's NaN (255)."""
    codes = stored.view(torch.uint8)
    if scale_kind == "e8m0":
        return bool((codes == 255).any())
    return bool(((codes & 0x7F) == 0x7F).any() or (codes & 0x80).any())


def _transform_entry(transform: nn.Module | None, name: str) -> tuple[dict | None, dict[str, torch.Tensor]]:
    if transform is None:
        return None, {}
    if isinstance(transform, HadamardRotation):
        entry = {"type": "hadamard", "size": transform.size, "block": transform.block}
        return entry, ({} if transform.signs is None else {"signs": transform.signs.detach().cpu()})
    if isinstance(transform, DenseRotation):
        return {"type": "dense", "size": transform.size}, {"weight": transform.weight.detach().cpu()}
    if isinstance(transform, KeyTransform):
        return {"type": "key_affine", "size": transform.size}, {"weight": transform.weight.detach().cpu().clone()}
    if isinstance(transform, KroneckerAffine):
        entry = {"type": "kronecker", "size": transform.size, "factors": list(transform.factors),
                 "diag": transform.diag is not None}
        return entry, {k: v.detach().cpu().clone() for k, v in transform.state_dict().items()}  # shared by a group
    raise ValueError(f"{name}: online transform {type(transform).__name__} cannot be exported")


def _build_transform(entry: dict | None, tensors: dict[str, torch.Tensor]) -> nn.Module | None:
    if entry is None:
        return None
    if entry["type"] == "hadamard":
        return HadamardRotation(entry["size"], entry["block"], tensors.get("signs"))
    if entry["type"] == "dense":
        return DenseRotation(tensors["weight"])
    if entry["type"] == "key_affine":
        transform = KeyTransform(entry["size"])
        transform.load_state_dict(tensors)
        return transform.requires_grad_(False)
    if entry["type"] == "kronecker":
        transform = KroneckerAffine(entry["size"], diag=entry["diag"], factors=tuple(entry["factors"]),
                                    dtype=tensors["left"].dtype)
        transform.load_state_dict(tensors)  # strict: a missing or extra factor is refused
        return transform.requires_grad_(False)
    raise ValueError(f"unknown online transform type {entry['type']!r} in the checkpoint")


def _shards(tensors: dict[str, torch.Tensor], shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    return shards


def _atomic_directory(path: str):
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.tmp-", dir=parent)


def _default_permissions(directory: str) -> None:
    """mkdtemp makes a private directory; the checkpoint gets the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o666 & ~umask)


def check_save_path(path: str) -> None:
    """Refuse a checkpoint directory that exists: a run checks before it loads the model (no calibration is spent
    on a path it cannot write), the export again when it writes."""
    if os.path.exists(path):
        raise FileExistsError(f"--save_path {path} exists: choose a new directory (nothing was overwritten)")


def export_quantized(model: nn.Module, tokenizer, recipe: QuantRecipe, path: str,
                     shard_bytes: int = DEFAULT_SHARD_BYTES) -> str:
    """Write the fake-quantized ``model`` as a real-quantized checkpoint directory at ``path``."""
    check_save_path(path)
    adapter = adapter_for(model.config)
    modules, tensors = {}, {}
    packed_names = set()
    for name, module in model.named_modules():
        if not isinstance(module, QuantLinear):
            continue
        weight, act = _scheme_of(module, name)
        entry, transform_tensors = _transform_entry(module.input_transform, name)
        modules[name] = {"weight": weight.to_dict(), "act": None if act is None else act.to_dict(),
                         "input_transform": entry, "bias": module.bias is not None}
        for key, value in packed_weight(module, name).items():
            tensors[f"{name}.{key}"] = value
        if isinstance(module.act_quantizer, StaticTensorScale):
            tensors[f"{name}.act_tensor_amax"] = module.act_quantizer.tensor_amax.detach().cpu()
        for key, value in transform_tensors.items():
            tensors[f"{name}.input_transform.{key}"] = value
        if module.bias is not None:
            tensors[f"{name}.bias"] = module.bias.detach().cpu()
        packed_names.add(name)
    if not packed_names:
        raise ValueError("the model has no quantized linears: real quantization needs a recipe with 4-bit weights")
    attention = {}
    for i, layer in enumerate(adapter.decoder_layers(model)):
        attn = adapter.attention(layer)
        entry, transform_tensors = _transform_entry(getattr(attn, "qk_transform", None), f"layer {i} attention")
        if entry is not None:
            prefix = _module_name(model, attn)
            attention[prefix] = entry
            for key, value in transform_tensors.items():
                tensors[f"{prefix}.qk_transform.{key}"] = value
    skip = tuple(f"{n}." for n in packed_names)
    for key, value in model.state_dict().items():
        if not key.startswith(skip) and key not in tensors:
            tensors[key] = value.detach().cpu()
    tensors = {k: v.contiguous() for k, v in _untied(tensors, model).items()}

    config = model.config
    base_attn = (config._attn_implementation or "eager").removeprefix("kvquant_")
    base_attn = "sdpa" if base_attn == GROUPED_SDPA else base_attn
    quant_config = {
        "quant_method": FORMAT, "format_version": FORMAT_VERSION, "recipe": recipe.to_dict(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "attn_implementation": base_attn,
        "modules": modules, "attention_transforms": attention,
    }
    tmp = _atomic_directory(path)
    try:
        shards = _shards(tensors, shard_bytes)
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        if len(shards) == 1:
            save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata=meta)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, os.path.join(tmp, file), metadata=meta)
                weight_map.update({k: file for k in shard})
            with open(os.path.join(tmp, INDEX), "w", encoding="utf-8") as f:
                json.dump({"metadata": meta, "weight_map": weight_map}, f, indent=1)
        config_dict = config.to_dict()
        config_dict["quantization_config"] = quant_config
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_dict, f, indent=1, default=str)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError("module not found in the model")


def _untied(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Drop the lm_head copy of tied embeddings (safetensors refuses shared storage)."""
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in tensors:
        tensors = dict(tensors)
        del tensors["lm_head.weight"]
    return tensors


# -- reading ----------------------------------------------------------------------------


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    index = os.path.join(path, INDEX)
    files = sorted(set(json.load(open(index, encoding="utf-8"))["weight_map"].values())) \
        if os.path.isfile(index) else ["model.safetensors"]
    tensors = {}
    for file in files:
        full = os.path.join(path, file)
        if not os.path.isfile(full):
            raise FileNotFoundError(f"checkpoint file {full} is missing: copy the whole checkpoint directory")
        try:
            with safe_open(full, framework="pt") as f:
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise ValueError(f"checkpoint file {full} is damaged or truncated ({e}): export it again") from e
    return tensors


def read_quantization_config(path: str) -> dict:
    """The checkpoint's ``quantization_config``, checked for format and version."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file} not found: --load_quantized takes a directory written by "
                                f"--real_quant --save_path (or --quantized_save)")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_file} is not valid JSON ({e}): the checkpoint is damaged, export it again") from e
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(qc, dict) or qc.get("quant_method") != FORMAT:
        raise ValueError(f"{path} is not a real-quantized checkpoint of this harness (no {FORMAT} "
                         f"quantization_config in config.json)")
    version = qc.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, (int, str)) or not str(version).isdigit():
        raise ValueError(f"{config_file}: quantization_config.format_version is {version!r}, not a version number: the "
                         f"checkpoint is damaged, export it again")
    if int(version) > FORMAT_VERSION:
        raise ValueError(f"{path} was written in checkpoint format version {version}; this version "
                         f"reads up to {FORMAT_VERSION}: update the harness")
    missing = [key for key in QUANTIZATION_CONFIG_KEYS if key not in qc]
    if missing:
        raise ValueError(f"{config_file}: quantization_config lacks {', '.join(missing)}: the checkpoint is damaged, "
                         f"export it again")
    if qc["dtype"] not in CHECKPOINT_DTYPES:
        raise ValueError(f"{config_file}: quantization_config.dtype is {qc['dtype']!r}, not one of "
                         f"{', '.join(CHECKPOINT_DTYPES)}: the checkpoint is damaged, export it again")
    return qc


def _take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    keys = [k for k in tensors if k.startswith(prefix)]
    return {k[len(prefix):]: tensors.pop(k) for k in keys}


def _skip_weight_init():
    """transformers' ``no_init_weights`` context (its module moved in 5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def load_quantized(path: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                   fuse: bool = True):
    """``(model, tokenizer, quantization_config)`` of a real-quantized checkpoint directory.

    ``fuse``: run the linears that share an input (q/k/v, gate/up) as one
    (``quant_layers.fused_linear``), and decode-sized decoder layers in fewer launches
    (``models.fused_decoder_layer``); the outputs are the same.
    """
    qc = read_quantization_config(path)
    dtype = dtype or getattr(torch, qc["dtype"])
    tensors = _read_tensors(path)
    config = AutoConfig.from_pretrained(path)
    config.quantization_config = None
    with _skip_weight_init():  # every weight comes from the checkpoint (checked below)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=qc["attn_implementation"])
    model.eval()
    use_grouped_decode_attention(model)
    for name, entry in qc["modules"].items():
        parts = _take(tensors, f"{name}.")
        missing = {"qweight", "weight_scale"} - set(parts)
        if missing:
            raise ValueError(f"checkpoint {path} lacks {', '.join(f'{name}.{m}' for m in sorted(missing))}: "
                             f"export it again")
        try:
            old = model.get_submodule(name)
            weight = RealQuantScheme(**entry["weight"])
            act = RealQuantScheme(**entry["act"]) if entry["act"] else None
            module = RealQuantLinear(old.in_features, old.out_features, entry["bias"], weight, act, dtype)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path}: the quantization_config entry of {name} is malformed or names no "
                             f"linear of the model ({e}): export it again") from e
        if parts["qweight"].shape != module.qweight.shape:
            raise ValueError(f"{name}.qweight is {tuple(parts['qweight'].shape)}, the model needs "
                             f"{tuple(module.qweight.shape)}: the checkpoint does not match its config")
        module.qweight.copy_(parts["qweight"])
        if len(plane_bits(weight.bits)) > 1:
            if "qweight_high" not in parts or parts["qweight_high"].shape != module.qweight_high.shape:
                raise ValueError(f"checkpoint {path}: {name}.qweight_high is missing or misshapen for "
                                 f"{weight.bits}-bit codes: export it again")
            module.qweight_high.copy_(parts["qweight_high"])
        _load_weight_scales(module, parts, name, path)
        if act is not None and act.static_tensor_scale:
            if "act_tensor_amax" not in parts or parts["act_tensor_amax"].numel() != 1:
                raise ValueError(f"checkpoint {path}: {name}.act_tensor_amax (the calibrated absmax of its NVFP4 "
                                 f"activations) is missing or not one value: export it again")
            module.act_tensor_amax.copy_(parts["act_tensor_amax"].reshape(()))
        if entry["bias"]:
            module.bias.data.copy_(parts["bias"])
        module.input_transform = _build_transform(entry["input_transform"], _take(parts, "input_transform."))
        model.set_submodule(name, module)
    for name, entry in qc["attention_transforms"].items():
        model.get_submodule(name).qk_transform = _build_transform(entry, _take(tensors, f"{name}.qk_transform."))
    state = model.state_dict()
    expected = {k for k in state if not _is_packed_buffer(model, k)}
    if getattr(model.config, "tie_word_embeddings", False):
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(tensors))
    if missing:
        raise ValueError(f"checkpoint {path} lacks {len(missing)} tensors (e.g. {missing[:3]}): export it again")
    unexpected = sorted(set(tensors) - set(state))
    if unexpected:
        raise ValueError(f"checkpoint {path} has tensors this model does not ({unexpected[:3]}): the checkpoint "
                         f"does not match its config")
    model.load_state_dict(tensors, strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    recipe = QuantRecipe.from_dict(qc["recipe"])
    adapter = adapter_for(model.config)
    head_dim = adapter.head_dim(model.config)
    install_kv_quantization(
        model, [adapter.attention(layer) for layer in adapter.decoder_layers(model)],
        Quantizer(recipe.key, head_dim) if recipe.key is not None else None,
        Quantizer(recipe.value, head_dim) if recipe.value is not None else None,
    )
    if qc["attention_transforms"]:
        install_attention_wrapper(model)
    if fuse:
        fuse_shared_input_linears(model)
        fuse_decoder_layers(model)
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer(path) else None
    return model, tokenizer, qc


def has_tokenizer(path: str) -> bool:
    """Whether the checkpoint directory holds tokenizer files (export writes them when given a tokenizer)."""
    return os.path.isfile(os.path.join(path, "tokenizer_config.json"))


def _is_packed_buffer(model: nn.Module, key: str) -> bool:
    owner, _, _ = key.rpartition(".")
    try:
        return isinstance(model.get_submodule(owner), RealQuantLinear) or ".input_transform." in key \
            or ".qk_transform." in key
    except AttributeError:
        return False


def checkpoint_bytes(path: str) -> int:
    """Total size of a checkpoint directory's files."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


__all__ = ["FORMAT", "FORMAT_VERSION", "checkpoint_bytes", "decode_weight_scale", "export_quantized",
           "has_tokenizer", "load_quantized", "packed_weight", "read_quantization_config"]
