"""Frame stacking with the rule the replay relies on."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class FrameStack(gymnasium.Wrapper):
    """Stacks the newest `frame_stack` observations along the first axis, oldest first.

    An observation of shape [C, *rest] (a [3, H, W] frame, or a [D] vector) becomes
    [frame_stack·C, *rest]; channels `i·C:(i+1)·C` hold the frame `frame_stack-1-i` steps old.
    The stack is exactly the last `frame_stack` frames of this episode, the first frame repeated
    at the episode start: the replay stores only the newest frame and rebuilds stacks by this rule.

    Attributes:
        frame_stack: how many frames each observation stacks; `EnvSpec.from_env` reads it.
    """

    def __init__(self, env: gymnasium.Env, frame_stack: int) -> None:
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1, got {frame_stack}")
        super().__init__(env)
        self.frame_stack = frame_stack
        space = env.observation_space
        reps = (frame_stack,) + (1,) * (len(space.shape) - 1)
        self.observation_space = spaces.Box(
            low=np.tile(space.low, reps), high=np.tile(space.high, reps), dtype=space.dtype
        )
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env and fill the stack with its first frame.

        Returns:
            [frame_stack·C, *rest] the first frame repeated, and the env's info.
        """
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames.extend([obs] * self.frame_stack)
        return self._stack(), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        """Step the env and push its frame, dropping the oldest.

        Returns:
            [frame_stack·C, *rest] the newest stack, then the env's reward, flags and info.
        """
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        return self._stack(), reward, terminated, truncated, info

    def _stack(self) -> np.ndarray:
        """[frame_stack·C, *rest] a fresh array: callers may keep it while the stack moves on."""
        return np.concatenate(self._frames, axis=0)
