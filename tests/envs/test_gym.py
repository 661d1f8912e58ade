"""make_gym_env: real gymnasium envs, flattened float32 observations, clear errors."""

import importlib.util

import gymnasium
import numpy as np
import pytest

from effzero.envs import FlattenFloat32, make_gym_env
from tests.envs.toy import GridObsEnv

TOY_ID = "EffzeroTestGridObs-v0"


@pytest.fixture
def toy_id():
    gymnasium.register(TOY_ID, entry_point=GridObsEnv)
    yield TOY_ID
    del gymnasium.registry[TOY_ID]


def test_unknown_id_suggests_close_matches():
    with pytest.raises(ValueError, match="CartPol-v1") as info:
        make_gym_env("CartPol-v1")
    message = str(info.value)
    assert "CartPole-v1" in message and "env.id" in message
    assert "env=atari" in message and "env=dmc" in message


def test_deprecated_version_points_at_the_current_one():
    with pytest.raises(ValueError, match="LunarLander-v3"):
        make_gym_env("LunarLander-v2")


@pytest.mark.skipif(importlib.util.find_spec("Box2D") is not None, reason="Box2D is installed")
def test_missing_dependency_names_the_pip_package():
    with pytest.raises(ImportError, match=r"pip install \"gymnasium\[box2d\]\"") as info:
        make_gym_env("LunarLander-v3")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_flatten_wrapper_makes_float32_vectors():
    env = FlattenFloat32(GridObsEnv())
    assert env.observation_space.shape == (4,) and env.observation_space.dtype == np.float32
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, [0, 1, 2, 3])
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, [1, 2, 3, 4])
    assert env.observation_space.contains(obs)


def test_make_gym_env_flattens_registered_grid(toy_id):
    env = make_gym_env(toy_id, seed=0)
    obs, _ = env.reset()
    assert env.observation_space.shape == (4,)
    assert obs.shape == (4,) and obs.dtype == np.float32


def test_make_gym_env_keeps_the_real_env():
    env = make_gym_env("CartPole-v1", seed=3)
    assert type(env.unwrapped).__name__ == "CartPoleEnv"
    obs, _ = env.reset(seed=3)
    reference, _ = gymnasium.make("CartPole-v1").reset(seed=3)
    np.testing.assert_array_equal(obs, reference)
