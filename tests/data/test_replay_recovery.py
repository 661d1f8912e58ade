"""Replay repair after a self-play worker dies mid-step: the lanes it leaves are made whole.

A real process SIGKILLed at random instants, besides hand-made half-written steps.
"""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.multiprocessing as mp

from effzero.data.replay import FINAL, TERMINATED, TRANSITION, TRUNCATED, Replay, ReplayLayout
from tests.data.replay_checks import replay_problems

WINDOW = 3
SPAWN = mp.get_context("spawn")


def make(lanes: int = 2, length: int = 16) -> Replay:
    return Replay(ReplayLayout(lanes, length, (2,), torch.float32, (), torch.long, 3, WINDOW))


def step(replay: Replay, lane: int, i: int, end: int = TRANSITION, commit: bool = True) -> None:
    """One self-play step on `lane`, as the worker takes it."""
    lanes = torch.tensor([lane])
    replay.begin(lanes)
    replay.append(
        lanes,
        torch.full((1, 2), float(i)),
        torch.tensor([i % 3]),
        torch.tensor([1.0]),
        torch.tensor([end], dtype=torch.uint8),
        torch.zeros(1),
        torch.zeros(1, 3),
        torch.tensor([i]),
    )
    if end != TRANSITION:
        replay.end_episodes(lanes, torch.full((1, 2), -1.0), torch.tensor([i]))
    if commit:
        replay.commit(lanes)


def full_state(replay: Replay) -> dict[str, torch.Tensor]:
    return {**replay.state_dict(), "pending": replay.pending.clone()}


def test_recovery_closes_an_unfinished_episode_as_a_time_limit_cut():
    replay = make()
    for i in range(6):
        step(replay, 0, i)
    assert replay.recover([0, 1]) == 1  # lane 1 is empty: nothing to do
    assert replay.kind[0, 4].item() == TRUNCATED and replay.kind[0, 5].item() == FINAL
    assert replay.obs[0, 5].tolist() == [5.0, 5.0]  # the observation step 4 reached
    assert replay.sampleable[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert replay.transitions.tolist() == [5, 0] and replay.episode_start[0].item() == 6
    step(replay, 0, 6)  # the restarted worker's first episode starts clean
    assert replay.start[0, 6].item() == 6
    assert replay_problems(full_state(replay), WINDOW) == []


def test_recovery_undoes_a_step_that_was_not_committed():
    replay = make()
    for i in range(5):
        step(replay, 0, i)
    step(replay, 0, 5, end=TERMINATED, commit=False)  # killed before its commit
    assert replay.written[0].item() == 7 and replay.sampleable[0, 5]
    assert replay.recover([0]) == 1
    # Back to five steps, then cut: step 4's slot holds the final observation of step 3.
    assert replay.written[0].item() == 5 and replay.transitions[0].item() == 4
    assert replay.kind[0, 3].item() == TRUNCATED and replay.kind[0, 4].item() == FINAL
    assert replay.sampleable[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert replay_problems(full_state(replay), WINDOW) == []


def test_recovery_drops_an_episode_of_one_step_and_leaves_ended_episodes_alone():
    replay = make()
    for i in range(4):
        step(replay, 0, i, end=TERMINATED if i == 3 else TRANSITION)
    step(replay, 0, 4)  # the next episode's first step
    step(replay, 1, 0, end=TRUNCATED)
    before = full_state(replay)
    assert replay.recover([0, 1]) == 1
    assert replay.written.tolist() == [5, 2] and replay.transitions.tolist() == [4, 1]
    for name in ("kind", "sampleable", "obs"):
        assert torch.equal(replay.state_dict()[name][:, :5], before[name][:, :5]), name
    assert replay_problems(full_state(replay), WINDOW) == []


def _write_forever(replay: Replay, lanes: list[int], seed: int, ready) -> None:
    """A self-play stand-in: steps with random episode ends, as fast as it can."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor(lanes)
    i = 0
    ready.set()
    while True:
        ends = torch.rand(len(lanes), generator=generator) < 0.2
        kind = torch.where(ends, TERMINATED, TRANSITION).to(torch.uint8)
        replay.begin(ids)
        replay.append(ids, torch.full((len(lanes), 2), float(i)), ids % 3, torch.ones(len(lanes)), kind,
                      torch.zeros(len(lanes)), torch.zeros(len(lanes), 3), torch.full((len(lanes),), i))  # fmt: skip
        if ends.any():
            replay.end_episodes(
                ids[ends], torch.full((int(ends.sum()), 2), -1.0), torch.full((int(ends.sum()),), i)
            )
        replay.commit(ids)
        i += 1


def test_a_writer_killed_at_random_instants_leaves_lanes_that_recovery_makes_whole():
    replay = make(lanes=3, length=200_000)
    generator = torch.Generator().manual_seed(1)
    for incarnation in range(5):
        ready = SPAWN.Event()
        writer = SPAWN.Process(
            target=_write_forever, args=(replay, [0, 1, 2], incarnation, ready), daemon=True
        )
        writer.start()
        assert ready.wait(60)
        time.sleep(0.05 + 0.2 * float(torch.rand(1, generator=generator)))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        replay.recover([0, 1, 2])
        assert replay_problems(full_state(replay), WINDOW) == [], f"after kill {incarnation}"
    assert int(replay.transitions.sum()) > 100  # the writers did write
