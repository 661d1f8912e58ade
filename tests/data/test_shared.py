"""Weights published through shared memory, and the replay-ratio governor across processes."""

import time

import torch
import torch.multiprocessing as mp
from torch import nn

from effzero.data.shared import Counters, SharedWeights


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
