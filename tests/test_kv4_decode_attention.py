"""Decode attention that reads a packed KV4 cache's codes: the kernel against its twin (under
``TRITON_INTERPRET=1``), and decode steps of the packed caches routed to it without dequantizing the cache."""

from __future__ import annotations

import os
import re

os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported (see tests/test_kernels.py)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache  # noqa: E402

import quant_kernels.reference as reference  # noqa: E402
from calib.rtn import quantize_weights_rtn  # noqa: E402
from configs.recipe import QuantRecipe  # noqa: E402
from quant_kernels import flash_decode  # noqa: E402
from models.adapter import adapter_for  # noqa: E402
from models.attention import use_grouped_decode_attention  # noqa: E402
from models.decoding import StaticDecoder, cache_kwargs  # noqa: E402
from pipeline.fake_quant import attach_quantizers  # noqa: E402
from quant_layers.packed_kv_cache import PackedKVCache, StaticPackedKVCache, _PackedTensor  # noqa: E402
from quant_layers.quantizer import QuantSpec  # noqa: E402
from transforms import apply_transform  # noqa: E402

INT4_HEAD = QuantSpec("int", 4, granularity="head")
UINT4_HEAD = QuantSpec("int", 4, granularity="head", symmetric=False)


def packed_operand(batch: int, heads_kv: int, length: int, dim: int, element: str, group: int,
                   generator: torch.Generator) -> tuple:
    """Random codes (every byte), positive scales per group, integer zero points for uint4."""
    codes = torch.randint(0, 256, (batch, heads_kv, length, dim // 2), generator=generator, dtype=torch.uint8)
    shape = (batch, heads_kv, length, dim // group)
    scale = torch.rand(shape, generator=generator) * 0.3 + 0.01
    zero = torch.randint(0, 16, shape, generator=generator).float() if element == "uint4" else None
    return codes, scale, zero


def poisoned(operand: tuple, seen: torch.Tensor) -> tuple:
    """The operand with NaN scales and zero points in the slots the mask hides: a kernel that used them would return
    NaN."""
    codes, scale, zero = operand
    hidden = ~seen.reshape(seen.shape[0], 1, -1, 1)
    nan = float("nan")
    return codes, scale.masked_fill(hidden, nan), None if zero is None else zero.masked_fill(hidden, nan)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("batch,heads_kv,groups,dim,length,written,elements,key_group,value_group", [
    (1, 2, 4, 64, 300, [200], ("int4", "uint4"), 64, 64),  # the KV4 benchmark's: per head, V asymmetric; slices
    (3, 2, 1, 32, 70, [70, 5, 33], ("int4", "uint4"), 16, 8),  # per-group scales, rows of different lengths
    (2, 1, 4, 16, 1, None, ("uint4", "int4"), 16, 16),  # one key, no mask
    (2, 3, 4, 64, 129, [1, 129], ("e2m1", "e2m1"), 16, 32),  # FP4 E2M1 (NVFP4's and MXFP4's groups)
])
def test_packed_kernel_equals_dequantize_then_attention(batch, heads_kv, groups, dim, length, written, elements,
                                                        key_group, value_group, dtype, monkeypatch):
    """With ``PTQ_KV4_FACTORED=0`` (the factored form's own test is below) each K and V tile is dequantized as the
    cache does."""
    monkeypatch.setenv("PTQ_KV4_FACTORED", "0")
    g = torch.Generator().manual_seed(length)
    q = torch.randn(batch, heads_kv, groups, dim, generator=g).to(dtype)
    key = packed_operand(batch, heads_kv, length, dim, elements[0], key_group, g)
    value = packed_operand(batch, heads_kv, length, dim, elements[1], value_group, g)
    mask = None
    if written is not None:
        mask = (torch.arange(length)[None, :] < torch.tensor(written)[:, None])[:, None, None, :]
    assert reference.decode_attention_packed_problem(q, key, value, mask, *elements) is None
    got_key, got_value = (key, value) if mask is None else (poisoned(key, mask), poisoned(value, mask))
    got = flash_decode.decode_attention_packed_triton(q, got_key, got_value, mask, dim ** -0.5, *elements)
    assert got.shape == q.shape and got.dtype == dtype and torch.isfinite(got).all()
    if dtype == torch.float32:
        want = reference.decode_attention_packed_ref(q, key, value, mask, dim ** -0.5, *elements)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        return
    # Half queries: K and V rounded to q's dtype as the twin does, then fp32 products (the kernel accumulates in
    # fp32): one rounding of the output apart.
    key_values, value_values = (reference.dequantize_kv(t, e, dtype) for t, e in zip((key, value), elements))
    want = reference.decode_attention_ref(q.float(), key_values.float(), value_values.float(), mask, dim ** -0.5)
    torch.testing.assert_close(got.float(), want, rtol=torch.finfo(dtype).eps, atol=1e-6)
    twin = reference.decode_attention_packed_ref(q, key, value, mask, dim ** -0.5, *elements)
    torch.testing.assert_close(got.float(), twin.float(), rtol=4 * torch.finfo(dtype).eps, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("elements", [("int4", "uint4"), ("uint4", "int4"), ("int4", "int4")])
def test_factored_kernel_is_attention_over_the_exact_dequantized_cache(elements, dtype, monkeypatch):
    """``PTQ_KV4_FACTORED=1``: the codes as the dots' half operands (2^e + level), each key's scale and offset on its
    scores and probabilities. Every byte's codes, per-token scales (and zero points), several slices, hidden slots
    poisoned: within one rounding of the query's dtype of attention over the cache dequantized in fp32, and no
    further from it than the dequantize-then-attention kernel."""
    g = torch.Generator().manual_seed(11)
    batch, heads_kv, groups, dim, length = 2, 2, 4, 64, 300
    q = torch.randn(batch, heads_kv, groups, dim, generator=g).to(dtype)
    key, value = (packed_operand(batch, heads_kv, length, dim, e, dim, g) for e in elements)
    mask = (torch.arange(length)[None, :] < torch.tensor([200, 37])[:, None])[:, None, None, :]
    exact = reference.decode_attention_ref(q.float(), reference.dequantize_kv(key, elements[0], torch.float32),
                                           reference.dequantize_kv(value, elements[1], torch.float32), mask,
                                           dim ** -0.5)
    errors = {}
    for switch in ("0", "1"):
        monkeypatch.setenv("PTQ_KV4_FACTORED", switch)
        got = flash_decode.decode_attention_packed_triton(q, poisoned(key, mask), poisoned(value, mask), mask,
                                                          dim ** -0.5, *elements)
        assert got.dtype == dtype and torch.isfinite(got).all()
        errors[switch] = (got.float() - exact).abs().max().item()
    assert errors["1"] <= torch.finfo(dtype).eps * exact.abs().max().item()
    assert errors["1"] <= errors["0"]


def emulate_ptx(asm: str, word: int) -> list[int]:
    """The outputs $0..$3 of ``flash_decode.pair_words_asm``'s PTX for the input register $4 = ``word``: its shr,
    prmt (selector nibbles picking bytes of {b, a}) and lop3 (bit i of the LUT is F(a, b, c) for i = 4a + 2b + c)."""
    import re

    regs = {"$4": word}

    def value(operand: str) -> int:
        return regs[operand] if operand in regs else int(operand, 16)

    for op, args in re.findall(r"^(shr\.b32|prmt\.b32|lop3\.b32) (.*);$", asm, re.MULTILINE):
        d, *xs = [x.strip() for x in args.split(",")]
        if op == "shr.b32":
            regs[d] = value(xs[0]) >> int(xs[1])
        elif op == "prmt.b32":
            data = value(xs[0]) | value(xs[1]) << 32
            regs[d] = sum(((data >> 8 * ((int(xs[2], 16) >> 4 * i) & 7)) & 0xFF) << 8 * i for i in range(4))
        else:
            a_, b_, c_, lut = (value(x) for x in xs)
            regs[d] = sum(((lut >> (4 * (a_ >> i & 1) + 2 * (b_ >> i & 1) + (c_ >> i & 1))) & 1) << i
                          for i in range(32))
    return [regs[f"${i}"] for i in range(4)]


@pytest.mark.parametrize("magic,signed", [(0x4300, True), (0x4300, False), (0x6400, True), (0x6400, False)])
def test_the_factored_form_s_ptx_gives_the_integer_ops_words(magic, signed):
    """The inline PTX that builds the factored form's half pairs on a GPU (``pair_words_asm``), emulated: every byte,
    in each of a register's four places, gives the word the interpreter's integer ops give (``_offset_codes``)."""
    asm = flash_decode.pair_words_asm(magic, signed)
    bits = (magic << 16 | magic) ^ (0x00080008 if signed else 0)
    for byte in range(256):
        word = byte | (byte ^ 0x5A) << 8 | (255 - byte) << 16 | (byte * 7 & 0xFF) << 24
        want = [((b | b << 12) & 0x000F000F) ^ bits for b in word.to_bytes(4, "little")]
        assert emulate_ptx(asm, word) == want


def test_the_factored_form_takes_per_token_integer_codes_and_half_queries(monkeypatch):
    """``flash_decode.factored``: by default or with the switch at 1, for INT4 / UINT4 K and V with one scale per
    token and a bfloat16 or float16 query; off with the switch at 0; a switch value other than 0 or 1 is refused."""
    per_token = (None, None, flash_decode.ELEMENT_IDS["int4"], 64, False)
    zero_points = (None, None, flash_decode.ELEMENT_IDS["uint4"], 64, True)
    monkeypatch.delenv("PTQ_KV4_FACTORED", raising=False)
    assert flash_decode.factored(torch.bfloat16, 64, per_token, zero_points)
    monkeypatch.setenv("PTQ_KV4_FACTORED", "0")
    assert not flash_decode.factored(torch.bfloat16, 64, per_token, zero_points)
    monkeypatch.setenv("PTQ_KV4_FACTORED", "1")
    assert flash_decode.factored(torch.bfloat16, 64, per_token, zero_points)
    assert flash_decode.factored(torch.float16, 64, zero_points, per_token)
    assert not flash_decode.factored(torch.float32, 64, per_token, zero_points)
    assert not flash_decode.factored(torch.bfloat16, 64, per_token, (None, None, 1, 32, True))  # groups of 32
    e2m1 = (None, None, flash_decode.ELEMENT_IDS["e2m1"], 64, False)
    assert not flash_decode.factored(torch.bfloat16, 64, per_token, e2m1)
    monkeypatch.setenv("PTQ_KV4_FACTORED", "yes")
    with pytest.raises(ValueError, match="PTQ_KV4_FACTORED='yes'"):
        flash_decode.factored(torch.bfloat16, 64, per_token, zero_points)


@pytest.mark.parametrize("tile", ["16x1x1", "128x8x4x96"])
@pytest.mark.parametrize("switch", ["0", "1"])
def test_the_partial_kernel_s_tile_changes_no_result(tile, switch, monkeypatch):
    """``PTQ_ATTENTION_TILE``: with fewer or more keys a step (and other warps, stages and register caps, which the
    interpreter ignores) both packed forms stay within the same bound of attention over the cache dequantized in
    fp32, hidden slots poisoned; the slices are whole tiles of the new size."""
    g = torch.Generator().manual_seed(5)
    batch, heads_kv, groups, dim, length = 2, 2, 4, 64, 300
    q = torch.randn(batch, heads_kv, groups, dim, generator=g).to(torch.bfloat16)
    key, value = (packed_operand(batch, heads_kv, length, dim, e, dim, g) for e in ("int4", "uint4"))
    mask = (torch.arange(length)[None, :] < torch.tensor([290, 21])[:, None])[:, None, None, :]
    exact = reference.decode_attention_ref(q.float(), reference.dequantize_kv(key, "int4", torch.float32),
                                           reference.dequantize_kv(value, "uint4", torch.float32), mask, dim ** -0.5)
    monkeypatch.setenv("PTQ_KV4_FACTORED", switch)
    monkeypatch.setenv(flash_decode.TILE_ENV, tile)
    got = flash_decode.decode_attention_packed_triton(q, poisoned(key, mask), poisoned(value, mask), mask,
                                                      dim ** -0.5, "int4", "uint4")
    assert torch.isfinite(got).all()
    assert (got.float() - exact).abs().max() <= 2 * torch.finfo(torch.bfloat16).eps * exact.abs().max()
    keys = flash_decode.parse_tile(tile).keys
    split_len, n_splits = flash_decode._splits(length, batch * heads_kv, torch.device("cpu"), True, keys)
    assert split_len % keys == 0 and (n_splits - 1) * split_len < length <= n_splits * split_len


def test_the_partial_kernel_s_tile_by_default_and_from_the_environment(monkeypatch):
    """``flash_decode.partial_tile``: 32 keys, 4 warps, 3 stages over a bf16 cache; 64 keys capped at 128 registers
    over a packed one, but for the factored form's one-warp tile once its slices give each SM 3 programs (the CPU
    stands in 4 SMs: 12 programs; at 4 programs an SM of 32 keys, one pair's 300 keys split in 10 slices and 2306 in
    15, 5 pairs' 64 in 2 (10 programs) and 6 pairs' in 2 (12), 8 pairs' 300 in 2); the switch's tile otherwise, each
    bad field named with what is allowed."""
    monkeypatch.delenv(flash_decode.TILE_ENV, raising=False)
    monkeypatch.delenv("PTQ_ATTENTION_PROGRAMS_PER_SM", raising=False)
    cpu = torch.device("cpu")
    assert str(flash_decode.partial_tile(False, False, 1, 300, cpu)) == "32x4x3"
    assert str(flash_decode.partial_tile(True, False, 64, 300, cpu)) == "64x4x3x128"
    assert flash_decode.partial_tile(True, False, 1, 300, cpu).launch_options() == dict(
        BLOCK_N=64, num_warps=4, num_stages=3, maxnreg=128)
    for pairs, length, one_warp in ((1, 300, False), (1, 2306, True), (5, 64, False), (6, 64, True), (8, 300, True)):
        tile = flash_decode.partial_tile(True, True, pairs, length, cpu)
        assert tile == (flash_decode.ONE_WARP_TILE if one_warp else flash_decode.PACKED_TILE), (pairs, length)
    assert str(flash_decode.ONE_WARP_TILE) == "32x1x3"
    monkeypatch.setenv(flash_decode.TILE_ENV, "128x8x2")
    assert flash_decode.partial_tile(True, True, 8, 300, cpu) == flash_decode.PartialTile(128, 8, 2, 0)
    assert "maxnreg" not in flash_decode.partial_tile(True, False, 1, 300, cpu).launch_options()
    for text, message in (("64x4", "set KEYSxWARPSxSTAGES or KEYSxWARPSxSTAGESxMAXNREG"),
                          ("64x4x3x128x1", "set KEYSxWARPSxSTAGES"), ("64x-4x3", "set KEYSxWARPSxSTAGES"),
                          ("8x4x3", "keys 8 (allowed: 16, 32, 64, 128 or 256"), ("64x3x3", "warps 3"),
                          ("64x4x0", "stages 0 (allowed: 1 to 8)"), ("64x4x3x16", "maxnreg 16 (allowed: 0 for none"),
                          ("100x4x9", "keys 100 (allowed: 16, 32, 64, 128 or 256: the dots take 16 or more); "
                                      "stages 9")):
        monkeypatch.setenv(flash_decode.TILE_ENV, text)
        with pytest.raises(ValueError, match=re.escape(f"PTQ_ATTENTION_TILE={text!r}: ") + ".*" + re.escape(message)):
            flash_decode.partial_tile(False, False, 1, 300, torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("element,group", [("int4", 16), ("uint4", 32), ("e2m1", 8)])
def test_one_visible_key_gives_its_value_dequantized_bit_for_bit(element, group, dtype):
    """Softmax over one key is 1: the output is that key's value exactly as the cache dequantizes it."""
    g = torch.Generator().manual_seed(group)
    q = torch.randn(1, 2, 3, 32, generator=g).to(dtype)
    key, value = (packed_operand(1, 2, 80, 32, element, group, g) for _ in range(2))
    mask = torch.zeros(1, 1, 1, 80, dtype=torch.bool)
    mask[..., 70] = True
    got = flash_decode.decode_attention_packed_triton(q, key, value, mask, 0.1, element, element)
    want = reference.dequantize_kv(value, element, dtype)[:, :, 70:71].expand_as(got)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("element,dp4a_for,norm,batch,fp8_codes", [
    ("int4", "int4", False, 1, False), ("e2m1", "e2m1", False, 3, False), ("int4", "e2m1", True, 2, False),
    ("e2m1", "int4", True, 2, True), ("e2m1", "int4", False, 1, True)])
def test_combining_kernel_s_tail_quantizes_the_output_rows(element, dp4a_for, norm, batch, fp8_codes, dtype):
    """``norm_tail`` (o_proj's input at decode; with an RMSNorm weight too): the output equals the kernel's without
    it bit for bit, and the last program's dp4a bytes and scales equal the activation kernel's for those (B, H * D)
    rows (packed K and V, and plain), E4M3 planes (``fp8_codes``) the activation kernel's own launch after it; the
    twins' equal the reference quantizer's of their own output."""
    import quant_kernels
    from quant_kernels.w4a4_gemv import split_k_buffer

    g = torch.Generator().manual_seed(batch)
    heads_kv, groups, dim, length = 2, 4, 32, 90
    q = torch.randn(batch, heads_kv, groups, dim, generator=g).to(dtype)
    key = packed_operand(batch, heads_kv, length, dim, "int4", 32, g)
    value = packed_operand(batch, heads_kv, length, dim, "uint4", 16, g)
    mask = (torch.arange(length)[None, :] < torch.arange(length - batch + 1, length + 1)[:, None])[:, None, None, :]
    weight = (torch.rand(heads_kv * groups * dim, generator=g) + 0.5).to(dtype) if norm else None
    tail = reference.NormTail(weight, 1e-5, element, 0.9, dp4a_for, fp8_codes)
    values = [reference.dequantize_kv(t, e, dtype) for t, e in ((key, "int4"), (value, "uint4"))]
    calls = [(quant_kernels.decode_attention_packed, (q, key, value, mask), dict(key_element="int4",
                                                                                value_element="uint4")),
             (quant_kernels.decode_attention, (q, *values, mask), {})]
    for attention, args, kwargs in calls:
        plain = attention(*args, backend="triton", **kwargs)
        out, codes, scales = attention(*args, norm_tail=tail, backend="triton", **kwargs)
        rows = out.reshape(batch, -1)
        if norm:
            want_codes, want_scales, _ = quant_kernels.rms_norm_quantize(rows, weight, 1e-5, element, 0.9,
                                                                         dp4a_for=dp4a_for, fp8_codes=fp8_codes,
                                                                         backend="triton")
        else:
            want_codes, want_scales = quant_kernels.quantize_activations(rows, element, 0, "float", 0.9,
                                                                         fp8_codes=fp8_codes, dp4a_for=dp4a_for,
                                                                         backend="triton")
        assert torch.equal(out, plain) and codes.shape == (batch, heads_kv * groups * dim)
        assert codes.dtype == want_codes.dtype and torch.equal(codes.float(), want_codes.float())
        assert torch.equal(scales, want_scales)
        assert split_k_buffer(out.device, batch, codes.shape[1])[1][0] == 0  # the counter, back at zero
        twin, twin_codes, twin_scales = attention(*args, norm_tail=tail, backend="torch", **kwargs)
        want = reference.norm_tail_ref(twin.reshape(batch, -1), tail)
        assert torch.equal(twin_codes.float(), want[0].float()) and torch.equal(twin_scales, want[1])


def test_combining_kernel_s_tail_refuses_what_it_cannot_quantize():
    import quant_kernels

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 4, 32, generator=g)
    key = packed_operand(1, 2, 10, 32, "int4", 32, g)
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match="element 'int4' or 'e2m1', got 'int8'"):
            quant_kernels.decode_attention_packed(q, key, key, key_element="int4", value_element="int4",
                                                  norm_tail=reference.NormTail(None, 0.0, "int8", 1.0, "int4"),
                                                  backend=backend)
        with pytest.raises(ValueError, match="unknown 4-bit element 'e4m3'"):  # dp4a bytes for no such weights
            quant_kernels.decode_attention_packed(q, key, key, key_element="int4", value_element="int4",
                                                  norm_tail=reference.NormTail(None, 0.0, "int4", 1.0, "e4m3"),
                                                  backend=backend)
        with pytest.raises(ValueError, match="RMSNorm weight must be a \\(256,\\) tensor"):
            quant_kernels.decode_attention_packed(q, key, key, key_element="int4", value_element="int4",
                                                  norm_tail=reference.NormTail(torch.ones(32), 1e-5, "int4", 1.0,
                                                                               "int4"), backend=backend)


@pytest.mark.parametrize("change,message", [
    (dict(key_element="int8"), "unknown packed key element"),
    (dict(key_scale=torch.ones(1, 2, 10, 3)), "group dividing D=32"),
    (dict(value_codes=torch.zeros(1, 2, 9, 16, dtype=torch.uint8)), "packed value codes must be uint8"),
    (dict(value_zero=torch.zeros(1, 2, 10, 2)), "zero points must be float and shaped as the scales"),
    (dict(mask=torch.ones(1, 1, 1, 9, dtype=torch.bool)), "boolean mask"),
])
def test_bad_packed_operands_are_named(change, message):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 4, 32, generator=g)
    key_codes, key_scale, _ = packed_operand(1, 2, 10, 32, "int4", 32, g)
    value_codes, value_scale, value_zero = packed_operand(1, 2, 10, 32, "uint4", 32, g)
    key = (key_codes, change.get("key_scale", key_scale), None)
    value = (change.get("value_codes", value_codes), value_scale, change.get("value_zero", value_zero))
    problem = reference.decode_attention_packed_problem(q, key, value, change.get("mask"),
                                                        change.get("key_element", "int4"), "uint4")
    assert problem is not None and message in problem


def test_packed_attention_refuses_a_bad_query():
    g = torch.Generator().manual_seed(0)
    key = packed_operand(1, 2, 10, 24, "int4", 24, g)
    problem = reference.decode_attention_packed_problem(torch.randn(1, 2, 4, 24), key, key, None, "int4", "int4")
    assert problem is not None and "power-of-two head dim of at least 16, got 24" in problem
    key = packed_operand(1, 2, 10, 32, "int4", 32, g)
    problem = reference.decode_attention_packed_problem(torch.ones(1, 2, 4, 32, dtype=torch.int32), key, key, None,
                                                        "int4", "int4")
    assert problem is not None and "q must be a (B, Hkv, G, D) float16, bfloat16 or float32 tensor" in problem


def test_public_packed_attention_checks_then_dispatches():
    import quant_kernels

    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 4, 32, generator=g)
    key = packed_operand(1, 2, 10, 32, "int4", 32, g)
    value = packed_operand(1, 2, 10, 32, "uint4", 16, g)
    with pytest.raises(ValueError, match="unknown packed value element 'int8'"):
        quant_kernels.decode_attention_packed(q, key, value, key_element="int4", value_element="int8")
    got = quant_kernels.decode_attention_packed(q, key, value, key_element="int4", value_element="uint4",
                                                backend="torch")
    want = reference.decode_attention_packed_ref(q, key, value, None, 32 ** -0.5, "int4", "uint4")
    assert torch.equal(got, want)


def kv4_model(path: str, key: QuantSpec, value: QuantSpec, transform: str = "identity"):
    """The TinyStories model at W4A4 with K/V quantized, on the grouped decode attention (as a loaded checkpoint)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert use_grouped_decode_attention(model)
    adapter = adapter_for(model.config)
    recipe = QuantRecipe(weight=QuantSpec("int", 4, granularity="channel"),
                         activation=QuantSpec("int", 4, granularity="token"), key=key, value=value, transform=transform)
    apply_transform(model, adapter, recipe.transform, seed=0)
    attach_quantizers(model, adapter, recipe)
    quantize_weights_rtn(model)
    return model


@torch.no_grad()
def greedy_logits(model, ids: torch.Tensor, cache, steps: int) -> torch.Tensor:
    """(batch, 1 + steps, vocab): the prefill's last logits, then those of ``steps`` greedy single-token steps."""
    logits = [model(ids, **cache_kwargs(model, cache), cache_position=torch.arange(ids.shape[1])).logits[:, -1]]
    for step in range(steps):
        token = logits[-1].argmax(-1, keepdim=True)
        position = torch.tensor([ids.shape[1] + step])
        logits.append(model(token, **cache_kwargs(model, cache), cache_position=position).logits[:, -1])
    return torch.stack(logits, 1)


def assert_same_decode(got: torch.Tensor, want: torch.Tensor) -> None:
    assert torch.equal(got.argmax(-1), want.argmax(-1))  # token by token
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def count_dequantizations(monkeypatch) -> list:
    """Record every ``_PackedTensor.dequantized`` call (the full-cache dequantization)."""
    calls = []
    dequantized = _PackedTensor.dequantized
    monkeypatch.setattr(_PackedTensor, "dequantized", lambda self, dtype: calls.append(1) or dequantized(self, dtype))
    return calls


def run_the_kernel(monkeypatch) -> list:
    """Make the CPU decode op run the Triton kernel (interpreted) instead of its SDPA twin; record its calls."""
    calls = []

    def kernel(*args):
        calls.append(1)
        return flash_decode.decode_attention_packed_triton(*args)

    monkeypatch.setattr(reference, "decode_attention_packed_ref", kernel)
    return calls


@pytest.mark.parametrize("key,value,transform", [
    (INT4_HEAD, UINT4_HEAD, "identity"),  # the KV4 benchmark's
    (INT4_HEAD, UINT4_HEAD, "hadamard"),  # Q rotated online, K cached rotated
    (QuantSpec("fp", 4, exp_bits=2, granularity="head"), QuantSpec("int", 4, granularity="group", group_size=8,
                                                                   symmetric=False), "identity"),
], ids=["int4-head", "int4-head-hadamard", "e2m1-head-uint4-g8"])
def test_static_packed_decode_reads_codes_and_equals_fake_quantized_decode(key, value, transform, tinystories_dir,
                                                                           monkeypatch):
    model = kv4_model(tinystories_dir, key, value, transform)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4))
    steps, length = 4, ids.shape[1] + 7
    want = greedy_logits(model, ids, StaticCache(config=model.config, max_cache_len=length), steps)
    dequantizations, kernel_calls = count_dequantizations(monkeypatch), run_the_kernel(monkeypatch)
    got = greedy_logits(model, ids, StaticPackedKVCache(model, max_cache_len=length), steps)
    assert_same_decode(got, want)
    layers = model.config.num_hidden_layers
    assert len(dequantizations) == 2 * layers  # K and V of the prefill only
    assert len(kernel_calls) == steps * layers


