"""torchrun: this process's rank and the world size, and a barrier (no-ops in a single process)."""
from __future__ import annotations

import os

import torch.distributed as dist



def rank_and_world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return rank, world


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
