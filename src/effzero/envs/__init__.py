"""Environments as gymnasium envs plus the EnvSpec the rest of the project reads. They know no
networks: numpy and gymnasium only."""

from effzero.envs.atari import ATARI_100K_GAMES, make_atari_env
from effzero.envs.batch import EnvBatch, StepResult
from effzero.envs.dmc import make_dmc_env
from effzero.envs.frames import FrameStack
from effzero.envs.gym import FlattenFloat32, make_gym_env
from effzero.envs.spec import EnvSpec, check_spaces

__all__ = (
    "ATARI_100K_GAMES",
    "EnvBatch",
    "EnvSpec",
    "FlattenFloat32",
    "FrameStack",
    "StepResult",
    "check_spaces",
    "make_atari_env",
    "make_dmc_env",
    "make_gym_env",
)
