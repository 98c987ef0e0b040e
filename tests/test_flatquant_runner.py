"""FlatQuant through the layer-by-layer runner and the CLI: exactness, resume, saved matrices, flags.

The benchmarks' CPU dry runs below run the Triton kernels in the interpreter, which must be on before the kernels are
first imported (here through ``quant_layers``): hence the assignment above the imports, as in the kernel tests. Set
per test instead, it came too late whenever this file ran without a kernel test module collected before it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import calib.flatquant as flatquant  # noqa: E402
from calib.flatquant import FlatQuantConfig  # noqa: E402
from calib.layerwise import LayerwiseConfig, calibrate_layerwise, matrix_file  # noqa: E402
from configs.recipe import QuantRecipe  # noqa: E402
from models.adapter import adapter_for  # noqa: E402
from pipeline.fake_quant import attach_quantizers  # noqa: E402
from quant_layers import ensure_quant_linear  # noqa: E402
from quant_layers.linear import QuantLinear  # noqa: E402
from calibration_helpers import FLATQUANT_W4A4KV4, learned_state  # noqa: E402
from transforms.flatquant import KeyTransform, KroneckerAffine  # noqa: E402

W4A4KV4 = FLATQUANT_W4A4KV4
FLAT = FlatQuantConfig(epochs=2, cali_bsz=2)
FINGERPRINT = {"recipe": "w4a4kv4-flatquant", "model": "tiny-llama"}


pytestmark = pytest.mark.usefixtures("one_thread")


def load(path: str, recipe: QuantRecipe | None = W4A4KV4, dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    adapter = adapter_for(model.config)
    if recipe is not None:
        attach_quantizers(model, adapter, recipe)
    return model, adapter


def calib_ids(nsamples: int = 4, seqlen: int = 16) -> torch.Tensor:
    return torch.randint(0, 2048, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))


def assert_same_state(a: dict[str, torch.Tensor], model) -> None:
    b = learned_state(model)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:5]}"


@pytest.fixture(scope="module")
def flat_reference(tiny_models, tmp_path_factory):
    """An uninterrupted W4A4KV4 FlatQuant run (RTN at the learned clip) that saves its matrices."""
    root = tmp_path_factory.mktemp("flat")
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(method="flatquant", flatquant=FLAT, batch_size=2, progress_dir=str(root / "progress"),
                             fingerprint=FINGERPRINT, matrix_dir=str(root / "matrices"))
    report = calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    return learned_state(model), report, config


def test_runner_trains_every_block_and_records_it(flat_reference):
    reference, report, config = flat_reference
    assert report.blocks == 2 and len(report.per_linear) == 14
    for stats in report.per_linear.values():
        assert stats["method"] == "flatquant" and stats["last_epoch_loss"] < stats["first_epoch_loss"]
        assert 0.5 < stats["act_clip_ratio"] < 1.0
    assert sorted(os.listdir(config.matrix_dir)) == [os.path.basename(matrix_file(config.matrix_dir, i))
                                                     for i in range(2)]
    assert any(k.endswith("input_transform.left") for k in reference)


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # qwen2: q/k/v biases, folded too
def test_without_quantization_the_transformed_model_equals_the_original(tiny_models, family):
    """Every decoder linear wrapped without quantizers: training learns nothing, the transforms stay exact.

    That covers the Kronecker transforms and V's per-head transform folded into v_proj and o_proj.
    """
    model, adapter = load(tiny_models[family], recipe=None, dtype=torch.float64)
    v_before = model.model.layers[0].self_attn.v_proj.weight.detach().clone()
    for layer in adapter.decoder_layers(model):
        for name in adapter.linear_names():
            ensure_quant_linear(layer, name)
    ids = torch.randint(0, 2048, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(method="flatquant", flatquant=FLAT))
    transforms = {id(m.input_transform) for m in model.modules() if isinstance(m, QuantLinear)}
    assert len(transforms) == 8  # q/k/v, o, gate/up, down in each of two blocks
    left = next(m.input_transform.left for m in model.modules() if isinstance(m, QuantLinear))
    assert not torch.allclose(left, torch.eye(left.shape[0]), atol=0.1)  # a random orthogonal start
    with torch.no_grad():
        transformed = model(ids).logits
    error = (transformed - reference).abs().max() / reference.abs().max()
    assert error <= 1e-4, error
    v_proj = model.model.layers[0].self_attn.v_proj
    rows_only = v_proj.input_transform.fold_into_weight(v_before)  # what the Kronecker transform alone gives
    assert not torch.allclose(v_proj.weight, rows_only, atol=1e-3)  # V's per-head transform is folded in too
    key = model.model.layers[0].self_attn.qk_transform  # K's: online, keys times P, queries times P^-T
    assert isinstance(key, KeyTransform) and not torch.allclose(key.weight, torch.eye(key.size), atol=0.1)


def test_resume_after_a_kill_gives_identical_parameters(flat_reference, tiny_models, tmp_path, monkeypatch):
    reference, _, reference_config = flat_reference
    config = dataclasses.replace(reference_config, progress_dir=str(tmp_path / "progress"), matrix_dir=None)
    real = flatquant.train_block
    calls = []

    def killed_in_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like to Python
        return real(*args, **kwargs)

    monkeypatch.setattr(flatquant, "train_block", killed_in_second_block)
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(KeyboardInterrupt):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    monkeypatch.setattr(flatquant, "train_block", real)
    manifest = json.loads((tmp_path / "progress" / "manifest.json").read_text())
    assert manifest["finished_blocks"] == 1

    model, adapter = load(tiny_models["llama"])  # a fresh process
    resumed = calibrate_layerwise(model, adapter, calib_ids(), "cpu", dataclasses.replace(config, resume=True))
    assert resumed.resumed_blocks == 1
    assert_same_state(reference, model)


def test_reloaded_matrices_skip_training_and_give_the_same_model(flat_reference, tiny_models, tmp_path, monkeypatch):
    reference, _, reference_config = flat_reference
    monkeypatch.setattr(flatquant, "_train", lambda *a, **k: pytest.fail("--reload_matrix must not train"))
    model, adapter = load(tiny_models["llama"])
    report = calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(
        method="flatquant", flatquant=FLAT, batch_size=2, matrix_dir=reference_config.matrix_dir,
        reload_matrix=True))
    assert all(s["reloaded"] for s in report.per_linear.values())
    assert_same_state(reference, model)

    os.makedirs(tmp_path / "partial")
    os.link(matrix_file(reference_config.matrix_dir, 0), matrix_file(str(tmp_path / "partial"), 0))
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(ValueError, match=r"flat_matrices_00001.*missing.*--save_matrix"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(
            method="flatquant", flatquant=FLAT, matrix_dir=str(tmp_path / "partial"), reload_matrix=True))
    other = dataclasses.replace(FLAT, add_diag=False)  # matrices of another recipe
    model, adapter = load(tiny_models["llama"])
    with pytest.raises(ValueError, match="do not match this block and recipe"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(
            method="flatquant", flatquant=other, matrix_dir=reference_config.matrix_dir, reload_matrix=True))


def test_gptq_after_training_keeps_transforms_and_records_scales(tiny_models):
    model, adapter = load(tiny_models["llama"])
    config = LayerwiseConfig(method="flatquant", flatquant=dataclasses.replace(FLAT, weight_method="gptq"),
                             batch_size=2)
    report = calibrate_layerwise(model, adapter, calib_ids(), "cpu", config)
    stats = report.per_linear["layers.1.mlp.down_proj"]
    assert stats["method"] == "gptq" and "act_clip_ratio" in stats and "last_epoch_loss" in stats
    for m in model.modules():
        if isinstance(m, QuantLinear):
            assert isinstance(m.input_transform, KroneckerAffine) and m.weight_params is not None
            q = m.weight_quantizer
            assert torch.equal(q.quantize_with(q.grouped(m.weight.data), m.weight_params).reshape(m.weight.shape),
                               m.weight.data)


def test_cli_flatquant_on_tinystories(tinystories_dir, data_dir, tmp_path, cli):
    common = ["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "tinystories",
              "--eval_limit", "2", "--seqlen", "64", "--calib_dataset", "tinystories", "--nsamples", "4",
              "--format", "int", "--w_bits", "4", "--a_bits", "4", "--k_bits", "4", "--v_bits", "4",
              "--k_asym", "--v_asym", "--output_dir", str(tmp_path)]
    flat = ["--cali_trans", "--add_diag", "--lwc", "--lac", "--epochs", "1", "--cali_bsz", "2"]
    out = cli("model_quant.py", *common, *flat, "--save_matrix", "--run_name", "flat",
              "--real_quant", "--save_path", str(tmp_path / "ckpt"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "-flatquant-rtn |" in out.stdout
    result = json.loads((tmp_path / "flat.json").read_text())
    assert result["recipe"]["flatquant"]["epochs"] == 1 and result["recipe"]["method"] == "flatquant"
    assert os.path.exists(tmp_path / "flat_matrices" / "flat" / "flat_matrices_00001.safetensors")
    again = cli("model_quant.py", *common, *flat, "--reload_matrix", "--matrix_path",
                str(tmp_path / "flat_matrices" / "flat"), "--run_name", "reloaded")
    assert again.returncode == 0, again.stderr[-2000:]
    reloaded = json.loads((tmp_path / "reloaded.json").read_text())
    assert reloaded["metrics"]["ppl"] == result["metrics"]["ppl"]
    # The exported checkpoint (packed weights, Kronecker transforms, learned clips) scores the same.
    loaded = cli("model_quant.py", *common, "--load_quantized", str(tmp_path / "ckpt"), "--run_name", "loaded")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    ppl = json.loads((tmp_path / "loaded.json").read_text())["metrics"]["ppl"]["tinystories"]
    assert ppl == pytest.approx(result["metrics"]["ppl"]["tinystories"], rel=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--save_matrix"], "keep FlatQuant's transforms"),
    (["--cali_trans", "--transform_class", "hadamard"], "learns its own transforms"),
    (["--lwc", "--save_matrix", "--reload_matrix"], "pass one"),
    (["--lwc", "--epochs", "0"], "--epochs and --cali_bsz"),
    (["--lwc", "--w_bits", "16", "--a_bits", "16"], "set --w_bits and/or --a_bits below 16"),
    (["--lwc", "--gptq", "--w_bits", "16"], "--gptq after FlatQuant quantizes weights"),
])
def test_cli_flatquant_refusals(tinystories_dir, data_dir, tmp_path, extra, message, cli):
    out = cli("model_quant.py", "--model", tinystories_dir, "--data_dir", data_dir, "--w_bits", "4",
              "--a_bits", "4", "--output_dir", str(tmp_path), *extra)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-1000:]
    assert not os.listdir(tmp_path)


def test_main_refuses_flatquant_with_the_fpq_search(tinystories_dir, data_dir, tmp_path, cli):
    out = cli("main.py", "--model", tinystories_dir, "--data_dir", data_dir, "--qbits", "4", "4", "4", "2", "2", "2",
              "--quant_config", "FPQ_config_llama", "--lac", "--output_dir", str(tmp_path))
    assert out.returncode == 2 and "FlatQuant flags and --quant_config FPQ_config_llama" in out.stderr


def test_runner_level_refusals(tiny_models):
    with pytest.raises(ValueError, match="rtn or gptq after training"):
        FlatQuantConfig(weight_method="awq")
    with pytest.raises(ValueError, match="--reload_matrix needs the folder of saved matrices"):
        LayerwiseConfig(method="flatquant", reload_matrix=True)
    model, adapter = load(tiny_models["llama"])
    model.model.layers[0].self_attn.qk_transform = KeyTransform(adapter.head_dim(model.config))  # any earlier Q/K transform
    with pytest.raises(ValueError, match="already has an online Q/K transform"):
        calibrate_layerwise(model, adapter, calib_ids(), "cpu", LayerwiseConfig(method="flatquant", flatquant=FLAT))


def test_kernel_bench_refuses_unknown_formats(cli):
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--formats", "int4,fp3", "--out", "/dev/null/x")
    assert out.returncode != 0 and "--formats takes a comma list of int4, e2m1, nvfp4, mxfp4" in out.stderr


def test_kernel_bench_refuses_a_negative_in_stream_count(cli):
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--in_stream", "-2", "--out", "/dev/null/x")
    assert out.returncode == 2 and "--in_stream takes the calls per graph (0: off), got -2" in out.stderr



def test_kernel_bench_default_paths_only_skips_the_alternatives(cli, tmp_path):
    """``--default_paths_only``: the kernel each format takes by default and its linear, checked, without the paths
    beside them (here the FP8 path's three rows, which the full table times; the interpreter takes no decode
    kernel, so the packed one runs, named so, and no dot GEMM is timed either way)."""
    prefix = str(tmp_path / "bench")
    tables = []
    for extra in ((), ("--default_paths_only",)):
        out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--formats", "int4", "--ms", "1", "--shapes", "32x128",
                  "--weight_only_ms", "", "--reps", "1", "--warmup", "0", *extra, "--out", prefix)
        assert out.returncode == 0, out.stderr
        assert re.search(r"^done N=32 K=128 M=1 \(\d+ s in\)$", out.stdout, re.MULTILINE), out.stdout
        tables.append(open(prefix + ".md").read())
    full, default_only = tables
    for table in tables:
        assert "| 32x128 | 1 | int4 packed gemm |" in table and "| 32x128 | 1 | int4 packed quant+gemm |" in table
    assert "| 32x128 | 1 | int4 fp8 gemm |" in full and "int4 fp8" not in default_only
    assert "MISMATCH" not in default_only


def test_kernel_bench_times_nvfp4_on_its_dequantized_path(cli, tmp_path):
    """An NVFP4 row of kernel_bench: the packed kernel, named so, then the default path's linear (the activations
    dequantized, the weight-only product), checked against the twin."""
    prefix = str(tmp_path / "bench")
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--formats", "nvfp4", "--ms", "1", "--shapes", "32x128",
              "--weight_only_ms", "", "--reps", "1", "--warmup", "0", "--default_paths_only", "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    assert "| 32x128 | 1 | nvfp4 packed gemm |" in table and "| 32x128 | 1 | nvfp4 packed quant+gemm |" in table
    assert re.search(r"\| 32x128 \| 1 \| nvfp4 dequantized quant\+gemm \(default\) \|.*\| ok \|", table), table


def test_kernel_bench_times_mxfp4_folded_beside_its_dequantized_path(cli, tmp_path):
    """MXFP4 rows of kernel_bench below MX_FP8_MIN_ROWS: the default path's linear (dequantized) and the FP8 path,
    scales folded, beside it, both checked against the twin; nothing beside it where the fold does not fit (N not
    a multiple of 16)."""
    import quant_kernels

    assert quant_kernels.default_path(40, 32, 128, "e2m1", "e2m1", a_group=32, w_group=32,
                                      scale_kind="e8m0") == "dequantized"
    prefix = str(tmp_path / "bench")
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--formats", "mxfp4", "--ms", "40", "--shapes",
              "32x128,24x128", "--weight_only_ms", "", "--reps", "1", "--warmup", "0", "--default_paths_only",
              "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    for method in ("mxfp4 dequantized quant\\+gemm \\(default\\)", "mxfp4 fp8 quant\\+gemm"):
        assert re.search(rf"\| 32x128 \| 40 \| {method} \|.*\| ok \|", table), (method, table)
    assert re.search(r"\| 24x128 \| 40 \| mxfp4 dequantized quant\+gemm \(default\) \|", table), table
    assert not re.search(r"\| 24x128 \| 40 \| mxfp4 fp8", table), table


def test_kernel_bench_checks_the_default_paths_against_the_twin(monkeypatch):
    """kernel_bench's check of the default path's linear above the decode rows: NVFP4 and MXFP4 on the dequantized
    path, MXFP4 on the FP8 path (folded, its default from MX_FP8_MIN_ROWS), INT4 and E2M1 on the int8 and e4m3
    paths, pass; a dequantization off by 5 % is caught."""
    import quant_kernels
    from benchmarks.kernel_bench import W4A4_FORMATS, check_default_path

    gen = torch.Generator().manual_seed(3)
    operands = {}
    for name, path in (("nvfp4", "dequantized"), ("mxfp4", "dequantized"), ("int4", "int8"), ("e2m1", "e4m3")):
        element, group, kind = W4A4_FORMATS[name]
        x, w = torch.randn(70, 128, generator=gen), torch.randn(24, 128, generator=gen) * 0.05
        operands[name] = x, quant_kernels.quantize_activations(w, element, group, kind, backend="torch")
        assert check_default_path(*operands[name], element, group, kind, path) == "ok", name
    w = quant_kernels.quantize_activations(torch.randn(32, 128, generator=gen) * 0.05, *W4A4_FORMATS["mxfp4"],
                                           backend="torch")  # the FP8 GEMM's N: a multiple of 16
    assert check_default_path(operands["mxfp4"][0], w, *W4A4_FORMATS["mxfp4"], "fp8") == "ok"
    dequantize = quant_kernels.dequantize_weight
    monkeypatch.setattr(quant_kernels, "dequantize_weight", lambda *a, **k: dequantize(*a, **k) * 1.05)
    for name in ("nvfp4", "mxfp4"):
        assert check_default_path(*operands[name], *W4A4_FORMATS[name], "dequantized").startswith("MISMATCH"), name


def test_kernel_bench_times_the_decode_kernel_on_the_codes_the_linear_writes(monkeypatch):
    """kernel_bench's decode GEMM row: E2M1 weights at the tensor-core rows on E4M3 planes when on a GPU (the
    codes ``w4a4_linear`` writes there), on dp4a bytes otherwise and for INT4, each product checked on every row
    against the twin, the bfloat16 one timed; a twin off by 5 % is caught."""
    import quant_kernels
    from benchmarks.kernel_bench import W4A4_FORMATS, decode_gemm
    from quant_kernels import reference

    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(16, 128, generator=gen), torch.randn(24, 128, generator=gen) * 0.05
    for element, on_gpu, form in (("e2m1", True, "E4M3 planes"), ("e2m1", False, "dp4a bytes"),
                                  ("int4", True, "dp4a bytes")):
        wq = quant_kernels.quantize_activations(w, *W4A4_FORMATS[element], backend="torch")
        product, check = decode_gemm(x, wq, element, quant_kernels.decode_codes_form(element, 16, on_gpu))
        assert check == f"ok on {form}", (element, on_gpu)
        codes = product.args[0]
        assert codes.dtype == (torch.float8_e4m3fn if form == "E4M3 planes" else torch.int8)
        want = reference.w4a4_matmul_ref(*reference.quantize_activations_ref(x, element, 0, "float"), *wq,
                                         a_element=element, w_element=element, out_dtype=torch.float32)
        got = product()
        assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), want, rtol=1e-2, atol=1e-3)
    ref = reference.w4a4_matmul_ref
    monkeypatch.setattr(reference, "w4a4_matmul_ref", lambda *a, **k: ref(*a, **k) * 1.05)
    assert decode_gemm(x, wq, "int4", ("int4", False))[1].startswith("MISMATCH on dp4a bytes")


def test_ws_tile_probe_layouts_by_hand():
    """The warp-specialization probe's layouts: the low four bits in halves (in each 128 codes, byte j holds code j low
    and code 64 + j high), FP6's top two bits in quarters (in each 256 codes, byte j holds those of codes j, 64 + j,
    128 + j and 192 + j from bit 0 up); K off the block refused."""
    from benchmarks.ws_tile_probe import step_planes

    codes = torch.zeros(2, 256, dtype=torch.int32)
    codes[0, 3], codes[0, 67], codes[1, 128 + 5], codes[1, 128 + 69] = 15, 7, 8, 2
    (packed,) = step_planes(codes, 4)
    want = torch.zeros(2, 128, dtype=torch.uint8)
    want[0, 3], want[1, 64 + 5] = 0x7F, 0x28
    assert packed.dtype == torch.uint8 and torch.equal(packed, want)
    codes = torch.zeros(1, 256, dtype=torch.int32)
    codes[0, 5], codes[0, 64 + 5], codes[0, 128 + 5], codes[0, 192 + 5] = 0b110110, 0b010001, 0b101000, 0b111111
    low, high = step_planes(codes, 6)
    assert low.shape == (1, 128) and high.shape == (1, 64)
    assert (low[0, 5], low[0, 64 + 5], high[0, 5]) == (0x16, 0xF8, 0xE7)
    assert low.sum() + high.sum() == 0x16 + 0xF8 + 0xE7  # nothing else set
    with pytest.raises(ValueError, match="4-bit layout takes K a multiple of 128, got 192"):
        step_planes(torch.zeros(1, 192, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="6-bit layout takes K a multiple of 256, got 384"):
        step_planes(torch.zeros(1, 384, dtype=torch.int32), 6)


@pytest.mark.parametrize("element", ["int4", "e3m2"])
def test_ws_tile_probe_decodes_every_code_at_every_step(element):
    """Each code of the element, read back through the probe's kernel (interpreted) from one-hot rows, one in each of
    eight 64-code steps (both nibbles, all four two-bit fields), equals its value: swapped and warp-specialized or
    not, the descriptors built on the host or in the kernel."""
    from benchmarks.ws_tile_probe import ELEMENTS, ProbeConfig, probe_matmul, step_planes
    from quant_layers.packing import code_values, element_named

    bits = ELEMENTS[element]
    n, k = 2**bits, 512
    codes = (torch.arange(n)[:, None] + torch.arange(k)[None, :]) % n
    columns = torch.tensor([5, 70, 135, 200, 265, 330, 395, 460])  # steps 0..7
    x = torch.zeros(len(columns), k, dtype=torch.bfloat16)
    x[torch.arange(len(columns)), columns] = 1.0
    want = code_values(element_named(element))[codes[:, columns].T]
    for config in (ProbeConfig(16, 16, False, False), ProbeConfig(16, 32, True, True),
                   ProbeConfig(32, 16, False, True, True)):
        got = probe_matmul(x, step_planes(codes, bits), torch.ones(n), config)
        assert torch.equal(got.float(), want.float()), config


def test_ws_tile_probe_dry_run(cli, tmp_path):
    """A CPU dry run of the probe: its warp-specialized config passes its first run in a child process, and its
    configs equal the library's twin to bfloat16's rounding, INT4 and FP6 E3M2; an element it has no layout for is
    refused, nothing written."""
    prefix = str(tmp_path / "probe")
    out = cli("benchmarks/ws_tile_probe.py", "--cpu_dry_run", "--reps", "1", "--warmup", "0", "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    assert re.search(r"- 16 x 16, swapped, warp-specialized, device descriptors: ran, error [01]\.\d\d \(", table)
    for element in ("int4", "e3m2"):
        for config in ("16 x 16 |", "16 x 16, swapped, warp-specialized, device descriptors |"):
            line = next(row for row in table.splitlines() if f"| 40x512 | 3 | {element} {config}" in row)
            assert float(line.split("|")[-2]) <= 2.0, line
    out = cli("benchmarks/ws_tile_probe.py", "--cpu_dry_run", "--elements", "int4,e2m1", "--out", prefix + "_bad")
    assert out.returncode != 0 and "--elements takes a comma list of int4, e3m2" in out.stderr
    assert not os.path.exists(prefix + "_bad.md")


def test_ws_tile_probe_leaves_out_a_config_that_does_not_finish(cli, tmp_path):
    """A warp-specialized config whose first run outlasts --liveness_timeout (a kernel that deadlocks, as one did on
    an H100) is killed, reported as hung and left out of the timing; the other configs are timed."""
    prefix = str(tmp_path / "probe")
    out = cli("benchmarks/ws_tile_probe.py", "--cpu_dry_run", "--reps", "1", "--warmup", "0", "--elements", "int4",
              "--liveness_timeout", "0.01", "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    assert "- 16 x 16, swapped, warp-specialized, device descriptors: hung: no result in 0.01 s, killed" in table
    assert "| 40x512 | 3 | int4 16 x 16 |" in table and "int4 16 x 16, swapped" not in table
    out = cli("benchmarks/ws_tile_probe.py", "--cpu_dry_run", "--liveness_timeout", "0", "--out", prefix + "_bad")
    assert out.returncode == 2 and "--liveness_timeout takes seconds above 0, got 0" in out.stderr
    out = cli("benchmarks/ws_tile_probe.py", "--cpu_dry_run")
    assert out.returncode == 2 and "--out is required: the prefix of the result files" in out.stderr
    assert not os.path.exists(prefix + "_bad.md")


@pytest.mark.parametrize("script, flag", [("kernel_bench.py", "--ms"), ("kernel_bench.py", "--weight_only_ms"),
                                          ("prefill_bench.py", "--ms"), ("decode_rows_bench.py", "--ms")])
def test_benchmarks_refuse_row_counts_below_one(cli, tmp_path, script, flag):
    """Row counts go through one argparse type: 0 or a word is a usage error, before anything runs or is written."""
    for value, message in (("1,0", "counts are at least 1, got '1,0'"), ("2,x", "a comma list of whole numbers")):
        out = cli(f"benchmarks/{script}", flag, value, "--out", str(tmp_path / "bench"))
        assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not os.listdir(tmp_path)


def weight_only_table(cli, prefix: str, m: str, shape: str, formats: str, *extra: str) -> str:
    """The Markdown table of a CPU dry run of kernel_bench's weight-only GEMMs alone (M rows, one shape)."""
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--ms", "", "--weight_only_ms", m, "--shapes", shape,
              "--weight_only_formats", formats, "--reps", "1", "--warmup", "0", *extra, "--out", prefix)
    assert out.returncode == 0, out.stderr
    return open(prefix + ".md").read()


