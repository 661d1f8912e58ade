"""puct_search against a closed form and the node-object reference."""

import math

import pytest
import torch

from effzero.search import PUCTConfig, puct_search
from tests.search.models import DiscreteToy
from tests.search.reference import reference_puct

GAMMA = 0.9
C1, C2 = 1.25, 19652.0


def table_model(table: dict[int, tuple]):
    """A two-action model over node codes: the child of (code, action) is 4·code + action + 1,
    with (reward, value[, child logits]) from `table` (uniform child logits if not given)."""

    def fn(code, action):
        child = code * 4 + action + 1
        rows = [table[int(c)] for c in child]
        r = torch.tensor([row[0] for row in rows], dtype=torch.float64)
        v = torch.tensor([row[1] for row in rows], dtype=torch.float64)
        logits = torch.tensor([row[2] if len(row) > 2 else [0.0, 0.0] for row in rows], dtype=torch.float64)
        return r, v, logits, child

    return fn


def search_one_root(logits: list[float], v0: float, fn, n: int, config: PUCTConfig = PUCTConfig()):
    """puct_search of one root (code 0) without noise, taking the most visited action."""
    return puct_search(
        torch.tensor([logits], dtype=torch.float64),
        torch.tensor([v0], dtype=torch.float64),
        torch.zeros(1, dtype=torch.long),
        fn,
        n,
        GAMMA,
        dirichlet_fraction=0.0,
        temperature=0.0,
        config=config,
    )


def test_two_simulations_closed_form():
    # Root prior softmax([0.4, 0.0]); child 1: r = 0.2, v = 0.3; child 2: r = -0.1, v = 0.6.
    table = {1: (0.2, 0.3), 2: (-0.1, 0.6)}

    logits, v0 = [0.4, 0.0], 0.1
    out = search_one_root(logits, v0, table_model(table), 2)
    p = torch.softmax(torch.tensor(logits), -1).tolist()
    # Simulation 0: empty min-max, q̂ = 0; N(root) = 1: the larger prior wins -> slot 0.
    q0 = 0.2 + GAMMA * 0.3
    # Simulation 1: min = max = q0 (spread 0.01); slot 1 stands in with the root's mean of its
    # visited children's Q, q0, so both q̂ are 0; N(root) = 2.
    c = C1 + math.log((2 + C2 + 1) / C2)
    score0 = 0.0 + p[0] * math.sqrt(2) / 2 * c
    score1 = 0.0 + p[1] * math.sqrt(2) / 1 * c
    second = 0 if score0 >= score1 else 1
    expected = [1 + (second == 0), int(second == 1)]
    assert out.visit_counts[0].tolist() == expected
    assert out.improved_policy[0].tolist() == [x / 2 for x in expected]
    q1 = q0 if second == 0 else -0.1 + GAMMA * 0.6
    assert out.root_value.item() == pytest.approx((v0 + q0 + q1) / 3, abs=1e-12)


