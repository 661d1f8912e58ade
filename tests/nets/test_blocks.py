"""ResidualMLP and mlp: structure, residual path, zero-initialised last layer."""

import pytest
import torch
from torch import nn

from effzero.nets import ResidualMLP, mlp


def test_residual_mlp_is_pre_ln_residual():
    torch.manual_seed(0)
    block = ResidualMLP(8, 16)
    x = torch.randn(5, 8)
    expected = x + block.fc2(
        torch.relu(block.fc1(nn.functional.layer_norm(x, (8,), block.norm.weight, block.norm.bias)))
    )
    torch.testing.assert_close(block(x), expected)
    # With the branch's last layer zeroed the block is the identity.
    nn.init.zeros_(block.fc2.weight)
    nn.init.zeros_(block.fc2.bias)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize(("norm", "norm_type"), [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm)])
def test_mlp_layout(norm: str, norm_type: type):
    net = mlp(10, [32, 16], 3, norm=norm)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, norm_type, nn.ReLU, nn.Linear, norm_type, nn.ReLU, nn.Linear]
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [32, 16, 3]
    assert net(torch.randn(4, 10)).shape == (4, 3)


def test_mlp_zero_init_last_and_no_hidden():
    net = mlp(10, [32], 3, zero_init_last=True)
    assert torch.equal(net(torch.randn(4, 10)), torch.zeros(4, 3))
    assert any(p.abs().sum() > 0 for p in net[0].parameters())
    assert len(mlp(10, [], 3)) == 1


def test_mlp_rejects_unknown_norm():
    with pytest.raises(ValueError):
        mlp(4, [4], 2, norm="group")  # type: ignore[arg-type]
