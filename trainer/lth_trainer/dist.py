"""Where the level runs: rank, world size and device, from the env torchrun sets.

torchrun (and the Kubeflow training operator through its PET_* variables, which
torchrun reads) exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT. Without them this is one process, and no process group is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Platform:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them at
        the start of each forward pass only, so after the last step each rank holds its own;
        evaluation and saving must see the model that is saved (rank 0's)."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all ranks (float64, so counts stay exact)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]


def start() -> Platform:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Platform(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def stop(platform: Platform) -> None:
    if platform.distributed and dist.is_initialized():
        dist.destroy_process_group()