def test_growing_packed_cache_decode_reads_codes_too(tinystories_dir, monkeypatch):
    model = kv4_model(tinystories_dir, INT4_HEAD, UINT4_HEAD)
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(5))
    want = greedy_logits(model, ids, DynamicCache(config=model.config), 5)
    dequantizations, kernel_calls = count_dequantizations(monkeypatch), run_the_kernel(monkeypatch)
    got = greedy_logits(model, ids, PackedKVCache(model), 5)
    assert_same_decode(got, want)
    assert len(dequantizations) == 2 * model.config.num_hidden_layers and kernel_calls


def test_nvfp4_kv_decodes_as_through_the_dequantized_cache(tinystories_dir, monkeypatch):
    """NVFP4 K/V: the cache stores each block's scale decoded (E4M3 times the chunk's fp32 tensor scale), so the
    kernel reads them as E2M1 in groups of 16; the logits are those of the same cache dequantized."""
    nvfp4 = QuantSpec("nvfp", 4)
    model = kv4_model(tinystories_dir, nvfp4, nvfp4)
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(8))
    dequantized_cache = StaticPackedKVCache(model, max_cache_len=16)
    for layer in dequantized_cache.layers:
        layer.packed_keys.kernel_element = None  # as if the kernel could not read it: the path before
    want = greedy_logits(model, ids, dequantized_cache, 4)
    kernel_calls = run_the_kernel(monkeypatch)
    got = greedy_logits(model, ids, StaticPackedKVCache(model, max_cache_len=16), 4)
    assert_same_decode(got, want)
    assert len(kernel_calls) == 4 * model.config.num_hidden_layers


