"""Data parallelism: who this process is in a ``torchrun`` job, and joining its process group.

``torchrun --nproc_per_node=N -m gptlib.train ...`` starts N copies of the training script
with WORLD_SIZE/RANK/LOCAL_RANK in their environment; :func:`setup_distributed` reads them and
joins the group (NCCL between GPUs, gloo on the CPU, so it is testable on a laptop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed"]


@dataclass
class DistInfo:
    """Who we are in a data-parallel run (world_size 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # did train() create the process group (so must destroy it)?

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_hint: str | None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in WORLD_SIZE/RANK/LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (
            device_hint is None or device_hint.startswith("cuda")
        )
        # NCCL moves CUDA tensors between GPUs directly; gloo is the CPU fallback.
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, owns_group=owns)
