"""Process-group setup for ``torchrun`` and the sampler that makes data order resumable.

Run any training command under ``torchrun --nproc_per_node N`` and it becomes data-parallel: gloo on
CPU, NCCL on GPU. Without torchrun everything runs in one process with no process group.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (a no-op without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        # a process that exits with a live group can abort in gloo's threads ("terminate called
        # without an active exception"), which makes torchrun fail the whole run
        atexit.register(dist.destroy_process_group)
    return info


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``requested`` ('auto': this process's CUDA device if there is one, else the CPU). A CUDA device the
    machine lacks is refused here: else the first tensor moved there fails deep inside torch."""
    if requested == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"unknown device {requested!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {requested!r}: torch finds no CUDA device on this machine; use 'cpu'")
        if (device.index or 0) >= count:
            raise ValueError(
                f"device {requested!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return device


def setup(requested: str = "auto") -> tuple[torch.device, DistInfo]:
    """This process's device and the process group torchrun describes, joined now. Commands call it
    before building a model whose layers sync over ranks when built in a group (the codec's codebooks)."""
    device = pick_device(requested, int(os.environ.get("LOCAL_RANK", "0")))
    return device, init_distributed(device)


def barrier() -> None:
    """Wait for every rank (a no-op in one process): between phases that read what others wrote."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class StreamSampler(torch.utils.data.Sampler[int]):
    """An endless, seeded stream of sample keys, sharded over ranks, that can start at any position.

    The global stream is the concatenation of one shuffled permutation per epoch; position ``p`` of it
    goes to rank ``p % world_size``. Each yielded *key* is ``epoch * n + index``: datasets take
    ``key % len(dataset)`` as the item and may seed their randomness (random crops) with the key, so
    that a resumed run sees exactly the samples, and the crops, that an uninterrupted run would have.
    Because positions interleave across ranks, N ranks with per-rank batch b see the same global batch
    as one process with batch N*b.
    """

    def __init__(self, num_items: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.start = start  # global position of the first sample of this stream

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        while True:
            epoch, offset = divmod(position, self.num_items)
            order = self._permutation(epoch)
            while offset < self.num_items:
                yield epoch * self.num_items + int(order[offset])
                position += self.world_size
                offset += self.world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=generator)


def all_ranks(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank: for a decision that every rank must take alike (to stop, a batch
    size), or the ranks that differ deadlock at the next collective."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / info.world_size for k, v in zip(keys, tensor.tolist())}
