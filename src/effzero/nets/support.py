"""Categorical supports for values and rewards, in the space of the h(x) transform.

MuZero-family models predict a scalar as logits over fixed atoms. The atoms live in a squashed
space h(x) = sign(x)(√(|x|+1) − 1) + εx, so a few dozen atoms cover returns in the hundreds
with resolution where it matters (near zero). Targets become "two-hot" vectors whose
expectation over the atoms is exactly h(target); predictions decode as h⁻¹(E[atom]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

H_EPS = 1e-3


def h(x: Tensor, eps: float = H_EPS) -> Tensor:
    """The invertible squashing h(x) = sign(x)(√(|x|+1) − 1) + εx.

    √(|x|+1) − 1 is computed as |x| / (√(|x|+1) + 1): the same number, without the
    cancellation that costs float32 its precision near zero.

    Args:
        x: [...] any floating dtype.
        eps: the linear term ε that keeps h invertible with a Lipschitz inverse.

    Returns:
        [...] same shape and dtype as `x`.
    """
    a = x.abs()
    return torch.sign(x) * a / (torch.sqrt(a + 1) + 1) + eps * x


def h_inv(y: Tensor, eps: float = H_EPS) -> Tensor:
    """The closed-form inverse of `h`.

    The textbook form sign(y)·(((√(1+4ε(|y|+1+ε)) − 1)/(2ε))² − 1) subtracts nearly equal
    numbers twice. With d = √(|x|+1) − 1 = 2|y| / (1 + 2ε + √(1+4ε(|y|+1+ε))), the result is
    sign(y)·d(d+2): algebraically identical, and exact to a few ulps in float32.

    Args:
        y: [...] any floating dtype.
        eps: must equal the ε that `h` was applied with.

    Returns:
        [...] same shape and dtype as `y`.
    """
    a = y.abs()
    d = 2 * a / (1 + 2 * eps + torch.sqrt(1 + 4 * eps * (a + 1 + eps)))
    return torch.sign(y) * d * (d + 2)


class Support(nn.Module):
    """`bins` atoms spread evenly in h-space; encodes scalars as two-hot, decodes logits.

    `Support(low, high, bins)` takes raw-scalar bounds and places the atoms evenly between
    h(low) and h(high) (EZ-V2 DMC: value [-299, 299] and reward [-2, 2], 51 bins each).
    `Support.from_transformed(low_h, high_h, bins)` takes the bounds in h-space directly (Atari:
    [-300, 300] with 601 bins, i.e. step 1 in h-space).

    All arithmetic runs in float32 whatever the input dtype, so bf16 logits under autocast
    decode as well as float32 ones. The atoms are a non-persistent buffer: they follow
    `.to(device)` but stay out of checkpoints, which the constructor arguments already define.
    A whole-model cast to bf16 ("bf16-true") would round the atoms too; use mixed precision.

    Args:
        low: lower bound, a raw scalar (or in h-space when `in_h_space`).
        high: upper bound, likewise.
        bins: number of atoms, at least 2.
        in_h_space: the bounds are already transformed; prefer `from_transformed`.
        clip: (low, high) that decoded scalars are clipped to (EZ-V2's DMC values: [0, 1e5]);
            encoding is unaffected.
    """

    atoms: Tensor  # [bins]

    def __init__(
        self,
        low: float,
        high: float,
        bins: int,
        *,
        in_h_space: bool = False,
        clip: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        if bins < 2 or not low < high:
            raise ValueError(f"need bins >= 2 and low < high, got {bins=}, {low=}, {high=}")
        bounds = torch.tensor([low, high], dtype=torch.float64)
        low_h, high_h = (bounds if in_h_space else h(bounds)).tolist()
        self.bins = bins
        self.clip = clip
        self.low_h = low_h
        self.high_h = high_h
        # float64 linspace keeps integer-step supports (Atari) exactly on the integers.
        atoms = torch.linspace(low_h, high_h, bins, dtype=torch.float64).float()
        self.register_buffer("atoms", atoms, persistent=False)

    @classmethod
    def from_transformed(cls, low_h: float, high_h: float, bins: int) -> Support:
        """A support whose bounds are given in h-space (Atari: `(-300, 300, 601)`)."""
        return cls(low_h, high_h, bins, in_h_space=True)

    def extra_repr(self) -> str:
        clip = "" if self.clip is None else f", clip=[{self.clip[0]:.4g}, {self.clip[1]:.4g}]"
        return f"bins={self.bins}, h_range=[{self.low_h:.4g}, {self.high_h:.4g}]{clip}"

    def to_two_hot(self, x: Tensor) -> Tensor:
        """Two-hot encoding of h(x) on the atoms, clamped to the support's range.

        Args:
            x: [...] raw scalars.

        Returns:
            [..., bins] float32 weights summing to 1, at most two non-zero (neighbours), with
            Σ weight·atom = h(x) whenever h(x) lies inside the range.
        """
        y = h(x.float()).clamp(self.low_h, self.high_h)
        step = (self.high_h - self.low_h) / (self.bins - 1)
        lower = torch.floor((y - self.low_h) / step).long().clamp(0, self.bins - 2)
        atoms = self.atoms.float()
        lo_atom, hi_atom = atoms[lower], atoms[lower + 1]
        # Weight from the actual atom gap (not `step`) so the expectation is exact in float32.
        upper_w = ((y - lo_atom) / (hi_atom - lo_atom)).clamp(0.0, 1.0)
        out = torch.zeros(*y.shape, self.bins, dtype=torch.float32, device=y.device)
        out.scatter_(-1, lower.unsqueeze(-1), (1 - upper_w).unsqueeze(-1))
        out.scatter_add_(-1, (lower + 1).unsqueeze(-1), upper_w.unsqueeze(-1))
        return out

    def to_scalar(self, logits: Tensor) -> Tensor:
        """Decode logits: softmax expectation over the atoms, then h⁻¹.

        Args:
            logits: [..., bins] any floating dtype.

        Returns:
            [...] float32 scalars, within `clip` if it is set.
        """
        probs = F.softmax(logits.float(), dim=-1)
        scalar = h_inv((probs * self.atoms.float()).sum(-1))
        return scalar if self.clip is None else scalar.clamp(*self.clip)

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        """−Σ two_hot(target) · log_softmax(logits), per element (no reduction).

        Args:
            logits: [..., bins] predictions, any floating dtype.
            target: [...] raw scalar targets.

        Returns:
            [...] float32 losses.
        """
        log_probs = F.log_softmax(logits.float(), dim=-1)
        return -(self.to_two_hot(target) * log_probs).sum(-1)
