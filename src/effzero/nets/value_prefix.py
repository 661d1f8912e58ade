"""The value-prefix head (EfficientZero): an LSTM predicting the reward summed since its reset."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from effzero.nets.blocks import mlp

Hidden = tuple[Tensor, Tensor]


class ValuePrefixHead(nn.Module):
    """reduce → LSTM → norm → ReLU → mlp: prefix logits of the next latent state.

    The caller owns the LSTM state and resets it (passes None) every `lstm_horizon` steps;
    summing rewards over a short segment is easier to learn than each step's reward alone
    when the step at which a reward arrives is ambiguous (EfficientZero V1, §4.2).

    Args:
        reduce: maps the latent state [B, ...] to features [B, features].
        features: the LSTM input width.
        lstm_hidden: LSTM width.
        hidden: hidden widths of the output mlp.
        bins: reward atoms.
        norm: normalisation of the LSTM output (BatchNorm1d for images, LayerNorm for vectors).
        activation: of the output mlp.
    """

    def __init__(
        self,
        reduce: nn.Module,
        features: int,
        lstm_hidden: int,
        hidden: Sequence[int],
        bins: int,
        norm: nn.Module,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.reduce = reduce
        self.lstm = nn.LSTMCell(features, lstm_hidden)
        self.norm = norm
        self.out = mlp(lstm_hidden, hidden, bins, zero_init_last=True, activation=activation)

    def forward(self, state: Tensor, hidden: Hidden | None) -> tuple[Tensor, Hidden]:
        """Args: state [B, ...]; hidden (h, c) each [B, lstm_hidden], None for zeros.

        Returns: prefix logits [B, bins] and the new (h, c).
        """
        # The LSTM runs in its weights' dtype: CPU autocast has no low-precision LSTM cell,
        # and search keeps (h, c) in float32 whatever the model computes in.
        dtype = self.lstm.weight_ih.dtype
        x = self.reduce(state).to(dtype)
        if hidden is not None:
            hidden = (hidden[0].to(dtype), hidden[1].to(dtype))
        h, c = self.lstm(x, hidden)
        return self.out(self.norm(h).relu()), (h, c)
