"""The few ``torch.distributed`` operations a sharded bank build needs, and nothing when run in one process.

Plain ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU): the process group is taken if the
caller initialised one, else created from torchrun's environment (``WORLD_SIZE`` > 1) and destroyed by
:meth:`Dist.close`. With one process every collective is the identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["Dist", "current_rank"]


def current_rank() -> int:
    """This process's distributed rank: the process group's, else torchrun's ``RANK`` (inherited by DataLoader
    workers, which may not see the group), else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class Dist:
    """rank / world size of a torch.distributed run (or of one process), with the few collectives we use."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist, self.created = dist, False
        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        if dist.is_available() and not dist.is_initialized() and env_world > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self.created = True
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        nccl = self.active and dist.get_backend() == "nccl"
        self.comm_device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def gather(self, obj: Any) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def sum(self, value: int) -> int:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.comm_device)
        self.dist.all_reduce(t)
        return int(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.created:
            self.dist.barrier()
            self.dist.destroy_process_group()
