"""Tiny deterministic float64 models that the search tests run against."""

from __future__ import annotations

import torch
from torch import Tensor


class DiscreteToy:
    """Random tanh-MLP world model over `actions` discrete actions, latent `dim`.

    The state is a pytree (latent [B, dim], depth [B]) so that tests also cover tuple states.
    """

    def __init__(self, actions: int, dim: int = 6, seed: int = 0, reward_scale: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.actions, self.dim, self.reward_scale = actions, dim, reward_scale
        self.w = torch.randn(dim + actions, dim, generator=g, dtype=torch.float64)
        self.heads = torch.randn(dim, actions + 2, generator=g, dtype=torch.float64)

    def root(self, batch: int, seed: int = 1) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """(logits [B, A], value [B], state) of `batch` random roots."""
        g = torch.Generator().manual_seed(seed)
        latent = torch.randn(batch, self.dim, generator=g, dtype=torch.float64)
        h = latent @ self.heads
        return h[:, 2:], h[:, 1], (latent, torch.zeros(batch, dtype=torch.float64))

    def __call__(self, state, action: Tensor):
        latent, depth = state
        onehot = torch.nn.functional.one_hot(action, self.actions).to(latent.dtype)
        nxt = torch.tanh(torch.cat([latent, onehot], -1) @ self.w)
        h = nxt @ self.heads
        # The reward depends on the depth counter, so a wrong state gather shows up.
        reward = self.reward_scale * torch.tanh(h[:, 0]) + 0.1 * depth
        return reward, torch.tanh(h[:, 1]), h[:, 2:], (nxt, depth + 1)


class ContinuousToy:
    """Random world model over `dim_action`-d actions in [-1, 1] with a tanh-Gaussian policy.

    `sample` is deterministic in the policy parameters (a fixed grid of standard normal draws),
    so a root searched alone and the same root inside a batch get the same candidates.
    """

    def __init__(self, dim_action: int = 2, dim: int = 5, seed: int = 0, max_draws: int = 64):
        g = torch.Generator().manual_seed(seed)
        self.dim_action, self.dim = dim_action, dim
        self.w = torch.randn(dim + dim_action, dim, generator=g, dtype=torch.float64)
        self.heads = torch.randn(dim, 2 + 2 * dim_action, generator=g, dtype=torch.float64)
        self.z = torch.randn(max_draws, dim_action, generator=g, dtype=torch.float64)

    def root(self, batch: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        latent = torch.randn(batch, self.dim, generator=g, dtype=torch.float64)
        h = latent @ self.heads
        return h[:, 2:], h[:, 1], latent

    def __call__(self, latent: Tensor, action: Tensor):
        nxt = torch.tanh(torch.cat([latent, action.to(latent.dtype)], -1) @ self.w)
        h = nxt @ self.heads
        return torch.tanh(h[:, 0]), torch.tanh(h[:, 1]), h[:, 2:], nxt

    def mean_std(self, policy: Tensor) -> tuple[Tensor, Tensor]:
        d = self.dim_action
        return policy[:, :d], torch.nn.functional.softplus(policy[:, d:]) + 0.1

    def sample(self, policy: Tensor, n: int, std_scale: float) -> Tensor:
        mean, std = self.mean_std(policy)
        offset = 0 if std_scale == 1.0 else self.z.shape[0] // 2
        z = self.z[offset : offset + n]
        return torch.tanh(mean[:, None, :] + std_scale * std[:, None, :] * z[None])

    def log_prob(self, policy: Tensor, actions: Tensor, std_scale: float) -> Tensor:
        mean, std = self.mean_std(policy)
        x = torch.atanh(actions.clamp(-1 + 1e-9, 1 - 1e-9))
        normal = torch.distributions.Normal(mean[:, None, :], std_scale * std[:, None, :])
        return (normal.log_prob(x) - torch.log1p(-actions.pow(2) + 1e-12)).sum(-1)
