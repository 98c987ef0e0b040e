"""benchmarks/gpu_suite.sh: every section it runs is described in its header and named when a section is unknown."""

from __future__ import annotations

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.sh")


def sections() -> list[str]:
    """The labels of the script's ``case`` over its sections."""
    return re.findall(r"^    ([a-z0-9_]+)\)$", open(SUITE).read(), re.MULTILINE)


def test_every_section_is_described_and_listed(tmp_path):
    text = open(SUITE).read()
    labels = sections()
    assert len(labels) == len(set(labels)) and {"kernels", "model", "attention", "attention_tiles"} <= set(labels)
    assert [label for label in labels if not re.search(rf"^#   {label} ", text, re.MULTILINE)] == []
    done = subprocess.run(["bash", SUITE, "no_such_section"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert done.returncode == 2
    listed = done.stderr.split("choose ", 1)[1].strip().split(", ")
    assert "unknown section no_such_section" in done.stderr and sorted(listed) == sorted(labels)


def run_suite(tmp_path, section: str, **env) -> str:
    """The suite's output for ``section``, run with tmp_path/bin (the stubs a test put there) first on the PATH and
    its files under tmp_path/out."""
    done = subprocess.run(["bash", SUITE, section], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                               "OUT": str(tmp_path / "out"), "TRITON_CACHE_DIR": str(tmp_path / "cache"), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def stubbed_steps(tmp_path, section: str, flag: str = "PTQ_AUTOTUNE_READ_FLUSH", **env) -> list[tuple[str, str, str]]:
    """(step, limit, the switch ``flag``'s value) of each step ``section`` runs, with a ``python`` that only reports
    that switch (offline: no benchmark runs)."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "python").write_text(f'#!/bin/sh\necho "{flag}: ${{{flag}:-unset}}"\n')
    (stub / "python").chmod(0o755)
    steps = re.findall(r"^== (\w+) \(limit (\d+)s\)$", run_suite(tmp_path, section, **env), re.MULTILINE)
    flags = [open(tmp_path / "out" / f"{name}.log").read().split(": ")[1].strip() for name, _ in steps]
    return [(name, limit, flag) for (name, limit), flag in zip(steps, flags)]


def test_targets_flush_gives_the_cold_first_step_the_longer_limit(tmp_path):
    """The first flush's step autotunes from cold (270 s ran out on an H100), the second reads the picks back."""
    assert stubbed_steps(tmp_path, "targets_flush") == [("kernel_bench_targets_flush_write", "380", "unset"),
                                                        ("kernel_bench_targets_flush_read", "200", "unset")]
    assert [limit for _, limit, _ in stubbed_steps(tmp_path, "targets_flush", LIMIT_TARGET_FLUSH="90")] == ["90", "90"]


def test_autotune_flush_w4a4_tunes_by_one_flush_a_call(tmp_path):
    """Tuning the W4A4 decode kernels cold by both flushes overran one call (270 s each got through one shape): one
    step a call, by a read unless READ_FLUSH names the write."""
    assert stubbed_steps(tmp_path, "autotune_flush_w4a4") == [("kernel_bench_w4a4_autotune_read_flush_1", "560", "1")]
    assert stubbed_steps(tmp_path, "autotune_flush_w4a4", READ_FLUSH="0", LIMIT_AUTOTUNE_FLUSH="300") == [
        ("kernel_bench_w4a4_autotune_read_flush_0", "300", "0")]


def test_tc_tma_ab_sweeps_the_tiles_with_each_load_in_its_own_process(tmp_path):
    assert stubbed_steps(tmp_path, "tc_tma_ab", "PTQ_TC_TMA") == [("tc_tma_ab_0", "200", "0"),
                                                                  ("tc_tma_ab_1", "200", "1"),
                                                                  ("tc_tma_ab_host", "200", "host")]
    assert stubbed_steps(tmp_path, "tc_tma_ab", "PTQ_TC_TMA", TMA_SETTINGS="host") == [
        ("tc_tma_ab_host", "200", "host")]


def test_e2m1_signs_ab_times_each_decode_in_its_own_process(tmp_path):
    assert stubbed_steps(tmp_path, "e2m1_signs_ab", "PTQ_E2M1_SIGN_BYTES") == [
        ("kernel_bench_e2m1_sign_bytes_0", "280", "0"), ("kernel_bench_e2m1_sign_bytes_1", "280", "1")]


def test_gemv_sweep_times_each_element_in_its_own_step(tmp_path):
    assert [step[:2] for step in stubbed_steps(tmp_path, "gemv_sweep")] == [("gemv_sweep_int4", "280"),
                                                                           ("gemv_sweep_e2m1", "280")]
    assert [step[:2] for step in stubbed_steps(tmp_path, "gemv_sweep", ELEMENTS="e2m1", LIMIT_GEMV_SWEEP="200")] == [
        ("gemv_sweep_e2m1", "200")]


def test_tc_ncu_profiles_each_element_in_its_own_step(tmp_path):
    """Each element's step runs ncu on the tensor-core decode kernel over gemv_ncu's launches of it (a stub ncu
    reports its arguments)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ncu").write_text('#!/bin/sh\necho "ncu: $*"\n')
    (tmp_path / "bin" / "ncu").chmod(0o755)
    names = ["int4", "int4_packed", "e2m1", "e2m1_packed"]
    assert [step[:2] for step in stubbed_steps(tmp_path, "tc_ncu")] == [(f"ncu_tc_{name}", "140") for name in names]
    for name in names:
        called = open(tmp_path / "out" / f"ncu_tc_{name}.log").read()
        assert "-k regex:_w4a4_tc_kernel python -u benchmarks/gemv_ncu.py" in called and "--kernel w4a4_tc" in called
        assert ("--w_element e2m1" in called) == name.startswith("e2m1") and "--rows 16" in called
        assert ("--packed_codes" in called) == name.endswith("packed")


def test_tc_packed_ab_sweeps_both_codes_of_each_element_in_its_own_step(tmp_path):
    assert [step[:2] for step in stubbed_steps(tmp_path, "tc_packed_ab")] == [("tc_packed_ab_int4", "280"),
                                                                             ("tc_packed_ab_e2m1", "280")]


def test_tc_sweep_hands_each_element_its_own_extra_tiles(tmp_path):
    """tc_sweep times only the candidates unless EXTRA (INT4) or EXTRA_E2M1 names tiles, each for its element."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\nfor arg; do echo "$arg"; done\n')
    (stub / "python").chmod(0o755)
    for env, want in (({}, {"int4": None, "e2m1": None}),
                      ({"EXTRA": "16,1024,1,2,3", "EXTRA_E2M1": "32,1024,1,4,3"},
                       {"int4": "16,1024,1,2,3", "e2m1": "32,1024,1,4,3"})):
        run_suite(tmp_path, "tc_sweep", **env)
        for element, tiles in want.items():
            args = open(tmp_path / "out" / f"tc_sweep_{element}.log").read().splitlines()
            assert (args[args.index("--extra") + 1] if "--extra" in args else None) == tiles


def test_tc_split_narrow_sweeps_its_extra_tiles_beside_the_candidates(tmp_path):
    """Each step hands decode_rows_bench --extra tiles its check takes and the autotuner does not hold (a stub python
    reports its arguments); EXTRA replaces them; one step a PTQ_TC_TWO_ACC setting."""
    from benchmarks.decode_rows_bench import extra_tc_configs
    from quant_kernels.w4a4_gemv import TC_CONFIGS

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\nfor arg; do echo "$arg"; done\n')
    (stub / "python").chmod(0o755)
    for env, want in (({}, 6), ({"EXTRA": "16,128,2,2,4", "TWO_ACCS": "1"}, 1)):
        said = run_suite(tmp_path, "tc_split_narrow", **env)
        for two_acc in env.get("TWO_ACCS", "0 1").split():
            assert f"== tc_split_narrow_two_acc_{two_acc} (limit 280s)" in said
            args = open(tmp_path / "out" / f"tc_split_narrow_two_acc_{two_acc}.log").read().splitlines()
            assert args[:2] == ["benchmarks/decode_rows_bench.py", "--tc_sweep"] and "--ms" in args
            assert args[args.index("--out") + 1].endswith(f"tc_split_narrow_two_acc_{two_acc}_gpu")
            extra = extra_tc_configs(args[args.index("--extra") + 1], args[args.index("--element") + 1])
            assert len(extra) == want and not set(extra) & set(TC_CONFIGS)
    assert [step[2] for step in stubbed_steps(tmp_path, "tc_split_narrow", "PTQ_TC_TWO_ACC")] == ["0", "1"]


def test_tc_warp_split_times_each_narrow_tile_both_ways_in_one_step_an_element(tmp_path, monkeypatch):
    """A step an element hands decode_rows_bench --tc_sweep --warp_split both extra tiles its check takes, the
    autotuner does not hold, and PTQ_TC_WARP_SPLIT=1 changes for E4M3 planes' FP8 dots or INT4's int8 ones (a stub
    python reports its arguments); EXTRA and EXTRA_E2M1 replace them."""
    from benchmarks.decode_rows_bench import extra_tc_configs
    from quant_kernels.w4a4_gemv import TC_CONFIGS, tc_decode_flags, tc_warp_slices

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\nfor arg; do echo "$arg"; done\n')
    (stub / "python").chmod(0o755)
    for env, want in (({}, (6, 6)), ({"EXTRA": "16,128,2,2,4", "EXTRA_E2M1": "16,128,1,4,4"}, (1, 1))):
        said = run_suite(tmp_path, "tc_warp_split", **env)
        for element, count in zip(("int4", "e2m1"), want):
            assert f"== tc_warp_split_{element} (limit 420s)" in said
            args = open(tmp_path / "out" / f"tc_warp_split_{element}.log").read().splitlines()
            assert args[:2] == ["benchmarks/decode_rows_bench.py", "--tc_sweep"]
            assert args[args.index("--element") + 1] == element and args[args.index("--warp_split") + 1] == "both"
            assert args[args.index("--out") + 1].endswith(f"tc_warp_split_{element}_gpu")
            extra = extra_tc_configs(args[args.index("--extra") + 1], element)
            assert len(extra) == count and not set(extra) & set(TC_CONFIGS)
            flags = tc_decode_flags(element, element == "e2m1", False)  # E2M1's linear writes E4M3 planes on a GPU
            with monkeypatch.context() as switched:
                switched.setenv("PTQ_TC_WARP_SPLIT", "1")
                assert all(tc_warp_slices(dict(flags, BLOCK_N=bn, BLOCK_KB=bkb, num_warps=warps)) > 1
                           for bn, bkb, _, warps, _ in extra)


def test_tc_stalls_profiles_each_switch_setting_in_its_own_step(tmp_path):
    """One ncu step a switch setting (PTQ_TC_WARP_SPLIT 0 and 1, PTQ_TC_TMA=1, PTQ_TC_TWO_ACC=1; SETTINGS replaces
    them), over gemv_ncu's launches of the tensor-core decode kernel on configs its parser takes (a stub ncu reports
    its arguments and the switches)."""
    from benchmarks.gemv_ncu import parse_tc_configs

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ncu").write_text(
        '#!/bin/sh\necho "ncu: $* TWO_ACC=${PTQ_TC_TWO_ACC:-unset} WARP_SPLIT=${PTQ_TC_WARP_SPLIT:-unset}'
        ' TMA=${PTQ_TC_TMA:-unset}"\n')
    (tmp_path / "bin" / "ncu").chmod(0o755)
    said = run_suite(tmp_path, "tc_stalls")
    for name, switches in (("warp_split_0", "TWO_ACC=unset WARP_SPLIT=0 TMA=unset"),
                           ("warp_split_1", "TWO_ACC=unset WARP_SPLIT=1 TMA=unset"),
                           ("tma_1", "TWO_ACC=unset WARP_SPLIT=unset TMA=1"),
                           ("two_acc_1", "TWO_ACC=1 WARP_SPLIT=unset TMA=unset")):
        assert f"== ncu_tc_stalls_{name} (limit 140s)" in said
        called = open(tmp_path / "out" / f"ncu_tc_stalls_{name}.log").read()
        assert called.endswith(f" {switches}\n") and "--kernel w4a4_tc --rows 16" in called
        assert "regex:smsp__average_warps_issue_stalled_" in called
        assert len(parse_tc_configs(called.split("--configs ")[1].split()[0])) == 4
    said = run_suite(tmp_path, "tc_stalls", SETTINGS="PTQ_TC_TWO_ACC=0")
    assert re.findall(r"^== (\w+) \(limit", said, re.MULTILINE) == ["ncu_tc_stalls_two_acc_0"]
