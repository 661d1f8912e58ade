"""EnvSpec read from real gymnasium envs, and the errors for spaces the project cannot handle."""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from effzero.envs import EnvSpec, make_gym_env
from tests.envs.toy import GridObsEnv


def test_cartpole_spec():
    spec = EnvSpec.from_env(make_gym_env("CartPole-v1"), "CartPole-v1", 0.997)
    assert spec.obs_shape == (4,)
    assert spec.obs_dtype == "float32"
    assert spec.is_discrete and spec.action_kind == "discrete"
    assert spec.num_actions == 2 and spec.action_dim == 0 and spec.action_shape == ()
    assert spec.action_low == () and spec.action_high == ()
    assert spec.max_episode_steps == 500
    assert spec.discount == 0.997


def test_pendulum_spec():
    spec = EnvSpec.from_env(make_gym_env("Pendulum-v1"), "Pendulum-v1", 0.99)
    assert spec.obs_shape == (3,)
    assert not spec.is_discrete and spec.action_kind == "continuous"
    assert spec.num_actions == 0 and spec.action_dim == 1 and spec.action_shape == (1,)
    assert spec.action_low == (-2.0,) and spec.action_high == (2.0,)
    assert spec.max_episode_steps == 200


def test_uint8_frames_keep_their_dtype():
    env = GridObsEnv(observation_space=spaces.Box(0, 255, (3, 8, 8), np.uint8))
    spec = EnvSpec.from_env(env, "frames", 0.997)
    assert spec.obs_shape == (3, 8, 8) and spec.obs_dtype == "uint8"
    assert spec.max_episode_steps is None


@pytest.mark.parametrize(
    ("observation_space", "action_space", "named"),
    [
        (spaces.Dict({"x": spaces.Box(-1, 1, (2,))}), spaces.Discrete(2), "Dict"),
        (spaces.Tuple((spaces.Box(-1, 1, (2,)),)), spaces.Discrete(2), "Tuple"),
        (spaces.Box(-1, 1, (2,)), spaces.MultiDiscrete([2, 3]), "MultiDiscrete"),
        (spaces.Box(-1, 1, (2,)), spaces.MultiBinary(3), "MultiBinary"),
        (spaces.Box(-1, 1, (2,)), spaces.Box(-np.inf, np.inf, (2,)), "Box"),
    ],
)
def test_unsupported_space_is_named(observation_space, action_space, named):
    env = GridObsEnv(observation_space, action_space)
    with pytest.raises(ValueError, match=named) as info:
        EnvSpec.from_env(env, "toy", 0.997)
    assert "supports" in str(info.value)


def test_make_gym_env_rejects_discrete_observations():
    with pytest.raises(ValueError, match="observation space Discrete"):
        make_gym_env("FrozenLake-v1")


def test_spec_reads_the_env_not_the_registry():
    env = make_gym_env("CartPole-v1", max_episode_steps=5)
    assert EnvSpec.from_env(env, "CartPole-v1", 0.997).max_episode_steps == 5
    assert isinstance(env, gymnasium.Env)
