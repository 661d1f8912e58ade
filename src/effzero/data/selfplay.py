"""The self-play worker: one process stepping a batch of environments with one search per step."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace

import torch

from effzero.config import EnvConfig, ModelConfig, SearchConfig
from effzero.data.acting import act, action_temperature, worker_model
from effzero.data.environments import env_maker
from effzero.data.replay import TERMINATED, TRANSITION, TRUNCATED, Replay
from effzero.data.shared import Counters, EpisodeLog, SharedWeights
from effzero.data.workers import Heartbeat
from effzero.envs import EnvBatch, EnvSpec


@dataclass
class SelfPlayJob:
    """Everything a self-play process needs; picklable, so it crosses the process boundary."""

    env: EnvConfig
    model: ModelConfig
    search: SearchConfig
    spec: EnvSpec
    replay: Replay
    weights: SharedWeights
    counters: Counters
    episodes: EpisodeLog  # finished episodes, for the learner to log
    collector: int  # this worker's index among the self-play workers
    lanes: list[int]
    seed: int
    beat: Heartbeat
    device: str = "cpu"
    precision: str = "fp32"  # of the model's calls: fp32 or bf16


class SelfPlay:
    """One self-play worker's model and environments; `step` collects one step on all its lanes.

    Each step is a transaction on the worker's lanes (`Replay.begin` .. `commit`), so a worker
    killed at any point leaves lanes the supervisor can repair; steps are counted once stored.
    """

    def __init__(self, job: SelfPlayJob):
        self.job = job
        self.model = worker_model(job.model, job.spec, job.device, job.precision)
        self.version = 0  # of the weights loaded; 0 = none published yet
        self.lanes = torch.tensor(job.lanes)
        self.envs = EnvBatch(env_maker(job.env), len(job.lanes), job.seed)

    def refresh_weights(self) -> bool:
        """Load the newest published weights; whether any have been published."""
        self.version = self.job.weights.load_into(self.model, self.version)
        return self.version > 0

    def step(self) -> None:
        """Search, act and store one transition per lane (with the newest weights)."""
        job, lanes, n = self.job, self.lanes, len(self.lanes)
        self.refresh_weights()
        obs = torch.as_tensor(self.envs.observations)
        search = job.search
        if search.temperature_decay:
            progress = job.counters.env_steps / job.counters.total
            search = replace(search, temperature=action_temperature(search, progress))
        out = act(self.model, obs.to(job.device), job.spec, search, explore=True)
        action = out.action.cpu()
        result = self.envs.step(action.numpy())
        step = job.counters.env_steps + torch.arange(n)  # ids shared by workers that step at once
        terminated = torch.as_tensor(result.terminated)
        truncated = torch.as_tensor(result.truncated) & ~terminated
        kind = torch.full((n,), TRANSITION, dtype=torch.uint8)
        kind[terminated] = TERMINATED
        kind[truncated] = TRUNCATED
        rewards = torch.as_tensor(result.rewards)
        # Continuous policies are over this step's candidates: the replay keeps none of them.
        policy = out.improved_policy.cpu()[:, : job.replay.layout.policy_size]
        job.replay.begin(lanes)
        job.replay.append(lanes, obs, action, rewards, kind, out.root_value.cpu(), policy, step)
        ended = terminated | truncated
        if ended.any():
            final = torch.as_tensor(result.final_observations)[ended]
            job.replay.end_episodes(lanes[ended], final, step[ended])
        job.replay.commit(lanes)
        for _, episode_return, length in result.finished:
            job.episodes.add(job.collector, float(episode_return), int(length), int(step.max()))

    def close(self) -> None:
        self.envs.close()


def run_selfplay(job: SelfPlayJob) -> None:
    """Collect until the env-step budget is spent or the run stops (a worker process's loop)."""
    torch.manual_seed(job.seed)
    player = SelfPlay(job)
    try:
        # The learner publishes before it starts us; a restart reads the current weights.
        while not player.refresh_weights():
            job.beat()
            if job.counters.stopping:
                return
            time.sleep(0.001)
        compiled = not job.search.compile  # else the first search compiles, for minutes
        while job.counters.wait_to_step(job.collector, job.beat):
            with contextlib.nullcontext() if compiled else job.beat.compiling():
                player.step()
            compiled = True
    finally:
        player.close()