def test_kernel_bench_times_fp16_activations_against_fp16_matmul(cli, tmp_path):
    """``--weight_only_dtype fp16``: fp16 activations through the FPx kernels, checked against the twin, beside
    fp16 torch.matmul, the ratio to it recorded as ``x_fp16``; the default stays bf16; other dtypes are refused."""
    prefix = str(tmp_path / "bench")
    table = weight_only_table(cli, prefix, "3", "40x128", "e3m2", "--weight_only_dtype", "fp16")
    assert "(fp16 activations" in table and "vs fp16 torch.matmul" in table and "| x fp16 |" in table
    assert "| 40x128 | 3 | fp16 |" in table and table.count("| ok |") == 2 and "MISMATCH" not in table
    result = json.load(open(prefix + ".json"))
    assert result["weight_only_dtype"] == "fp16" and all("x_fp16" in r for r in result["weight_only"])
    assert "| 40x128 | 3 | bf16 |" in weight_only_table(cli, prefix, "3", "40x128", "e3m2")
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--weight_only_dtype", "fp32", "--out", prefix)
    assert out.returncode == 2 and "--weight_only_dtype: invalid choice: 'fp32'" in out.stderr


def test_kernel_bench_times_only_the_weight_only_formats_asked(cli, tmp_path):
    prefix = str(tmp_path / "bench")
    table = weight_only_table(cli, prefix, "1", "40x128", "e3m2")
    assert "| 40x128 | 1 | e3m2 w-only |" in table and "e2m1 w-only" not in table
    out = cli("benchmarks/kernel_bench.py", "--cpu_dry_run", "--weight_only_formats", "e3m2,fp7", "--out", prefix)
    assert out.returncode != 0 and "--weight_only_formats takes a comma list of e3m2, e2m3" in out.stderr


