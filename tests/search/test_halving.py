"""Sequential halving: EZ-V2's phase budget by hand, and the root's visit pattern."""

import pytest
import torch

from effzero.search import gumbel_search, halving_schedule
from effzero.search.halving import ranks


@pytest.mark.parametrize(
    ("n", "m", "expected"),
    [
        (16, 8, ((8, 4), (12, 2), (16, 1))),  # Atari, |A| = 18
        (16, 4, ((8, 2), (16, 1))),  # Atari, 4 <= |A| < 16
        (32, 16, ((16, 8), (24, 4), (32, 2))),  # DMC
        (4, 2, ((4, 1),)),  # EZ-V2's |A| < 4 setting
        (16, 1, ()),
        (16, 2, ((16, 1),)),
        (4, 8, ((4, 4),)),  # fewer simulations than considered children
    ],
)
def test_schedule_by_hand(n, m, expected):
    assert halving_schedule(n, m) == expected


def test_ranks_break_ties_by_slot():
    score = torch.tensor([[0.5, 2.0, 0.5, float("-inf"), 2.0]])
    assert ranks(score).tolist() == [[2, 0, 3, 4, 1]]


def test_root_visits_follow_the_schedule():
    # m = 8 of 18 actions, N = 16: 8 children once, the best 4 once more, the best 2 twice more.
    batch, actions = 3, 18
    torch.manual_seed(0)
    logits = torch.randn(batch, actions)

    def fn(state, action):
        rows = state.shape[0]
        return torch.zeros(rows), torch.rand(rows), torch.zeros(rows, actions), state

    out = gumbel_search(logits, torch.zeros(batch), torch.zeros(batch, 1), fn, 16, 8, 0.9)
    counts = out.visit_counts.sort(-1, descending=True).values
    assert counts[:, :8].tolist() == [[4, 4, 2, 2, 1, 1, 1, 1]] * batch
    assert counts[:, 8:].sum() == 0


def test_considered_children_are_the_gumbel_top_m():
    batch, actions = 4, 18
    torch.manual_seed(1)
    logits, gumbel = torch.randn(batch, actions), torch.randn(batch, actions)

    def fn(state, action):
        rows = state.shape[0]
        return torch.zeros(rows), torch.zeros(rows), torch.zeros(rows, actions), state

    out = gumbel_search(logits, torch.zeros(batch), torch.zeros(batch, 1), fn, 16, 8, 0.9, gumbel=gumbel)
    top = (logits + gumbel).topk(8).indices.sort(-1).values
    visited = (out.visit_counts > 0).nonzero()[:, 1].view(batch, 8)
    assert torch.equal(visited, top)
