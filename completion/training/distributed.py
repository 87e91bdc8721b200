"""Distributed training: the process group torchrun describes, each rank's device, and the batch order that
makes N processes with batch B follow the trajectory of one process with batch B*N."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun (or a test) describes in env vars; no-op if WORLD_SIZE <= 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class StepSampler(Sampler[list[int]]):
    """Batches for one rank from `start` on: global batch g = perm[g*B*W : (g+1)*B*W], rank r takes
    [r*B : (r+1)*B] of it. The permutation is seeded by (seed, epoch), wrapped to fill the last batch."""

    def __init__(self, n: int, batch: int, info: DistInfo, seed: int, epoch: int, start: int = 0) -> None:
        self.n, self.batch, self.info, self.seed, self.epoch, self.start = n, batch, info, seed, epoch, start

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n / (self.batch * self.info.world)))

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.batch * self.info.world
        total = self.steps_per_epoch() * gb
        perm = (perm * (total // self.n + 1))[:total]
        for step in range(self.start, self.steps_per_epoch()):
            lo = step * gb + self.info.rank * self.batch
            yield perm[lo : lo + self.batch]


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """torchrun: one GPU per local rank. One process: the device asked for (an explicit cuda:1 stays 1)."""
    if device.type != "cuda":
        return device
    index = info.local_rank if info.world > 1 else device.index
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def global_mean(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Mean over ranks (equal shares of the global batch): what one process on the whole batch logs."""
    if info.world <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world).tolist()
