"""ImageWorldModel: shapes, latent size, action planes, value-prefix LSTM state, zeroed heads,
input scaling, gradients, autocast and the parameter count."""

import math

import pytest
import torch
from torch import nn

from effzero.nets import ImageWorldModel, Support
from effzero.nets.image import ResidualBlock

B = 4
ATARI_SUPPORT = (-300, 300, 601)  # h-space bounds, step 1


def atari(size: int = 96, **kwargs) -> ImageWorldModel:
    support = Support.from_transformed(*ATARI_SUPPORT)
    return ImageWorldModel(
        (12, size, size),
        num_actions=18,
        value_prefix=True,
        value_support=support,
        reward_support=Support.from_transformed(*ATARI_SUPPORT),
        **kwargs,
    )


def dmc(size: int = 96, **kwargs) -> ImageWorldModel:
    return ImageWorldModel(
        (12, size, size),
        action_dim=6,
        policy_hidden=(64,),
        zero_init_value=False,
        value_support=Support(-299, 299, 51),
        reward_support=Support(-2, 2, 51),
        **kwargs,
    )


def frames(size: int = 96, channels: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (B, channels, size, size), dtype=torch.uint8)


def actions(model: ImageWorldModel) -> torch.Tensor:
    if model.action_kind == "discrete":
        return torch.randint(0, model.num_actions, (B,))
    return torch.rand(B, model.action_dim) * 2 - 1


def test_atari_shapes():
    torch.manual_seed(0)
    model = atari()
    assert (model.action_kind, model.policy_dim, model.value_prefix, model.lstm_hidden) == (
        "discrete",
        18,
        True,
        512,
    )
    state, value, policy = model.initial_inference(frames())
    assert (state.shape, value.shape, policy.shape) == ((B, 64, 6, 6), (B, 601), (B, 18))
    next_state, reward, value2, policy2, (h, c) = model.recurrent_inference(state, actions(model), None)
    assert (next_state.shape, reward.shape, value2.shape, policy2.shape) == (
        (B, 64, 6, 6),
        (B, 601),
        (B, 601),
        (B, 18),
    )
    assert h.shape == c.shape == (B, 512)
    assert model.project(state, with_predictor=True).shape == (B, 1024)
    assert model.project(state, with_predictor=False).shape == (B, 1024)


def test_continuous_shapes():
    torch.manual_seed(0)
    model = dmc()
    assert (model.action_kind, model.action_dim, model.policy_dim) == ("continuous", 6, 12)
    assert (model.value_prefix, model.lstm_hidden) == (False, 0)
    state, value, policy = model.initial_inference(frames())
    assert (state.shape, value.shape, policy.shape) == ((B, 64, 6, 6), (B, 51), (B, 12))
    next_state, reward, value2, policy2, hidden = model.recurrent_inference(state, actions(model))
    assert (next_state.shape, reward.shape, value2.shape, policy2.shape) == (
        (B, 64, 6, 6),
        (B, 51),
        (B, 51),
        (B, 12),
    )
    assert hidden is None


@pytest.mark.parametrize(("height", "width"), [(32, 32), (33, 33), (64, 48), (84, 84), (16, 20)])
def test_latent_side_is_ceil_of_a_sixteenth(height: int, width: int):
    # Four 3×3 stride-2 padding-1 stages each map n to ⌈n/2⌉, and ⌈⌈n/2⌉/2⌉ = ⌈n/4⌉.
    support = Support(-2, 2, 5)
    model = ImageWorldModel(
        (6, height, width),
        num_actions=3,
        channels=8,
        proj_hidden=16,
        proj_dim=16,
        pred_hidden=8,
        value_support=support,
        reward_support=support,
    )
    expected = (8, math.ceil(height / 16), math.ceil(width / 16))
    assert model.state_shape == expected
    state, _, _ = model.initial_inference(torch.randint(0, 256, (B, 6, height, width), dtype=torch.uint8))
    assert state.shape == (B, *expected)
    assert model.recurrent_inference(state, torch.tensor([0, 1, 2, 0]))[0].shape == (B, *expected)
    assert model.project(state, True).shape == (B, 16)


def test_without_downsampling_the_latent_keeps_the_resolution():
    model = dmc(size=8, downsample=False, channels=8)
    state, _, _ = model.initial_inference(frames(size=8))
    assert state.shape == (B, 8, 8, 8)


