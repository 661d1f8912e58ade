"""gumbel_search against closed forms, a node-object reference, and its own invariants."""

import math

import pytest
import torch

from effzero.search import QTransform, gumbel_search
from tests.search.models import DiscreteToy
from tests.search.reference import reference_gumbel

GAMMA = 0.9


class TableModel:
    """A model read from tables: the state is a node code, child code = 4·code + action + 1."""

    def __init__(self, reward: dict, value: dict, logits: dict, actions: int):
        self.reward, self.value, self.logits, self.actions = reward, value, logits, actions

    def __call__(self, code, action):
        child = code * 4 + action + 1
        r = torch.tensor([self.reward.get(int(c), 0.0) for c in child], dtype=torch.float64)
        v = torch.tensor([self.value.get(int(c), 0.0) for c in child], dtype=torch.float64)
        lg = torch.tensor([self.logits.get(int(c), [0.0] * self.actions) for c in child], dtype=torch.float64)
        return r, v, lg, child


def search_table(model, root_logits, root_value, n, m, gumbel=None):
    logits = torch.tensor([root_logits], dtype=torch.float64)
    gumbel = torch.zeros_like(logits) if gumbel is None else torch.tensor([gumbel], dtype=torch.float64)
    value = torch.tensor([root_value], dtype=torch.float64)
    return gumbel_search(logits, value, torch.zeros(1, dtype=torch.long), model, n, m, GAMMA, gumbel=gumbel)


def softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_two_children_closed_form():
    # Root children 1 and 2: Q1 = 0.2 + 0.9·0.4 = 0.56, Q2 = 1.0 - 0.9·0.6 = 0.46.
    model = TableModel({1: 0.2, 2: 1.0}, {1: 0.4, 2: -0.6}, {}, 2)
    out = search_table(model, [0.0, 0.0], 0.5, n=2, m=2)
    q = [0.2 + GAMMA * 0.4, 1.0 - GAMMA * 0.6]
    spread = max(q) - min(q)  # 0.1 > 0.01
    sigma = [(50 + 1) * 0.1 * (x - min(q)) / spread for x in q]
    assert out.visit_counts.tolist() == [[1, 1]]
    assert out.action.item() == 0
    assert out.improved_policy[0].tolist() == pytest.approx(softmax(sigma), abs=1e-12)
    assert out.root_value.item() == pytest.approx((0.5 + q[0] + q[1]) / 3, abs=1e-12)


def test_unvisited_child_gets_v_mix():
    # m = 2 of 3: child 3 (slot 2) is never visited and is completed with v_mix.
    model = TableModel({1: 0.3, 2: -0.2}, {1: 0.1, 2: 0.5}, {}, 3)
    logits, v0 = [1.0, 0.5, 0.0], 0.2
    out = search_table(model, logits, v0, n=2, m=2)
    q0, q1 = 0.3 + GAMMA * 0.1, -0.2 + GAMMA * 0.5
    v_root = (v0 + q0 + q1) / 3
    pi = softmax(logits)
    v_mix = (v_root + 2 * (pi[0] * q0 + pi[1] * q1) / (pi[0] + pi[1])) / 3
    lo, hi = min(q0, q1), max(q0, q1)
    completed = [q0, q1, v_mix]
    sigma = [5.1 * min(max((x - lo) / max(hi - lo, 0.01), 0.0), 1.0) for x in completed]
    assert out.visit_counts.tolist() == [[1, 1, 0]]
    assert out.improved_policy[0].tolist() == pytest.approx(
        softmax([a + b for a, b in zip(logits, sigma, strict=True)])
    )
    assert out.action.item() == max((0, 1), key=lambda a: logits[a] + sigma[a])
    assert out.root_value.item() == pytest.approx(v_root, abs=1e-12)


def test_halving_then_interior_selection():
    # N = 3, m = 2: both children once, halve to the better one at 2, then one step deeper.
    # Child 1 (slot 0) wins: Q1 = 0.5 + 0.9·0.2 > Q2 = 0.1 + 0.9·0.1. Its children have logits
    # [0.3, -0.2] and none is visited, so the interior rule takes slot 0 (code 5).
    model = TableModel({1: 0.5, 2: 0.1, 5: 0.25}, {1: 0.2, 2: 0.1, 5: 0.7}, {1: [0.3, -0.2]}, 2)
    v0 = 0.0
    out = search_table(model, [0.0, 0.0], v0, n=3, m=2)
    q1, q2 = 0.5 + GAMMA * 0.2, 0.1 + GAMMA * 0.1
    g_child = 0.25 + GAMMA * 0.7  # return at child 1 from its new leaf
    g_root = 0.5 + GAMMA * g_child
    q1_final = 0.5 + GAMMA * (0.2 + g_child) / 2
    samples = [q1, q2, g_child, g_root]  # every sampled edge return the min-max saw
    lo, hi = min(samples), max(samples)
    sigma = [(50 + 2) * 0.1 * (x - lo) / (hi - lo) for x in (q1_final, q2)]
    assert out.visit_counts.tolist() == [[2, 1]]
    assert out.action.item() == 0
    assert out.root_value.item() == pytest.approx((v0 + q1 + q2 + g_root) / 4, abs=1e-12)
    assert out.improved_policy[0].tolist() == pytest.approx(softmax(sigma), abs=1e-12)


