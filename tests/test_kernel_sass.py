"""benchmarks/kernel_sass.py: the decode kernels compiled for Hopper on a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_sass(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # other test modules set it
    return subprocess.run([sys.executable, "benchmarks/kernel_sass.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kernel, element, multiply", [("fpx_row", "e3m2", "FFMA"), ("w4a4_gemv", "int4xe2m1", "IDP"),
                                                    ("w4a4_gemv", "int8xint8", "IDP"), ("w4a4_tc", "int4xint4", "IMMA"),
                                                    ("w4a4_tc", "e2m1xe2m1", "QGMMA"),
                                                    ("w4a4_tc", "packedxint4", "IMMA"),
                                                    ("w4a4_tc", "e4m3xe2m1", "QGMMA"),
                                                    ("w4a4_tc", "packedxe2m1", "QGMMA"),
                                                    ("w4a4_tc_prefill", "e2m1xe2m1", "IGMMA"),
                                                    ("w4a4_tc_prefill", "e4m3xint4", "QGMMA"),
                                                    ("act_quant", "e2m1_e4m3", "FFMA"),
                                                    ("act_quant", "int4_planes_e4m3", "FFMA")])
def test_kernel_sass_counts_the_first_config(tmp_path, kernel, element, multiply):
    done = run_sass("--kernel", kernel, "--element", element, "--limit", "1", "--out", str(tmp_path / "sass"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "sass.json").read_text())
    (row,) = result["configs"]
    assert row["instructions"] > 100 and row[multiply] > 0 and row["LDG"] > 0
    assert (kernel == "act_quant" or 0 < row["loop"] < row["instructions"]) and row["loop"] >= 0
    assert 16 <= row["registers"] <= 255 and row["local_bytes"] >= 0 and 1 <= row["warps_per_sm"] <= 64
    # int8 wgmma accumulates in int32, which Triton 3.6 never leaves in flight: every step waits for its wgmmas
    # (and E2M1's FP8 sums join fp32 registers each step); the E4M3 planes' one dot a step leaves some in flight; a
    # first config without wgmma has no wait
    if row["IGMMA"] + row["QGMMA"] == 0:
        assert row["wgmma_wait"] is None
    else:
        assert row["wgmma_wait"] >= 1 if element.startswith("e4m3") else row["wgmma_wait"] == 0
    assert row["wgmma_serialized"] == ""
    assert (tmp_path / "sass.md").read_text().count("\n| ") == 2  # header and one config


def test_kernel_sass_compiles_a_narrow_tiles_warps_each_on_a_slice_of_k(tmp_path, monkeypatch):
    """``PTQ_TC_WARP_SPLIT=1`` reaches the compiled tensor-core decode kernel: the 16 x 256 tile on 2 warps
    (``--configs``, split_k compiled unsplit), fewer than 16 weight rows a warp, has each warp run half the IMMA of a
    step and fewer instructions a step."""
    rows = {}
    for split in "01":
        monkeypatch.setenv("PTQ_TC_WARP_SPLIT", split)
        done = run_sass("--kernel", "w4a4_tc", "--element", "int4xint4", "--configs", "16,256,2,2,3", "--out",
                        str(tmp_path / split))
        assert done.returncode == 0, done.stderr[-2000:]
        (rows[split],) = json.loads((tmp_path / f"{split}.json").read_text())["configs"]
    assert rows["0"]["config"] == rows["1"]["config"] and rows["0"]["config"].startswith("16x256 w2")
    assert rows["1"]["IMMA"] * 2 == rows["0"]["IMMA"] and rows["1"]["loop"] < rows["0"]["loop"]


def test_kernel_sass_compiles_a_narrow_e2m1_tiles_k_slices_on_one_warpgroup(tmp_path, monkeypatch):
    """By default (``PTQ_TC_WARP_SPLIT`` unset) on E4M3 planes: the 16-row E2M1 tile on 4 warps, its K in 4 slices
    stacked as the warpgroup's rows, compiles to wgmma (QGMMA, not serialized) at under half the instructions of a
    warp's step on the 64-row tile."""
    monkeypatch.delenv("PTQ_TC_WARP_SPLIT", raising=False)
    done = run_sass("--kernel", "w4a4_tc", "--element", "e4m3xe2m1", "--configs", "16,256,1,4,3;64,256,1,4,3",
                    "--out", str(tmp_path / "sass"))
    assert done.returncode == 0, done.stderr[-2000:]
    narrow, wide = json.loads((tmp_path / "sass.json").read_text())["configs"]
    assert narrow["config"].startswith("16x256 w4") and wide["config"].startswith("64x256 w4")
    assert narrow["QGMMA"] > 0 and narrow["wgmma_serialized"] == "" and narrow["loop"] * 2 < wide["loop"]


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "w4a4_gemv", "--element", "int4xint4", "--configs", "16,256,1,2,3"], "--configs names tensor-core "
                                                                                        "decode configs: give --kernel "
                                                                                        "w4a4_tc, not w4a4_gemv"),
    (["--kernel", "w4a4_tc", "--element", "int4xint4", "--configs", "24,256,1,2,3"], "--configs: 24,256,1,2,3: "
                                                                                      "BLOCK_N must be a power of two"),
    (["--kernel", "w4a4_tc", "--element", "e2m1xe2m1", "--configs", "64,256,1,4,3;32,256,1,2,3"],
     "--configs: 32,256,1,2,3: E2M1 weights multiply on wgmma"),
    (["--kernel", "w4a4_tc", "--element", "e2m1xe2m1", "--configs", "64,256,1,4,3;16,256,1,4,3"],
     "--configs: 16,256,1,4,3: fewer than 16 weight rows a warp on FP8 dots run only with their K in slices")])