def test_elements_the_kernel_cannot_read_keep_the_dequantized_path(tinystories_dir, monkeypatch):
    """FP4 E3M0 K/V: the cache hands attention dequantized K/V on every step, as before."""
    e3m0 = QuantSpec("fp", 4, exp_bits=3, granularity="head")
    model = kv4_model(tinystories_dir, e3m0, e3m0)
    ids = torch.randint(0, model.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(6))
    want = greedy_logits(model, ids, StaticCache(config=model.config, max_cache_len=12), 3)
    dequantizations, kernel_calls = count_dequantizations(monkeypatch), run_the_kernel(monkeypatch)
    got = greedy_logits(model, ids, StaticPackedKVCache(model, max_cache_len=12), 3)
    assert_same_decode(got, want)
    assert len(dequantizations) == 2 * model.config.num_hidden_layers * 4 and not kernel_calls


def test_a_compiled_decode_step_is_one_graph_on_the_packed_op(tinystories_dir):
    """Under ``torch.compile`` the decode step traces to one graph holding one packed decode-attention op per
    layer (the cache is not dequantized in it), with the eager step's logits."""
    model = kv4_model(tinystories_dir, INT4_HEAD, UINT4_HEAD)
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(7))
    eager, compiled = StaticDecoder(model, ids, steps=3, kv4=True), StaticDecoder(model, ids, steps=3, kv4=True)
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module.code)
        return graph_module.forward

    torch._dynamo.reset()
    step = torch.compile(lambda decoder: decoder.model(decoder.token, **decoder.cache_kwargs,
                                                        cache_position=decoder.position).logits,
                         backend=record, fullgraph=True)
    with torch.no_grad():
        got = step(compiled)
        want = eager.model(eager.token, **eager.cache_kwargs, cache_position=eager.position).logits
    assert len(graphs) == 1
    assert graphs[0].count("ptq.decode_attention_packed") == model.config.num_hidden_layers
    assert "ptq.decode_attention.default" not in graphs[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