def test_kernel_bench_times_weights_in_groups_beside_their_dequantized_product(cli, tmp_path):
    """``--weight_only_formats int4_g128,e2m1_g16,nvfp4,mxfp4``: INT4 / E2M1 weights with scales in groups (fp32, or
    E4M3 and E8M0 as NVFP4 and MXFP4 checkpoints encode them), each checked against the twin (the interpreter runs
    the tensor-core kernel) and timed beside the dequantized weight times torch.mm and the row kernel."""
    names = ("int4_g128", "e2m1_g16", "nvfp4", "mxfp4")
    table = weight_only_table(cli, str(tmp_path / "bench"), "3", "40x256", ",".join(names))
    for name in names:
        for path in ("", " dequantized + cuBLAS", " row kernel"):
            assert f"| 40x256 | 3 | {name} w-only{path} |" in table
    assert table.count("| ok |") == 12 and "MISMATCH" not in table


def test_prefill_bench_times_only_the_default_paths_when_asked(cli, tmp_path):
    """--default_paths_only: beside bf16 and the peer, the kernel and linear of the path w4a4_linear takes by default
    (E2M1: int8 operands at 300 rows, the one-dot E4M3 form at 600, the FP8 path above 4096), each checked; W4A8 is
    refused with it."""
    prefix = str(tmp_path / "prefill")
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--default_paths_only", "--element", "e2m1", "--ms",
              "300,600,4097", "--reps", "1", "--warmup", "0", "--out", prefix)
    assert out.returncode == 0, out.stderr
    rows = {m: [line.split(" | ")[2] for line in open(prefix + ".md").read().splitlines()
                if line.startswith(f"| {m} | 48x128 |")] for m in (300, 600, 4097)}
    both = ["bf16 (torch.matmul)", "fp8 peer (_scaled_mm)"]
    assert rows[300] == both + ["int8 path kernel (int8 operands), autotuned", "int8 path linear (the default)"]
    assert rows[600] == both + ["int8 path kernel (E4M3 operands, one dot, sums in wgmma), autotuned",
                                "e4m3 path linear (the default)"]
    assert rows[4097] == both + ["fp8 path (widening + GEMM)", "fp8 path linear (the default)"]
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--default_paths_only", "--activations", "int8",
              "--out", prefix + "_w4a8")
    assert out.returncode == 2 and "--default_paths_only times W4A4's default paths" in out.stderr


