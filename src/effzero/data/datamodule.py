"""The LightningDataModule: owns one rank's pipeline and checkpoints its replay."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from effzero.config import AlgoConfig, DataConfig, EnvConfig, ModelConfig, SearchConfig
from effzero.data.pipeline import BatchStream, Pipeline, RankInfo
from effzero.envs import EnvSpec


class ReplayDataModule(L.LightningDataModule):
    """Streams reanalysed batches from background workers; its state is the replay.

    The agent (the LightningModule) publishes weights and priorities through `pipeline`.
    """

    def __init__(
        self,
        env: EnvConfig,
        model: ModelConfig,
        search: SearchConfig,
        algo: AlgoConfig,
        data: DataConfig,
        spec: EnvSpec,
        seed: int,
    ):
        super().__init__()
        self.configs = (env, model, search, algo, data)
        self.spec, self.seed = spec, seed
        self.pipeline: Pipeline | None = None

    def setup(self, stage: str) -> None:
        if self.pipeline is not None or stage != "fit":
            return
        agent = self.trainer.lightning_module
        rank = RankInfo(self.trainer.global_rank, self.trainer.world_size)
        self.pipeline = Pipeline(*self.configs, self.spec, agent.model, self.seed, rank)

    def train_dataloader(self) -> DataLoader:
        agent = self.trainer.lightning_module
        return DataLoader(BatchStream(self.pipeline, agent.publish_initial_weights), batch_size=None)

    def teardown(self, stage: str) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.pipeline is None else self.pipeline.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.pipeline.load_state_dict(state)
