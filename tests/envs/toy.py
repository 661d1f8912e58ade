"""A tiny gymnasium env whose spaces the tests choose: registered envs lack (2, 2) Box observations."""

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class GridObsEnv(gymnasium.Env):
    """Observations are a (2, 2) float64 grid counting steps; episodes last 3 steps."""

    def __init__(
        self,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.observation_space = observation_space or spaces.Box(-10.0, 10.0, (2, 2), np.float64)
        self.action_space = action_space or spaces.Discrete(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.arange(4, dtype=np.float64).reshape(2, 2) + self._t

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), 1.0, self._t >= 3, False, {}
