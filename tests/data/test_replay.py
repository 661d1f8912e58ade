"""The shared-memory replay: slot bookkeeping, sampleable windows, priorities, checkpoints."""

import pytest
import torch

from effzero.data.replay import FINAL, TERMINATED, TRANSITION, Replay, ReplayLayout, stack_frames

WINDOW = 3


def make(lanes=2, length=16):
    layout = ReplayLayout(lanes, length, (2,), torch.float32, (), torch.long, 3, WINDOW)
    return Replay(layout)


def write(replay, lane, count, start_step=0, kind=TRANSITION):
    for i in range(count):
        replay.append(
            torch.tensor([lane]),
            torch.full((1, 2), float(start_step + i)),
            torch.tensor([i % 3]),
            torch.tensor([1.0]),
            torch.tensor([kind], dtype=torch.uint8),
            torch.zeros(1),
            torch.zeros(1, 3),
            torch.tensor([start_step + i]),
        )


def sampleable(replay, lane):
    return replay.sampleable[lane].nonzero().flatten().tolist()


def test_a_slot_is_sampleable_once_its_window_is_written():
    replay = make()
    write(replay, 0, 6)
    assert sampleable(replay, 0) == [0, 1, 2]  # slot p needs p + 1 .. p + 3 written
    assert sampleable(replay, 1) == []
    assert replay.written.tolist() == [6, 0]


def test_an_ended_episode_opens_its_last_windows_and_adds_a_final_slot():
    replay = make()
    write(replay, 0, 5)
    replay.kind[0, 4] = TERMINATED
    replay.end_episodes(torch.tensor([0]), torch.full((1, 2), 99.0), torch.tensor([5]))
    assert replay.kind[0, 5].item() == FINAL and replay.obs[0, 5].tolist() == [99.0, 99.0]
    assert sampleable(replay, 0) == [0, 1, 2, 3, 4]  # never the final slot
    write(replay, 0, 3, start_step=6)  # the next episode: slots 6 .. 8
    assert sampleable(replay, 0) == [0, 1, 2, 3, 4]  # its windows are not complete yet
    write(replay, 0, 2, start_step=9)
    assert sampleable(replay, 0) == [0, 1, 2, 3, 4, 6, 7]


def test_the_ring_overwrites_the_oldest_slots():
    replay = make(lanes=1, length=8)
    write(replay, 0, 12)
    assert replay.written.item() == 12
    assert replay.obs[0, :4, 0].tolist() == [8, 9, 10, 11]  # slots 0-3 hold steps 8-11
    # Complete windows: steps 4 .. 8 (slots 4-7, 0); steps 9-11 still wait for theirs.
    assert sampleable(replay, 0) == [0, 4, 5, 6, 7]
    window = replay.windows(torch.tensor([0]), torch.tensor([6]))
    assert window["frames"][0, :, 0].tolist() == [6, 7, 8, 9]  # wraps around the ring


def test_once_the_ring_wraps_no_sampleable_stack_holds_a_frame_it_overwrote():
    # S = 3 frames of shape [2]; one long episode; frame t holds the value t.
    stack, length = 3, 8
    layout = ReplayLayout(
        1, length, (stack * 2,), torch.float32, (), torch.long, 3, WINDOW, frame_stack=stack
    )
    replay = Replay(layout)
    for t in range(13):
        frames = torch.tensor([float(max(t - j, 0)) for j in (2, 1, 0)]).repeat_interleave(2)
        replay.append(
            torch.tensor([0]),
            frames[None],
            torch.tensor([0]),
            torch.tensor([1.0]),
            torch.tensor([TRANSITION], dtype=torch.uint8),
            torch.zeros(1),
            torch.zeros(1, 3),
            torch.tensor([t]),
        )
    # Positions 5..12 are held; 5 and 6 lost the frames before them (3, 4), 7..9 have their windows.
    assert sampleable(replay, 0) == [0, 1, 7]  # positions 8, 9, 7
    for slot in sampleable(replay, 0):
        position = 12 - (12 - slot) % length
        stacks = stack_frames(replay.windows(torch.tensor([0]), torch.tensor([slot]))["frames"], stack)[0]
        for i in range(WINDOW + 1):
            expected = [float(position + i - j) for j in (2, 1, 0)]
            assert stacks[i, ::2].tolist() == expected, (slot, i)


