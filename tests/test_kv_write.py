"""The K/V write kernel (``quant_kernels.kv_write``) against the static packed cache's torch writes, its twin."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported (see tests/test_kernels.py)

import pytest  # noqa: E402
import torch  # noqa: E402

from quant_kernels import kv_write  # noqa: E402
from quant_layers.packed_kv_cache import StaticPackedKVCache, _PackedTensor  # noqa: E402
from quant_layers.quantizer import Quantizer, QuantSpec  # noqa: E402
from test_packed_kv_cache import greedy, w4a4kv4_and_prompt  # noqa: E402

HEAD_DIM = 64
# (key spec, value spec): per head, per group, per token; symmetric and asymmetric INT4, E2M1, clipping.
SPECS = {
    "int4 head, V asym": (QuantSpec("int", 4, granularity="head"),
                          QuantSpec("int", 4, granularity="head", symmetric=False)),
    "groups of 16, clip": (QuantSpec("int", 4, granularity="group", group_size=16, clip_ratio=0.9),
                           QuantSpec("int", 4, granularity="group", group_size=32, symmetric=False, clip_ratio=0.95)),
    "e2m1 token": (QuantSpec("fp", 4, exp_bits=2, granularity="token"),
                   QuantSpec("fp", 4, exp_bits=2, granularity="group", group_size=32)),
}


def kv(batch: int, heads: int, tokens: int, seed: int) -> torch.Tensor:
    """(B, H, T, D) bfloat16 values, half of the rows on rounding ties (multiples of 2^-3 under an amax of
    7 or 6 times a power of two), one row of zeros, as a non-contiguous view (B, T, H, D) transposed."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, heads, HEAD_DIM, generator=gen) * 3
    ties = torch.randint(-48, 49, x.shape, generator=gen).float() / 8
    ties[..., 0] = 6.0
    x[:, ::2] = ties[:, ::2]
    x[0, -1, 0] = 0
    return x.to(torch.bfloat16).transpose(1, 2)


@pytest.mark.parametrize("case", SPECS)
def test_kernel_writes_what_the_torch_path_writes(case):
    """Every code, scale and zero point equal, at positions mid-buffer, for K and V at once."""
    key_spec, value_spec = SPECS[case]
    key, value = kv(2, 3, 5, seed=1), kv(2, 3, 5, seed=2)
    positions = torch.arange(5) + 6
    written = []
    for fused in (True, False):
        k, v = _PackedTensor(Quantizer(key_spec, HEAD_DIM)), _PackedTensor(Quantizer(value_spec, HEAD_DIM))
        if fused:
            k.allocate(key, 16)
            v.allocate(value, 16)
            kv_write.write_kv4_triton(key, value, positions, k.operand, v.operand, k.write_element, v.write_element,
                                      key_spec.clip_ratio, value_spec.clip_ratio)
        else:
            k.write(positions, key, 16)
            v.write(positions, value, 16)
        written.append([t for t in (*k.operand, *v.operand) if t is not None])
    assert len(written[0]) == len(written[1])
    assert all(torch.equal(a, b) for a, b in zip(*written))
    assert written[1][0][:, :, 6:11].any() and not written[1][0][:, :, :6].any()  # the slots written, no other


@pytest.mark.parametrize("transform", ["identity", "hadamard"])
def test_static_cache_written_by_the_kernel_decodes_like_the_torch_writes(transform, tinystories_dir):
    """The TinyStories model at W4A4KV4: K and V written by the kernel (the interpreter here) and by the torch
    path give the same buffers after the prompt and 19 decode steps, so the same tokens and logits."""
    model, ids = w4a4kv4_and_prompt(tinystories_dir, transform)
    length = ids.shape[1] + 24
    fused, torch_writes = (StaticPackedKVCache(model, max_cache_len=length, fused_write=f) for f in (True, False))
    got, want = greedy(model, ids, fused), greedy(model, ids, torch_writes)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for mine, theirs in zip(fused.layers, torch_writes.layers):
        heads, dim = mine.packed_keys.codes.shape[1], 2 * mine.packed_keys.codes.shape[3]
        assert mine._writes_fused(torch.zeros(1, heads, 1, dim), torch.zeros(1, heads, 1, dim))
        assert not mine._writes_fused(torch.zeros(1, heads + 1, 1, dim), torch.zeros(1, heads + 1, 1, dim))
        for a, b in ((mine.packed_keys, theirs.packed_keys), (mine.packed_values, theirs.packed_values)):
            assert all(torch.equal(x, y) for x, y in zip(a.operand, b.operand) if x is not None)


