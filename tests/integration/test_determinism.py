"""Determinism on the CPU: the same seed gives the same first 50 losses, bit for bit.

In `src/train.py` self-play and reanalysis are asynchronous processes: which transitions a batch
samples depends on how far self-play has got when the reanalyse worker samples, which depends
on the machine's load, so two runs of the script differ. Everything else is seeded. Here the
same code (self-play's loop, reanalysis' `make_batch`, the agent in a Lightning Trainer with
`deterministic=True`) runs synchronously in this process: collect, reanalyse, learn. That
is what a synchronous collection mode of the pipeline would do, and it is reproducible.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from effzero.agent import EZAgent
from effzero.config import TrainConfig, register_schemas
from effzero.data.acting import build_model
from effzero.data.environments import build_spec
from effzero.data.pipeline import replay_layout
from effzero.data.reanalyse import make_batch
from effzero.data.replay import Replay
from effzero.data.selfplay import SelfPlayJob, run_selfplay
from effzero.data.shared import Counters, EpisodeLog, SharedWeights
from effzero.envs import EnvSpec

ROOT = Path(__file__).resolve().parents[2]
ENV_STEPS, UPDATES = 400, 50


def smoke_config() -> TrainConfig:
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cartpole", "debug=smoke", "paths.output_dir=unused"])
    return OmegaConf.to_object(cfg)


def collect_and_reanalyse(conf: TrainConfig, spec: EnvSpec, seed: int) -> list[dict[str, Tensor]]:
    """ENV_STEPS of self-play, then UPDATES reanalysed batches, all in this process."""
    torch.manual_seed(seed)
    model = build_model(conf.model, spec).eval()
    weights = SharedWeights(model)
    weights.publish(model.state_dict())
    replay = Replay(replay_layout(conf.data, conf.env, conf.algo, spec, world_size=1))
    counters = Counters(
        start_transitions=0, replay_ratio=0.0, total_env_steps=ENV_STEPS, lane_steps=replay.transitions
    )
    job = SelfPlayJob(
        env=conf.env,
        model=conf.model,
        search=conf.search,
        spec=spec,
        replay=replay,
        weights=weights,
        counters=counters,
        episodes=EpisodeLog(1),
        collector=0,
        lanes=list(range(conf.env.num_envs)),
        seed=seed,
        beat=lambda: None,
    )
    run_selfplay(job)  # returns once the env-step budget is spent
    generator = torch.Generator().manual_seed(seed)
    data = conf.data
    sample = (data.batch_size, data.priority_alpha, data.priority_beta)
    batches = []
    for step in range(UPDATES):
        batch = make_batch(replay, model, spec, conf.search, conf.algo, *sample, step, ENV_STEPS, generator)
        # clone: out of inference mode, as a batch is once it has crossed the process boundary
        batches.append({name: value.clone() for name, value in batch.items()})
    return batches


class RecordedData(L.LightningDataModule):
    """Recorded batches, and the few pipeline parts the agent talks to."""

    def __init__(self, batches: list[dict[str, Tensor]], model: torch.nn.Module):
        super().__init__()
        self.batches = batches
        self.pipeline = SimpleNamespace(
            weights=SharedWeights(model),
            target_weights=SharedWeights(model),
            counters=Counters(start_transitions=0, replay_ratio=1.0, total_env_steps=ENV_STEPS),
            batches=queue.Queue(),
            drain_stats=list,
            update_priorities=lambda lanes, slots, priorities: None,
            restarts=0,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(outputs["loss"].detach().clone())


def first_losses(seed: int) -> Tensor:
    """The learner's first UPDATES losses of a run seeded with `seed`."""
    conf = smoke_config()
    spec = build_spec(conf.env)
    batches = collect_and_reanalyse(conf, spec, seed)
    L.seed_everything(seed, workers=True)
    agent = EZAgent(conf.model, conf.algo, conf.optim, conf.data, spec)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu",
        deterministic=True,
        max_steps=UPDATES,
        gradient_clip_val=conf.trainer["gradient_clip_val"],
        callbacks=[losses],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(agent, datamodule=RecordedData(batches, agent.model))
    return torch.stack(losses.values)


@pytest.fixture
def one_thread():
    """As the learner of a CPU run (cartpole's `threads: 1`): on a loaded machine more threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_same_seed_gives_the_same_first_50_losses(one_thread):
    first, second, other = first_losses(seed=0), first_losses(seed=0), first_losses(seed=1)
    assert first.shape == (UPDATES,) and torch.isfinite(first).all()
    assert torch.equal(first, second)  # bit for bit
    assert not torch.equal(first, other)  # the seed matters: the comparison is not vacuous
