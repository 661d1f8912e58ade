"""Non-finite losses in a real run: each such update is skipped and counted; too many in a row stop the run.

The NaN comes from where it would in practice, the environment: a CartPole whose reward is NaN
makes the reward and value targets of the windows around it NaN (used as
`env.id=tests.integration.test_nonfinite:NaNCartPole-v0`; gymnasium imports this module, in
every process that builds the env, and the module registers the envs).
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from gymnasium.envs.classic_control import CartPoleEnv

from tests.integration.helpers import SMOKE, checkpoints, mlflow_runs, run


class NaNCartPole(CartPoleEnv):
    """CartPole whose reward is NaN at every step, or (`once`) at one step of the whole process."""

    fired = False  # per process: with `once`, a single NaN transition in the self-play worker's replay

    def __init__(self, once: bool = False, at_step: int = 30, **kwargs):
        super().__init__(**kwargs)
        self.once, self.at_step, self.steps = once, at_step, 0

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if not self.once or (self.steps == self.at_step and not NaNCartPole.fired):
            NaNCartPole.fired = True
            reward = math.nan
        return observation, reward, terminated, truncated, info


gym.register("NaNCartPole-v0", entry_point=NaNCartPole, max_episode_steps=500)
gym.register("NaNOnceCartPole-v0", entry_point=NaNCartPole, kwargs={"once": True}, max_episode_steps=500)
MODULE = "tests.integration.test_nonfinite"


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }


def test_a_few_nonfinite_losses_are_skipped_and_counted(tmp_path):
    # td_steps=5 keeps the NaN in few windows, so skipped updates never come 20 in a row.
    result = run("train", tmp_path, *SMOKE, f"env.id={MODULE}:NaNOnceCartPole-v0", "algo.td_steps=5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "non-finite loss, update skipped" in result.stdout + result.stderr
    client, runs = mlflow_runs(tmp_path)
    history = client.get_metric_history(runs[0].info.run_id, "train/nonfinite_steps")
    assert max(m.value for m in history) > 0
    last = torch.load(next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt"), weights_only=False)
    assert last["global_step"] == 60  # the updates skipped count as steps: the schedule is unchanged
    assert all(torch.isfinite(w).all() for w in model_weights(last).values())


def test_nonfinite_losses_in_a_row_stop_the_run_with_advice_and_untouched_weights(tmp_path):
    result = run("train", tmp_path, *SMOKE, f"env.id={MODULE}:NaNCartPole-v0", "max_nonfinite_steps=3")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "NaN or infinite in 4 updates in a row" in output and "optim.lr" in output
    assert "Traceback (most recent call last)" not in output
    saved = torch.load(
        next(p for p in checkpoints(tmp_path) if p.name == "interrupted.ckpt"), weights_only=False
    )
    # Every update was skipped: the weights and running statistics are still the initial ones
    # (the first target snapshot).
    initial = saved["target_state"]
    assert all(torch.equal(w, initial[k]) for k, w in model_weights(saved).items())
