"""This process's place among torchrun's processes, and the collective operations training uses."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass
class Distributed:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper the forward passes go through

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> "Distributed":
        import os

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks; gradients flow back to each rank's own rows (summed over ranks)."""
        if self.world_size == 1:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor))

    def wrap(self, model, device: str) -> None:
        """Puts the model under DistributedDataParallel (several processes only): gradients are
        averaged over ranks bucket by bucket while the backward pass still runs."""
        if self.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(model, device_ids=[self.local_rank] if device.startswith("cuda") else None,
                                           broadcast_buffers=False)

    def no_sync(self):
        """Gradient accumulation without an all-reduce (every backward pass of a step but the last)."""
        return self.ddp.no_sync() if self.ddp is not None else nullcontext()

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
