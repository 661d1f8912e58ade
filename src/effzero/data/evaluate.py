"""Evaluation episodes: noise-free search, one environment per episode, all searched as a batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from effzero.config import SearchConfig
from effzero.data.acting import act
from effzero.envs import EnvBatch, EnvSpec


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray] = field(default_factory=list)  # the first episode's frames, if recorded

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def _frame(env: gym.Env, observation: np.ndarray) -> np.ndarray:
    """An RGB frame [H, W, 3] of the env for a video: its render, or the newest observed frame."""
    if env.render_mode == "rgb_array" or hasattr(env.unwrapped, "dm_env"):
        return env.render()
    return np.ascontiguousarray(observation[-3:].transpose(1, 2, 0))


def evaluate(
    model: nn.Module,
    make_env: Callable[[int], gym.Env],
    spec: EnvSpec,
    search: SearchConfig,
    episodes: int,
    seed: int,
    record: bool = False,
) -> EvalResult:
    """Play `episodes` episodes (one per environment, in parallel) with noise-free search.

    The model is put in eval mode and restored afterwards. With `record`, the first episode's
    frames are returned for a video (rendered, or the observed frames of image envs).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    returns: list[float | None] = [None] * episodes
    lengths = [0] * episodes
    frames: list[np.ndarray] = []
    try:
        with EnvBatch(make_env, episodes, seed) as envs:
            if record:
                frames.append(_frame(envs.envs[0], envs.observations[0]))
            while any(r is None for r in returns):
                obs = torch.as_tensor(envs.observations, device=device)
                action = act(model, obs, spec, search, explore=False).action.cpu().numpy()
                result = envs.step(action)
                if record and returns[0] is None:
                    frames.append(_frame(envs.envs[0], envs.observations[0]))
                for index, episode_return, length in result.finished:
                    if returns[index] is None:
                        returns[index], lengths[index] = episode_return, length
    finally:
        model.train(was_training)
    return EvalResult([float(r) for r in returns], lengths, frames)
