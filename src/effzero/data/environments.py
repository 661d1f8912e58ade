"""The configured environment: a factory for workers and evaluation, and its EnvSpec."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym

from effzero.config import AtariEnvConfig, DMCEnvConfig, EnvConfig
from effzero.envs import EnvSpec, make_gym_env


def env_maker(cfg: EnvConfig, train: bool = True, render: bool = False) -> Callable[[int], gym.Env]:
    """A factory of the configured environment; its argument is the env's index in a batch.

    `train` selects the training protocol (Atari: clipped rewards, life loss ends an episode,
    3000-step cap) or the evaluation one (raw score, 108k frames). `render` makes `render()`
    return RGB frames (for videos).
    """
    limit = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    if render:
        limit["render_mode"] = "rgb_array"
    if isinstance(cfg, AtariEnvConfig):
        from effzero.envs.atari import make_atari_env

        return lambda index: make_atari_env(cfg.game, train=train, **limit)
    if isinstance(cfg, DMCEnvConfig):
        from effzero.envs.dmc import make_dmc_env

        return lambda index: make_dmc_env(
            cfg.domain,
            cfg.task,
            pixels=cfg.pixels,
            action_repeat=cfg.action_repeat,
            max_episode_steps=cfg.max_episode_steps,
        )  # (a DMC env renders whether asked or not)
    return lambda index: make_gym_env(cfg.id, **limit)


def build_spec(cfg: EnvConfig) -> EnvSpec:
    """Shapes, action space and discount of the configured environment (builds it once)."""
    instance = env_maker(cfg)(0)
    try:
        spec = EnvSpec.from_env(instance, name=cfg.id, discount=cfg.discount)
    finally:
        instance.close()
    bounds = None if cfg.value_bounds is None else (float(cfg.value_bounds[0]), float(cfg.value_bounds[1]))
    return dataclasses.replace(spec, value_bounds=bounds)