def test_kernel_sass_refuses_configs_it_cannot_compile(tmp_path, argv, message):
    done = run_sass(*argv, "--out", str(tmp_path / "sass"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "sass.json").exists()


def test_kernel_sass_compiles_the_norm_tail(tmp_path):
    """The decode kernel with o_proj's norm tail compiles for sm_90: the K loop's dp4a count unchanged, the tail's
    RMSNorm and quantization (a reciprocal square root, divisions) added once; widths it cannot take are refused."""
    done = run_sass("--kernel", "w4a4_gemv", "--element", "int4xint4", "--norm_tail", "4096", "--limit", "1",
                    "--out", str(tmp_path / "sass"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "sass.json").read_text())
    (row,) = result["configs"]
    assert result["case"] == "int4xint4, norm tail N 4096"
    assert row["IDP"] == 56 and row["instructions"] > 1000
    for argv in (["--element", "int4xint4", "--norm_tail", "100"], ["--element", "int8xint4", "--norm_tail", "64"]):
        done = run_sass("--kernel", "w4a4_gemv", *argv, "--out", str(tmp_path / "bad"))
        assert done.returncode == 2 and "a positive multiple of 8 and 4-bit elements" in done.stderr
    done = run_sass("--kernel", "act_quant", "--element", "int4", "--norm_tail", "64", "--out", str(tmp_path / "bad"))
    assert done.returncode == 2 and "--norm_tail is for --kernel w4a4_gemv" in done.stderr
    assert not (tmp_path / "bad.json").exists()


def test_kernel_sass_compiles_the_fpx_row_kernel_s_tensor_core_form(tmp_path):
    """``--mma``: the FPx row kernel's tensor-core form compiles for sm_90 with mma.sync (HMMA) and bfloat16 pair
    multiplies in place of its fp32 multiply-adds; the flag is for that kernel only."""
    done = run_sass("--kernel", "fpx_row", "--element", "e3m2", "--mma", "--limit", "1", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "s.json").read_text())
    (row,) = result["configs"]
    assert result["case"] == "e3m2, tensor cores"
    assert row["HMMA"] > 0 and row["HMUL2"] > 0 and row["FFMA"] == 0
    done = run_sass("--kernel", "w4a4_gemv", "--element", "int4xint4", "--mma", "--out", str(tmp_path / "bad"))
    assert done.returncode == 2 and "--mma is for --kernel fpx_row" in done.stderr


