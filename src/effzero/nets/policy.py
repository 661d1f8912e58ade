"""EZ-V2's continuous policy: a tanh-squashed Gaussian over actions in (-1, 1).

The policy head outputs 2·d raw parameters x = (x_μ, x_σ); μ = 5·tanh(x_μ / 5) keeps the
pre-squash mean bounded, σ = softplus(x_σ + 1) + 0.1 keeps it away from 0. Actions are
clipped to ±0.999 before any log-density so atanh stays finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ACTION_CLIP = 0.999


def gaussian(policy: Tensor) -> tuple[Tensor, Tensor]:
    """Pre-squash mean and standard deviation from raw parameters [..., 2d] -> ([..., d], [..., d])."""
    raw_mean, raw_std = policy.float().chunk(2, dim=-1)
    return 5.0 * torch.tanh(raw_mean / 5.0), F.softplus(raw_std + 1.0) + 0.1


def sample(
    policy: Tensor, n: int, std_scale: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """`n` actions per row, the standard deviation multiplied by `std_scale`: [B, 2d] -> [B, n, d]."""
    mean, std = gaussian(policy)
    noise = torch.randn((*mean.shape[:-1], n, mean.shape[-1]), generator=generator, device=mean.device)
    return torch.tanh(mean[..., None, :] + std_scale * std[..., None, :] * noise).clamp(
        -ACTION_CLIP, ACTION_CLIP
    )


def log_prob(policy: Tensor, actions: Tensor, std_scale: float = 1.0) -> Tensor:
    """Log-density of squashed actions [B, K, d] under the policy [B, 2d] -> [B, K].

    log p(a) = Σ_j [log N(atanh a_j; μ_j, s·σ_j) − log(1 − a_j²)], the change of variables
    through tanh.
    """
    mean, std = gaussian(policy)
    a = actions.float().clamp(-ACTION_CLIP, ACTION_CLIP)
    pre = torch.atanh(a)
    scale = std_scale * std[..., None, :]
    normal = -0.5 * ((pre - mean[..., None, :]) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    return (normal - torch.log1p(-a.pow(2))).sum(-1)


def entropy(policy: Tensor, samples: int = 256) -> Tensor:
    """Monte-Carlo entropy −E[log p(a)] of the squashed policy, differentiable (reparameterised).

    Args: policy [B, 2d]. Returns: [B].
    """
    mean, std = gaussian(policy)
    noise = torch.randn((*mean.shape[:-1], samples, mean.shape[-1]), device=mean.device)
    actions = torch.tanh(mean[..., None, :] + std[..., None, :] * noise).clamp(-ACTION_CLIP, ACTION_CLIP)
    return -log_prob(policy, actions).mean(-1)
