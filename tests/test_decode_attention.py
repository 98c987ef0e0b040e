"""The decode-attention kernel (split along the keys) against its SDPA twin, under ``TRITON_INTERPRET=1``."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported (see tests/test_kernels.py)

import pytest  # noqa: E402
import torch  # noqa: E402

import quant_kernels  # noqa: E402
from quant_kernels import flash_decode  # noqa: E402


def operands(batch: int, heads_kv: int, groups: int, dim: int, length: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads_kv, groups, dim, generator=g).to(dtype)
    key = torch.randn(batch, heads_kv, length, dim, generator=g).to(dtype)
    value = torch.randn(batch, heads_kv, length, dim, generator=g).to(dtype)
    return q, key, value


def static_cache_mask(batch: int, length: int, written: list[int]) -> torch.Tensor:
    """(B, 1, 1, L): row b sees its first written[b] slots (the rest unwritten, as in a static cache)."""
    return (torch.arange(length)[None, :] < torch.tensor(written)[:, None])[:, None, None, :]


@pytest.mark.parametrize("batch,heads_kv,groups,dim,length,written", [
    (1, 2, 4, 64, 300, [200]),       # several slices, the last ones wholly hidden
    (3, 2, 1, 32, 70, [70, 5, 33]),  # one query head per K/V head, rows of different lengths
    (2, 1, 5, 16, 1, None),          # one key, no mask
    (2, 3, 7, 64, 129, [1, 129]),    # a group count that is no power of two
])
def test_kernel_equals_sdpa(batch, heads_kv, groups, dim, length, written):
    q, key, value = operands(batch, heads_kv, groups, dim, length, torch.float32)
    mask = None if written is None else static_cache_mask(batch, length, written)
    got = quant_kernels.decode_attention(q, key, value, mask, backend="triton")
    want = quant_kernels.decode_attention(q, key, value, mask, backend="torch")
    assert got.shape == want.shape == q.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_hidden_slots_are_ignored_whatever_they_hold():
    """The kernel reads hidden keys' slots beside the mask (not after it); NaN and inf there change nothing."""
    q, key, value = operands(2, 2, 4, 32, 200, torch.float32, seed=2)
    mask = static_cache_mask(2, 200, [150, 64])
    want = quant_kernels.decode_attention(q, key, value, mask, backend="torch")
    hidden = ~mask[:, 0, 0, :]  # (B, L)
    key[hidden[:, None, :, None].expand_as(key)] = float("nan")
    value[hidden[:, None, :, None].expand_as(value)] = float("inf")
    got = quant_kernels.decode_attention(q, key, value, mask, backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_several_slices_are_combined():
    assert flash_decode._splits(300, 2, torch.device("cpu"), False, 64)[1] > 1


def test_more_programs_an_sm_split_the_keys_further_and_give_the_same_attention(monkeypatch):
    """``PTQ_ATTENTION_PROGRAMS_PER_SM``: the CPU's stand-in 4 SMs at 2 programs each (a bf16 cache's default) split
    8 sequences' keys in one, at 16 each in 4 of 128 keys (80 keys in 2 slices of 64, no more); a packed cache's
    default of 4 splits one sequence's keys in 8 where a bf16 cache's splits them in 4. The attention stays the
    twin's. Anything but a whole number of at least 1 is refused."""
    q, key, value = operands(8, 2, 4, 32, 500, torch.float32, seed=3)
    mask = static_cache_mask(8, 500, [500, 321, 64, 1, 499, 200, 3, 77])
    want = quant_kernels.decode_attention(q, key, value, mask, backend="torch")
    monkeypatch.delenv("PTQ_ATTENTION_PROGRAMS_PER_SM", raising=False)
    cpu = torch.device("cpu")
    assert flash_decode._splits(500, 16, cpu, False, 64) == (512, 1)
    assert flash_decode._splits(500, 2, cpu, False, 64) == (128, 4)
    assert flash_decode._splits(500, 2, cpu, True, 64) == (64, 8)
    monkeypatch.setenv("PTQ_ATTENTION_PROGRAMS_PER_SM", "16")
    assert flash_decode._splits(500, 16, cpu, False, 64) == (128, 4) == flash_decode._splits(500, 16, cpu, True, 64)
    assert flash_decode._splits(80, 16, cpu, False, 64) == (64, 2)
    torch.testing.assert_close(quant_kernels.decode_attention(q, key, value, mask, backend="triton"), want,
                               rtol=1e-5, atol=1e-5)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PTQ_ATTENTION_PROGRAMS_PER_SM", bad)
        with pytest.raises(ValueError, match=f"PTQ_ATTENTION_PROGRAMS_PER_SM='{bad}': set a whole number"):
            flash_decode._splits(500, 16, cpu, False, 64)


def test_bfloat16_and_a_mask_shared_by_the_batch():
    q, key, value = operands(2, 2, 4, 64, 150, torch.bfloat16, seed=1)
    mask = static_cache_mask(1, 150, [97])
    got = quant_kernels.decode_attention(q, key, value, mask, scale=0.1, backend="triton")
    want = quant_kernels.decode_attention(q.float(), key.float(), value.float(), mask, scale=0.1, backend="torch")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0, atol=2e-2)


