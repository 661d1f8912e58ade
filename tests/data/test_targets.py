"""Targets of hand-built windows, computed by hand (K = 2 unroll steps, n = 2 TD steps, γ = 0.5)."""

import torch

from effzero.data.replay import FINAL, TERMINATED, TRANSITION, TRUNCATED
from effzero.data.targets import (
    episode_last,
    mixed_value_target,
    position_masks,
    reward_targets,
    td_value_targets,
)

K, N, GAMMA = 2, 2, 0.5
REWARD = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
VALUE = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0]])


def window(kinds):
    last, terminated = episode_last(torch.tensor([kinds], dtype=torch.uint8))
    return last, terminated


def test_window_inside_one_episode():
    last, terminated = window([TRANSITION] * 5)
    assert last.item() == 5 and not terminated.item()
    z, mask = td_value_targets(REWARD, VALUE, last, terminated, GAMMA, N, K)
    # z_k = r_k + γ r_{k+1} + γ² V_{k+2}
    assert z.tolist() == [[1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 3 + 0.25 * 40, 3 + 0.5 * 4 + 0.25 * 50]]
    assert mask.tolist() == [[1, 1, 1]]
    r, r_mask = reward_targets(REWARD, last, terminated, K)
    assert r.tolist() == [[1, 2]] and r_mask.tolist() == [[1, 1]]


def test_terminal_state_is_absorbing():
    # The episode's last transition is slot 1 and it terminates; slot 2 is its final observation.
    last, terminated = window([TRANSITION, TERMINATED, FINAL, TRANSITION, TRANSITION])
    assert last.item() == 1 and terminated.item()
    z, mask = td_value_targets(REWARD, VALUE, last, terminated, GAMMA, N, K)
    # No bootstrap across the terminal state; past it the value is 0 and still trained.
    assert z.tolist() == [[1 + 0.5 * 2, 2, 0]]
    assert mask.tolist() == [[1, 1, 1]]
    r, r_mask = reward_targets(REWARD, last, terminated, K)
    assert r.tolist() == [[1, 2]] and r_mask.tolist() == [[1, 1]]
    masks = position_masks(last, terminated, K)
    assert masks["policy"].tolist() == [[1, 1, 0]]
    assert masks["consistency"].tolist() == [[1, 1]]  # the final observation is in the episode


def test_time_limit_cut_bootstraps_from_the_final_observation():
    last, terminated = window([TRUNCATED, FINAL, TRANSITION, TRANSITION, TRANSITION])
    assert last.item() == 0 and not terminated.item()
    z, mask = td_value_targets(REWARD, VALUE, last, terminated, GAMMA, N, K)
    assert z[0, 0].item() == 1 + 0.5 * 20  # r_0 + γ V(final observation)
    assert mask.tolist() == [[1, 0, 0]]  # nothing is known past the cut
    r, r_mask = reward_targets(REWARD, last, terminated, K)
    assert r.tolist() == [[1, 0]] and r_mask.tolist() == [[1, 0]]
    masks = position_masks(last, terminated, K)
    assert masks["policy"].tolist() == [[1, 0, 0]]
    assert masks["consistency"].tolist() == [[1, 0]]


def test_terminal_right_at_the_window_start():
    last, terminated = window([TERMINATED, FINAL, TRANSITION, TRANSITION, TRANSITION])
    z, mask = td_value_targets(REWARD, VALUE, last, terminated, GAMMA, N, K)
    assert z.tolist() == [[1, 0, 0]] and mask.tolist() == [[1, 1, 1]]
    r, r_mask = reward_targets(REWARD, last, terminated, K)
    assert r.tolist() == [[1, 0]] and r_mask.tolist() == [[1, 1]]


def test_batch_of_mixed_windows_matches_rows_alone():
    kinds = [
        [TRANSITION] * 5,
        [TRANSITION, TERMINATED, FINAL, TRANSITION, TRANSITION],
        [TRUNCATED, FINAL, TRANSITION, TRANSITION, TRANSITION],
    ]
    last, terminated = episode_last(torch.tensor(kinds, dtype=torch.uint8))
    z, mask = td_value_targets(REWARD.expand(3, -1), VALUE.expand(3, -1), last, terminated, GAMMA, N, K)
    for row, kind in enumerate(kinds):
        last1, term1 = window(kind)
        z1, mask1 = td_value_targets(REWARD, VALUE, last1, term1, GAMMA, N, K)
        assert torch.equal(z[row], z1[0]) and torch.equal(mask[row], mask1[0])


def test_mixed_value_target_switches_on_t1_and_t2():
    td, sve = torch.zeros(3, 2), torch.ones(3, 2)
    steps = torch.tensor([100, 950, 999])
    assert mixed_value_target(td, sve, steps, learner_step=10, env_steps=1000, t1=50, t2=100).sum() == 0
    out = mixed_value_target(td, sve, steps, learner_step=60, env_steps=1000, t1=50, t2=100)
    assert out[:, 0].tolist() == [1, 0, 0]  # only the old transition uses the search value


def test_value_prefix_targets_restart_every_horizon():
    from effzero.data.targets import value_prefix_targets

    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    # Segments of 3 steps: (1, 2, 3), (4, 5, 6), (7,).
    assert value_prefix_targets(reward, 3).tolist() == [[1, 3, 6, 4, 9, 15, 7]]
    assert value_prefix_targets(reward[:, :5], 5).tolist() == [[1, 3, 6, 10, 15]]


def test_per_sample_td_horizons_match_hand_sums():
    """Row 0 with n = 2, row 1 with n = 1 (EZ-V1's corrected horizon), same window."""
    from effzero.data.targets import bootstrap_positions

    reward, value = REWARD.repeat(2, 1), VALUE.repeat(2, 1)
    last, terminated = episode_last(torch.tensor([[TRANSITION] * 5] * 2, dtype=torch.uint8))
    z, mask = td_value_targets(reward, value, last, terminated, GAMMA, torch.tensor([2, 1]), K)
    assert mask.tolist() == [[1, 1, 1]] * 2
    assert z[0].tolist() == [1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 3 + 0.25 * 40, 3 + 0.5 * 4 + 0.25 * 50]
    assert z[1].tolist() == [1 + 0.5 * 20, 2 + 0.5 * 30, 3 + 0.5 * 40]
    steps, end = bootstrap_positions(last, torch.tensor([2, 1]), K, 5)
    assert steps.tolist() == [[2, 2, 2], [1, 1, 1]] and end.tolist() == [[2, 3, 4], [1, 2, 3]]
    # Near a terminal the episode's end caps the horizon whatever n is.
    last, terminated = window([TRANSITION, TERMINATED, FINAL, TRANSITION, TRANSITION])
    steps, _ = bootstrap_positions(last, torch.tensor([2]), K, 5)
    assert steps.tolist() == [[2, 1, 0]]


def test_off_policy_horizon_shrinks_one_step_per_ratio_times_span_of_age():
    from effzero.data.targets import off_policy_td_steps

    # ratio · span = 0.3 · 1000 = 300 env steps of age per step; n = 5, clipped to [1, 5].
    collected = torch.tensor([1000, 999, 700, 701, 400, 0, 1200])
    steps = off_policy_td_steps(collected, env_steps=1000, td_steps=5, ratio=0.3, total=1000)
    assert steps.tolist() == [5, 5, 4, 5, 3, 2, 5]
    assert off_policy_td_steps(torch.tensor([0]), 10**6, 5, 0.3, 1000).tolist() == [1]