def test_sampling_follows_priorities_and_weights_by_importance():
    replay = make(lanes=1, length=16)
    write(replay, 0, 5)  # slots 0, 1 sampleable
    replay.update_priorities(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([replay.sample(1, 1.0, 1.0, generator)[1] for _ in range(4000)])
    assert abs((draws == 1).float().mean().item() - 0.75) < 0.03
    _, slots, weights = replay.sample(2, 1.0, 1.0, generator)
    # P = (0.25, 0.75), N = 2: w = (N·P)^-1 / max = (2, 2/3) / 2 = (1, 1/3)
    expected = {0: 1.0, 1: 1 / 3}
    for slot, weight in zip(slots.tolist(), weights.tolist(), strict=True):
        assert weight == pytest.approx(expected[slot])
    assert replay.max_priority.item() == 3.0


def test_new_data_enters_at_the_largest_priority_the_replay_holds_now():
    replay = make()
    write(replay, 0, 2)  # at the initial priority, 1
    replay.update_priorities(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([7.0, 2.0]))
    write(replay, 1, 1)
    assert replay.priority[1, 0].item() == 7.0
    # Final slots are never sampled, so they hold no priority: the one an episode's end writes
    # and the one a repair makes of the last slot of an unfinished episode (lane 1, slot 1).
    replay.end_episodes(torch.tensor([0]), torch.zeros(1, 2), torch.tensor([2]))
    write(replay, 1, 1)
    replay.recover([1])
    assert replay.priority[0, 2].item() == replay.priority[1, 1].item() == 0.0
    # The errors shrink: so does the largest priority held, and a new slot's with it.
    lanes, slots = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])
    replay.update_priorities(lanes, slots, torch.tensor([0.5, 0.25, 0.125]))
    write(replay, 1, 1)
    assert replay.priority[1, 2].item() == 0.5


def test_too_few_sampleable_slots_is_an_error():
    replay = make()
    write(replay, 0, 4)
    with pytest.raises(ValueError, match="sampleable"):
        replay.sample(2, 1.0, 1.0)


def test_state_dict_round_trip_and_mismatch():
    replay = make()
    write(replay, 0, 7)
    copy = make()
    copy.load_state_dict(replay.state_dict())
    assert torch.equal(copy.obs, replay.obs) and torch.equal(copy.sampleable, replay.sampleable)
    with pytest.raises(ValueError, match=r"does not fit this run.*data\.selfplay_workers × env\.num_envs"):
        make(length=32).load_state_dict(replay.state_dict())


def test_memory_is_shared_with_a_child_process():
    import torch.multiprocessing as mp

    replay = make()
    ctx = mp.get_context("spawn")
    process = ctx.Process(target=_child_write, args=(replay,))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert replay.written.tolist() == [0, 5]
    assert replay.obs[1, 4].tolist() == [4.0, 4.0]


def _child_write(replay):
    write(replay, 1, 5)


def test_frames_are_stored_once_and_stacks_rebuilt_at_episode_starts():
    # S = 3 stacked frames of shape [1, 2]: the env's observation at step t is
    # [f_{t-2}, f_{t-1}, f_t] with the episode's first frame repeated before its start.
    stack = 3
    layout = ReplayLayout(1, 32, (stack, 2), torch.float32, (), torch.long, 2, WINDOW, frame_stack=stack)
    replay = Replay(layout)
    lane = torch.tensor([0])

    def env_obs(frames, t):
        return torch.stack([frames[max(t - j, 0)] for j in (2, 1, 0)])[:, None, :].reshape(stack, 2)

    first = [torch.tensor([10.0 + t, 0.0]) for t in range(7)]  # f_0 .. f_6 (f_6: final observation)
    second = [torch.tensor([50.0 + t, 1.0]) for t in range(6)]
    observations = []
    for t in range(6):
        obs = env_obs(first, t)
        observations.append(obs)
        kind = TERMINATED if t == 5 else TRANSITION
        replay.append(
            lane,
            obs[None],
            torch.tensor([0]),
            torch.tensor([1.0]),
            torch.tensor([kind], dtype=torch.uint8),
            torch.zeros(1),
            torch.zeros(1, 2),
            torch.tensor([t]),
        )
    final = env_obs(first, 6)
    observations.append(final)
    replay.end_episodes(lane, final[None], torch.tensor([6]))
    for t in range(6):
        obs = env_obs(second, t)
        observations.append(obs)
        replay.append(
            lane,
            obs[None],
            torch.tensor([0]),
            torch.tensor([1.0]),
            torch.tensor([TRANSITION], dtype=torch.uint8),
            torch.zeros(1),
            torch.zeros(1, 2),
            torch.tensor([7 + t]),
        )
    assert replay.obs.shape == (1, 32, 1, 2)  # one frame per slot
    for start in (0, 2, 4, 7, 8):
        window = replay.windows(lane, torch.tensor([start]))
        stacks = stack_frames(window["frames"], stack)[0]  # [W + 1, S, 2]
        for i in range(WINDOW + 1):
            position = start + i
            if (position < 7 and start < 7) or start >= 7:  # positions of the start slot's episode
                assert torch.equal(stacks[i], observations[position]), (start, i)
