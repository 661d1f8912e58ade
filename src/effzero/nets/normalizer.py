"""Running mean/variance input normaliser for vector observations (EZ-V2 proprio)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Normalise inputs by running statistics that learn only in `train()` mode.

    The statistics start from a prior of mean 0, variance 1 weighted as `init_count` samples
    (EZ-V2: 1e3). The prior keeps the first batches, gathered by an untrained policy, from
    setting a scale that later data then has to unlearn, and it keeps the variance of a
    feature that is constant early on away from zero. Each training batch is merged with the
    parallel-variance rule (Chan et al.), so the result equals the statistics of all batches
    seen plus the prior; in train mode the batch is normalised with the updated statistics.

    No output clipping: EZ-V2 does not clip, and the LayerNorm–tanh right after this layer
    already bounds what reaches the trunk.

    `count` is a float64 buffer so it stays exact past 2²⁴ samples and is saved in checkpoints
    (EZ-V2 keeps it as a Python float, which a resumed run silently resets to the prior).

    Args:
        shape: feature shape of one input, e.g. `(obs_dim,)`.
        init_count: weight of the (mean 0, variance 1) prior, in samples.
        eps: added to the variance under the square root.
    """

    mean: Tensor  # [*shape]
    var: Tensor  # [*shape]
    count: Tensor  # [] float64

    def __init__(self, shape: int | tuple[int, ...], init_count: float = 1e3, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(float(init_count), dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise `x`, first folding it into the statistics when training.

        Args:
            x: [B, *shape].

        Returns:
            [B, *shape] (x − mean) / √(var + eps), in the dtype of `x`.
        """
        xf = x.float()
        if self.training:
            self._update(xf.detach())
        out = (xf - self.mean.float()) / torch.sqrt(self.var.float() + self.eps)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update(self, x: Tensor) -> None:
        """Merge the moments of batch `x` [B, *shape] into the running ones."""
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        # Ratios in float64 (count can be huge), the per-feature arithmetic in float32.
        w_new = (n / total).float()
        w_old = (self.count / total).float()
        mean, var = self.mean.float(), self.var.float()
        delta = batch_mean - mean
        self.mean.copy_(mean + delta * w_new)
        self.var.copy_(var * w_old + batch_var * w_new + delta.square() * w_old * w_new)
        self.count.copy_(total)
