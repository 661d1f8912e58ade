"""The Gumbel searches trace to one graph, and the traced walk gives the eager search's results.

`fullgraph=True` makes any graph break an error, and a host sync (`bool(tensor)`, `.item()`,
`.tolist()`, `unique`) is a graph break: these tests fail if one creeps into the search. The
"eager" backend runs the traced graph without code generation, so they take seconds; the
traced walk descends every level up to the tree's depth bound, where eager stops early.
"""

import pytest
import torch

from effzero.search import gumbel_search, sampled_gumbel_search
from tests.search.models import ContinuousToy, DiscreteToy

GAMMA = 0.9


def traced(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False, backend="eager")


def gumbel_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gumbel(0, 1) draws of a generator of their own: the global RNG's state depends on the
    tests that ran before, and a test's noise must not."""
    uniform = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return -torch.log(-torch.log(uniform))


def assert_same(a, b):
    """The same walk: equal actions and visit counts; values equal up to float64 rounding (the
    traced graph may sum in another order: 1e-16 apart at some seeds)."""
    for name in ("action", "action_index", "visit_counts"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("improved_policy", "root_value"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize(("n", "m"), [(32, 4), (16, 16), (5, 8)])
def test_traced_gumbel_search_equals_eager(n, m):
    batch, model = 6, DiscreteToy(actions=8, seed=n)
    logits, value, state = model.root(batch, seed=m)
    gumbel = gumbel_noise((batch, 8), seed=n + m)
    depths = []

    def recording(s, a):  # the eager run's deepest expansion: the traced walk must go past it
        depths.append(int(s[1].max()))
        return model(s, a)

    def search(logits, value, state, gumbel, fn):
        return gumbel_search(logits, value, state, fn, n, m, GAMMA, gumbel=gumbel)

    eager = search(logits, value, state, gumbel, recording)
    assert_same(traced(search)(logits, value, state, gumbel, model), eager)
    if n == 32:
        assert 3 <= max(depths) < 20  # deep paths, and levels the traced walk visits in vain


def test_traced_sampled_gumbel_search_equals_eager():
    batch, model = 5, ContinuousToy(seed=3)
    policy, value, latent = model.root(batch, seed=4)
    gumbel = gumbel_noise((batch, 16), seed=5)

    def search(policy, value, latent, gumbel):
        return sampled_gumbel_search(
            policy, value, latent, model, model.sample, 32, 4, 12, 3.0, 2, 16, GAMMA, gumbel
        )

    eager, compiled = search(policy, value, latent, gumbel), traced(search)(policy, value, latent, gumbel)
    assert_same(compiled, eager)
    assert torch.equal(compiled.candidate_actions, eager.candidate_actions)


def test_illegal_root_actions_need_a_host_sync():
    """Roots with different numbers of legal actions are counted on the device: not traceable."""
    model = DiscreteToy(actions=4)
    logits, value, state = model.root(2)
    invalid = torch.tensor([[False, True, False, False], [False, False, False, False]])

    def search(logits, value, state):
        return gumbel_search(logits, value, state, model, 8, 4, GAMMA, invalid_actions=invalid)

    with pytest.raises((torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError)):
        traced(search)(logits, value, state)
