"""In-process collection (`data.synchronous`): private streams, the governor, a small budget, signals."""

import os
import signal

import pytest
import torch

from effzero.callbacks import InterruptCheckpoint, Interrupted
from effzero.data.acting import build_model
from effzero.data.environments import build_spec
from effzero.data.lockstep import LockstepPipeline, PrivateRandom
from effzero.data.pipeline import BatchStream
from tests.data.replay_checks import replay_problems
from tests.data.test_pipeline import composed


def test_a_private_stream_neither_moves_nor_follows_the_global_generator():
    torch.manual_seed(7)
    expected_global = torch.rand(4)
    expected_private = torch.Generator().manual_seed(3)
    expected_private = torch.rand(6, generator=expected_private)
    torch.manual_seed(7)
    stream = PrivateRandom(3)
    with stream.active():
        first = torch.rand(3)
    middle = torch.rand(4)  # the global generator, as if the stream had never drawn
    with stream.active():
        second = torch.rand(3)  # the stream continues where it stopped
    assert torch.equal(middle, expected_global)
    assert torch.equal(torch.cat((first, second)), expected_private)


def lockstep(*overrides: str, state: dict | None = None) -> LockstepPipeline:
    """A started pipeline of the smoke cartpole config; `state`: resumed from this checkpoint."""
    conf = composed(*overrides)
    spec = build_spec(conf.env)
    template = build_model(conf.model, spec)
    pipeline = LockstepPipeline(conf, spec, template)
    if state is not None:
        pipeline.load_state_dict(state)
    pipeline.weights.publish(template.state_dict())
    pipeline.target_weights.publish(template.state_dict())
    pipeline.start()
    return pipeline


def test_each_update_waits_for_exactly_the_env_steps_the_replay_ratio_asks():
    pipeline = lockstep("data.start_transitions=200", "data.replay_ratio=0.5", "data.batch_size=8")
    try:
        counters = pipeline.counters
        for update in range(6):
            counters.set_updates(update)
            pipeline.wait_for_update()
            # the first multiple of the 4 envs above 200 + update / 0.5
            assert counters.env_steps == 4 * ((200 + 2 * update) // 4) + 4
            batch = pipeline.next_batch()
            assert batch["weight"].shape == (8,) and not batch["weight"].is_inference()
    finally:
        pipeline.stop()


def test_a_resumed_run_closes_the_episodes_its_checkpoint_cut_and_seeds_its_environments_anew():
    overrides = ("data.start_transitions=64", "data.batch_size=8")
    first = lockstep(*overrides)
    try:
        first.wait_for_update()
        state = first.state_dict()
        seeds = {job.seed for job in (*(p.job for p, _ in first._players), first._reanalyser[0].job)}
    finally:
        first.stop()
    replay = state["replay"]
    assert bool((replay["episode_start"] < replay["written"]).any())  # episodes were running

    resumed = lockstep(*overrides, state=state)
    try:
        replay, window = resumed.replay, resumed.replay.layout.window
        # Each cut episode ends at the checkpoint, as a time-limit cut: its last action, whose
        # next observation the checkpoint lacks, is dropped and its observation becomes the final one.
        assert torch.equal(replay.episode_start, replay.written)
        assert replay_problems(replay.state_dict(), window) == []
        assert resumed.counters.env_steps == int(replay.transitions.sum())
        before = replay.written.clone()
        resumed._collect()
        # The resumed environments' first steps begin episodes of their own, not the cut ones.
        assert torch.equal(replay.written, before + 1)
        assert torch.equal(replay.start[torch.arange(len(before)), before], before)
        resumed_seeds = {
            job.seed for job in (*(p.job for p, _ in resumed._players), resumed._reanalyser[0].job)
        }
        assert not resumed_seeds & seeds
    finally:
        resumed.stop()


def test_a_budget_too_small_for_one_batch_is_named():
    pipeline = lockstep("data.total_env_steps=24", "data.start_transitions=4", "data.batch_size=16")
    try:
        with pytest.raises(ValueError, match=r"raise data\.total_env_steps or lower data\.batch_size"):
            pipeline.next_batch()
    finally:
        pipeline.stop()


def test_a_signal_in_the_middle_of_a_replay_write_stops_the_run_only_after_the_write(tmp_path):
    """Collection runs inside the wait for a batch, where a stop is otherwise immediate."""
    pipeline = lockstep("data.start_transitions=200", "data.replay_ratio=0.5", "data.batch_size=8")
    interrupt = InterruptCheckpoint(str(tmp_path))
    interrupt.on_train_start(None, None)
    end_episodes, signalled = pipeline.replay.end_episodes, []

    def signal_then_end(*args) -> None:  # after Replay.append wrote an episode's end, before its final obs
        if not signalled and pipeline.counters.env_steps > 100:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler here, mid-step
        end_episodes(*args)

    pipeline.replay.end_episodes = signal_then_end
    try:
        with interrupt.handling_signals(), pytest.raises(Interrupted):
            for _ in BatchStream(pipeline, on_start=lambda: None):
                pass  # endless: only the signal ends it
        assert signalled and interrupt.signal == signal.SIGINT
        assert replay_problems(pipeline.replay.state_dict(), pipeline.replay.layout.window) == []
        assert not pipeline.replay.pending.any()  # the step was committed
    finally:
        pipeline.stop()
