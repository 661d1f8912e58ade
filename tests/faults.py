"""Environments that fail on purpose, for fault-injection tests.

Used as `env.id=tests.faults:ExplodingCartPole-v0`: gymnasium imports this module (in every
process that builds the env) and the module registers the env.
"""

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class ExplodingCartPole(CartPoleEnv):
    """CartPole whose every instance raises after `explode_after` steps (summed over episodes)."""

    def __init__(self, explode_after: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.explode_after = 0, explode_after

    def step(self, action):
        self.steps += 1
        if self.steps > self.explode_after:
            raise RuntimeError("ExplodingCartPole: injected fault")
        return super().step(action)


gym.register("ExplodingCartPole-v0", entry_point=ExplodingCartPole, max_episode_steps=500)
