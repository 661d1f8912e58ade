"""Determinism on the CPU: `src/train.py` with the same seed gives the same first 50 losses, bit for bit.

With worker processes the data a batch samples depends on the machine's load, so the runs
use `data.synchronous=true` (`LockstepPipeline`): collection and reanalysis between updates, in
the learner's process. Two separate processes must agree (nothing leaks in from the process:
hash seeds, thread pools, file names), and a second run in the same process (a sweep) too.
"""

from __future__ import annotations

import math

import pytest

from tests.integration.helpers import SMOKE, mlflow_runs, start

UPDATES = 50
LOCKSTEP = (
    *SMOKE,
    "data.synchronous=true",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    f"trainer.max_steps={UPDATES}",
)


def histories(log_dir, key: str) -> dict[str, list[list[float]]]:
    """{seed: [the values of metric `key` at steps 0, 1, … of each run of that seed]} in `log_dir`."""
    client, runs = mlflow_runs(log_dir)
    found = {}
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(len(history))), f"{key} has gaps"
        found.setdefault(run.data.tags["seed"], []).append([m.value for m in history])
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sweep over seeds 0 and 1 in one process, and seed 0 alone in another, side by side."""
    sweep_dir, single_dir = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("single")
    sweep = start("train", sweep_dir, "seed=0,1", *LOCKSTEP, "-m")  # hydra takes -m after the overrides
    single = start("train", single_dir, "seed=0", *LOCKSTEP)
    for process in (sweep, single):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    return sweep_dir, single_dir


def test_the_same_seed_gives_the_same_first_50_losses(runs):
    sweep, single = (histories(log_dir, "loss/total") for log_dir in runs)
    (first,), (second,), (other,) = single["0"], sweep["0"], sweep["1"]
    assert len(first) == UPDATES and all(math.isfinite(v) for v in first)
    assert first == second  # bit for bit, across processes and after another run in the process
    assert first != other  # the seed matters: the comparison is not vacuous


def test_every_logged_metric_of_the_data_side_agrees_too(runs):
    for key in ("train/env_steps", "loss/value", "loss/policy", "loss/reward", "loss/consistency"):
        sweep, single = (histories(log_dir, key) for log_dir in runs)
        assert single["0"] == sweep["0"], key


def test_lockstep_collection_keeps_the_replay_ratio_exactly(runs):
    """After update u self-play has collected up to the first env step count E with u < (E − start) · ratio.

    Smoke: start 200, ratio 0.1, one self-play worker stepping 4 envs (E moves in fours), and
    collection ends at 600 env steps (update 40).
    """
    ((env_steps,),) = histories(runs[1], "train/env_steps").values()
    for update, logged in enumerate(env_steps):
        expected = min(4 * math.floor((200 + 10 * update) / 4) + 4, 600)
        assert logged == expected, (update, logged, expected)
