"""What the image and proprio world models share: the step forward and the SimSiam embedding."""

from __future__ import annotations

from torch import Tensor, nn

from effzero.nets.value_prefix import Hidden


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the gradient flowing back through `x` is multiplied by `scale`."""
    return x * scale + x.detach() * (1.0 - scale)


class WorldModel(nn.Module):
    """A latent model: subclasses build `dynamics`, `prediction`, `reward_head`, `projection`, `predictor`.

    Latent states are [B, *latent]: [B, C, h, w] for images, [B, hidden] for vectors.
    `reward_head` is a `ValuePrefixHead` when `value_prefix`, else a module of the next state.
    """

    value_prefix: bool

    def dynamics(self, state: Tensor, action: Tensor) -> Tensor:
        """Next latent state [B, *latent] after actions [B] (discrete) or [B, d] (continuous)."""
        raise NotImplementedError

    def prediction(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Value logits [B, Vbins] and policy [B, P] of latent states [B, *latent]."""
        raise NotImplementedError

    def recurrent_inference(
        self, state: Tensor, action: Tensor, hidden: Hidden | None = None, grad_scale: float = 1.0
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Hidden | None]:
        """Step the model one action forward and predict there.

        Args:
            state: [B, *latent] latent states.
            action: [B] long (discrete) or [B, d] float (continuous).
            hidden: value-prefix LSTM state (h, c), each [B, lstm_hidden]; None means zeros (a
                reset). Must be None without `value_prefix`.
            grad_scale: the gradient into the dynamics from everything that reads next_state
                (these heads, and later whatever the caller feeds it to) is multiplied by this:
                EfficientZero's `register_hook(grad * 0.5)` on each unrolled latent.

        Returns:
            next_state [B, *latent], reward_logits [B, Rbins] (value-prefix logits with
            `value_prefix`), value_logits [B, Vbins], policy [B, P], and the new (h, c), each
            [B, lstm_hidden], or None without `value_prefix`.
        """
        if hidden is not None and not self.value_prefix:
            raise ValueError(f"this {type(self).__name__} has no value-prefix LSTM; pass hidden=None")
        next_state = self.dynamics(state, action)
        if grad_scale != 1.0:
            next_state = scale_gradient(next_state, grad_scale)
        value_logits, policy = self.prediction(next_state)
        if self.value_prefix:
            reward_logits, hidden = self.reward_head(next_state, hidden)
        else:
            reward_logits = self.reward_head(next_state)
        return next_state, reward_logits, value_logits, policy, hidden

    def project(self, state: Tensor, with_predictor: bool) -> Tensor:
        """SimSiam embedding of latent states [B, *latent] → [B, proj_dim].

        `with_predictor` also applies the predictor (the online, dynamics branch); the target
        branch uses the projection alone, under a stop-gradient applied by the caller.
        """
        z = self.projection(state)
        return self.predictor(z) if with_predictor else z
