"""Triton kernel: W4A4 GEMM on packed 4-bit codes, fp32 (or exact int32) accumulation.

out (M, N) = (decode(a) * a_scale) @ (decode(w) * w_scale).T (+ bias). Both operands
arrive packed two codes per byte along K (``quant_layers.packing``); a tile is unpacked in
registers and fed to the tensor cores in a format that holds every 4-bit value exactly
(like ``act_quant``, it calls no ``triton.jit`` function of Triton's standard library):

- int4 x int4: int8 x int8 -> int32 (exact).
- e2m1 on either side: FP8 E4M3 x E4M3 -> fp32. Products are multiples of 1/4 of at
  most 48 in magnitude, so the sums are exact while they stay below 2**22.
- Scale groups of 16 (NVFP4, int4 g16): tensor-core int8/fp8 dots need K >= 32, so a K
  step is 32 wide and takes two dots, each with the other half's codes set to 0 and its
  own scales. One fp16 dot per 16-wide step, the first form, was wrong on the H200.

For up to 8 rows with per-row scales, ``w4a4_gemv`` (CUDA cores, no tensor-core tiles)
takes the product on a GPU. Otherwise a second grid axis splits the K steps at decode-sized
M: each split scales its partial product and adds it atomically into a zeroed fp32 output
(cast to the output dtype after). With per-row scales the decode configs may also swap the
operands (``SWAP_AB``: acc^T = W A^T), so that the unpacked weight is the dot's wide side.

Per-row scales (groups 0) multiply the accumulator once, in the epilogue, and each K step
is two dots, low nibbles times low nibbles and high times high (no register shuffle to
interleave them). Group scales change along K: the K loop then steps through at most one
group of either operand at a time (or two halves of 16, above), unpacks in order, scales
each partial product and adds it to an fp32 accumulator.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .autotuning import RetimingAutotuner, autotune
from .reference import check_matmul_args, check_out, dp4a_bytes
from .tile_loads import _group_scales, _row_globals, group_scale_args
from .w4a4_gemv import _gemv_autotuned, _tc_autotuned, check_gemv_fits, gemv_fits, takes_tensor_cores, w4a4_gemv_triton

# Whether the kernels below were built for the interpreter (decided when triton.jit ran).
INTERPRET = triton.knobs.runtime.interpret
# One small config under the interpreter: tests run many shapes on a CPU.
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=64, GROUP_M=2)
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for Hopper: small-M (decode) tiles
# that stream wide K, and square-ish prefill tiles, for K, N in 576..18944.
GPU_CONFIGS = [
    (16, 32, 256, 4, 4), (16, 64, 256, 4, 4), (16, 128, 128, 4, 4), (32, 64, 256, 4, 4), (32, 128, 128, 4, 4),
    (64, 64, 256, 4, 4), (64, 128, 128, 4, 4), (64, 256, 128, 8, 3), (128, 128, 128, 8, 3),
    (128, 256, 128, 8, 3), (128, 128, 256, 8, 3),
]
# (BLOCK_N, BLOCK_K, SPLIT_K) for decode (M <= DECODE_MAX_M, BLOCK_M 16).
DECODE_CONFIGS = [(32, 256, 2), (32, 256, 4), (32, 256, 8), (64, 256, 2), (64, 256, 4), (64, 256, 8),
                  (64, 128, 4), (64, 128, 8), (128, 128, 2), (128, 128, 4)]
# The same with the operands swapped (per-row scales only): the weight tile is the dot's
# 64/128-row side, which Hopper's wgmma can take from registers, and the 16 activation rows
# the narrow side; the unswapped dot stages every unpacked weight tile through shared memory.
DECODE_SWAP_CONFIGS = [(64, 256, 2), (64, 256, 4), (64, 256, 8), (64, 128, 4), (128, 128, 2), (128, 256, 2)]
DECODE_MAX_M = 16


@triton.jit
def _unpack(packed, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """(ROWS, BLOCK_K // 2) bytes -> (ROWS, BLOCK_K) codes: element 2i low nibble, 2i+1 high."""
    return tl.join(packed & 0xF, packed >> 4).reshape(ROWS, BLOCK_K)


@triton.jit
def code_operand(codes, IS_INT4: tl.constexpr, DOT: tl.constexpr):
    """4-bit codes (uint8 0..15) as an exact dot operand: int8 (DOT 0, INT4 only) or fp8 e4m3 (DOT 1)."""
    # One return: compiled Triton does not stop at a return inside an if.
    if IS_INT4:
        levels = (codes ^ 8).to(tl.int8) - 8  # sign-extend the two's complement nibble
        if DOT == 0:
            operand = levels
        else:
            operand = levels.to(tl.float16).to(tl.float8e4nv)
    else:
        # E2M1 -> E4M3 bits: magnitude 0 -> 0x00, 1 (0.5) -> 0x30, c >= 2 -> 4c + 48; sign -> bit 7.
        magnitude = codes & 7
        bits = tl.where(magnitude < 2, magnitude * 48, magnitude * 4 + 48) | ((codes & 8) << 4)
        operand = bits.to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    return operand


@triton.jit
def _operand(packed, IS_INT4: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr):
    """A tile of packed codes, unpacked along K, as one exact dot operand (ROWS, BLOCK_K)."""
    return code_operand(_unpack(packed, ROWS, BLOCK_K), IS_INT4, DOT)


@triton.jit
def _nibble_operands(packed, IS_INT4: tl.constexpr, DOT: tl.constexpr):
    """The low and the high nibbles of a (ROWS, BYTES) tile as two exact dot operands.

    A dot over K is a sum over K, so pairing the even elements of A with the even ones of
    W and the odd with the odd gives the same result as unpacking in order, without the
    register shuffle that interleaving the nibbles costs.
    """
    return code_operand(packed & 0xF, IS_INT4, DOT), code_operand(packed >> 4, IS_INT4, DOT)


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    """acc + a @ b. Hopper's FP8 wgmma adds into its accumulator with reduced precision:
    promoting to fp32 every 32 products keeps the sums of 4-bit values exact."""
    # One return: compiled Triton does not stop at a return inside an if.
    if DOT == 0:
        out = tl.dot(a, b, acc, out_dtype=tl.int32)
    elif DOT == 1:
        out = tl.dot(a, b, acc, max_num_imprecise_acc=32)
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def _w4a4_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr,
    M, N, K, M_BUCKET, stride_am, stride_wn, stride_asm, stride_wsn, stride_om,
    A_INT4: tl.constexpr, W_INT4: tl.constexpr, A_GROUP: tl.constexpr, W_GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, SWAP_AB: tl.constexpr, w_global_ptr=None,
    W_SCALE_CODE: tl.constexpr = 0,
):
    """W_GROUP > 0: the weight's scales in groups are fp32, or NVFP4's E4M3 bytes times their rows' global scales at
    ``w_global_ptr`` (W_SCALE_CODE 1), or MXFP4's E8M0 bytes (2), decoded as they load (``_group_scales``)."""
    # Grouped ordering: GROUP_M row tiles sweep the columns together, so their weight
    # tiles are reused from L2.
    pid = tl.program_id(0)
    num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    pids_per_group = GROUP_M * num_pid_n
    first_pid_m = (pid // pids_per_group) * GROUP_M
    group_rows = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % pids_per_group) % group_rows
    pid_n = (pid % pids_per_group) // group_rows

    GROUPED: tl.constexpr = A_GROUP > 0 or W_GROUP > 0
    # Scales are constant over SUB_K of K: a whole K step (at least 32), or 16 when a group is an odd multiple
    # of 16 (NVFP4's 16, or 48), and the step then takes one dot per 16 with the rest of its codes zeroed.
    SUB_K: tl.constexpr = 16 if A_GROUP % 32 == 16 or W_GROUP % 32 == 16 else BLOCK_K
    DOT: tl.constexpr = 0 if A_INT4 and W_INT4 else 1  # every dot is at least 32 wide in K
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Split-K (decode): program pid_k takes its share of the K steps and adds its scaled
    # partial product into an fp32 output that starts at zero.
    pid_k = tl.program_id(1)
    k_steps = (K + BLOCK_K - 1) // BLOCK_K
    steps_per_split = (k_steps + SPLIT_K - 1) // SPLIT_K
    first_step = pid_k * steps_per_split
    last_step = min(first_step + steps_per_split, k_steps)
    offs_b = first_step * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_b[None, :]
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_b[None, :]
    k_bytes = K // 2
    ACC_DTYPE: tl.constexpr = tl.int32 if DOT == 0 else tl.float32
    tl.static_assert(not (SWAP_AB and GROUPED), "swapped operands take per-row scales only")
    w_global = _row_globals(w_global_ptr, offs_n, n_ok, W_SCALE_CODE == 1)
    if SWAP_AB:  # acc^T = W A^T
        acc = tl.full((BLOCK_N, BLOCK_M), 0, ACC_DTYPE)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.float32 if GROUPED else ACC_DTYPE)
    for step in range(first_step, last_step):
        b_ok = offs_b < k_bytes - (step - first_step) * (BLOCK_K // 2)
        a_bytes = tl.load(a_ptrs, mask=m_ok[:, None] & b_ok[None, :], other=0)
        w_bytes = tl.load(w_ptrs, mask=n_ok[:, None] & b_ok[None, :], other=0)
        if GROUPED:
            a_codes = _unpack(a_bytes, BLOCK_M, BLOCK_K)
            w_tile = _operand(w_bytes, W_INT4, BLOCK_N, BLOCK_K, DOT)
            for sub in tl.static_range(BLOCK_K // SUB_K):
                if SUB_K < BLOCK_K:  # the step crosses a scale group: the other part's codes as 0 (value 0)
                    in_sub = (tl.arange(0, BLOCK_K) // SUB_K == sub)[None, :]
                    a_tile = code_operand(tl.where(in_sub, a_codes, 0).to(tl.uint8), A_INT4, DOT)
                else:
                    a_tile = code_operand(a_codes, A_INT4, DOT)
                part = _dot(a_tile, tl.trans(w_tile), tl.full((BLOCK_M, BLOCK_N), 0, ACC_DTYPE), DOT).to(tl.float32)
                k0 = step * BLOCK_K + sub * SUB_K
                if A_GROUP > 0:
                    part *= tl.load(a_scale_ptr + offs_m * stride_asm + k0 // A_GROUP,
                                    mask=m_ok & (offs_m * 0 + k0 < K), other=0.0)[:, None]
                if W_GROUP > 0:
                    w_scales = _group_scales(w_scale_ptr, offs_n, k0 // W_GROUP, n_ok & (offs_n * 0 + k0 < K),
                                             stride_wsn, False, W_SCALE_CODE)
                    if W_SCALE_CODE == 1:
                        w_scales *= w_global
                    part *= w_scales[None, :]
                acc += part
        else:
            a_low, a_high = _nibble_operands(a_bytes, A_INT4, DOT)
            w_low, w_high = _nibble_operands(w_bytes, W_INT4, DOT)
            if SWAP_AB:
                acc = _dot(w_low, tl.trans(a_low), acc, DOT)
                acc = _dot(w_high, tl.trans(a_high), acc, DOT)
            else:
                acc = _dot(a_low, tl.trans(w_low), acc, DOT)
                acc = _dot(a_high, tl.trans(w_high), acc, DOT)
        a_ptrs += BLOCK_K // 2
        w_ptrs += BLOCK_K // 2

    out = acc.to(tl.float32)
    if SWAP_AB:
        out = tl.trans(out)
    if A_GROUP == 0:
        out *= tl.load(a_scale_ptr + offs_m * stride_asm, mask=m_ok, other=0.0)[:, None]
    if W_GROUP == 0:
        out *= tl.load(w_scale_ptr + offs_n * stride_wsn, mask=n_ok, other=0.0)[None, :]
    if HAS_BIAS:
        first_split = (pid_k == 0).to(tl.float32)  # the other K splits add no bias
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :] * first_split
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.atomic_add(out_ptrs, out, mask=m_ok[:, None] & n_ok[None, :], sem="relaxed")


def _k_step(block_k: int, a_group: int, w_group: int) -> int:
    """BLOCK_K capped so that a K step crosses no scale group of either operand, or (groups that are odd
    multiples of 16) is 32 wide and crosses one boundary, at its middle, which the kernel splits at.

    Steps of 16, and with them fp16 dots of K = 16, were wrong on the H200 by 500 to 86,000 times
    the rounding bound (``benchmarks/results/kernels_h200.md``), while the interpreter computed
    them exactly: every dot is now at least 32 wide, as in the per-row and MXFP4 paths.
    """
    period = math.gcd(a_group, w_group)  # 0 when neither side has groups
    return min(block_k, max(period & -period, 32)) if period else block_k


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Cap BLOCK_K at the scale period and BLOCK_M at the M bucket; drop duplicates."""
    args = {**named_args, **kwargs}  # the flags arrive as keyword arguments
    kept: dict[tuple, triton.Config] = {}
    for config in configs:
        kw = dict(config.kwargs, BLOCK_K=_k_step(config.kwargs["BLOCK_K"], args["A_GROUP"], args["W_GROUP"]))
        if kw["BLOCK_M"] > max(16, args["M_BUCKET"]) or (kw["SWAP_AB"] and (args["A_GROUP"] or args["W_GROUP"])):
            continue
        key = (tuple(sorted(kw.items())), config.num_warps, config.num_stages)
        kept.setdefault(key, triton.Config(kw, num_warps=config.num_warps, num_stages=config.num_stages))
    return list(kept.values())


def _autotuned(configs: list[triton.Config], **kwargs) -> RetimingAutotuner:
    return autotune(configs=configs, key=["M_BUCKET", "N", "K", "A_INT4", "W_INT4", "A_GROUP", "W_GROUP",
                                         "W_SCALE_CODE"],
                    prune_configs_by=dict(early_config_prune=_prune_configs), **kwargs)(_w4a4_kernel)


_w4a4_autotuned = _autotuned([
    triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, SPLIT_K=1, SWAP_AB=False), num_warps=w,
                  num_stages=s)
    for bm, bn, bk, w, s in GPU_CONFIGS
])
# Decode: a few rows against the whole weight. Without a split, N / BLOCK_N programs (32 to
# 224 for Llama-3-8B) cannot keep enough weight bytes in flight; the K splits add into a
# zeroed fp32 output, which the autotuner zeroes again after its trial runs.
_w4a4_decode_autotuned = _autotuned([
    triton.Config(dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=split, SWAP_AB=swap), num_warps=4,
                  num_stages=4)
    for swap, configs in ((False, DECODE_CONFIGS), (True, DECODE_SWAP_CONFIGS)) for bn, bk, split in configs
], reset_to_zero=["out_ptr"])


def _m_bucket(m: int) -> int:
    """Autotuning key for M: powers of two from 16 to 4096 (decode batches share one)."""
    return min(max(triton.next_power_of_2(m), 16), 4096)


def takes_gemv(m: int, k: int, a_group: int, w_group: int, gemv: bool | None = None,
               w_element: str | None = None) -> bool:
    """Whether ``w4a4_matmul_triton(..., gemv=gemv)`` hands the product to ``w4a4_gemv``; with ``w_element`` (the
    dp4a-byte callers, ``quant_kernels.w4a4_linear``), whether its decode kernels take it (``w4a4_gemv.max_rows``):
    INT4 and E2M1 weights (E2M1 not with ``PTQ_TC_E2M1=0``) up to ``TC_MAX_M`` rows (the tensor-core one), others up to
    ``GEMV_MAX_M``."""
    return bool(gemv) or (gemv is None and not INTERPRET and gemv_fits(m, k, a_group, w_group, w_element))


def autotuner_for(m: int, k: int, a_group: int, w_group: int, gemv: bool | None = None,
                  w_element: str | None = None) -> RetimingAutotuner:
    """The autotuned kernel a GPU call of ``w4a4_matmul_triton`` with these arguments runs (with ``w_element``:
    of ``w4a4_gemv_triton`` on dp4a bytes where ``takes_gemv`` says so, the tensor-core decode kernel included)."""
    if takes_gemv(m, k, a_group, w_group, gemv, w_element):
        return _tc_autotuned if takes_tensor_cores(m, w_element) else _gemv_autotuned
    return _w4a4_decode_autotuned if m <= DECODE_MAX_M else _w4a4_autotuned


def w4a4_matmul_triton(
    a_packed: torch.Tensor, a_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, *,
    a_element: str, w_element: str, a_group: int = 0, w_group: int = 0,
    bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16, out: torch.Tensor | None = None,
    split_k: int = 1, swap_ab: bool = False, gemv: bool | None = None, w_global_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Triton twin of ``reference.w4a4_matmul_ref``; writes into ``out`` (M, N) when given.

    ``gemv``: whether ``w4a4_gemv`` takes the product (True where it cannot is an error);
    None lets it take the products it fits on a GPU (up to ``GEMV_MAX_M`` rows, per-row
    scales). Otherwise, on a GPU, M <= DECODE_MAX_M runs the split-K decode configs (the
    autotuner picks the split and whether the operands swap); ``split_k`` and ``swap_ab``
    (per-row scales only) set them under the interpreter, where the tests run. Weight scales in groups may come as
    NVFP4 and MXFP4 checkpoints encode them (``reference.check_weight_scales``; E4M3 with ``w_global_scale``), read
    so.
    """
    check_matmul_args(a_packed, a_scale, w_packed, w_scale, a_element, w_element, a_group, w_group, bias, out_dtype,
                      w_global_scale)
    if split_k < 1:
        raise ValueError(f"split_k must be a positive number of K splits, got {split_k}")
    if swap_ab and (a_group or w_group):
        raise ValueError(f"swapped operands take per-row scales only, got groups {a_group} and {w_group}")
    m, n, k = a_packed.shape[0], w_packed.shape[0], 2 * a_packed.shape[1]
    if takes_gemv(m, k, a_group, w_group, gemv):
        check_gemv_fits(m, k, a_group, w_group)
        # Packed codes as the decode kernel's bytes (torch operations; w4a4_linear has the activation kernel
        # write them directly).
        return w4a4_gemv_triton(dp4a_bytes(a_packed, a_element, w_element), a_scale, w_packed, w_scale,
                                a_element=a_element, w_element=w_element, bias=bias, out_dtype=out_dtype, out=out)
    check_out(out, m, n, out_dtype)
    split = split_k > 1 if INTERPRET else m <= DECODE_MAX_M
    # Split-K partial products add up in a zeroed fp32 tensor, cast to out_dtype at the end.
    target = torch.zeros((m, n), dtype=torch.float32, device=a_packed.device) if split else (
        out if out is not None else torch.empty((m, n), dtype=out_dtype, device=a_packed.device))
    a_packed, w_packed = a_packed.contiguous(), w_packed.contiguous()
    a_scale = a_scale.float().contiguous()
    weight_scales = group_scale_args(w_scale)  # (fp32 per-row scales: fp32, SCALE_CODE 0)
    w_scale = weight_scales["gscale_ptr"]
    args = (
        a_packed, a_scale, w_packed, w_scale, bias if bias is not None else target, target,  # (no bias: never read)
        m, n, k, _m_bucket(m), a_packed.stride(0), w_packed.stride(0), a_scale.stride(0), w_scale.stride(0),
        target.stride(0),
    )
    flags = dict(A_INT4=a_element == "int4", W_INT4=w_element == "int4", A_GROUP=a_group, W_GROUP=w_group,
                 HAS_BIAS=bias is not None, w_global_ptr=w_global_scale, W_SCALE_CODE=weight_scales["SCALE_CODE"])
    if INTERPRET:
        config = dict(INTERPRET_CONFIG, BLOCK_K=_k_step(INTERPRET_CONFIG["BLOCK_K"], a_group, w_group),
                      SPLIT_K=split_k, SWAP_AB=swap_ab)
        grid = (triton.cdiv(m, config["BLOCK_M"]) * triton.cdiv(n, config["BLOCK_N"]), split_k)
        _w4a4_kernel[grid](*args, **flags, **config)
    else:
        def grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"]

        (_w4a4_decode_autotuned if split else _w4a4_autotuned)[grid](*args, **flags)
    if not split:
        return target
    if out is None:
        return target.to(out_dtype)
    return out.copy_(target)