def test_kernel_sass_compiles_the_fpx_row_kernel_gated(tmp_path):
    """``--gated``: the FPx row kernel with silu(gate) * up in its epilogue compiles for sm_90, named so, with more
    instructions than the same config ungated (the epilogue's exponential and products); the flag is for the row
    kernel's fp32 form only."""
    counts = {}
    for flags in ((), ("--gated",)):
        done = run_sass("--kernel", "fpx_row", "--element", "e3m2", *flags, "--limit", "1", "--out",
                        str(tmp_path / f"s{len(flags)}"))
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads((tmp_path / f"s{len(flags)}.json").read_text())
        (row,) = result["configs"]
        counts[flags] = row["instructions"]
    assert result["case"] == "e3m2, gated (silu(gate) * up)"
    assert counts[("--gated",)] > counts[()] and row["FFMA"] > 0
    for flags in (("--kernel", "fpx_row", "--mma"), ("--kernel", "fpx_tile")):
        done = run_sass(*flags, "--element", "e3m2", "--gated", "--out", str(tmp_path / "bad"))
        assert done.returncode == 2 and "--gated is for --kernel fpx_row in its fp32 form (no --mma)" in done.stderr
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("kernel, element, group, multiply", [("fpx_row", "int4", "128", "FFMA"),
                                                            ("fpx_tile", "e2m1", "16", "HMMA")])
def test_kernel_sass_compiles_the_fpx_kernels_with_scales_in_groups(tmp_path, kernel, element, group, multiply):
    """``--group``: the FPx row kernel's INT4 weights with scales per 128 codes (its sums scaled once a word) and the
    tensor-core kernel's E2M1 weights per 16 (each word's codes scaled before the dot) compile for sm_90; an FP6
    element, a group of a fraction of a word and another kernel are refused."""
    done = run_sass("--kernel", kernel, "--element", element, "--group", group, "--limit", "1", "--out",
                    str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "g.json").read_text())
    (row,) = result["configs"]
    assert result["case"] == f"{element}, scales per {group} codes" and row[multiply] > 0 and row["loop"] > 0
    for bad in (("--kernel", kernel, "--element", "e3m2", "--group", "128"),
                ("--kernel", kernel, "--element", element, "--group", "12"),
                ("--kernel", "w4a4_gemv", "--element", "int4xint4", "--group", "128")):
        done = run_sass(*bad, "--out", str(tmp_path / "b"))
        assert done.returncode == 2 and "--group takes INT4 or E2M1" in done.stderr


def test_resource_usage_counts_the_warps_registers_allow():
    from benchmarks.kernel_sass import resource_usage

    line = "Function _kernel:REG:66 STACK:0 SHARED:128 LOCAL:0 CONSTANT[0]:560 TEXTURE:0 SURFACE:0 SAMPLER:0"
    assert resource_usage(line, 8) == {"registers": 66, "local_bytes": 0, "warps_per_sm": 24}  # 3 blocks of 8
    assert resource_usage(line.replace("REG:66", "REG:32"), 2)["warps_per_sm"] == 64
    with pytest.raises(RuntimeError, match="no register count"):
        resource_usage("nothing", 8)