@pytest.mark.parametrize("unvisited_q", ["parent_mean", "zero"])
def test_the_stand_in_for_unvisited_children_is_chained_down_the_path(unvisited_q):
    # Child code of (node code, action) = 4·code + action + 1: (reward, value, child logits).
    table = {
        1: (0.2, 0.3, [math.log(3.0), 0.0]),  # root, slot 0
        5: (-0.1, 0.5, [0.0, 1.0]),  # node 1, slot 0
        6: (0.3, -0.2, [0.0, 0.0]),  # node 1, slot 1
        22: (0.1, 0.4, [0.0, 0.0]),  # node 5, slot 1
    }

    v0 = 0.1
    out = search_one_root([3.0, 0.0], v0, table_model(table), 3, PUCTConfig(unvisited_q=unvisited_q))
    # The root's prior (0.95, 0.05) sends all three simulations through slot 0 (node 1).
    # Simulations 0 and 1: every q̂ is 0 (no spread yet), so node 1 follows its prior (3:1) to
    # slot 0, node 5. After them the edges' Q are node 5: -0.1 + γ·0.5 = 0.35 and node 1:
    # 0.2 + γ·mean(0.3, 0.35) = 0.4925, the normalisation's bounds.
    q5 = -0.1 + GAMMA * 0.5
    q1 = 0.2 + GAMMA * (0.3 + q5) / 2
    # Simulation 2 at node 1 (N = 2), slot 0 (visited, q̂ = 0) against slot 1 (unvisited):
    #   parent_mean: stand-in (m_root + q5) / 2 with m_root = q1, q̂ = 0.5 exactly;
    #   zero: q̂ = 0.
    c = C1 + math.log((2 + C2 + 1) / C2)
    stand_in = 0.5 if unvisited_q == "parent_mean" else 0.0
    assert (q1 + q5) / 2 == pytest.approx(q5 + 0.5 * (q1 - q5))
    score0 = 0.75 * math.sqrt(2) / 2 * c  # 0.66
    score1 = stand_in + 0.25 * math.sqrt(2) * c  # 0.94 or 0.44
    if unvisited_q == "parent_mean":
        assert score1 > score0  # node 1 -> slot 1: the leaf is node 6
        g2 = 0.2 + GAMMA * (0.3 + GAMMA * -0.2)
    else:
        assert score0 > score1  # node 1 -> node 5, whose prior picks slot 1: the leaf is node 22
        g2 = 0.2 + GAMMA * (-0.1 + GAMMA * (0.1 + GAMMA * 0.4))
    g0, g1 = 0.2 + GAMMA * 0.3, 0.2 + GAMMA * q5
    assert out.visit_counts[0].tolist() == [3, 0]
    assert out.root_value.item() == pytest.approx((v0 + g0 + g1 + g2) / 4, abs=1e-12)


def test_an_unknown_stand_in_is_refused():
    with pytest.raises(ValueError, match=r"unvisited_q='mean' .* parent_mean, zero"):
        PUCTConfig(unvisited_q="mean")


@pytest.mark.parametrize(("actions", "n"), [(2, 5), (4, 16), (18, 50)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("unvisited_q", ["parent_mean", "zero"])
def test_matches_reference_on_random_trees(actions, n, masked, unvisited_q):
    batch = 5
    model = DiscreteToy(actions, seed=n)
    logits, value, state = model.root(batch, seed=actions)
    noise = torch.distributions.Dirichlet(torch.full((actions,), 0.3)).sample((batch,)).double()
    invalid = None
    if masked:
        invalid = torch.rand(batch, actions, generator=torch.Generator().manual_seed(1)) < 0.4
        invalid[:, -1] = False
        noise = noise * ~invalid
        noise = noise / noise.sum(-1, keepdim=True)
    out = puct_search(
        logits,
        value,
        state,
        model,
        n,
        GAMMA,
        noise=noise,
        invalid_actions=invalid,
        temperature=0.0,
        config=PUCTConfig(unvisited_q=unvisited_q),
    )
    prior = torch.softmax(logits if invalid is None else logits.masked_fill(invalid, float("-inf")), -1)
    mixed = (0.75 * prior + 0.25 * noise).log()
    for b in range(batch):
        visits, root_value = reference_puct(
            mixed[b].tolist(),
            value[b],
            (state[0][b : b + 1], state[1][b : b + 1]),
            model,
            n,
            GAMMA,
            unvisited_q=unvisited_q,
        )
        assert out.visit_counts[b].tolist() == visits
        assert out.root_value[b].item() == pytest.approx(root_value, abs=1e-9)
        assert out.action[b].item() == max(range(actions), key=lambda a: (visits[a], -a))
        if invalid is not None:
            assert out.visit_counts[b][invalid[b]].sum() == 0


def test_temperature_samples_in_proportion_to_visits():
    model = DiscreteToy(4, seed=2)
    logits, value, state = model.root(1)
    batch = 4000
    expand = lambda t: t.expand(batch, *t.shape[1:])  # noqa: E731
    noise = torch.full((batch, 4), 0.25, dtype=torch.float64)
    out = puct_search(
        expand(logits),
        expand(value),
        (expand(state[0]), expand(state[1])),
        model,
        12,
        GAMMA,
        noise=noise,
        temperature=1.0,
    )
    visits = out.visit_counts[0]
    assert (out.visit_counts == visits).all()  # same root, same noise: same tree
    freq = torch.bincount(out.action, minlength=4).double() / batch
    torch.testing.assert_close(freq, visits / visits.sum(), atol=0.03, rtol=0)
