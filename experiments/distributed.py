"""Sharding a run over processes started by ``torchrun`` (one per GPU, or CPU processes).

Batches are dealt round-robin: in each round rank r generates the r-th pending batch, then
rank 0 gathers the round's results and writes them. Each batch's generator is seeded by
(seed, num_steps, batch index), so ranks draw distinct samples and the run's samples do not
depend on how many processes made them. Object collectives go over gloo, which carries CPU
tensors on any machine.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


class Group:
    """This process's place in the run (a group of one without torchrun)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self._owned = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self._owned and dist.is_initialized():
            dist.destroy_process_group()
