"""The self-play worker: one process stepping a batch of environments with one search per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effzero.config import EnvConfig, ModelConfig, SearchConfig
from effzero.data.acting import act, build_model
from effzero.data.environments import env_maker
from effzero.data.replay import TERMINATED, TRANSITION, TRUNCATED, Replay
from effzero.data.shared import Counters, SharedWeights
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
    stats: object  # multiprocessing queue of episode statistics for the learner to log
    lanes: list[int]
    seed: int
    device: str = "cpu"


def run_selfplay(job: SelfPlayJob) -> None:
    """Collect until the env-step budget is spent or the run stops."""
    torch.manual_seed(job.seed)
    model = build_model(job.model, job.spec).to(job.device).eval()
    version = 0
    while version == 0 and not job.counters.stopping:  # the learner publishes before we start
        version = job.weights.load_into(model, version)
    lanes = torch.tensor(job.lanes)
    n = len(job.lanes)
    counters = job.counters
    with EnvBatch(env_maker(job.env), n, job.seed) as envs:
        while counters.wait(lambda: counters.env_steps < counters.env_steps_allowed() or counters.done):
            if counters.done:
                return
            version = job.weights.load_into(model, version)
            obs = torch.as_tensor(envs.observations)
            out = act(model, obs.to(job.device), job.spec, job.search, explore=True)
            action = out.action.cpu()
            result = envs.step(action.numpy())
            step = counters.add_env_steps(n) + torch.arange(n)
            terminated = torch.as_tensor(result.terminated)
            truncated = torch.as_tensor(result.truncated) & ~terminated
            kind = torch.full((n,), TRANSITION, dtype=torch.uint8)
            kind[terminated] = TERMINATED
            kind[truncated] = TRUNCATED
            rewards = torch.as_tensor(result.rewards)
            # Continuous policies are over this step's candidates: the replay keeps none of them.
            policy = out.improved_policy.cpu()[:, : job.replay.layout.policy_size]
            job.replay.append(lanes, obs, action, rewards, kind, out.root_value.cpu(), policy, step)
            ended = terminated | truncated
            if ended.any():
                final = torch.as_tensor(result.final_observations)[ended]
                job.replay.end_episodes(lanes[ended], final, step[ended])
            for _, episode_return, length in result.finished:
                job.stats.put(("episode", float(episode_return), int(length), int(step.max())))