def run_reference(model, logits, value, state, n, m, gumbel, invalid=None, own_visits=False):
    rows = []
    for b in range(logits.shape[0]):
        lg = logits[b].clone()
        if invalid is not None:
            lg[invalid[b]] = float("-inf")
        single = (state[0][b : b + 1], state[1][b : b + 1])
        rows.append(
            reference_gumbel(
                lg.tolist(), value[b], single, model, n, m, GAMMA, gumbel[b].tolist(), own_visits=own_visits
            )
        )
    return rows


@pytest.mark.parametrize(
    ("actions", "n", "m"),
    [(3, 4, 2), (5, 16, 4), (18, 16, 8), (6, 24, 6), (4, 1, 4), (8, 32, 1), (18, 50, 16)],
)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("own_visits", [False, True], ids=["paper", "ezv2"])
def test_matches_reference_on_random_trees(actions, n, m, masked, own_visits):
    # ezv2: a node's N in v_mix and the interior rule is its own visit count (the reference
    # counts it); the search adds visit_offset = 1 to its children's ΣN.
    batch = 6
    model = DiscreteToy(actions, seed=actions + n)
    logits, value, state = model.root(batch, seed=n)
    gumbel = torch.distributions.Gumbel(0.0, 1.0).sample((batch, actions)).double()
    invalid = None
    if masked:
        invalid = torch.rand(batch, actions, generator=torch.Generator().manual_seed(n)) < 0.4
        invalid[:, 0] = False  # keep one legal action per root
    qt = QTransform(visit_offset=1.0 if own_visits else 0.0)
    out = gumbel_search(
        logits, value, state, model, n, m, GAMMA, gumbel=gumbel, invalid_actions=invalid, qtransform=qt
    )
    for b, (action, policy, root_value, visits) in enumerate(
        run_reference(model, logits, value, state, n, m, gumbel, invalid, own_visits)
    ):
        assert out.visit_counts[b].tolist() == visits
        assert out.action[b].item() == action
        assert out.improved_policy[b].tolist() == pytest.approx(policy, abs=1e-9)
        assert out.root_value[b].item() == pytest.approx(root_value, abs=1e-9)


def test_root_alone_equals_root_in_a_batch_of_64():
    model = DiscreteToy(7, seed=3)
    logits, value, (latent, depth) = model.root(64, seed=5)
    gumbel = torch.distributions.Gumbel(0.0, 1.0).sample((64, 7)).double()
    batch = gumbel_search(logits, value, (latent, depth), model, 16, 4, GAMMA, gumbel=gumbel)
    for b in (0, 17, 63):
        alone = gumbel_search(
            logits[b : b + 1],
            value[b : b + 1],
            (latent[b : b + 1], depth[b : b + 1]),
            model,
            16,
            4,
            GAMMA,
            gumbel=gumbel[b : b + 1],
        )
        assert torch.equal(alone.visit_counts[0], batch.visit_counts[b])
        assert alone.action.item() == batch.action[b].item()
        torch.testing.assert_close(alone.improved_policy[0], batch.improved_policy[b], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.root_value[0], batch.root_value[b], rtol=0, atol=1e-12)


def test_invalid_actions_are_never_chosen():
    actions, batch = 9, 256
    model = DiscreteToy(actions, seed=11)
    logits, value, state = model.root(batch, seed=2)
    invalid = torch.rand(batch, actions, generator=torch.Generator().manual_seed(0)) < 0.7
    invalid[torch.arange(batch), torch.randint(0, actions, (batch,))] = False
    # Make the illegal actions the most attractive ones a priori.
    logits = logits + 5.0 * invalid
    out = gumbel_search(logits, value, state, model, 16, 8, GAMMA, invalid_actions=invalid)
    assert not invalid[torch.arange(batch), out.action].any()
    assert out.visit_counts[invalid].sum() == 0
    assert out.improved_policy[invalid].sum() == 0


def test_every_action_invalid_is_refused():
    model = DiscreteToy(3)
    logits, value, state = model.root(2)
    invalid = torch.tensor([[False, True, False], [True, True, True]])
    with pytest.raises(ValueError, match="every action marked invalid"):
        gumbel_search(logits, value, state, model, 4, 2, GAMMA, invalid_actions=invalid)