def test_prefill_bench_dry_run_checks_both_paths(cli, tmp_path):
    """prefill_bench on the CPU: the int8 path's kernel (autotuned and a fixed tile) and linear, the FP8 path's,
    and W4A8's (``--activations int8``), every output within the interpreter's bfloat16 rounding of the exact
    product; W4A8 with E2M1 weights is refused."""
    prefix = str(tmp_path / "prefill")
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--configs", "16,16,16,4,1", "--reps", "1", "--warmup",
              "0", "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    for kernel in ("int8 path kernel, autotuned", "int8 path kernel, fixed | 16,16,16,4,1", "fp8 path linear",
                   "int8 path linear", "int8 path kernel (E4M3 operands, one dot, sums in wgmma), fixed | 16,16,16,4,1",
                   "int8 path linear (E4M3 operands, step sums)"):
        assert f"| 70 | 48x128 | {kernel} |" in table
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--element", "e2m1", "--configs", "16,16,16,4,1,2",
              "--reps", "1", "--warmup", "0", "--out", prefix)
    assert out.returncode == 0, out.stderr
    assert "E2M1 weights, per-row scales" in open(prefix + ".md").read()
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--activations", "int8", "--reps", "1", "--warmup", "0",
              "--out", prefix)
    assert out.returncode == 0, out.stderr
    table = open(prefix + ".md").read()
    for kernel in ("int8 peer (_int_mm)", "int8 path kernel, autotuned", "widening + int8 GEMM linear",
                   "int8 path linear"):
        assert f"| 70 | 48x128 | {kernel} |" in table
    out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--activations", "int8", "--element", "e2m1", "--out",
              prefix)
    assert out.returncode != 0 and "--activations int8 (W4A8) takes INT4 weights" in out.stderr
    out = cli("benchmarks/prefill_bench.py", "--out", prefix + "_gpu")
    assert out.returncode != 0 and "no CUDA device: run on a GPU, or pass --cpu_dry_run" in out.stderr
    for bad in ("16,16,16,4", "16,16,16,4,1,2,3", "16,16,x,4,1"):
        out = cli("benchmarks/prefill_bench.py", "--cpu_dry_run", "--configs", bad, "--out", prefix + "_bad")
        form = "--configs takes tiles BLOCK_N,BLOCK_M,BLOCK_KB,warps,stages[,GROUP_M] (5 to 6 integers)"
        assert out.returncode == 2 and f"{form}, got {bad!r}" in out.stderr
    assert not os.path.exists(prefix + "_bad.md")
