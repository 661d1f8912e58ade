"""Fully connected building blocks shared by the vector-input world models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """Pre-LayerNorm residual block: x + W₂ ReLU(W₁ LN(x)).

    Normalising before the branch, not after the sum, leaves an identity path from input to
    output, which keeps a deep recurrent unroll of the dynamics well conditioned (the Pre-LN
    Transformer argument, Xiong et al. 2020).

    Args:
        dim: width of the input and output.
        hidden: width of the inner layer.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, dim]. Returns: [B, dim]."""
        return x + self.fc2(self.fc1(self.norm(x)).relu())


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    zero_init_last: bool = False,
    norm: Literal["batch", "layer"] = "batch",
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Linear–Norm–activation for each hidden width, then a plain Linear to `out_dim`.

    Zeroing the last layer makes the head output exactly zero at the start (uniform reward
    distribution, a policy at its base parameters) so early targets are not fought by random
    initial predictions.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers, possibly empty.
        out_dim: output width.
        zero_init_last: set the last layer's weight and bias to zero.
        norm: `"batch"` (BatchNorm1d) or `"layer"` (LayerNorm) after each hidden Linear.
        activation: after each norm (EZ-V2: ReLU in the proprio heads, ELU in the image heads).

    Returns:
        A module mapping [B, in_dim] to [B, out_dim].
    """
    norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
    if norm not in norms:
        raise ValueError(f"norm must be 'batch' or 'layer', got {norm!r}")
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), norms[norm](size), activation()]
        width = size
    last = nn.Linear(width, out_dim)
    if zero_init_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)
