"""The self-play worker: one process stepping a batch of environments with one search per step."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from effzero.config import EnvConfig, ModelConfig, SearchConfig
from effzero.data.acting import act, build_model
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


def run_selfplay(job: SelfPlayJob) -> None:
    """Collect until the env-step budget is spent or the run stops.

    Each step is a transaction on the worker's lanes (`Replay.begin` .. `commit`), so a worker
    killed at any point leaves lanes the supervisor can repair; steps are counted once stored.
    """
    torch.manual_seed(job.seed)
    model = build_model(job.model, job.spec).to(job.device).eval()
    counters, beat = job.counters, job.beat
    version = 0
    while version == 0:  # the learner publishes before it starts us; a restart reads the current weights
        beat()
        if counters.stopping:
            return
        version = job.weights.load_into(model, version)
        time.sleep(0.001)
    lanes = torch.tensor(job.lanes)
    n = len(job.lanes)
    with EnvBatch(env_maker(job.env), n, job.seed) as envs:
        while counters.wait_to_step(job.collector, beat):
            version = job.weights.load_into(model, version)
            obs = torch.as_tensor(envs.observations)
            out = act(model, obs.to(job.device), job.spec, job.search, explore=True)
            action = out.action.cpu()
            result = envs.step(action.numpy())
            step = counters.env_steps + torch.arange(n)  # ids shared by workers that step at once
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
