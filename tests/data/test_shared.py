"""Shared state: weights, the replay-ratio governor and the pause across processes, batch slots, the episode log."""

import time

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from effzero.data.shared import BatchSlots, Counters, EpisodeLog, SharedWeights
from effzero.data.workers import WorkerStatus


def test_weights_round_trip_with_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    shared = SharedWeights(model)
    assert shared.read(0) == (None, 0)  # nothing published yet
    model[1].running_mean.fill_(2.5)
    model[1].num_batches_tracked.fill_(7)
    shared.publish(model.state_dict())
    copy = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    version = shared.load_into(copy, 0)
    assert version == 2
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert shared.load_into(copy, version) == version  # nothing newer


def _reader(shared, out):
    seen, version = 0, 0
    deadline = time.monotonic() + 20
    while seen < 50 and time.monotonic() < deadline:
        state, new = shared.read(version)
        if state is None:
            continue
        # Every publish writes one constant everywhere: a torn read would mix two constants.
        values = torch.cat([t.flatten() for t in state.values()]).unique()
        out.put(len(values))
        version, seen = new, seen + 1


def test_readers_never_see_a_torn_publish():
    model = nn.Linear(8, 8)
    shared = SharedWeights(model)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(shared, out))
    reader.start()
    i = 0
    while reader.is_alive():
        i += 1
        shared.publish({k: torch.full_like(v, float(i)) for k, v in model.state_dict().items()})
    reader.join()
    counts = []
    while not out.empty():
        counts.append(out.get())
    assert counts and set(counts) == {1}


def test_governor_arithmetic():
    counters = Counters(start_transitions=100, replay_ratio=0.5, total_env_steps=1000)
    assert counters.env_steps_allowed() == 102 and not counters.update_allowed()  # 100 + 1 / 0.5
    counters.add_env_steps(104)
    assert counters.update_allowed()  # 0 < (104 - 100) · 0.5
    counters.set_updates(2)
    assert not counters.update_allowed()  # 2 < 2 is false
    assert counters.env_steps_allowed() == 106  # 100 + 3 / 0.5
    counters.add_env_steps(896)
    counters.set_updates(10)
    assert counters.done and counters.update_allowed()  # offline updates after collection


def _selfplay(counters, batch):
    while counters.wait(lambda: counters.env_steps < counters.env_steps_allowed() or counters.done):
        if counters.done:
            return
        time.sleep(0.001)  # a slow environment
        counters.add_env_steps(batch)


def test_ratio_holds_between_a_slow_collector_and_a_fast_learner():
    counters = Counters(start_transitions=40, replay_ratio=0.5, total_env_steps=400)
    ctx = mp.get_context("spawn")
    collector = ctx.Process(target=_selfplay, args=(counters, 4))
    collector.start()
    updates, worst = 0, 0.0
    while not counters.done or updates < 180:
        counters.wait(counters.update_allowed)
        updates += 1
        counters.set_updates(updates)
        # The learner never runs ahead of ratio · (env steps − start).
        worst = max(worst, updates - 0.5 * (counters.env_steps - 40))
    collector.join(30)
    assert worst <= 1.0
    assert counters.env_steps == 400


def test_batch_slots_hand_whole_batches_to_the_learner_oldest_first():
    layout = {"x": ((2, 3), torch.float32), "step": ((), torch.int64)}
    slots = BatchSlots(layout, slots=4, workers=2)
    assert BatchSlots.nbytes_for(layout, 4) == 4 * (2 * 3 * 4 + 8 + 16)
    assert slots.take() is None
    first = slots.free_slot(1)
    assert first == 1  # worker 1 owns slots 1 and 3
    slots.put(first, {"x": torch.ones(2, 3), "step": torch.tensor(7)})
    slots.put(slots.free_slot(0), {"x": torch.zeros(2, 3), "step": torch.tensor(8)})
    assert slots.free_slot(1) == 3 and slots.qsize() == 2
    # A worker killed while filling its slot: the data is there, the slot was never handed over.
    slots.tensors["x"][3].fill_(5.0)
    batch = slots.take()
    assert batch["step"].item() == 7 and torch.equal(batch["x"], torch.ones(2, 3))
    assert slots.take()["step"].item() == 8
    assert slots.take() is None and slots.free_slot(1) == 1
    with pytest.raises(ValueError, match="'x'"):
        slots.put(1, {"x": torch.ones(3, 2), "step": torch.tensor(0)})


def test_episode_log_keeps_whole_rows_and_the_newest_when_the_learner_falls_behind():
    log = EpisodeLog(2)
    log.add(1, 10.0, 10, 40)
    assert log.drain() == [("episode", 10.0, 10, 40)] and log.drain() == []
    for i in range(EpisodeLog.CAPACITY + 5):
        log.add(0, float(i), i, i)
    rows = log.drain()
    assert len(rows) == EpisodeLog.CAPACITY and rows[0][1] == 5.0 and rows[-1][1] == EpisodeLog.CAPACITY + 4


def _collect(counters: Counters, steps: torch.Tensor, status: WorkerStatus) -> None:
    while counters.wait_to_step(0, status.heartbeat(0)):
        steps += 1
        time.sleep(0.002)  # a step
        counters.add_env_steps(1)


def test_pause_holds_self_play_between_steps_and_it_keeps_beating():
    counters = Counters(start_transitions=0, replay_ratio=0.0, total_env_steps=10**9)
    steps, status = torch.zeros(1, dtype=torch.int64).share_memory_(), WorkerStatus(1)
    collector = mp.get_context("spawn").Process(target=_collect, args=(counters, steps, status), daemon=True)
    collector.start()
    try:
        deadline = time.monotonic() + 60
        while int(steps) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        epoch = counters.pause()
        while not counters.parked_at(0, epoch):
            time.sleep(0.001)
        held, beat = int(steps), status.last_beat(0)
        time.sleep(0.3)
        assert int(steps) == held and counters.env_steps == held  # no step while paused
        assert status.last_beat(0) > beat  # waiting is not hanging
        counters.resume()
        time.sleep(0.3)
        assert int(steps) > held
    finally:
        counters.stop()
        collector.join(10)
