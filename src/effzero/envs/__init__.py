"""Environments as gymnasium envs plus the EnvSpec the rest of the project reads. They know no
networks: numpy and gymnasium only."""

from effzero.envs.batch import EnvBatch, StepResult
from effzero.envs.gym import FlattenFloat32, make_gym_env
from effzero.envs.spec import EnvSpec, check_spaces

__all__ = ("EnvBatch", "EnvSpec", "FlattenFloat32", "StepResult", "check_spaces", "make_gym_env")