def test_zero_noise_is_deterministic_and_drawn_noise_is_not():
    model = DiscreteToy(6, seed=4)
    logits, value, state = model.root(32)
    zeros = torch.zeros(32, 6, dtype=torch.float64)
    a = gumbel_search(logits, value, state, model, 16, 4, GAMMA, gumbel=zeros)
    b = gumbel_search(logits, value, state, model, 16, 4, GAMMA, gumbel=zeros)
    assert torch.equal(a.action, b.action) and torch.equal(a.improved_policy, b.improved_policy)
    torch.manual_seed(0)
    c = gumbel_search(logits, value, state, model, 16, 4, GAMMA)
    d = gumbel_search(logits, value, state, model, 16, 4, GAMMA)
    assert not torch.equal(c.visit_counts, d.visit_counts)


def test_policy_improvement_on_random_bandits():
    # Gumbel MuZero's guarantee: with 2 simulations over m = 2 considered actions, the chosen
    # action's expected q is at least the prior policy's, E_π[q] (in expectation over noise).
    actions, draws = 5, 20000
    gen = torch.Generator().manual_seed(7)
    for bandit in range(10):
        logits = torch.randn(1, actions, generator=gen, dtype=torch.float64).expand(draws, actions)
        q = torch.rand(actions, generator=gen, dtype=torch.float64)

        def fn(state, action, q=q):
            return (
                q[action],
                torch.zeros_like(state),
                torch.zeros(state.shape[0], actions, dtype=q.dtype),
                state,
            )

        out = gumbel_search(
            logits,
            torch.zeros(draws, dtype=torch.float64),
            torch.zeros(draws, dtype=torch.float64),
            fn,
            2,
            2,
            1.0,
        )
        chosen = q[out.action].mean().item()
        prior = (torch.softmax(logits[0], -1) * q).sum().item()
        stderr = q[out.action].std().item() / draws**0.5
        assert chosen >= prior - 3 * stderr, f"bandit {bandit}: {chosen:.4f} < {prior:.4f}"


def test_state_pytree_reaches_the_model():
    # m = 1 makes a chain: simulation 0 expands the root's best child c1, simulation 1 goes
    # through c1 to its best child c2 (none of c1's children visited: the interior rule takes
    # the largest logit). DiscreteToy's reward adds 0.1·depth read from the tuple state, so a
    # wrong state gather changes the root value.
    model = DiscreteToy(3, seed=9)
    logits, _, state = model.root(1)
    zero = torch.zeros(1, dtype=torch.float64)
    out = gumbel_search(logits, zero, state, model, 2, 1, 1.0, gumbel=torch.zeros(1, 3, dtype=torch.float64))
    r1, v1, logits1, state1 = model(state, logits.argmax(-1))
    r2, v2, _, _ = model(state1, logits1.argmax(-1))
    expected = (0.0 + (r1 + v1) + (r1 + r2 + v2)) / 3  # γ = 1
    assert out.root_value.item() == pytest.approx(expected.item(), abs=1e-12)
    assert out.visit_counts.sum().item() == 2


def test_bf16_autocast_model_and_inference_mode():
    model = DiscreteToy(18, seed=1)
    logits, value, state = model.root(16)
    w, heads = model.w.float(), model.heads.float()

    def fn(s, action):
        latent, depth = s
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = torch.cat([latent, torch.nn.functional.one_hot(action, 18).float()], -1)
            nxt = torch.tanh(x @ w)
            h = nxt @ heads
        return h[:, 0], h[:, 1], h[:, 2:], (nxt, depth + 1)

    with torch.inference_mode():
        out = gumbel_search(
            logits.float(), value.float(), (state[0].float(), state[1].float()), fn, 16, 8, GAMMA
        )
    assert out.improved_policy.dtype == torch.float32
    assert torch.isfinite(out.improved_policy).all() and torch.isfinite(out.root_value).all()
    assert out.visit_counts.sum(-1).tolist() == [16.0] * 16


def test_a_search_run_entirely_under_autocast_keeps_its_tree_in_float32():
    """Workers may autocast the whole search (model calls included): the back-up's matmul must not
    turn the returns into bf16, and the result equals the float32 search's to bf16 model noise."""
    model = DiscreteToy(18, seed=2)
    logits, value, (latent, depth) = model.root(8)
    model.w, model.heads = model.w.float(), model.heads.float()  # autocast lowers float32 only
    logits, value, state = logits.float(), value.float(), (latent.float(), depth.float())
    gumbel = torch.zeros_like(logits)
    plain = gumbel_search(logits, value, state, model, 16, 8, GAMMA, gumbel)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        out = gumbel_search(logits, value, state, model, 16, 8, GAMMA, gumbel)
    assert out.root_value.dtype == torch.float32 and torch.isfinite(out.root_value).all()
    assert out.visit_counts.sum(-1).tolist() == [16.0] * 8
    torch.testing.assert_close(out.root_value.double(), plain.root_value.double(), atol=0.1, rtol=0.05)
