"""World-model networks and the categorical supports they predict on. Imports only torch."""

from effzero.nets.augment import augment, random_intensity, random_shift, shift
from effzero.nets.blocks import ResidualMLP, mlp
from effzero.nets.image import ImageWorldModel
from effzero.nets.normalizer import RunningMeanStd
from effzero.nets.proprio import ProprioWorldModel
from effzero.nets.support import H_EPS, Support, h, h_inv

__all__ = (
    "H_EPS",
    "ImageWorldModel",
    "ProprioWorldModel",
    "ResidualMLP",
    "RunningMeanStd",
    "Support",
    "augment",
    "h",
    "h_inv",
    "mlp",
    "random_intensity",
    "random_shift",
    "shift",
)
