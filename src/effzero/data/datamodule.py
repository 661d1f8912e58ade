"""The LightningDataModule: owns one rank's pipeline and checkpoints its replay."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from effzero.config import TrainConfig
from effzero.data.lockstep import LockstepPipeline
from effzero.data.pipeline import BatchStream, Pipeline, RankInfo
from effzero.envs import EnvSpec


def rank_worker_device(setting: str, learner: torch.device) -> str:
    """This rank's `data.worker_device`: a bare `cuda` is the learner's GPU when it has one.

    Under DDP each rank's learner has its own GPU (`cuda:<local rank>`); a bare `cuda` would
    put every rank's workers on GPU 0.
    """
    if setting == "cuda" and learner.type == "cuda":
        return str(learner)
    return setting


class ReplayDataModule(L.LightningDataModule):
    """Streams reanalysed batches from background workers; its state is the replay.

    The agent (the LightningModule) publishes weights and priorities through `pipeline`.
    """

    def __init__(self, run: TrainConfig, spec: EnvSpec):
        super().__init__()
        self.run, self.spec = run, spec
        self.pipeline: Pipeline | None = None

    def setup(self, stage: str) -> None:
        if self.pipeline is not None or stage != "fit":
            return
        agent = self.trainer.lightning_module
        rank = RankInfo(self.trainer.global_rank, self.trainer.world_size)
        device = rank_worker_device(self.run.data.worker_device, self.trainer.strategy.root_device)
        run = replace(self.run, data=replace(self.run.data, worker_device=device))
        kind = LockstepPipeline if run.data.synchronous else Pipeline
        self.pipeline = kind(run, self.spec, agent.model, rank)

    def train_dataloader(self) -> DataLoader:
        agent = self.trainer.lightning_module
        return DataLoader(BatchStream(self.pipeline, agent.publish_initial_weights), batch_size=None)

    def teardown(self, stage: str) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()

    def state_dict(self) -> dict[str, Any]:
        """Every rank's replay shard and counters (gathered, since only rank 0 writes the file)."""
        if self.pipeline is None:
            return {}
        local = self.pipeline.state_dict()
        if self.trainer.world_size == 1:
            return {"shards": [local]}
        shards: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(shards, local)
        return {"shards": shards}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        shards = state["shards"]
        if len(shards) != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint holds {len(shards)} replay shard(s), one per rank of its run; "
                f"resume it with trainer.devices={len(shards)}"
            )
        self.pipeline.load_state_dict(shards[self.trainer.global_rank])
