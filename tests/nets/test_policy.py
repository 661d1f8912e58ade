"""The squashed-Gaussian policy against torch.distributions and a numerical density."""

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from effzero.nets.policy import entropy, gaussian, log_prob, sample


def reference(policy: torch.Tensor, scale: float = 1.0) -> TransformedDistribution:
    mean, std = policy.chunk(2, -1)
    mean, std = 5 * torch.tanh(mean / 5), torch.nn.functional.softplus(std + 1) + 0.1
    return TransformedDistribution(Normal(mean, scale * std), [TanhTransform(cache_size=1)])


def test_parameters_are_bounded_as_ez_v2_does():
    mean, std = gaussian(torch.tensor([[100.0, -100.0, -50.0, 0.0]]))
    assert torch.allclose(mean, torch.tensor([[5.0, -5.0]]), atol=1e-3)
    assert torch.allclose(
        std, torch.tensor([[0.1, torch.nn.functional.softplus(torch.tensor(1.0)).item() + 0.1]])
    )


def test_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    policy = torch.randn(5, 6)  # d = 3
    actions = torch.rand(5, 7, 3) * 1.8 - 0.9
    for scale in (1.0, 3.0):
        expected = reference(policy, scale).log_prob(actions.transpose(0, 1)).sum(-1).transpose(0, 1)
        torch.testing.assert_close(log_prob(policy, actions, scale), expected, atol=1e-4, rtol=1e-4)


def test_density_integrates_to_one_in_one_dimension():
    policy = torch.tensor([[0.3, -0.7]])
    grid = torch.linspace(-0.999, 0.999, 200001)
    density = log_prob(policy, grid.view(1, -1, 1)).exp()[0]
    mass = torch.trapezoid(density, grid).item()
    tails = reference(policy).cdf(torch.tensor([-0.999])) + 1 - reference(policy).cdf(torch.tensor([0.999]))
    assert abs(mass + tails.item() - 1.0) < 1e-3


def test_samples_follow_the_density_and_the_std_scale():
    policy = torch.tensor([[0.4, -3.0]])  # σ ≈ 0.23: the widened draws are rarely clipped
    draws = sample(policy, 200000, generator=torch.Generator().manual_seed(1))[0, :, 0]
    assert draws.abs().max() <= 0.999
    expected_mean = reference(policy).sample((200000,)).mean()
    assert abs(draws.mean() - expected_mean) < 0.01
    wide = sample(policy, 200000, std_scale=3.0, generator=torch.Generator().manual_seed(2))[0, :, 0]
    ratio = (torch.atanh(wide).std() / torch.atanh(draws).std()).item()
    assert 2.9 < ratio < 3.1


def test_entropy_estimate_matches_numerical_integration():
    torch.manual_seed(3)
    policy = torch.tensor([[0.1, -0.3]])
    grid = torch.linspace(-0.999, 0.999, 200001)
    logp = log_prob(policy, grid.view(1, -1, 1))[0]
    numerical = -torch.trapezoid(logp.exp() * logp, grid).item()
    estimate = entropy(policy, samples=200000).item()
    assert abs(estimate - numerical) < 0.02
    policy.requires_grad_(True)
    entropy(policy).sum().backward()
    assert torch.isfinite(policy.grad).all() and policy.grad.abs().sum() > 0
