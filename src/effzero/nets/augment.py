"""DrQ-style image augmentation for the SimSiam and value losses, batched on the device.

EZ-V2 augments image observations with a random shift (replicate-pad by 4, crop back) and a
random intensity scale. The stacked frames of one sample are channels of one image, so they
share one shift and one intensity factor; different samples (and the current versus the
future stacks, augmented by separate calls) get independent draws.

Dtypes: a shift only moves pixels, so it keeps the input's dtype (uint8 stays uint8). A
scaled intensity is not a whole number, so `random_intensity` and `augment` return float32
for integer input (floating input keeps its dtype), unclipped, still on the [0, 255] scale
the world model divides by 255.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _device_of(generator: torch.Generator | None, x: Tensor) -> torch.device:
    # Draws happen where the generator lives; without one, beside the data.
    return generator.device if generator is not None else x.device


def shift(x: Tensor, offsets: Tensor, pad: int) -> Tensor:
    """Replicate-pad by `pad` and crop back to H×W at per-sample integer offsets.

    Output pixel (i, j) of sample b is input pixel (clamp(i + dy − pad), clamp(j + dx − pad)):
    clamping the index to the border is the replicate padding, so no padded copy is made and
    the shift is exact (no interpolation).

    Args:
        x: [B, C, H, W] any dtype.
        offsets: [B, 2] integers (dy, dx) in [0, 2·pad], the crop's corner in the padded image;
            pad − offset is the content's displacement (down, right).
        pad: padding on every side.

    Returns:
        [B, C, H, W], same dtype as `x`.
    """
    batch, channels, height, width = x.shape
    offsets = offsets.to(x.device, torch.long) - pad  # [B, 2]
    rows = (torch.arange(height, device=x.device) + offsets[:, :1]).clamp(0, height - 1)  # [B, H]
    cols = (torch.arange(width, device=x.device) + offsets[:, 1:]).clamp(0, width - 1)  # [B, W]
    x = x.gather(2, rows[:, None, :, None].expand(batch, channels, height, width))
    return x.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def random_shift(x: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """`shift` by offsets drawn uniformly from {0, …, 2·pad}², one pair per sample.

    Args:
        x: [B, C, H, W] any dtype.
        pad: maximum displacement in pixels; 0 is the identity.
        generator: source of the offsets (on its own device), for reproducible draws.

    Returns:
        [B, C, H, W], same dtype as `x`.
    """
    offsets = torch.randint(
        0, 2 * pad + 1, (x.shape[0], 2), generator=generator, device=_device_of(generator, x)
    )
    return shift(x, offsets, pad)


def random_intensity(x: Tensor, scale: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Multiply each image by 1 + scale·clip(N(0, 1), −2, 2), one factor per sample.

    Args:
        x: [B, C, H, W].
        scale: noise scale; factors lie in [1 − 2·scale, 1 + 2·scale]; 0 is the identity.
        generator: source of the noise (on its own device).

    Returns:
        [B, C, H, W]: float32 for integer input, else `x`'s dtype.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    noise = torch.randn(x.shape[0], 1, 1, 1, generator=generator, device=_device_of(generator, x))
    factor = (1.0 + scale * noise.clamp(-2.0, 2.0)).to(x.device, dtype)  # [B, 1, 1, 1]
    return x.to(dtype) * factor


def augment(
    x: Tensor, pad: int = 4, intensity_scale: float = 0.05, generator: torch.Generator | None = None
) -> Tensor:
    """EZ-V2's augmentation: `random_shift` then `random_intensity`.

    Args:
        x: [B, C, H, W] uint8 or float frames on the [0, 255] scale.
        pad: shift padding; 0 disables the shift.
        intensity_scale: intensity noise scale; 0 disables the scaling.
        generator: source of all draws.

    Returns:
        [B, C, H, W]: float32 for integer input, else `x`'s dtype.
    """
    return random_intensity(random_shift(x, pad, generator), intensity_scale, generator)