def test_zero_initialised_heads_output_zero():
    torch.manual_seed(0)
    for model in (atari(size=32), dmc(size=32)):
        state, value, policy = model.initial_inference(frames(32))
        _, reward, value2, policy2, _ = model.recurrent_inference(state, actions(model))
        zeros = torch.zeros(B, model.policy_dim)
        assert torch.equal(policy, zeros) and torch.equal(policy2, zeros)
        assert torch.equal(reward, torch.zeros(B, model.reward_support.bins))
        assert model.reward_support.to_scalar(reward).abs().max() < 1e-6  # uniform on symmetric atoms
        if model.action_kind == "discrete":  # Atari zeroes the value head too
            assert torch.equal(value, torch.zeros(B, 601)) and torch.equal(value2, torch.zeros(B, 601))
        else:
            assert value.abs().sum() > 0 and value2.abs().sum() > 0


def perturb_zeroed_layers(model: ImageWorldModel) -> None:
    """Zeroed last layers hide everything before them; small weights let tests see through."""
    for head in (model.reward_head, model.value_head, model.policy_head):
        last = head.out[-1] if hasattr(head, "out") else head[-1][-1]
        nn.init.normal_(last.weight, std=0.1)


def test_value_prefix_state_travels_explicitly():
    torch.manual_seed(0)
    model = atari(size=32)
    perturb_zeroed_layers(model)
    model.eval()  # BatchNorm on running statistics: rows do not interact
    state, _, _ = model.initial_inference(frames(32))
    action = actions(model)
    zeros = (torch.zeros(B, 512), torch.zeros(B, 512))
    out_none = model.recurrent_inference(state, action, None)
    out_zeros = model.recurrent_inference(state, action, zeros)
    for a, b in zip(out_none[:4], out_zeros[:4], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(out_none[4][0], out_zeros[4][0]) and torch.equal(out_none[4][1], out_zeros[4][1])
    # Feeding the returned state back changes the prefix but not the state-only predictions.
    out_next = model.recurrent_inference(state, action, out_none[4])
    assert not torch.allclose(out_next[1], out_none[1])
    for a, b in zip(out_next[:1] + out_next[2:4], out_none[:1] + out_none[2:4], strict=True):
        assert torch.equal(a, b)
    assert not torch.allclose(out_next[4][1], out_none[4][1])


def test_rejects_lstm_state_without_value_prefix_and_wrong_actions():
    model = dmc(size=32)
    state = torch.zeros(B, 64, 2, 2)
    with pytest.raises(ValueError):
        model.recurrent_inference(state, torch.zeros(B, 6), (torch.zeros(B, 1), torch.zeros(B, 1)))
    with pytest.raises(ValueError):
        model.recurrent_inference(state, torch.zeros(B))
    with pytest.raises(ValueError):
        atari(size=32).recurrent_inference(state, torch.zeros(B, 18))
    support = Support(-2, 2, 5)
    with pytest.raises(ValueError):
        ImageWorldModel((12, 32, 32), value_support=support, reward_support=support)
    with pytest.raises(ValueError):
        ImageWorldModel(
            (12, 32, 32), num_actions=2, action_dim=2, value_support=support, reward_support=support
        )


def test_action_planes():
    model = atari(size=32)
    planes = model.action_planes(torch.tensor([0, 1, 9, 17]))
    expected = torch.tensor([0.0, 1 / 18, 9 / 18, 17 / 18]).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert torch.equal(planes, expected)
    continuous = dmc(size=32)
    action = torch.tensor([[0.5, -1.0, 0.0, 0.25, 1.0, -0.75]])
    planes = continuous.action_planes(action)
    assert planes.shape == (1, 6, 2, 2)
    assert torch.equal(planes, action[:, :, None, None].expand(1, 6, 2, 2))


def test_every_discrete_action_has_its_own_embedding():
    # LayerNorm is scale-invariant: without the conv bias every a > 0 would embed alike.
    torch.manual_seed(0)
    embedding = atari(size=32).encode_action(torch.arange(18)).flatten(1)  # [18, 16·2·2]
    assert embedding.shape == (18, 64)
    distance = torch.cdist(embedding, embedding) + torch.eye(18)
    assert distance.min() > 1e-3


def test_uint8_and_float_frames_agree():
    torch.manual_seed(0)
    model = dmc(size=32)
    obs = frames(32)
    for a, b in zip(model.initial_inference(obs), model.initial_inference(obs.float()), strict=True):
        assert torch.equal(a, b)


def test_residual_block_is_post_activation():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    block = ResidualBlock(8)
    # With the second BatchNorm outputting zero the branch vanishes: ReLU(x) is left.
    nn.init.zeros_(block.bn2.weight)
    assert torch.equal(block(x), x.relu())
    down = ResidualBlock(8, 16, stride=2)
    nn.init.zeros_(down.bn2.weight)
    torch.testing.assert_close(down(x), down.shortcut(x).relu())
    assert down(x).shape == (2, 16, 3, 3)


@pytest.mark.parametrize("make", [atari, dmc])
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)
    model = make(size=32)
    perturb_zeroed_layers(model)
    state, value, policy = model.initial_inference(frames(32))
    next_state, reward, value2, policy2, hidden = model.recurrent_inference(state, actions(model))
    outputs = [
        value,
        policy,
        reward,
        value2,
        policy2,
        model.project(next_state, True),
        model.project(state, False),
    ]
    if hidden is not None:  # the recurrent weights act only on a non-zero incoming state
        outputs.append(model.recurrent_inference(next_state, actions(model), hidden)[1])
    sum((o**2).mean() for o in outputs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("make", [atari, dmc])
def test_bf16_autocast(make):
    torch.manual_seed(0)
    model = make(size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state, value, policy = model.initial_inference(frames(32))
        hidden = (torch.zeros(B, 512), torch.zeros(B, 512)) if model.value_prefix else None
        next_state, reward, value2, policy2, hidden = model.recurrent_inference(state, actions(model), hidden)
        z = model.project(next_state, with_predictor=True)
        loss = (
            model.value_support.cross_entropy(value2, torch.full((B,), 5.0)).mean() + z.float().pow(2).mean()
        )
    loss.backward()
    for t in (state, value, policy, next_state, reward, value2, policy2, z):
        assert torch.isfinite(t.float()).all()
    if hidden is not None:  # the LSTM runs in float32: search stores its state as float32
        assert hidden[0].dtype == hidden[1].dtype == torch.float32


def conv(i: int, o: int, k: int, bias: bool = False) -> int:
    return i * o * k * k + (o if bias else 0)


def linear(i: int, o: int) -> int:
    return i * o + o


def norm(d: int) -> int:  # BatchNorm or a LayerNorm over d elements: weight and bias
    return 2 * d


def test_atari_parameter_count():
    block = lambda i, o: conv(i, o, 3) + norm(o) + conv(o, o, 3) + norm(o) + (conv(i, o, 3) if i != o else 0)  # noqa: E731
    reduce = conv(64, 16, 1) + norm(16)  # 1×1 conv → BN, flattened to 16·6·6 = 576
    representation = conv(12, 32, 3) + norm(32) + block(32, 32) + block(32, 64) + 3 * block(64, 64)
    dynamics = conv(1, 16, 1, bias=True) + norm(16 * 6 * 6) + conv(80, 64, 3) + norm(64) + block(64, 64)
    lstm = 4 * 512 * (576 + 512) + 2 * 4 * 512  # input and recurrent weights, two bias vectors
    prefix = reduce + lstm + norm(512) + linear(512, 32) + norm(32) + linear(32, 601)
    value = reduce + linear(576, 32) + norm(32) + linear(32, 601)
    policy = reduce + linear(576, 32) + norm(32) + linear(32, 18)
    projection = linear(2304, 1024) + norm(1024) + 2 * (linear(1024, 1024) + norm(1024))
    predictor = linear(1024, 256) + norm(256) + linear(256, 1024)
    expected = representation + dynamics + prefix + block(64, 64) + value + policy + projection + predictor
    assert sum(p.numel() for p in atari().parameters()) == expected
    # What acting and search run (no SimSiam heads) is ~2.8M, of which the value-prefix LSTM
    # is ~2.2M; the SimSiam projection's first layer alone (2304·1024) is another 2.4M.
    acting = expected - projection - predictor
    assert 2.7e6 < acting < 2.9e6 and 2.2e6 < lstm < 2.25e6
    assert 7.7e6 < expected < 8.0e6
