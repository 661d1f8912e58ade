"""EnvSpec: what the rest of the project needs to know about an environment, read from its spaces;
and FrameStack, the one definition of the frame stacks that EnvSpec.frame_stack announces."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

_SUPPORTED_OBSERVATIONS = "a Box observation space (vectors or uint8 frames)"
_SUPPORTED_ACTIONS = "a Discrete action space starting at 0 or a 1-D Box action space with finite bounds"


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise a `ValueError` naming the space if the project cannot handle it.

    Args:
        observation_space: the env's observation space; only `Box` is supported.
        action_space: the env's action space; `Discrete(n)` with start 0, or `Box` of shape
            (d,) with finite bounds (the policy is squashed into them).

    Raises:
        ValueError: the unsupported space and what is supported instead.
    """
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"unsupported observation space {observation_space!r}; effzero supports {_SUPPORTED_OBSERVATIONS}"
        )
    if isinstance(action_space, spaces.Discrete):
        # The search emits action indices 0..n-1; a shifted range would need a translating wrapper.
        if int(action_space.start) == 0:
            return
    elif (
        isinstance(action_space, spaces.Box)
        and len(action_space.shape) == 1
        and np.isfinite(action_space.low).all()
        and np.isfinite(action_space.high).all()
    ):
        return
    raise ValueError(f"unsupported action space {action_space!r}; effzero supports {_SUPPORTED_ACTIONS}")


@dataclass(frozen=True)
class EnvSpec:
    """Shapes, action kind and episode facts of an environment, as the networks and replay see them."""

    name: str
    obs_shape: tuple[int, ...]
    obs_dtype: str  # 'float32' or 'uint8' (frames are stored as bytes)
    action_kind: str  # 'discrete' or 'continuous'
    num_actions: int  # discrete: the number of actions; 0 otherwise
    action_dim: int  # continuous: d; 0 otherwise
    action_low: tuple[float, ...]  # continuous: [d] lower bounds; empty otherwise
    action_high: tuple[float, ...]  # continuous: [d] upper bounds; empty otherwise
    discount: float  # per agent step
    max_episode_steps: int | None  # the env's time limit in agent steps; None if it has none
    frame_stack: int = 1  # image envs: observations stack this many frames along channels

    @property
    def is_discrete(self) -> bool:
        """Whether actions are indices in 0..num_actions-1."""
        return self.action_kind == "discrete"

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action: () for a discrete index, (d,) for a continuous vector."""
        return () if self.is_discrete else (self.action_dim,)

    @classmethod
    def from_env(cls, env: gymnasium.Env, name: str, discount: float) -> EnvSpec:
        """Read the spec of a (possibly wrapped) gymnasium env.

        Args:
            env: the env whose observation and action spaces are read.
            name: the name recorded in the spec (the env id, for instance).
            discount: the discount per agent step.

        Returns:
            The spec. `obs_dtype` is 'uint8' for uint8 observations, 'float32' for any other Box.
            `frame_stack` is the int attribute `frame_stack` of the env or of any wrapper around
            it (`FrameStack` sets one), found with `env.get_wrapper_attr`; 1 if none has it.

        Raises:
            ValueError: an observation or action space the project does not support.
        """
        obs_space, act_space = env.observation_space, env.action_space
        check_spaces(obs_space, act_space)
        discrete = isinstance(act_space, spaces.Discrete)
        try:
            frame_stack = int(env.get_wrapper_attr("frame_stack"))
        except AttributeError:
            frame_stack = 1
        return cls(
            name=name,
            obs_shape=tuple(int(n) for n in obs_space.shape),
            obs_dtype="uint8" if obs_space.dtype == np.uint8 else "float32",
            action_kind="discrete" if discrete else "continuous",
            num_actions=int(act_space.n) if discrete else 0,
            action_dim=0 if discrete else int(act_space.shape[0]),
            action_low=() if discrete else tuple(float(x) for x in act_space.low),
            action_high=() if discrete else tuple(float(x) for x in act_space.high),
            discount=float(discount),
            max_episode_steps=env.spec.max_episode_steps if env.spec is not None else None,
            frame_stack=frame_stack,
        )


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
