"""Training targets of one unroll window, as pure functions of tensors.

A window starts at a sampled transition t and holds W + 1 = K + n + 1 slots (unroll K, TD
steps n). `last` is the window index of the episode's last transition (≥ W + 1 if the
episode goes on past the window); slot `last + 1` holds the episode's final observation.

Past a terminal state the episode is treated as absorbing (MuZero): reward and value targets
are 0 and trained. Past a time-limit cut nothing is known, so those targets are masked.
"""

from __future__ import annotations

import torch
from torch import Tensor

from effzero.data.replay import TERMINATED, TRUNCATED


def episode_last(kind: Tensor) -> tuple[Tensor, Tensor]:
    """Window index of the episode's last transition, and whether it terminated.

    Args:
        kind: [B, W + 1] slot kinds; slot 0 is a transition.
    Returns: last [B] (W + 1 when the episode does not end in the window), terminated [B] bool.
    """
    ends = (kind == TERMINATED) | (kind == TRUNCATED)
    width = kind.shape[1]
    index = torch.arange(width, device=kind.device).expand_as(kind)
    last = torch.where(ends, index, width).amin(1)
    terminated = kind.gather(1, last.clamp(max=width - 1)[:, None]).squeeze(1) == TERMINATED
    return last, terminated & (last < width)


def bootstrap_positions(
    last: Tensor, td_steps: int | Tensor, unroll: int, width: int
) -> tuple[Tensor, Tensor]:
    """The TD horizon m_k = min(n, steps left in the episode) of positions k = 0..K, and the
    window index k + m_k of the observation each bootstraps from.

    Args:
        last: [B] from `episode_last`; td_steps: n, an int or a per-sample [B] tensor;
        width: W + 1, the window's slots.
    Returns: steps [B, K + 1], end [B, K + 1] (clamped into the window).
    """
    k = torch.arange(unroll + 1, device=last.device)[None, :]  # [1, K + 1]
    n = torch.as_tensor(td_steps, device=last.device).reshape(-1, 1)  # [B or 1, 1]
    steps = torch.minimum(n.expand(last.shape[0], 1), last[:, None] - k + 1).clamp(min=0)
    return steps, (k + steps).clamp(max=width - 1)


def off_policy_td_steps(slot_step: Tensor, env_steps: int, td_steps: int, ratio: float, total: int) -> Tensor:
    """EfficientZero V1's off-policy correction: the TD horizon shrinks with the data's age.

    l = clip(n − ⌊age / (ratio · total)⌋, 1, n), age = env steps since the transition was
    collected: old data's rewards came from an older policy, so it bootstraps sooner.

    Args:
        slot_step: [B] env step at which each sampled transition was collected.
    Returns: [B] long.
    """
    age = (env_steps - slot_step).clamp(min=0)
    shrink = torch.div(age, max(1.0, ratio * total), rounding_mode="floor").long()
    return (td_steps - shrink).clamp(1, td_steps)


def td_value_targets(
    reward: Tensor,
    bootstrap: Tensor,
    last: Tensor,
    terminated: Tensor,
    discount: float,
    td_steps: int | Tensor,
    unroll: int,
) -> tuple[Tensor, Tensor]:
    """n-step TD targets z_k = Σ_{i<m} γ^i r_{k+i} + γ^m V(o_{k+m}) for positions k = 0..K.

    m = min(n, steps left in the episode). The bootstrap is dropped when the episode
    terminated within those m steps; after a time-limit cut it is the value of the final
    observation.

    Args:
        reward: [B, W + 1] rewards of the window's slots; bootstrap: [B, W + 1] target-model
            values of the window's observations; last, terminated: from `episode_last`;
        td_steps: n, an int or a per-sample [B] tensor (at most W − K).
    Returns: targets [B, K + 1], mask [B, K + 1]
    """
    width = reward.shape[1]
    steps, end = bootstrap_positions(last, td_steps, unroll, width)
    k = torch.arange(unroll + 1, device=reward.device)[None, :]  # [1, K + 1]
    i = torch.arange(width - unroll - 1, device=reward.device)  # every horizon fits the window
    index = (k[..., None] + i).clamp(max=width - 1)  # [1, K + 1, W - K]
    rewards = reward[:, None, :].expand(-1, unroll + 1, -1).gather(2, index.expand(reward.shape[0], -1, -1))
    weights = (discount**i).to(reward.dtype) * (i < steps[..., None])
    target = (rewards * weights).sum(-1)
    last = last[:, None]
    ends_terminal = terminated[:, None] & (k + steps == last + 1)
    target = target + torch.where(ends_terminal, 0.0, discount**steps * bootstrap.gather(1, end))
    inside = k <= last
    mask = inside | terminated[:, None]  # absorbing after a terminal state, unknown after a cut
    return torch.where(inside, target, 0.0), mask.to(reward.dtype)


def reward_targets(reward: Tensor, last: Tensor, terminated: Tensor, unroll: int) -> tuple[Tensor, Tensor]:
    """Per-step reward targets of unroll steps 1..K: r_{k-1}, 0 past a terminal state.

    Returns: targets [B, K], mask [B, K]
    """
    k = torch.arange(unroll, device=reward.device)[None, :]  # transition k -> unroll step k + 1
    inside = k <= last[:, None]
    mask = inside | terminated[:, None]
    return torch.where(inside, reward[:, :unroll], 0.0), mask.to(reward.dtype)


def value_prefix_targets(reward: Tensor, horizon: int) -> Tensor:
    """Value-prefix targets: Σ rewards since the last LSTM reset, at unroll steps 1..K.

    The LSTM is reset before steps 1, 1 + H, 1 + 2H, …, so the target at step k sums the
    per-step targets [B, K] from the start of k's segment of H steps. Returns: [B, K].
    """
    total = reward.cumsum(1)
    k = torch.arange(reward.shape[1], device=reward.device)
    segment_start = (k // horizon) * horizon
    before = torch.where(segment_start > 0, total[:, (segment_start - 1).clamp(min=0)], 0.0)
    return total - before


def position_masks(last: Tensor, terminated: Tensor, unroll: int) -> dict[str, Tensor]:
    """Masks of the other targets.

    Returns: policy [B, K + 1] (positions where an action was taken from a real observation),
    consistency [B, K] (unroll steps 1..K whose observation belongs to the episode, the final
    one included), search_value [B, K + 1] (as the TD mask).
    """
    dtype = torch.float32
    k = torch.arange(unroll + 1, device=last.device)[None, :]
    last = last[:, None]
    return {
        "policy": (k <= last).to(dtype),
        "consistency": (k[:, 1:] <= last + 1).to(dtype),
        "search_value": ((k <= last) | terminated[:, None]).to(dtype),
    }


def mixed_value_target(
    td: Tensor, search: Tensor, slot_step: Tensor, learner_step: int, env_steps: int, t1: int, t2: int
) -> Tensor:
    """EZ-V2's value target: TD before learner step T1 and for the newest T2 transitions, SVE otherwise.

    Args:
        td, search: [B, K + 1] TD and search-based value targets; slot_step: [B] env step at
            which each sampled transition was collected.
    Returns: [B, K + 1]
    """
    if learner_step < t1:
        return td
    fresh = slot_step > env_steps - t2
    return torch.where(fresh[:, None], td, search)
