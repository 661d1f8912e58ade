"""sampled_gumbel_search and sampled_puct_search against the node-object reference."""

import pytest
import torch

from effzero.search import PUCTConfig, sampled_gumbel_search, sampled_puct_search
from tests.search.models import ContinuousToy
from tests.search.reference import reference_gumbel, reference_puct

GAMMA = 0.95


def candidates(model, policy, k_policy, k_wide, magnification=3.0):
    drawn = [model.sample(policy, k_policy, 1.0)]
    if k_wide:
        drawn.append(model.sample(policy, k_wide, magnification))
    return torch.cat(drawn, 1)


def expand_fn(model, k_interior, slots):
    def expand(policy):
        actions = torch.zeros(slots, model.dim_action, dtype=torch.float64)
        actions[:k_interior] = model.sample(policy, k_interior, 1.0)[0]
        return [0.0] * k_interior + [float("-inf")] * (slots - k_interior), actions

    return expand


@pytest.mark.parametrize(
    ("k_policy", "k_wide", "k_interior", "n"), [(4, 12, 2, 32), (2, 2, 3, 12), (1, 0, 2, 6)]
)
def test_sampled_gumbel_matches_reference(k_policy, k_wide, k_interior, n):
    batch, model = 5, ContinuousToy(seed=k_interior)
    policy, value, latent = model.root(batch, seed=n)
    k = k_policy + k_wide
    gumbel = torch.distributions.Gumbel(0.0, 1.0).sample((batch, k)).double()
    out = sampled_gumbel_search(
        policy, value, latent, model, model.sample, n, k_policy, k_wide, 3.0, k_interior, 16, GAMMA, gumbel
    )
    cands = candidates(model, policy, k_policy, k_wide)
    torch.testing.assert_close(out.candidate_actions, cands)
    slots = max(k, k_interior)
    for b in range(batch):
        root_actions = torch.zeros(slots, model.dim_action, dtype=torch.float64)
        root_actions[:k] = cands[b]
        logits = [0.0] * k + [float("-inf")] * (slots - k)
        noise = gumbel[b].tolist() + [0.0] * (slots - k)
        action, pi, root_value, visits = reference_gumbel(
            logits,
            value[b],
            latent[b : b + 1],
            model,
            n,
            16,
            GAMMA,
            noise,
            expand=expand_fn(model, k_interior, slots),
            actions=root_actions,
        )
        assert out.visit_counts[b].tolist() == visits[:k]
        assert out.action_index[b].item() == action
        torch.testing.assert_close(out.action[b], cands[b, action])
        assert out.improved_policy[b].tolist() == pytest.approx(pi[:k], abs=1e-9)
        assert out.root_value[b].item() == pytest.approx(root_value, abs=1e-9)


def test_sampled_gumbel_without_noise_visits_the_schedule():
    # EZ-V2 on DMC: K = 16, m = 16, N = 32, no noise: 16 candidates once, 8 once more, 4 twice.
    model = ContinuousToy(dim_action=6)
    policy, value, latent = model.root(3)
    out = sampled_gumbel_search(policy, value, latent, model, model.sample, 32, gumbel=torch.zeros(3, 16))
    counts = out.visit_counts.sort(-1, descending=True).values
    assert counts.tolist() == [[4] * 4 + [2] * 4 + [1] * 8] * 3
    assert out.candidate_actions.shape == (3, 16, 6) and out.action.shape == (3, 6)
    assert (out.action.abs() <= 1).all()


@pytest.mark.parametrize(("k_policy", "k_wide"), [(6, 0), (4, 4)])
@pytest.mark.parametrize("unvisited_q", ["parent_mean", "zero"])
def test_sampled_puct_matches_reference(k_policy, k_wide, unvisited_q):
    batch, n, k_interior = 4, 20, 3
    model = ContinuousToy(seed=5)
    policy, value, latent = model.root(batch, seed=3)
    k = k_policy + k_wide
    noise = torch.distributions.Dirichlet(torch.full((k,), 0.3)).sample((batch,)).double()
    out = sampled_puct_search(
        policy,
        value,
        latent,
        model,
        model.sample,
        n,
        k_policy,
        k_wide,
        3.0,
        k_interior,
        log_prob_fn=model.log_prob,
        discount=GAMMA,
        noise=noise,
        temperature=0.0,
        config=PUCTConfig(unvisited_q=unvisited_q),
    )
    cands = candidates(model, policy, k_policy, k_wide)
    # The β̂/β-corrected prior, computed from the densities directly.
    pi = model.log_prob(policy, cands, 1.0).exp()
    beta = (k_policy * pi + k_wide * model.log_prob(policy, cands, 3.0).exp()) / k
    prior = pi / beta
    prior = prior / prior.sum(-1, keepdim=True)
    mixed = 0.75 * prior + 0.25 * noise
    slots = max(k, k_interior)
    for b in range(batch):
        root_actions = torch.zeros(slots, model.dim_action, dtype=torch.float64)
        root_actions[:k] = cands[b]
        logits = mixed[b].log().tolist() + [float("-inf")] * (slots - k)
        visits, root_value = reference_puct(
            logits,
            value[b],
            latent[b : b + 1],
            model,
            n,
            GAMMA,
            expand=expand_fn(model, k_interior, slots),
            actions=root_actions,
            unvisited_q=unvisited_q,
        )
        assert out.visit_counts[b].tolist() == visits[:k]
        assert out.root_value[b].item() == pytest.approx(root_value, abs=1e-9)
        assert out.action_index[b].item() == max(range(k), key=lambda a: (visits[a], -a))
        assert out.improved_policy[b].tolist() == pytest.approx([v / n for v in visits[:k]])


def test_sampled_puct_needs_densities_for_widened_candidates():
    model = ContinuousToy()
    policy, value, latent = model.root(2)
    with pytest.raises(ValueError, match="log_prob_fn"):
        sampled_puct_search(policy, value, latent, model, model.sample, 4, 2, 2)
