"""EnvSpec: what the rest of the project needs to know about an environment, read from its spaces."""

from __future__ import annotations

from dataclasses import dataclass

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
    value_bounds: tuple[float, float] | None = None  # decoded values are clipped to these

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