def test_quantizers_the_kernel_cannot_follow_take_the_torch_path():
    assert _PackedTensor(Quantizer(QuantSpec("nvfp", 4), HEAD_DIM)).write_element is None
    assert _PackedTensor(Quantizer(QuantSpec("int", 4, granularity="head", observer="mse"), HEAD_DIM)).write_element is None
    assert _PackedTensor(Quantizer(QuantSpec("int", 4, granularity="head", symmetric=False), HEAD_DIM)).write_element == "uint4"


def test_kernel_refuses_what_it_cannot_write():
    key = value = torch.zeros(1, 2, 1, 64, dtype=torch.bfloat16)
    codes, scale = torch.zeros(1, 2, 8, 32, dtype=torch.uint8), torch.zeros(1, 2, 8, 1)
    good = (codes, scale, None)
    problem = kv_write.kv4_write_problem
    assert problem(key, value, good, good) is None
    assert "K and V must be (B, H, T, D) of one shape" in problem(key, torch.zeros(1, 2, 2, 64), good, good)
    assert "power of two" in problem(torch.zeros(1, 2, 1, 48), torch.zeros(1, 2, 1, 48), good, good)
    assert "codes must be contiguous uint8" in problem(key, value, (codes.float(), scale, None), good)
    assert "scales must be" in problem(key, value, good, (codes, torch.zeros(1, 2, 8, 3), None))
    assert "zero points" in problem(key, value, good, (codes, scale, torch.zeros(1, 2, 8, 2)))
    positions = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="uint4 codes need zero points"):
        kv_write.write_kv4_triton(key, value, positions, good, good, "uint4", "int4", 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown K element 'int8'"):
        kv_write.write_kv4_triton(key, value, positions, good, good, "int8", "int4", 1.0, 1.0)
    with pytest.raises(ValueError, match="the V codes"):
        kv_write.write_kv4_triton(key, value, positions, good, (codes[..., :16], scale, None), "int4", "int4", 1.0, 1.0)


def test_compiled_decode_step_writes_kv_with_the_kernel(tinystories_dir, tmp_path):
    """A loaded W4A4KV4 checkpoint's decode step compiled with the K/V write kernel as an opaque op (mutating the
    cache's buffers): one graph, no breaks, and the tokens of the eager step that writes with torch."""
    from torch._dynamo.utils import counters

    from models.decoding import StaticDecoder
    from test_packed_kv_cache import loaded_w4a4kv4

    model = loaded_w4a4kv4(tinystories_dir, tmp_path)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    eager = StaticDecoder(model, ids, steps=8, kv4=True, fused_write=False)
    want = torch.cat([eager.step().clone() for _ in range(6)], dim=1)
    torch._dynamo.reset()
    counters.clear()
    compiled = StaticDecoder(model, ids, steps=8, kv4=True, compile=True, fused_write=True)
    got = torch.cat([compiled.step().clone() for _ in range(6)], dim=1)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(set(want.flatten().tolist())) > 4
    assert torch.equal(got, want)
    for mine, theirs in zip(compiled.cache.layers, eager.cache.layers):
        assert torch.equal(mine.packed_keys.codes, theirs.packed_keys.codes)
        assert torch.equal(mine.packed_values.zero, theirs.packed_values.zero)


def test_kernel_check_compares_the_kv_write_kernel_with_the_torch_writes(tmp_path, cli):
    done = cli("benchmarks/kernel_check.py", "--cpu_dry_run", "--only", "kv_write", "--out", str(tmp_path / "check"))
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "check.md").read_text().count("| kv_write |") == 3  # one a dtype, all ok