@pytest.mark.parametrize("change,message", [
    (dict(dim=48), "power-of-two head dim"),
    (dict(mask=torch.zeros(1, 1, 1, 10)), "boolean mask"),
    (dict(mask=torch.ones(1, 1, 2, 10, dtype=torch.bool)), "boolean mask"),
    (dict(heads=3), "disagree"),
])
def test_bad_operands_are_refused(change, message):
    q, key, value = operands(1, 2, 2, change.get("dim", 32), 10, torch.float32)
    if "heads" in change:
        q = q.new_zeros(1, change["heads"], 2, q.shape[-1])
    with pytest.raises(ValueError, match=message):
        quant_kernels.decode_attention(q, key, value, change.get("mask"), backend="triton")


def test_kernel_check_runs_only_the_decode_attention(tmp_path):
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "decode_attention", "--out", prefix]) == 0
    assert "3 checks, 0 failed." in open(prefix + ".md").read()


def test_kernel_check_checks_the_packed_attention_in_both_forms(tmp_path):
    """``decode_attention_packed``: half queries read the cache dequantized and factored (``PTQ_KV4_FACTORED``), each
    within its bound and with o_proj's input tail; fp32 ones only dequantized."""
    import json

    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "decode_attention_packed", "--out", prefix]) == 0
    checks = json.load(open(prefix + ".json"))["checks"]
    assert checks and all(c["ok"] for c in checks) and "PTQ_KV4_FACTORED" not in os.environ
    assert all("dequantized tiles (ok, o_proj's input tail ok)" in c["case"] for c in checks)
    assert {"float32" in c["shape"] or "the factored form (ok, o_proj's input tail ok)" in c["case"]
            for c in checks} == {True}
    assert any("the factored form" in c["case"] for c in checks)


def test_kernel_check_refuses_an_unknown_check(tmp_path, capsys):
    from benchmarks.kernel_check import main

    with pytest.raises(SystemExit):
        main(["--cpu_dry_run", "--only", "w4a4_gemm", "--out", str(tmp_path / "check")])
    err = capsys.readouterr().err
    assert "unknown checks ['w4a4_gemm'] in --only: choose from act, compiled_quantizer, gemm" in err


def test_kernel_check_runs_only_the_chosen_gemm_pairs(tmp_path, capsys):
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "gemm", "--gemm_pairs", "nvfp4,int4-g16", "--out", prefix]) == 0
    text = open(prefix + ".md").read()
    assert "4 checks, 0 failed." in text and "nvfp4 x nvfp4" in text and "int4-g16 x int4-g16" in text
    with pytest.raises(SystemExit):
        main(["--cpu_dry_run", "--gemm_pairs", "nvfp5", "--out", str(tmp_path / "other")])
    assert "unknown activation formats ['nvfp5'] in --gemm_pairs" in capsys.readouterr().err


def test_kernel_check_compares_compiled_quantizers_with_eager_ones(tmp_path):
    """The KV4 and per-token quantizers through torch.compile (CPU inductor here) equal the eager ones."""
    from benchmarks.kernel_check import main

    prefix = str(tmp_path / "check")
    assert main(["--cpu_dry_run", "--only", "compiled_quantizer", "--out", prefix]) == 0
    text = open(prefix + ".md").read()
    assert "4 checks, 0 failed." in text
    assert "| compiled quantizer | int4-head-asym | 3x256 bfloat16 | 0.0 | 0.0 |" in text


