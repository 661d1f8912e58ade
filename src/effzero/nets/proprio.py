"""EZ-V2's world model for vector observations (DMC proprio), with discrete or continuous actions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effzero.nets.blocks import ResidualMLP, mlp
from effzero.nets.normalizer import RunningMeanStd
from effzero.nets.support import Support
from effzero.nets.value_prefix import ValuePrefixHead
from effzero.nets.world_model import WorldModel


class _Head(nn.Module):
    """ResidualMLP → LayerNorm → mlp with BatchNorm hidden layers: [B, dim] → [B, out_dim]."""

    def __init__(self, dim: int, hidden: Sequence[int], out_dim: int, zero_init_last: bool) -> None:
        super().__init__()
        self.block = ResidualMLP(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.out = mlp(dim, hidden, out_dim, zero_init_last=zero_init_last, norm="batch")

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.norm(self.block(x)))


class ProprioWorldModel(WorldModel):
    """Representation, dynamics, reward/value/policy heads and SimSiam heads on a latent vector.

    Give exactly one of `num_actions` (discrete: the dynamics takes a one-hot action, the
    policy is [B, A] logits) or `action_dim` (continuous: the dynamics takes the action vector,
    the policy is [B, 2d] raw Gaussian parameters, mean part first; the squashing to μ and σ
    belongs to the distribution, not to the network). Defaults are EZ-V2's `dmc_state` sizes.

    The reward head reads the next state: per-step rewards (EZ-V2's proprio model), or with
    `value_prefix` an LSTM over the unrolled states predicting rewards summed since its last
    reset (EfficientZero V1's head, offered here for ablations). Reward and policy heads end
    in zeroed layers; the value head does not (EZ-V2 leaves it random for continuous control).

    Args:
        obs_dim: length of the observation vector.
        value_support: atoms of the value logits.
        reward_support: atoms of the reward logits.
        num_actions: size of a discrete action set.
        action_dim: dimension of a continuous action.
        hidden: latent state width.
        rep_hidden: inner width of the representation's residual blocks.
        dyn_hidden: width of the dynamics input layer and of its residual blocks.
        action_embed: action embedding width.
        head_hidden: hidden widths of the reward, value and policy mlps.
        num_blocks: residual blocks in the representation and in the dynamics.
        proj_hidden: hidden width of the SimSiam projection.
        proj_dim: output width of the projection and of the predictor.
        pred_hidden: hidden width of the SimSiam predictor.
        value_prefix: predict value prefixes with an LSTM instead of per-step rewards.
        lstm_hidden: LSTM width (with `value_prefix`).
        lstm_horizon: steps between LSTM resets, read by search and targets.
        obs_norm_count: prior sample count of the observation normaliser.
    """

    def __init__(
        self,
        obs_dim: int,
        *,
        value_support: Support,
        reward_support: Support,
        num_actions: int | None = None,
        action_dim: int | None = None,
        hidden: int = 128,
        rep_hidden: int = 256,
        dyn_hidden: int = 256,
        action_embed: int = 64,
        head_hidden: Sequence[int] = (256, 256),
        num_blocks: int = 2,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        pred_hidden: int = 512,
        value_prefix: bool = False,
        lstm_hidden: int = 128,
        lstm_horizon: int = 5,
        obs_norm_count: float = 1e3,
    ) -> None:
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.action_kind: Literal["discrete", "continuous"] = (
            "discrete" if num_actions is not None else "continuous"
        )
        self.num_actions = num_actions
        self.action_dim = action_dim
        action_in = num_actions if num_actions is not None else action_dim
        self.policy_dim = num_actions if num_actions is not None else 2 * action_dim
        self.state_dim = hidden
        self.value_support = value_support
        self.reward_support = reward_support
        self.value_prefix = value_prefix
        self.lstm_hidden = lstm_hidden if value_prefix else 0
        self.lstm_horizon = lstm_horizon if value_prefix else 0
        head_hidden = list(head_hidden)

        self.representation = nn.Sequential(
            RunningMeanStd(obs_dim, init_count=obs_norm_count),
            nn.Linear(obs_dim, hidden),
            nn.LayerNorm(hidden),
            nn.Tanh(),
            *(ResidualMLP(hidden, rep_hidden) for _ in range(num_blocks)),
        )
        self.action_encoder = nn.Sequential(
            nn.Linear(action_in, action_embed), nn.LayerNorm(action_embed), nn.ReLU()
        )
        self.dynamics_delta = nn.Sequential(
            nn.LayerNorm(hidden + action_embed),
            nn.Linear(hidden + action_embed, dyn_hidden),
            nn.ReLU(),
            nn.Linear(dyn_hidden, hidden),
        )
        self.dynamics_blocks = nn.Sequential(*(ResidualMLP(hidden, dyn_hidden) for _ in range(num_blocks)))
        if value_prefix:
            self.reward_head: nn.Module = ValuePrefixHead(
                nn.Identity(),
                hidden,
                lstm_hidden,
                head_hidden,
                reward_support.bins,
                nn.LayerNorm(lstm_hidden),
            )
        else:
            self.reward_head = _Head(hidden, head_hidden, reward_support.bins, zero_init_last=True)
        self.value_head = _Head(hidden, head_hidden, value_support.bins, zero_init_last=False)
        self.policy_head = _Head(hidden, head_hidden, self.policy_dim, zero_init_last=True)
        self.projection = nn.Sequential(
            mlp(hidden, [proj_hidden, proj_hidden], proj_dim, norm="layer"), nn.LayerNorm(proj_dim)
        )
        self.predictor = mlp(proj_dim, [pred_hidden], proj_dim, norm="layer")

    def encode_action(self, action: Tensor) -> Tensor:
        """Embed actions: [B] long (discrete) or [B, d] float (continuous) → [B, action_embed]."""
        weight = self.action_encoder[0].weight
        if self.action_kind == "discrete":
            if action.dim() != 1:
                raise ValueError(f"discrete actions must be [B] indices, got {tuple(action.shape)}")
            x = F.one_hot(action.long(), self.num_actions)
        else:
            if action.dim() != 2 or action.shape[1] != self.action_dim:
                raise ValueError(
                    f"continuous actions must be [B, {self.action_dim}], got {tuple(action.shape)}"
                )
            x = action
        return self.action_encoder(x.to(weight.dtype))

    def dynamics(self, state: Tensor, action: Tensor) -> Tensor:
        """Next latent state: [B, hidden], action [B] | [B, d] → [B, hidden]."""
        x = torch.cat((state, self.encode_action(action)), dim=-1)
        return self.dynamics_blocks(state + self.dynamics_delta(x))

    def prediction(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Value logits [B, Vbins] and policy [B, P] of a latent state [B, hidden]."""
        return self.value_head(state), self.policy_head(state)

    def initial_inference(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode observations and predict at the root.

        Args:
            obs: [B, obs_dim] float.

        Returns:
            state [B, hidden], value_logits [B, Vbins], policy [B, P] (P = A or 2d).
        """
        state = self.representation(obs)
        value_logits, policy = self.prediction(state)
        return state, value_logits, policy
