"""Augmentation: exact integer shifts with replicate padding, per-image intensity, dtypes."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from effzero.nets import augment, random_intensity, random_shift, shift


def padded_crop(x: torch.Tensor, pad: int, dy: int, dx: int) -> torch.Tensor:
    """The textbook construction: replicate-pad, then crop H×W at (dy, dx)."""
    height, width = x.shape[-2:]
    return F.pad(x.double(), (pad, pad, pad, pad), mode="replicate")[..., dy : dy + height, dx : dx + width]


def test_shift_on_a_hand_written_image():
    x = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8).view(1, 1, 3, 3)
    # Corner (0, 0) of the padded image: the content moves down and right by one pixel.
    down_right = torch.tensor([[1, 1, 2], [1, 1, 2], [4, 4, 5]], dtype=torch.uint8)
    assert torch.equal(shift(x, torch.tensor([[0, 0]]), pad=1)[0, 0], down_right)
    # Corner (2, 1): up by one, horizontally in place; the last row repeats.
    up = torch.tensor([[4, 5, 6], [7, 8, 9], [7, 8, 9]], dtype=torch.uint8)
    assert torch.equal(shift(x, torch.tensor([[2, 1]]), pad=1)[0, 0], up)
    assert torch.equal(shift(x, torch.tensor([[1, 1]]), pad=1), x)  # the centre crop


def test_shift_matches_padded_crops_per_sample_and_shares_them_across_channels():
    torch.manual_seed(0)
    pad = 3
    x = torch.randint(0, 256, (6, 12, 10, 9), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [6, 6], [0, 6], [6, 0], [3, 3], [1, 5]])
    out = shift(x, offsets, pad)
    for b, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[b].double(), padded_crop(x[b], pad, dy, dx)), (dy, dx)


def test_padding_replicates_the_border():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    out = shift(x, torch.tensor([[0, 0]]), pad=2)  # content moved down and right by 2
    assert torch.equal(out[0, 0, :3, 2:], x[0, 0, :1, :4].expand(3, 4))  # rows 0-2 copy row 0
    assert torch.equal(out[0, 0, 2:, :3], x[0, 0, :4, :1].expand(4, 3))  # columns 0-2 copy column 0
    assert torch.equal(out[0, 0, :3, :3], x[0, 0, 0, 0].expand(3, 3))  # the corner repeats the corner


def test_random_shift_draws_one_exact_offset_per_sample():
    pad = 2
    x = torch.rand(32, 6, 8, 8)
    out = random_shift(x, pad, generator=torch.Generator().manual_seed(1))
    seen = set()
    for b in range(x.shape[0]):
        # Every sample is exactly one of the (2·pad + 1)² padded crops, all channels alike.
        matches = [
            (dy, dx)
            for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)
            if torch.equal(out[b].double(), padded_crop(x[b], pad, dy, dx))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # independent draws, not one shift for the batch
    again = random_shift(x, pad, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_random_intensity_scales_each_image_by_one_factor_in_range():
    x = torch.rand(4096, 12, 5, 5) * 255 + 1
    out = random_intensity(x, scale=0.05, generator=torch.Generator().manual_seed(0))
    ratio = out / x
    factor = ratio[:, :1, :1, :1]
    torch.testing.assert_close(ratio, factor.expand_as(ratio))  # one factor per image
    assert factor.min() >= 0.9 - 1e-6 and factor.max() <= 1.1 + 1e-6
    # N(0, 1) leaves [-2, 2] 4.6% of the time: with 4096 draws the clip shows at both ends.
    torch.testing.assert_close(factor.min(), torch.tensor(0.9))
    torch.testing.assert_close(factor.max(), torch.tensor(1.1))
    assert 0.02 < factor.std() < 0.06  # 0.05 · std of a clipped normal (≈ 0.94)


def test_dtypes_and_shapes():
    x8 = torch.randint(0, 256, (3, 12, 16, 16), dtype=torch.uint8)
    assert random_shift(x8).dtype == torch.uint8 and random_shift(x8).shape == x8.shape
    assert random_intensity(x8).dtype == torch.float32
    assert augment(x8).dtype == torch.float32 and augment(x8).shape == x8.shape
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        x = x8.to(dtype)
        assert random_shift(x).dtype == random_intensity(x).dtype == augment(x).dtype == dtype
    assert augment(x8).max() <= 255 * 1.1  # still on the 0-255 scale the model divides by 255


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_zero_pad_and_scale_are_the_identity(dtype):
    x = torch.randint(0, 256, (5, 12, 7, 7)).to(dtype)
    assert torch.equal(random_shift(x, pad=0), x)
    assert torch.equal(random_intensity(x, scale=0.0), x.float())
    assert torch.equal(augment(x, pad=0, intensity_scale=0.0), x.float())
