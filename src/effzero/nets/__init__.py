"""World-model networks and the categorical supports they predict on. Imports only torch."""

from effzero.nets.blocks import ResidualMLP, mlp
from effzero.nets.normalizer import RunningMeanStd
from effzero.nets.proprio import ProprioWorldModel
from effzero.nets.support import H_EPS, Support, h, h_inv

__all__ = (
    "H_EPS",
    "ProprioWorldModel",
    "ResidualMLP",
    "RunningMeanStd",
    "Support",
    "h",
    "h_inv",
    "mlp",
)
