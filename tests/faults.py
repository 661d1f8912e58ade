"""Environments that fail on purpose, for fault-injection tests.

Used as `env.id=tests.faults:ExplodingCartPole-v0`: gymnasium imports this module (in every
process that builds the env) and the module registers the env.

The "Once" envs fail once per run, so that a restarted worker carries on: the first instance
(in any process) to reach its fault claims the file named by the environment variable
`EFFZERO_FAULT_FILE` (created atomically) and fails; every other instance runs normally.
"""

import os
import time

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

FAULT_FILE = "EFFZERO_FAULT_FILE"


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


def claim_fault() -> bool:
    """Whether this caller is the run's first to reach its fault (it creates the fault file)."""
    path = os.environ.get(FAULT_FILE)
    if not path:
        raise RuntimeError(f"set {FAULT_FILE} to a path: the file marks the fault as spent")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class OnceCartPole(CartPoleEnv):
    """CartPole that calls `fault()` at its `fault_after`-th step if it claims the run's fault."""

    def __init__(self, fault_after: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.fault_after = 0, fault_after

    def step(self, action):
        self.steps += 1
        if self.steps == self.fault_after and claim_fault():
            self.fault()
        return super().step(action)

    def fault(self) -> None:
        raise NotImplementedError


class ExplodingOnceCartPole(OnceCartPole):
    def fault(self) -> None:
        raise RuntimeError("ExplodingOnceCartPole: injected fault")


class HangingOnceCartPole(OnceCartPole):
    """Hangs as a deadlock would: asleep for good, no heartbeat."""

    def fault(self) -> None:
        while True:
            time.sleep(3600)


gym.register("ExplodingCartPole-v0", entry_point=ExplodingCartPole, max_episode_steps=500)
gym.register("ExplodingOnceCartPole-v0", entry_point=ExplodingOnceCartPole, max_episode_steps=500)
# Late: at its 60th step, past the smoke config's first updates (200 transitions) on each of 2 ranks.
gym.register(
    "ExplodingLateOnceCartPole-v0",
    entry_point=ExplodingOnceCartPole,
    kwargs={"fault_after": 60},
    max_episode_steps=500,
)
gym.register("HangingOnceCartPole-v0", entry_point=HangingOnceCartPole, max_episode_steps=500)
