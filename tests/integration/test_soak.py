"""Soak: a long CPU CartPole run whose workers are SIGKILLed at random times.

The run must go on through every kill, end (Ctrl-C) with a resumable checkpoint, resume, and
never lose a transition. `EFFZERO_SOAK_MINUTES` sets how long workers are killed (default 20).

What "lost" means, per replay shard of a checkpoint:

- collected: the env steps the run counts (the checkpoint's counters: the budget, the replay
  ratio and `train/env_steps` use it). A self-play worker counts a step's transitions when it
  commits them to replay, not before.
- stored: the replay slots that hold an action (every slot but episodes' final observations),
  counted from the slots themselves.
- lost = collected − stored when positive: steps the run counts that replay does not hold;
  duplicated = stored − collected when positive. Both must be 0, in the periodic checkpoint
  taken while workers were being killed, in the final one, and after the resume; and every
  lane must be whole (`replay_problems`: runs of episodes, nothing half-written sampleable).

What a kill does cost is not counted, by this definition, and is reported: the step the
worker had in flight (env steps taken, never stored) and the last action of each of its
unfinished episodes (the observation it led to died with the process: the slot is kept as
the episode's final observation, the episode as a time-limit cut) — the "dropped" actions.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest
import torch

from tests.integration.helpers import checkpoints, run
from tests.integration.test_worker_faults import alive, check_replay, output, start, wait_for, workers_of

MINUTES = float(os.environ.get("EFFZERO_SOAK_MINUTES", "20"))
RUN = (
    "experiment=cartpole",
    "trainer.enable_progress_bar=false",
    "data.total_env_steps=1000000",  # more than the run will collect: it ends by Ctrl-C
    "data.selfplay_workers=2",
    "data.max_worker_restarts=100000",
    "trainer.limit_train_batches=100",  # a checkpoint every 100 updates, taken between kills
    "eval.every=0",
    "eval.episodes=2",
)
NUM_ENVS = 4  # experiment=cartpole: env.num_envs


def shard(path) -> dict:
    return check_replay(torch.load(path, weights_only=False))


def replaced(learner: int, killed: dict[str, int]) -> dict[str, int] | None:
    """{name: pid} of the three workers once those in `killed` ({name: pid}) run again as new processes.

    A worker just SIGKILLed can still be listed for a moment (its files are closed as it dies), so
    a check right after a kill must look for a new pid, not for three workers.
    """

    def restarted() -> dict[str, int] | None:
        workers = workers_of(learner)
        fresh = len(workers) == 3 and all(
            workers.get(name) not in (None, pid) for name, pid in killed.items()
        )
        return workers if fresh else None

    return wait_for(restarted, 120)


@pytest.mark.slow
@pytest.mark.timeout(int(MINUTES * 60) + 900)
def test_workers_killed_at_random_lose_no_transitions_and_the_run_resumes(tmp_path):
    chance = random.Random(0)
    process = start(tmp_path, *RUN)
    kills: dict[str, int] = {}
    try:
        assert wait_for(lambda: len(workers_of(process.pid)) == 3, 120), "workers did not start"
        deadline, killed = time.monotonic() + MINUTES * 60, {}
        while time.monotonic() < deadline:
            time.sleep(chance.uniform(5, 30))
            workers = replaced(process.pid, killed)
            assert workers and process.poll() is None, output(tmp_path)[-3000:]
            name = chance.choice(sorted(workers))
            os.kill(workers[name], signal.SIGKILL)
            kills[name], killed = kills.get(name, 0) + 1, {name: workers[name]}
        # Let the last restart through, then stop as a user would.
        workers = replaced(process.pid, killed)
        assert workers, output(tmp_path)[-3000:]
        process.send_signal(signal.SIGINT)
        process.wait(300)
    finally:
        if process.poll() is None:
            process.kill()
    text = output(tmp_path)
    assert process.returncode == 0, text[-3000:]
    assert not any(alive(pid) for pid in workers.values())

    restarts = re.findall(r"worker '(\w+-\d+-\d+)' died; restarting it", text)
    assert len(restarts) == sum(kills.values()), (kills, restarts)
    dropped = sum(int(n) for n in re.findall(r"\((\d+) last action\(s\) dropped\)", text))
    selfplay_kills = sum(n for name, n in kills.items() if name.startswith("selfplay"))
    assert dropped <= NUM_ENVS * selfplay_kills

    periodic = shard(next(p for p in checkpoints(tmp_path, "train") if p.name == "last.ckpt"))
    interrupted = next(p for p in checkpoints(tmp_path, "train") if p.name == "interrupted.ckpt")
    final = shard(interrupted)
    collected = int(final["counters"][0])
    assert collected >= int(periodic["counters"][0])

    step = torch.load(interrupted, weights_only=False)["global_step"]
    resumed = run(
        "train", tmp_path, *RUN, f"trainer.max_steps={step + 20}", f"ckpt_path={interrupted}", timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    latest = max(checkpoints(tmp_path, "train"), key=lambda p: p.stat().st_mtime)
    after = shard(latest)
    assert int(after["counters"][0]) >= collected
    written = final["replay"]["written"]
    for lane, count in enumerate(written.tolist()):  # what was stored before the resume is still there
        assert torch.equal(final["replay"]["obs"][lane, :count], after["replay"]["obs"][lane, :count])
    print(
        f"\nsoak: {MINUTES:g} min, kills {kills}, {collected} env steps collected and stored, "
        f"{dropped} last actions dropped by kills, {step} updates, resumed to {step + 20}"
    )
