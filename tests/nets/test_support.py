"""h / h⁻¹ and the categorical Support, checked against closed-form numbers."""

import math

import pytest
import torch

from effzero.nets import Support, h, h_inv

EPS = 1e-3


def literal_h_inv(y: torch.Tensor) -> torch.Tensor:
    """The spec's textbook inverse, evaluated in float64."""
    a = y.abs()
    root = ((torch.sqrt(1 + 4 * EPS * (a + 1 + EPS)) - 1) / (2 * EPS)) ** 2 - 1
    return torch.sign(y) * root


def test_h_known_values():
    x = torch.tensor([0.0, 3.0, -8.0, 15.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 1 + 0.003, -(3 - 1) - 0.008, (4 - 1) + 0.015], dtype=torch.float64)
    torch.testing.assert_close(h(x), expected, rtol=0, atol=1e-15)


def test_h_inv_round_trip_and_literal_formula():
    x = torch.cat([-torch.logspace(-6, 6, 500, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    x = torch.cat([x, -x]).sort().values
    torch.testing.assert_close(h_inv(h(x)), x, rtol=1e-12, atol=1e-12)
    y = torch.linspace(-1000, 1000, 2001, dtype=torch.float64)
    torch.testing.assert_close(h_inv(y), literal_h_inv(y), rtol=1e-9, atol=1e-9)


def test_h_monotone_and_dtype_preserved():
    x = torch.linspace(-1e4, 1e4, 100_001, dtype=torch.float64)
    assert (h(x).diff() > 0).all()
    assert (h_inv(x).diff() > 0).all()
    assert h(torch.ones(2, dtype=torch.float32)).dtype == torch.float32


def test_h_inv_float32_is_accurate_near_zero():
    # The textbook form is off by up to 4e-5 here in float32; the rearranged one is not.
    x = torch.tensor([1e-4, -3e-3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(h_inv(h(x.float())).double(), x, rtol=1e-5, atol=1e-8)


def test_atoms_even_in_h_space_with_right_endpoints():
    value = Support(-299, 299, 51)
    end = math.sqrt(300) - 1 + EPS * 299
    assert value.atoms[0].item() == pytest.approx(-end, abs=1e-5)
    assert value.atoms[-1].item() == pytest.approx(end, abs=1e-5)
    torch.testing.assert_close(value.atoms.diff(), torch.full((50,), 2 * end / 50), rtol=0, atol=1e-5)
    reward = Support(-2, 2, 51)
    assert reward.atoms[-1].item() == pytest.approx(math.sqrt(3) - 1 + EPS * 2, abs=1e-6)


def test_from_transformed_gives_integer_atoms():
    atari = Support.from_transformed(-300, 300, 601)
    assert torch.equal(atari.atoms, torch.arange(-300, 301, dtype=torch.float32))


def test_atoms_follow_module_but_stay_out_of_state_dict():
    support = Support(-2, 2, 51)
    assert "atoms" not in support.state_dict()
    assert "atoms" in dict(support.named_buffers())


@pytest.mark.parametrize(
    "support", [Support(-299, 299, 51), Support(-2, 2, 51), Support.from_transformed(-300, 300, 601)]
)
def test_two_hot_properties(support: Support):
    torch.manual_seed(0)
    bound = h_inv(torch.tensor(support.high_h, dtype=torch.float64)).item()
    x = torch.empty(1000, dtype=torch.float64).uniform_(-bound, bound).float()
    x[:3] = torch.tensor([0.0, bound * 0.999, -bound * 0.999])
    two_hot = support.to_two_hot(x)
    assert two_hot.shape == (1000, support.bins)
    assert two_hot.dtype == torch.float32
    torch.testing.assert_close(two_hot.sum(-1), torch.ones(1000))
    assert ((two_hot > 0).sum(-1) <= 2).all()
    assert (two_hot >= 0).all()
    nz = two_hot.nonzero()
    rows = nz[:, 0]
    # The non-zeros of each row are neighbours.
    for r in range(0, 1000, 97):
        cols = nz[rows == r, 1]
        assert cols.max() - cols.min() <= 1
    torch.testing.assert_close((two_hot * support.atoms).sum(-1), h(x.double()).float(), rtol=1e-5, atol=2e-5)


def test_two_hot_clamps_outside_range():
    support = Support(-2, 2, 51)
    two_hot = support.to_two_hot(torch.tensor([100.0, -100.0]))
    expected = torch.zeros(2, 51)
    expected[0, -1] = 1
    expected[1, 0] = 1
    assert torch.equal(two_hot, expected)


def test_two_hot_keeps_leading_shape():
    support = Support(-2, 2, 51)
    assert support.to_two_hot(torch.zeros(4, 5, 3)).shape == (4, 5, 3, 51)
    assert support.to_scalar(torch.zeros(4, 5, 51)).shape == (4, 5)


@pytest.mark.parametrize(
    "support", [Support(-299, 299, 51), Support(-2, 2, 51), Support.from_transformed(-300, 300, 601)]
)
def test_round_trip_through_logits(support: Support):
    bound = h_inv(torch.tensor(support.high_h, dtype=torch.float64)).item()
    x = torch.linspace(-bound, bound, 401)
    decoded = support.to_scalar(torch.log(support.to_two_hot(x)))
    torch.testing.assert_close(decoded, x, rtol=1e-4, atol=1e-4)


def test_uniform_logits_decode_to_zero_on_symmetric_support():
    support = Support(-299, 299, 51)
    assert support.to_scalar(torch.zeros(3, 51)).abs().max().item() < 1e-4


def test_cross_entropy_by_hand_on_three_bins():
    support = Support.from_transformed(0, 2, 3)  # atoms 0, 1, 2
    # h(3) = 1.003: weight 0.997 on atom 1 and 0.003 on atom 2.
    logits = torch.tensor([1.0, 2.0, 3.0])
    log_z = math.log(math.e + math.e**2 + math.e**3)
    expected = -(0.997 * (2 - log_z) + 0.003 * (3 - log_z))
    loss = support.cross_entropy(logits, torch.tensor(3.0))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    two_hot = support.to_two_hot(torch.tensor(3.0))
    torch.testing.assert_close(two_hot, torch.tensor([0.0, 0.997, 0.003]), rtol=0, atol=1e-6)


def test_bf16_logits_decode_like_float32():
    torch.manual_seed(0)
    support = Support(-299, 299, 51)
    logits = torch.randn(256, 51) * 3
    low = logits.bfloat16()
    decoded = support.to_scalar(low)
    assert decoded.dtype == torch.float32
    # Same numbers as the bf16 values upcast: nothing is computed in bf16.
    torch.testing.assert_close(decoded, support.to_scalar(low.float()), rtol=0, atol=0)
    # Against the float32 logits only the bf16 rounding δ of the logits differs, and it moves
    # the h-space expectation by Σ p_i (a_i − E) δ_i, at most max|δ| · (atom range).
    bound = (low.float() - logits).abs().max().item() * (support.high_h - support.low_h)
    torch.testing.assert_close(h(decoded), h(support.to_scalar(logits)), rtol=0, atol=bound)
    ce = support.cross_entropy(low, torch.full((256,), 10.0))
    assert ce.dtype == torch.float32
    torch.testing.assert_close(
        ce, support.cross_entropy(low.float(), torch.full((256,), 10.0)), rtol=0, atol=0
    )


def test_a_clipped_support_decodes_within_its_bounds_and_encodes_as_before():
    plain = Support(-299.0, 299.0, 51)
    clipped = Support(-299.0, 299.0, 51, clip=(0.0, 1e5))
    targets = torch.tensor([-40.0, -0.5, 0.0, 3.0, 250.0])
    logits = plain.to_two_hot(targets).log()  # decodes back to the targets
    torch.testing.assert_close(plain.to_scalar(logits), targets, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clipped.to_scalar(logits), targets.clamp(min=0.0), rtol=1e-4, atol=1e-4)
    assert torch.equal(clipped.to_two_hot(targets), plain.to_two_hot(targets))
