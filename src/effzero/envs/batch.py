"""EnvBatch: N gymnasium envs stepped together in one process, each reset when its episode ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import gymnasium
import numpy as np
from gymnasium import spaces


@dataclass(frozen=True)
class StepResult:
    """What one `EnvBatch.step` produced for its N envs."""

    rewards: np.ndarray  # [N] float32, raw env rewards
    terminated: np.ndarray  # [N] bool, the episode reached a terminal state
    truncated: np.ndarray  # [N] bool, the episode was cut (time limit) without terminating
    # [N, *obs] the observation each env reached with this step; for an ended episode its last
    # observation (the new current one is the next episode's first), else the new current one.
    final_observations: np.ndarray
    finished: list[tuple[int, float, int]]  # (env index, return, length) of episodes ended here


class EnvBatch:
    """N envs stepped in lockstep; an env whose episode ends is reset at once.

    Attributes:
        envs: the N envs, built by `make_env(i)`.
        observations: [N, *obs_shape] the current observation of every env.
        episode_returns: [N] float64 sum of raw rewards of each env's running episode.
        episode_lengths: [N] int64 agent steps of each env's running episode.
    """

    def __init__(self, make_env: Callable[[int], gymnasium.Env], num_envs: int, seed: int) -> None:
        """Build the envs and reset env i with seed `seed + i`.

        Args:
            make_env: builds env i from its index.
            num_envs: N.
            seed: seeds the first episodes and the RNG that seeds every later reset.
        """
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.envs = [make_env(i) for i in range(num_envs)]
        self._rng = np.random.default_rng(seed)
        space = self.envs[0].observation_space
        self._discrete = isinstance(self.envs[0].action_space, spaces.Discrete)
        self.observations = np.empty((num_envs, *space.shape), dtype=space.dtype)  # [N, *obs]
        for i, env in enumerate(self.envs):
            self.observations[i], _ = env.reset(seed=seed + i)
        self.episode_returns = np.zeros(num_envs, dtype=np.float64)
        self.episode_lengths = np.zeros(num_envs, dtype=np.int64)

    @property
    def num_envs(self) -> int:
        """N."""
        return len(self.envs)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env once; reset those whose episode ended.

        Args:
            actions: [N] action indices (discrete) or [N, d] action vectors (continuous).

        Returns:
            The step's rewards, flags, final observations and finished episodes; afterwards
            `observations` holds the new current observations.
        """
        n = self.num_envs
        if len(actions) != n:
            raise ValueError(f"expected actions for {n} envs, got shape {np.shape(actions)}")
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        final = np.empty_like(self.observations)  # [N, *obs]
        # A fresh array, not an in-place update: a caller may still hold the previous one.
        current = np.empty_like(self.observations)  # [N, *obs]
        finished: list[tuple[int, float, int]] = []
        for i, env in enumerate(self.envs):
            action = int(actions[i]) if self._discrete else np.asarray(actions[i], env.action_space.dtype)
            obs, reward, term, trunc, _ = env.step(action)
            rewards[i], terminated[i], truncated[i], final[i] = reward, term, trunc, obs
            self.episode_returns[i] += float(reward)
            self.episode_lengths[i] += 1
            if term or trunc:
                finished.append((i, float(self.episode_returns[i]), int(self.episode_lengths[i])))
                self.episode_returns[i], self.episode_lengths[i] = 0.0, 0
                # Drawn in env order from the batch's RNG: the same seed gives the same episodes.
                obs, _ = env.reset(seed=int(self._rng.integers(2**31)))
            current[i] = obs
        self.observations = current
        return StepResult(rewards, terminated, truncated, final, finished)

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()

    def __enter__(self) -> EnvBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