def test_attention_bench_needs_a_gpu_and_writes_its_table(cli, tmp_path):
    """benchmarks/attention_bench.py: refused without a GPU (or with more written keys than slots) before anything
    is written; its bytes by hand; its table gives each cache's time, slices and bandwidth."""
    from benchmarks.attention_bench import cache_bytes, markdown

    done = cli("benchmarks/attention_bench.py", "--out", str(tmp_path / "attention"))
    assert done.returncode == 2 and "no GPU here" in done.stderr and not (tmp_path / "attention.json").exists()
    done = cli("benchmarks/attention_bench.py", "--context", "3000", "--out", str(tmp_path / "attention"))
    assert done.returncode == 2 and "--context must be 1 to --length (2306) keys, got 3000" in done.stderr
    done = cli("benchmarks/attention_bench.py", "--tiles", "64x4x3,48x4x3", "--out", str(tmp_path / "attention"))
    assert done.returncode == 2 and "PTQ_ATTENTION_TILE='48x4x3': keys 48" in done.stderr
    assert not (tmp_path / "attention.json").exists()
    assert cache_bytes(2, 8, 100, 128, False) == 2 * 8 * 100 * 512  # K and V, 128 bf16 values each
    assert cache_bytes(2, 8, 100, 128, True) == 2 * 8 * 100 * (128 + 12)  # codes, K's scale, V's scale and zero
    rows = [dict(batch=8, cache="KV4", programs_per_sm=4, tile="64x4x3", splits=9, us=41.25, gb_s=1234.4,
                 rel_err=3e-3)]
    text = markdown(dict(device="GPU", date="d", versions={}, command="c", length=2306, context=2176, heads_kv=8,
                         groups=4, dim=128, l2_flush="read", rows=rows))
    assert "| 8 | KV4 | 4 | 64x4x3 | 9 | 41.2 | 1234 | 3.0e-03 |" in text and "2176 written keys of 2306 slots" in text
    assert "the L2 flushed by a read of 256 MiB before each" in text


def test_attention_bench_rows_on_the_interpreter(monkeypatch):
    """bench() on the CPU (the kernels under the interpreter, a stand-in timer): a row per cache form, programs per
    SM and tile (the launch's: the factored form's one-warp tile where its slices make 12 programs or more), more
    slices at more programs or fewer keys a step, each output the twin's; the switches as they were after."""
    import argparse

    from benchmarks.attention_bench import PROGRAMS_ENV, bench

    monkeypatch.setenv(PROGRAMS_ENV, "3")
    monkeypatch.delenv("PTQ_KV4_FACTORED", raising=False)
    forms, factored = [], flash_decode.factored
    monkeypatch.setattr(flash_decode, "factored", lambda *given: forms.append(factored(*given)) or forms[-1])
    args = argparse.Namespace(length=300, context=250, heads_kv=2, groups=4, dim=32, programs=[2, 16], tiles=[])
    rows = bench(2, args, lambda call: (call(), 0.01)[1], torch.device("cpu"))
    assert [(r["cache"], r["programs_per_sm"], r["tile"]) for r in rows] == [
        ("bf16", 2, "32x4x3"), ("bf16", 16, "32x4x3"), ("KV4", 2, "64x4x3x128"), ("KV4", 16, "64x4x3x128"),
        ("KV4 factored", 2, "64x4x3x128"), ("KV4 factored", 16, "32x1x3")]  # 16 programs an SM: 40 one-warp ones
    assert rows[0]["splits"] < rows[1]["splits"] and all(r["rel_err"] < 1e-2 for r in rows)
    args.programs, args.tiles = [16], ["16x2x2", "64x4x3"]
    tiled = bench(2, args, lambda call: (call(), 0.01)[1], torch.device("cpu"))
    assert [(r["cache"], r["tile"]) for r in tiled] == [(cache, tile) for cache in ("bf16", "KV4", "KV4 factored")
                                                        for tile in ("16x2x2", "64x4x3")]
    assert tiled[0]["splits"] > tiled[1]["splits"] and all(r["rel_err"] < 1e-2 for r in tiled)
    assert "PTQ_ATTENTION_TILE" not in os.environ
    assert rows[0]["gb_s"] == pytest.approx(2 * 2 * 250 * 128 / 1e-5 / 1e9)
    assert set(forms) == {False, True}  # the KV4 rows ran both forms
    assert os.environ[PROGRAMS_ENV] == "3" and "PTQ_KV4_FACTORED" not in os.environ
