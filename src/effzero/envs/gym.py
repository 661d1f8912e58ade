"""Any registered gymnasium env with Box observations, as flat float32 vectors."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from effzero.envs.spec import check_spaces


class FlattenFloat32(gymnasium.ObservationWrapper):
    """Flattens Box observations of any shape to float32 vectors: the vector nets take [N, D]."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = spaces.Box(
            low=space.low.reshape(-1).astype(np.float32),
            high=space.high.reshape(-1).astype(np.float32),
            dtype=np.float32,
        )

    def observation(self, observation: Any) -> np.ndarray:
        """Flatten one observation.

        Args:
            observation: [*obs_shape] any numeric dtype.

        Returns:
            [prod(obs_shape)] float32.
        """
        return np.asarray(observation, dtype=np.float32).reshape(-1)


def _unknown_id_message(env_id: str) -> str:
    """Explain an unregistered id: the closest registered ids and how to pick one."""
    matches = difflib.get_close_matches(env_id, list(gymnasium.registry), n=5, cutoff=0.5)
    lines = [f"unknown gymnasium env id {env_id!r}."]
    if matches:
        lines.append(f"Close matches: {', '.join(matches)}; use env.id=<one of them>.")
    lines.append("Atari and DMC ids need their own env groups: env=atari or env=dmc.")
    return " ".join(lines)


def _missing_dependency_message(env_id: str, error: Exception) -> str:
    """Explain a missing optional dependency, naming the pip package that provides it."""
    entry_point = gymnasium.registry[env_id].entry_point
    module = entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")
    parts = module.split(".")
    message = f"env {env_id!r} needs an optional dependency that is not installed: {error}"
    # Gymnasium's own env families map onto its extras: gymnasium.envs.box2d -> gymnasium[box2d].
    if parts[:2] == ["gymnasium", "envs"] and len(parts) > 2:
        return f'{message}. Install it with: pip install "gymnasium[{parts[2]}]"'
    if isinstance(error, ModuleNotFoundError):
        return f"{message}. Install the pip package that provides the module {error.name!r}."
    return message


def make_gym_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gymnasium.Env:
    """Make a registered gymnasium env whose observations are flat float32 vectors.

    Args:
        env_id: a gymnasium registry id, e.g. 'CartPole-v1' or 'Pendulum-v1', or
            'module:EnvId' to import the module that registers EnvId first.
        seed: if given, the env is reset once with it (and its action space seeded), so that a
            caller's later `reset()` without a seed continues a reproducible stream.
        **kwargs: passed to `gymnasium.make` (e.g. `max_episode_steps=5`).

    Returns:
        The real gymnasium env, wrapped so observations are [prod(obs_shape)] float32.

    Raises:
        ValueError: an unknown id (with close matches) or an unsupported observation/action space.
        ImportError: the env needs an optional dependency that is not installed.
    """
    if ":" in env_id:  # "module:EnvId": importing the module registers the env
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise ValueError(f"env.id {module}:{env_id}: cannot import module {module!r} ({error})") from None
    if env_id not in gymnasium.registry:
        raise ValueError(_unknown_id_message(env_id))
    try:
        env = gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.DependencyNotInstalled, ModuleNotFoundError) as error:
        # `from None`: the message says all a user needs; the import chain is noise.
        raise ImportError(_missing_dependency_message(env_id, error)) from None
    try:
        check_spaces(env.observation_space, env.action_space)
    except ValueError:
        env.close()
        raise
    env = FlattenFloat32(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