@pytest.mark.parametrize("kernel, element, message", [("fpx_row", "e5m2", "--element 'e5m2'"),
                                                      ("w4a4_gemv", "int4", "A_ELEMENTxW_ELEMENT"),
                                                      ("w4a4_tc", "int8xe2m1", "A_ELEMENTxint4"),
                                                      ("w4a4_tc_prefill", "int8xe2m1",
                                                       "--element for w4a4_tc_prefill is A_ELEMENTxint4"),
                                                      ("w4a4_tc_prefill", "packedxint4",
                                                       "--element for w4a4_tc_prefill is A_ELEMENTxint4"),
                                                      ("act_quant", "int8", "--element for act_quant is one of"),
                                                      ("attention", "int4", "--element for attention is one of")])
def test_kernel_sass_refuses_an_element_its_kernel_lacks(tmp_path, kernel, element, message):
    done = run_sass("--kernel", kernel, "--element", element, "--out", str(tmp_path / "sass"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "sass.json").exists()


def test_kernel_sass_compiles_the_decode_attention_s_packed_forms(tmp_path):
    """The packed KV4 attention's partial kernel: dequantizing each tile converts each code with an I2F; the factored
    form (``PTQ_KV4_FACTORED``) places the codes in half values instead, in fewer instructions a step and within the
    128 registers its launch caps it at."""
    rows = {}
    for element in ("int4xuint4", "int4xuint4_factored"):
        done = run_sass("--kernel", "attention", "--element", element, "--out", str(tmp_path / element))
        assert done.returncode == 0, done.stderr[-2000:]
        (rows[element],) = json.loads((tmp_path / f"{element}.json").read_text())["configs"]
    dequantized, factored = rows["int4xuint4"], rows["int4xuint4_factored"]
    assert dequantized["I2F"] >= 64 and factored["I2F"] <= 1 and factored["HMMA"] == dequantized["HMMA"] > 0
    assert factored["loop"] < dequantized["loop"] and factored["registers"] <= 128 and factored["local_bytes"] == 0
    assert factored["config"].endswith("maxnreg128")
    with pytest.MonkeyPatch.context() as patch:  # another tile (PTQ_ATTENTION_TILE), as the launch would take it
        patch.setenv("PTQ_ATTENTION_TILE", "128x8x3")
        done = run_sass("--kernel", "attention", "--element", "int4xuint4_factored", "--out", str(tmp_path / "tile"))
    assert done.returncode == 0, done.stderr[-2000:]
    (tiled,) = json.loads((tmp_path / "tile.json").read_text())["configs"]
    assert tiled["config"] == "128x128 w8 s3" and tiled["HMMA"] == factored["HMMA"]


def test_kernel_sass_act_quant_configs_and_width(tmp_path):
    """The activation kernel's configs are those its autotuner keeps for per-token rows (row blocks in turn among
    them); a width that is not a multiple of 16 is refused."""
    from benchmarks.kernel_sass import config_label

    # In a process of its own: importing the kernels here would build them for this process's mode, before
    # gemv_ncu's dry run below sets the interpreter.
    done = subprocess.run([sys.executable, "-c", "import json; from benchmarks.kernel_sass import act_quant_configs; "
                           "print(json.dumps(act_quant_configs(4096)))"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    configs = [tuple(c) for c in json.loads(done.stdout)]
    assert (1, 0, 4, 3, 1) in configs and any(c[4] > 1 for c in configs) and all(c[1] < 4096 for c in configs)
    assert config_label("act_quant", (2, 0, 8, 3, 16)) == "2 rows, 16 blocks in turn w8 s3"
    assert config_label("act_quant", (1, 2048, 4, 3, 1)) == "1 row, chunk 2048 w4 s3"
    assert config_label("fpx_row", (64, 64, 8, 2, False, 1, 1, 4, 80)) == "64x64 w8 s2 split4 maxnreg80"
    assert config_label("fpx_tile", (64, 256, 4, 3, True)) == "16x64x256 w4 s3 swapped"  # decode rows unless given
    assert config_label("fpx_tile", (128, 128, 8, 3, True, 128)) == "128x128x128 w8 s3 swapped"
    done = run_sass("--kernel", "act_quant", "--element", "int4", "--k", "100", "--out", str(tmp_path / "sass"))
    assert done.returncode == 2 and "--k must be a positive multiple of 16, got 100" in done.stderr


def test_kernel_sass_refuses_the_interpreter(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # in this process: refused before any kernel is imported
    done = cli("benchmarks/kernel_sass.py", "--out", str(tmp_path / "sass"))
    assert done.returncode == 2 and "TRITON_INTERPRET is set: unset it" in done.stderr
    assert not (tmp_path / "sass.json").exists()


def test_gemv_ncu_launches_each_config_under_the_interpreter(capsys):
    """The ncu driver of the decode kernel: every config launched (prefetching, folding, software-pipelined or
    neither), a finite output."""
    from benchmarks import gemv_ncu

    assert gemv_ncu.main(["--cpu_dry_run", "--launches", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.endswith("output finite: True") for line in lines)


def test_gemv_ncu_launches_the_fpx_row_kernel_under_the_interpreter(capsys):
    """``--kernel fpx``: every FPx row config launched (split, prefetching, register-capped), a finite output."""
    from benchmarks import gemv_ncu

    assert gemv_ncu.main(["--kernel", "fpx", "--cpu_dry_run", "--launches", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(gemv_ncu.parse_fpx_configs(gemv_ncu.FPX_DEFAULT_CONFIGS))
    assert all(line.endswith("output finite: True") for line in lines) and any(", 80):" in line for line in lines)
    assert gemv_ncu.parse_fpx_configs("64,64,8,2,0,4") == [(64, 64, 8, 2, False, 4, 1, 0)]
    assert gemv_ncu.parse_fpx_configs("64,64,8,2,1,1,3,80") == [(64, 64, 8, 2, True, 1, 3, 80)]


def test_gemv_ncu_launches_the_fpx_tile_kernel_under_the_interpreter(capsys):
    """``--kernel fpx_tile``: every tile config launched (swapped, paired, plain, split) at ``--rows`` rows of
    ``--dtype``, a finite output; a malformed config, no rows, and rows or a dtype given to a row kernel are refused
    by name."""
    from benchmarks import gemv_ncu

    configs = "64,64,128,4,4,1,1,1;64,64,128,4,3,1,0,2;32,32,64,4,3,0,0,1"
    assert gemv_ncu.main(["--kernel", "fpx_tile", "--configs", configs, "--dtype", "fp16", "--w_element", "e2m2",
                          "--rows", "7", "--cpu_dry_run", "--launches", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.endswith("7 fp16 rows: 1 launches, output finite: True") for line in lines)
    assert "PAIRED=True SWAP_AB=False SPLIT_K=2" in lines[1] and "BLOCK_K=128" in lines[1]
    assert gemv_ncu.main(["--kernel", "fpx_tile", "--cpu_dry_run", "--launches", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(gemv_ncu.FPX_TILE_DEFAULT_CONFIGS.split(";"))
    for argv, message in ((["--kernel", "fpx_tile", "--configs", "64,64"], "a tile config is BLOCK_M,"),
                          (["--kernel", "fpx_tile", "--rows", "0"], "--rows must be at least 1, got 0"),
                          (["--kernel", "fpx", "--dtype", "fp16"], "--dtype for fpx_tile (--kernel fpx takes"),
                          (["--kernel", "w4a4", "--rows", "4"], "--rows is for --kernel fpx_tile and w4a4_tc")):
        with pytest.raises(SystemExit):
            gemv_ncu.main([*argv, "--cpu_dry_run"])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("element", ["int4", "e2m1"])
def test_gemv_ncu_launches_the_tensor_core_decode_kernel_under_the_interpreter(element, capsys, monkeypatch):
    """``--kernel w4a4_tc``: every tensor-core decode config launched (split or not) at ``--rows`` rows (16 unless
    told) on the codes the linear writes for the weights there (E4M3 planes for E2M1 on a GPU), a finite output;
    rows the kernel does not take, a narrow tile and a split of 0 are refused by name."""
    import quant_kernels
    from benchmarks import gemv_ncu

    forms = []
    form = quant_kernels.decode_codes_form
    monkeypatch.setattr(quant_kernels, "decode_codes_form",
                        lambda e, rows, on_gpu: forms.append((e, rows)) or form(e, rows, on_gpu))
    assert gemv_ncu.main(["--kernel", "w4a4_tc", "--w_element", element, "--cpu_dry_run", "--launches", "1"]) == 0
    assert gemv_ncu.main(["--kernel", "w4a4_tc", "--w_element", element, "--rows", "5", "--configs",
                          "64,128,4,4,4", "--cpu_dry_run", "--launches", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(gemv_ncu.TC_DEFAULT_CONFIGS.split(";")) + 1
    assert all(line.endswith("output finite: True") for line in lines)
    assert [line.split("), ")[1].split(":")[0] for line in lines] == ["16 rows"] * (len(lines) - 1) + ["5 rows"]
    assert "(16, 32, 2, 1, 1)" in lines[-1] and set(forms) == {(element, 16), (element, 5)}
    forms.clear()  # the A_PACKED form: the linear's form not asked for
    assert gemv_ncu.main(["--kernel", "w4a4_tc", "--w_element", element, "--packed_codes", "--cpu_dry_run",
                          "--launches", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.endswith("16 rows of packed codes: 1 launches, output finite: True") for line in lines)
    assert len(lines) == 3 and not forms
    with pytest.raises(SystemExit):
        gemv_ncu.main(["--kernel", "w4a4", "--packed_codes", "--cpu_dry_run"])
    assert "--packed_codes is for --kernel w4a4_tc, got --kernel w4a4" in capsys.readouterr().err
    assert gemv_ncu.parse_tc_configs("16,256,1,2,3") == [(16, 256, 1, 2, 3)]
    for argv, message in ((["--rows", "65"], "--kernel w4a4_tc takes 1 to 64 rows, got --rows 65"),
                          (["--configs", "8,256,1,2,3"], "8,256,1,2,3: BLOCK_N must be a power of two of at least 16"),
                          (["--configs", "16,256,0,2,3"], "16,256,0,2,3: BLOCK_N must be a power of two of at least "
                                                          "16"),
                          (["--configs", "16,256,1"], "a tensor-core decode config is BLOCK_N,BLOCK_KB")):
        with pytest.raises(SystemExit):
            gemv_ncu.main(["--kernel", "w4a4_tc", *argv, "--cpu_dry_run"])
        assert message in capsys.readouterr().err


def test_act_quant_ncu_measures_each_format_under_the_interpreter(capsys):
    """The activation kernel's ncu driver: every format, packed and as E4M3 bytes, called inside its NVTX range with
    finite scales; shapes and formats it cannot run are refused by name."""
    from benchmarks import act_quant_ncu

    assert act_quant_ncu.main(["--cpu_dry_run", "--formats", "int4,e2m1,nvfp4,mxfp4"]) == 0
    assert act_quant_ncu.main(["--cpu_dry_run", "--fp8_codes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.endswith("scales finite: True") for line in lines)
    assert sum("E4M3 codes" in line for line in lines) == 2
    for argv, message in ((["--fp8_codes", "--formats", "nvfp4"], "per-token formats only"),
                          (["--shapes", "8x"], "--shapes takes M x K pairs like 8192x4096, got '8x'"),
                          (["--shapes", "0x4096"], "got '0x4096'"), (["--shapes", "8x8x8"], "got '8x8x8'"),
                          (["--formats", "int3"], "--formats takes a comma list of"),
                          (["--launches", "0"], "--launches must be at least 1")):
        with pytest.raises(SystemExit):
            act_quant_ncu.main(["--cpu_dry_run", *argv])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "fpx", "--configs", "64,64,8,2,0"], "6 to 8 integers"),
    (["--kernel", "fpx", "--w_element", "int4"], "--kernel fpx takes --w_element e3m2"),
    (["--w_element", "e3m2"], "--kernel w4a4 takes --w_element int4, e2m1"),
    (["--configs", "16,256,8"], "5 to 7 integers"),
    (["--shapes", "4096by4096"], "--shapes takes N x K pairs like 4096x4096"),
    (["--launches", "0"], "--launches must be at least 1, got 0"),
    (["--shapes", "4096x4100"], "K a multiple of 8"),
])
def test_gemv_ncu_refuses_bad_arguments(argv, message, capsys):
    from benchmarks import gemv_ncu

    with pytest.raises(SystemExit):
        gemv_ncu.main(argv)
    assert message in capsys.readouterr().err


def test_longest_loop_is_the_longest_backward_branch_s_body():
    """A K step's instructions: from the label a predicated backward branch jumps to through the branch; forward
    branches, the idle branch-to-itself after EXIT and the unpredicated branch back from a barrier wait's retries
    placed out of line (TMA loads: its span is longer than the loop's) are not loops."""
    from benchmarks.kernel_sass import longest_loop

    listing = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0020*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0030*/                   FFMA R3, R2, R2, R3 ;
        /*0040*/                   IADD3 R4, R4, 0x4, RZ ;
        /*0050*/              @!P1 BRA `(.L_x_1) ;
.L_x_2:
        /*0060*/                   FADD R3, R3, 1 ;
        /*0070*/              @!P2 BRA `(.L_x_2) ;
.L_x_0:
        /*0080*/                   EXIT ;
.L_x_4:
        /*0090*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P3, [UR4], R0 ;
        /*00a0*/              @!P3 BRA `(.L_x_4) ;
        /*00b0*/                   BRA `(.L_x_2) ;
.L_x_3:
        /*00c0*/                   BRA `(.L_x_3);
"""
    assert longest_loop(listing) == ["LDG.E R2, desc[UR4][R4.64] ;", "FFMA R3, R2, R2, R3 ;", "IADD3 R4, R4, 0x4, RZ ;",
                                     "@!P1 BRA `(.L_x_1) ;"]
    assert longest_loop(listing.replace("@!P1 BRA `(.L_x_1)", "NOP").replace("@!P2 BRA `(.L_x_2)", "NOP")
                        .replace("@!P3 BRA `(.L_x_4)", "NOP")) == []


def test_wgmma_wait_reads_the_fewest_groups_a_step_leaves_in_flight():
    """``wgmma_wait``: the least N of the loop's ``WARPGROUP.DEPBAR.LE gsb0, N`` (0: a wgmma waited for before the
    step goes on), None where the loop holds no wgmma or never waits; ``serialization_reason`` reads ptxas's C7515."""
    from benchmarks.kernel_sass import serialization_reason, wgmma_wait

    step = ["LDSM.16.M88.4 R88, [R2]", "QGMMA.64x128x32.F32.E4M3.E4M3 R24, R88, gdesc[UR16], R24, gsb0 ;",
            "WARPGROUP.DEPBAR.LE gsb0, 0x3 ;", "@P0 BRA `(.L_x_1) ;"]
    assert wgmma_wait(step) == 3
    assert wgmma_wait(step + ["IGMMA.64x128x32.S8.S8 R24, R92, gdesc[UR12], R24, gsb0 ;",
                              "WARPGROUP.DEPBAR.LE gsb0, 0x0 ;"]) == 0
    assert wgmma_wait(step[:1] + step[3:]) is None and wgmma_wait(step[:2]) is None
    notes = ("ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
             "non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline "
             "stage in the function 'k'\nptxas info    : Used 126 registers, used 1 barriers\n")
    assert serialization_reason(notes) == ("non wgmma instructions defining accumulator registers of a wgmma between "
                                           "start and end of the pipeline stage")
    assert serialization_reason(notes.split("\n")[1]) == ""


def swapped_tile_counts(dtype: str = "bf16", **env: str) -> dict:
    """``sass_counts`` of the FPx tensor-core kernel's swapped FP6 tile of 16 x 64 x 256 (``dtype`` rows) for sm_90,
    compiled in a process of its own with ``env`` added."""
    code = ("import json\nfrom benchmarks.kernel_sass import fpx_tile_source, sass_counts\n"
            "config = (64, 256, 4, 3, True)\n"
            f"source = fpx_tile_source('e3m2', config, dtype={dtype!r})\n"
            "print(json.dumps(sass_counts(source, config, 90, 'swapped')))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | env
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_fpx_swapped_tile_keeps_its_wgmmas_in_flight():
    """The FPx tensor-core kernel's swapped tile of 16 x 64 x 256 compiled for sm_90: ptxas does not serialize its
    wgmmas and a step leaves some in flight. Under Triton 3.6 (the GPU image's) ptxas serialized them while a path
    around the unsplit K loop set the accumulators, which ``tl.assume`` (K > 0) removed (7 groups then stay in
    flight); the Triton of requirements.txt lays the blocks out without that path either way (1 group)."""
    row = swapped_tile_counts()
    assert row["HGMMA"] == 16 and row["wgmma_serialized"] == "" and row["wgmma_wait"] >= 1


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_the_fpx_swapped_tile_places_codes_in_the_dot_s_register_pairs(dtype):
    """The swapped FP6 tile of 16 x 64 x 256 compiled for sm_90 with bfloat16 or fp16 rows: by default
    (``PTQ_FPX_LANE``) each thread places the code pairs its wgmma register operand holds, so no layout conversion
    goes through shared memory (no STS); in K order (``PTQ_FPX_LANE=0``) the joined tile does, with a barrier each."""
    rows = {lane: swapped_tile_counts(dtype, PTQ_FPX_LANE=lane) for lane in ("1", "0")}
    assert rows["1"]["STS"] == 0 < rows["0"]["STS"] and rows["1"]["BAR"] < rows["0"]["BAR"]
    assert rows["1"]["HGMMA"] == rows["0"]["HGMMA"] == 16


@pytest.mark.parametrize("flags, case, multiplies, refused, message", [
    (("--element", "e2m1", "--group", "16", "--scales", "e4m3"), "e2m1, E4M3 scales per 16 codes", True,
     ("--kernel", "fpx_row", "--element", "e2m1", "--scales", "e8m0"),
     "--scales e8m0 is an encoding of scales in groups: give --group"),
    (("--element", "e3m2", "--dtype", "fp16"), "e3m2, fp16 x", False,
     ("--kernel", "fpx_row", "--element", "e3m2", "--dtype", "fp16"), "--dtype fp16 is for --kernel fpx_tile"),
], ids=["e4m3_scales", "fp16"])
def test_kernel_sass_compiles_the_tile_kernel_s_half_pairs(tmp_path, flags, case, multiplies, refused, message):
    """The tensor-core kernel placing codes in half pairs compiles for sm_90: on NVFP4's E4M3 bytes (``--scales
    e4m3``), each bfloat16 pair scaled by a multiply (HMUL2), and with fp16 rows (``--dtype fp16``), whose
    placements are already the fp16 values times 2^(bias - 15), no multiply; each flag is refused without what it
    needs (``--scales`` without ``--group``, ``--dtype`` off the tile kernel)."""
    done = run_sass("--kernel", "fpx_tile", *flags, "--limit", "1", "--out", str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "t.json").read_text())
    (row,) = result["configs"]
    assert result["case"] == case and (row["HMUL2"] > 0) == multiplies and row["loop"] > 0
    done = run_sass(*refused, "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and message in done.stderr
