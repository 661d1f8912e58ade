"""EZ-V2's world model for stacked RGB frames (Atari 100k, DMC vision): a residual conv trunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from effzero.nets.blocks import mlp
from effzero.nets.support import Support
from effzero.nets.value_prefix import ValuePrefixHead
from effzero.nets.world_model import WorldModel


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # Every conv here feeds a BatchNorm, whose shift makes a conv bias redundant.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _halve(size: int) -> int:
    """Output side of a 3×3, stride-2, padding-1 conv or pool: ⌊(n + 2 − 3) / 2⌋ + 1."""
    return (size - 1) // 2 + 1


class ResidualBlock(nn.Module):
    """Post-activation basic block: ReLU(BN(conv(ReLU(BN(conv x)))) + shortcut x).

    The shortcut is the identity, or a bare strided 3×3 conv when the block changes the
    channels or the resolution (EZ-V2's downsampling block).

    Args:
        in_channels: input channels.
        out_channels: output channels; defaults to `in_channels`.
        stride: stride of the first conv and of the shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, stride: int = 1) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        reshape = stride != 1 or in_channels != out_channels
        self.shortcut = _conv3x3(in_channels, out_channels, stride) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Args: x [B, C_in, H, W]. Returns: [B, C_out, H / stride, W / stride] (rounded up)."""
        y = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(y)) + self.shortcut(x)).relu()


def _reduce(channels: int, reduced: int) -> nn.Sequential:
    """conv1x1 → BN → ReLU → flatten, the entry of every head: [B, C, h, w] → [B, reduced·h·w]."""
    return nn.Sequential(
        nn.Conv2d(channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced), nn.ReLU(), nn.Flatten()
    )


class ImageWorldModel(WorldModel):
    """Representation, dynamics, reward/value/policy heads and SimSiam heads on a conv latent.

    Observations are S stacked RGB frames as channels, `[B, 3S, H, W]`, uint8 or float in
    [0, 255]; the model divides by 255. With `downsample` the trunk reduces each side n to
    ⌈n/16⌉ (96 → 6), otherwise the latent keeps the frame's resolution.

    Give exactly one of `num_actions` (discrete: the dynamics sees one constant plane a/|A|,
    the policy is [B, A] logits) or `action_dim` (continuous: the action vector tiled to d
    planes, the policy is [B, 2d] raw squashed-Gaussian parameters). Defaults are EZ-V2's
    Atari sizes; DMC vision passes `value_prefix=False`, `zero_init_value=False` and
    `policy_hidden=(64,)`.

    With `value_prefix` the reward head is an LSTM predicting the reward summed since its last
    reset; its state (h, c) travels through `recurrent_inference` explicitly and the caller
    resets it (passes None or zeros) every `lstm_horizon` steps.

    Args:
        obs_shape: (3S, H, W) of one observation.
        value_support: atoms of the value logits.
        reward_support: atoms of the reward (or value-prefix) logits.
        num_actions: size of a discrete action set.
        action_dim: dimension of a continuous action.
        channels: latent channels.
        num_blocks: trailing residual blocks of the representation, of the dynamics, and
            shared by the value and policy heads.
        downsample: the strided trunk (Atari, DMC vision) rather than full resolution.
        reduced_channels: channels after each head's 1×1 conv.
        head_hidden: hidden widths of the reward and value mlps.
        policy_hidden: hidden widths of the policy mlp.
        action_embed: channels of the action embedding.
        value_prefix: predict value prefixes with an LSTM instead of per-step rewards.
        lstm_hidden: LSTM width (with `value_prefix`).
        lstm_horizon: steps between LSTM resets, read by search and targets.
        proj_hidden: hidden width of the SimSiam projection.
        proj_dim: output width of the projection and of the predictor.
        pred_hidden: hidden width of the SimSiam predictor.
        zero_init_value: zero the value head's last layer (Atari; not for continuous control).
    """

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        *,
        value_support: Support,
        reward_support: Support,
        num_actions: int | None = None,
        action_dim: int | None = None,
        channels: int = 64,
        num_blocks: int = 1,
        downsample: bool = True,
        reduced_channels: int = 16,
        head_hidden: Sequence[int] = (32,),
        policy_hidden: Sequence[int] = (32,),
        action_embed: int = 16,
        value_prefix: bool = False,
        lstm_hidden: int = 512,
        lstm_horizon: int = 5,
        proj_hidden: int = 1024,
        proj_dim: int = 1024,
        pred_hidden: int = 256,
        zero_init_value: bool = True,
    ) -> None:
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.action_kind: Literal["discrete", "continuous"] = (
            "discrete" if num_actions is not None else "continuous"
        )
        self.num_actions = num_actions
        self.action_dim = action_dim
        self.policy_dim = num_actions if num_actions is not None else 2 * action_dim
        self.value_support = value_support
        self.reward_support = reward_support
        self.value_prefix = value_prefix
        self.lstm_hidden = lstm_hidden if value_prefix else 0
        self.lstm_horizon = lstm_horizon if value_prefix else 0

        in_channels, height, width = obs_shape
        if downsample:
            height, width = _halve(_halve(_halve(_halve(height)))), _halve(_halve(_halve(_halve(width))))
        self.state_shape = (channels, height, width)
        flat = reduced_channels * height * width

        self.representation = nn.Sequential(*self._trunk(in_channels, channels, downsample, num_blocks))
        action_planes = 1 if num_actions is not None else action_dim
        # The conv keeps its bias: LayerNorm would map a bias-free w·a to the same embedding
        # for every a > 0 (it is scale-invariant), erasing the action.
        self.action_encoder = nn.Sequential(
            nn.Conv2d(action_planes, action_embed, 1),
            nn.LayerNorm([action_embed, height, width]),
            nn.ReLU(),
        )
        self.dynamics_conv = _conv3x3(channels + action_embed, channels)
        self.dynamics_norm = nn.BatchNorm2d(channels)
        self.dynamics_blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(num_blocks)))

        if value_prefix:
            self.reward_head: nn.Module = ValuePrefixHead(
                _reduce(channels, reduced_channels),
                flat,
                lstm_hidden,
                head_hidden,
                reward_support.bins,
                norm=nn.BatchNorm1d(lstm_hidden),
                activation=nn.ELU,
            )
        else:
            self.reward_head = nn.Sequential(
                _reduce(channels, reduced_channels),
                mlp(flat, head_hidden, reward_support.bins, zero_init_last=True, activation=nn.ELU),
            )
        self.prediction_blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(num_blocks)))
        self.value_head = nn.Sequential(
            _reduce(channels, reduced_channels),
            mlp(flat, head_hidden, value_support.bins, zero_init_last=zero_init_value, activation=nn.ELU),
        )
        self.policy_head = nn.Sequential(
            _reduce(channels, reduced_channels),
            mlp(flat, policy_hidden, self.policy_dim, zero_init_last=True, activation=nn.ELU),
        )
        self.projection = nn.Sequential(
            nn.Flatten(),
            mlp(channels * height * width, [proj_hidden, proj_hidden], proj_dim),
            nn.BatchNorm1d(proj_dim),
        )
        self.predictor = mlp(proj_dim, [pred_hidden], proj_dim)

    @staticmethod
    def _trunk(in_channels: int, channels: int, downsample: bool, num_blocks: int) -> list[nn.Module]:
        """Layers of the representation: [B, 3S, H, W] → [B, channels, h, w]."""
        if downsample:
            half = channels // 2
            layers = [
                _conv3x3(in_channels, half, stride=2),  # H/2
                nn.BatchNorm2d(half),
                nn.ReLU(),
                ResidualBlock(half),
                ResidualBlock(half, channels, stride=2),  # H/4
                ResidualBlock(channels),
                nn.AvgPool2d(3, stride=2, padding=1),  # H/8
                ResidualBlock(channels),
                nn.AvgPool2d(3, stride=2, padding=1),  # H/16
            ]
        else:
            layers = [_conv3x3(in_channels, channels), nn.BatchNorm2d(channels), nn.ReLU()]
        return layers + [ResidualBlock(channels) for _ in range(num_blocks)]

    def action_planes(self, action: Tensor) -> Tensor:
        """Actions as constant planes over the latent: [B] long → [B, 1, h, w] (a/|A|), [B, d] → [B, d, h, w]."""
        _, height, width = self.state_shape
        dtype = self.action_encoder[0].weight.dtype
        if self.action_kind == "discrete":
            if action.dim() != 1:
                raise ValueError(f"discrete actions must be [B] indices, got {tuple(action.shape)}")
            x = (action.to(dtype) / self.num_actions)[:, None]  # [B, 1]
        else:
            if action.dim() != 2 or action.shape[1] != self.action_dim:
                raise ValueError(
                    f"continuous actions must be [B, {self.action_dim}], got {tuple(action.shape)}"
                )
            x = action.to(dtype)  # [B, d]
        return x[:, :, None, None].expand(-1, -1, height, width)

    def encode_action(self, action: Tensor) -> Tensor:
        """Embed actions: [B] long (discrete) or [B, d] float (continuous) → [B, action_embed, h, w]."""
        return self.action_encoder(self.action_planes(action))

    def dynamics(self, state: Tensor, action: Tensor) -> Tensor:
        """Next latent state: [B, C, h, w], action [B] | [B, d] → [B, C, h, w]."""
        x = torch.cat((state, self.encode_action(action).to(state.dtype)), dim=1)  # [B, C + embed, h, w]
        x = (self.dynamics_norm(self.dynamics_conv(x)) + state).relu()
        return self.dynamics_blocks(x)

    def prediction(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Value logits [B, Vbins] and policy [B, P] of a latent state [B, C, h, w]."""
        x = self.prediction_blocks(state)
        return self.value_head(x), self.policy_head(x)

    def initial_inference(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode observations and predict at the root.

        Args:
            obs: [B, 3S, H, W] uint8 or float, pixel values in [0, 255].

        Returns:
            state [B, C, h, w], value_logits [B, Vbins], policy [B, P] (P = A or 2d).
        """
        x = obs.to(self.representation[0].weight.dtype) / 255.0
        state = self.representation(x)
        value_logits, policy = self.prediction(state)
        return state, value_logits, policy
