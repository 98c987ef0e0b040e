"""Data-parallel calibration under torchrun: process group, each rank's device and windows, reductions.

``torchrun --nproc_per_node N model_quant.py ...`` starts N copies of a driver; each joins
one process group (NCCL when the ranks calibrate on CUDA, gloo otherwise), takes
``cuda:LOCAL_RANK`` and every N-th calibration window (``Shard``), and the layer-by-layer
runner sums what the windows contribute (GPTQ Hessians, FlatQuant gradients) across ranks.
Rank 0 writes every file.

Without torchrun, or with one process, no process group exists and every helper here is
the identity: a single process behaves exactly as it did before this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(use_cuda: bool) -> None:
    """Join torchrun's process group: NCCL on ``cuda:LOCAL_RANK`` when ``use_cuda``, else gloo.

    A no-op for one process or when already joined. NVLink multicast (NVLS) stays off unless
    the environment says otherwise: it needs a fabric setup many hosts lack, and all-reducing
    Hessians gains nothing from it.
    """
    if launched_world_size() <= 1 or dist.is_initialized():
        return
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={launched_world_size()} is set but {', '.join(missing)} are not: start the "
                         f"processes with torchrun (torchrun --nproc_per_node N model_quant.py ...)")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if use_cuda:
        local, visible = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= visible:
            raise ValueError(f"local rank {local} needs cuda:{local}, but {visible} GPUs are visible: start at most "
                             f"{visible} processes per node (torchrun --nproc_per_node {visible})")
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and results (rank 0, or the only process)."""
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this rank calibrates on: ``cuda:LOCAL_RANK`` for a CUDA run of several ranks."""
    if world_size() == 1 or device.type != "cuda":
        return device
    local = int(os.environ["LOCAL_RANK"])
    if device.index is not None and device.index != local:
        raise ValueError(f"--device {device} under torchrun: each rank uses cuda:LOCAL_RANK (here cuda:{local}); "
                         f"pass --device cuda or auto")
    return torch.device("cuda", local)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or ``"max"``) ``tensor`` over all ranks, in place; returns it. Identity for one process."""
    if world_size() == 1:
        return tensor
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    comm = _comm_device()
    if tensor.device == comm:
        dist.all_reduce(tensor, reduce_op)
    else:  # e.g. a CPU tensor under NCCL
        buffer = tensor.to(comm)
        dist.all_reduce(buffer, reduce_op)
        tensor.copy_(buffer)
    return tensor


def all_reduce_int(value: int) -> int:
    """The sum of ``value`` over all ranks."""
    if world_size() == 1:
        return value
    return int(all_reduce_(torch.tensor([value], dtype=torch.int64, device=_comm_device())).item())


def weighted_mean_(tensor: torch.Tensor, weight: int) -> int:
    """Turn each rank's mean over ``weight`` items into the mean over every rank's items, in place.

    Returns the total weight. ``sum_r (n_r / N) mean_r`` is the mean a single process would
    compute over all ``N`` items, up to the order of the float additions.
    """
    total = all_reduce_int(weight)
    if world_size() > 1 and total > 0:
        all_reduce_(tensor.mul_(weight / total))
    return total


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` with rank 0's, in place (every rank must hold one of the same shape)."""
    if world_size() == 1:
        return tensor
    comm = _comm_device()
    if tensor.device == comm:
        dist.broadcast(tensor, src=0)
    else:
        buffer = tensor.to(comm)
        dist.broadcast(buffer, src=0)
        tensor.copy_(buffer)
    return tensor


@dataclass(frozen=True)
class Shard:
    """The calibration windows one rank holds: every ``world``-th of ``total``, from ``rank`` on.

    Strided rather than contiguous so that a run of consecutive windows (one FlatQuant
    step of ``--cali_bsz``) spreads over all ranks. Uneven splits are fine: every sum is
    weighted by the windows each rank actually holds.
    """

    total: int
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")
        if self.total < self.world:
            raise ValueError(f"{self.total} calibration windows cannot be split over {self.world} ranks: pass "
                             f"--nsamples {self.world} or more, or start fewer processes")

    @property
    def size(self) -> int:
        return len(range(self.rank, self.total, self.world))

    def take(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``items`` (one row per window, all ``total`` of them)."""
        if items.shape[0] != self.total:
            raise ValueError(f"expected {self.total} windows, got {items.shape[0]}")
        return items[self.rank :: self.world]

    def local(self, start: int, end: int) -> tuple[int, int]:
        """The local index range of this rank's windows among global windows ``start:end``."""
        return -((self.rank - start) // self.world), -((self.rank - end) // self.world)


def shard(total: int) -> Shard:
    """This rank's share of ``total`` calibration windows."""
    return Shard(total, rank(), world_size())
