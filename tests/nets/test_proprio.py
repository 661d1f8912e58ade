"""ProprioWorldModel: shapes, zero-initialised heads, parameter count, gradients, autocast."""

import pytest
import torch
from torch import nn

from effzero.nets import ProprioWorldModel, Support

B = 8


def walker() -> ProprioWorldModel:
    return ProprioWorldModel(
        24, action_dim=6, value_support=Support(-299, 299, 51), reward_support=Support(-2, 2, 51)
    )


def cartpole() -> ProprioWorldModel:
    return ProprioWorldModel(
        4, num_actions=2, value_support=Support(-299, 299, 51), reward_support=Support(-2, 2, 51)
    )


def actions(model: ProprioWorldModel) -> torch.Tensor:
    if model.action_kind == "discrete":
        return torch.randint(0, model.num_actions, (B,))
    return torch.rand(B, model.action_dim) * 2 - 1


@pytest.mark.parametrize(
    ("make", "obs_dim", "kind", "policy_dim"), [(cartpole, 4, "discrete", 2), (walker, 24, "continuous", 12)]
)
def test_shapes(make, obs_dim: int, kind: str, policy_dim: int):
    torch.manual_seed(0)
    model = make()
    assert model.action_kind == kind
    state, value, policy = model.initial_inference(torch.randn(B, obs_dim))
    assert (state.shape, value.shape, policy.shape) == ((B, 128), (B, 51), (B, policy_dim))
    next_state, reward, value2, policy2, hidden = model.recurrent_inference(state, actions(model))
    assert (next_state.shape, reward.shape, value2.shape, policy2.shape) == (
        (B, 128),
        (B, 51),
        (B, 51),
        (B, policy_dim),
    )
    assert hidden is None
    assert model.project(state, with_predictor=True).shape == (B, 128)
    assert model.project(state, with_predictor=False).shape == (B, 128)
    assert model.value_support.bins == 51 and model.reward_support.bins == 51


def test_zero_initialised_heads_output_zero():
    torch.manual_seed(0)
    model = walker()
    state, value, policy = model.initial_inference(torch.randn(B, 24))
    _, reward, _, policy2, _ = model.recurrent_inference(state, actions(model))
    assert torch.equal(policy, torch.zeros(B, 12))
    assert torch.equal(policy2, torch.zeros(B, 12))
    assert torch.equal(reward, torch.zeros(B, 51))
    assert value.abs().sum() > 0  # the value head is not zero-initialised
    assert model.reward_support.to_scalar(reward).abs().max() < 1e-6  # uniform over symmetric atoms


def linear(i: int, o: int) -> int:
    return i * o + o


def norm(d: int) -> int:  # LayerNorm or BatchNorm1d: weight and bias
    return 2 * d


def test_walker_parameter_count():
    res = lambda d, hid: norm(d) + linear(d, hid) + linear(hid, d)  # noqa: E731  ResidualMLP
    head_mlp = lambda out: linear(128, 256) + norm(256) + linear(256, 256) + norm(256) + linear(256, out)  # noqa: E731
    head = lambda out: res(128, 128) + norm(128) + head_mlp(out)  # noqa: E731
    representation = linear(24, 128) + norm(128) + 2 * res(128, 256)  # the normaliser has buffers only
    dynamics = linear(6, 64) + norm(64) + norm(192) + linear(192, 256) + linear(256, 128) + 2 * res(128, 256)
    heads = head(51) + head(51) + head(12)  # reward, value, policy (2 × 6)
    projection = linear(128, 512) + norm(512) + linear(512, 512) + norm(512) + linear(512, 128) + norm(128)
    predictor = linear(128, 512) + norm(512) + linear(512, 128)
    expected = representation + dynamics + heads + projection + predictor
    assert expected == 1_310_258  # the spec's "about 1.31M" (paper: 1.3M)
    assert sum(p.numel() for p in walker().parameters()) == expected


def test_exactly_one_action_kind():
    support = Support(-2, 2, 51)
    with pytest.raises(ValueError):
        ProprioWorldModel(4, value_support=support, reward_support=support)
    with pytest.raises(ValueError):
        ProprioWorldModel(4, num_actions=2, action_dim=2, value_support=support, reward_support=support)


def test_rejects_wrong_action_shape_and_lstm_state():
    model = walker()
    state = torch.zeros(B, 128)
    with pytest.raises(ValueError):
        model.recurrent_inference(state, torch.zeros(B))
    with pytest.raises(ValueError):
        model.recurrent_inference(state, torch.zeros(B, 6), hidden=(state, state))  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [cartpole, walker])
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)
    model = make()
    # Zeroed last layers block the gradient to the layers before them at step 0; give them
    # small weights so the test sees every path.
    for head in (model.reward_head, model.policy_head):
        nn.init.normal_(head.out[-1].weight, std=0.1)
    obs_dim = model.representation[1].in_features
    state, value, policy = model.initial_inference(torch.randn(B, obs_dim))
    next_state, reward, value2, policy2, _ = model.recurrent_inference(state, actions(model))
    outputs = (
        value,
        policy,
        reward,
        value2,
        policy2,
        model.project(next_state, True),
        model.project(state, False),
    )
    sum((o**2).mean() for o in outputs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("make", [cartpole, walker])
def test_bf16_autocast(make):
    torch.manual_seed(0)
    model = make()
    obs_dim = model.representation[1].in_features
    obs = torch.randn(B, obs_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state, value, policy = model.initial_inference(obs)
        next_state, reward, value2, policy2, _ = model.recurrent_inference(state, actions(model))
        z = model.project(next_state, with_predictor=True)
        loss = (
            model.value_support.cross_entropy(value2, torch.full((B,), 50.0)).mean() + z.float().pow(2).mean()
        )
    loss.backward()
    for t in (state, value, policy, next_state, reward, value2, policy2, z):
        assert torch.isfinite(t.float()).all()
    decoded = model.value_support.to_scalar(value)
    assert decoded.dtype == torch.float32 and torch.isfinite(decoded).all()
    model.eval()
    with torch.no_grad():
        ref_value = model.initial_inference(obs)[1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_value = model.initial_inference(obs)[1]
    # bf16 keeps ~3 significant digits: the value logits agree with float32 to that order.
    torch.testing.assert_close(low_value.float(), ref_value, rtol=0.05, atol=0.1)
