"""make_dmc_env on the real dm_control suite: action repeat, episode length, proprio order, pixels
and cameras, action bounds, EnvSpec, value bounds, errors."""

import os

import numpy as np
import pytest
import torch

from effzero.envs import EnvSpec, make_dmc_env


def physics_time(env) -> float:
    return float(env.unwrapped.dm_env.physics.data.time)


def control_timestep(env) -> float:
    return float(env.unwrapped.dm_env.control_timestep())


def test_renderer_is_chosen_before_dm_control_loads():
    make_dmc_env("walker", "walk", pixels=False)
    assert os.environ["MUJOCO_GL"] in ("egl", "osmesa")


def test_one_agent_step_is_two_control_steps():
    env = make_dmc_env("walker", "walk", pixels=False, seed=0)
    env.reset()
    assert physics_time(env) == 0.0
    env.step(env.action_space.sample())
    assert physics_time(env) == pytest.approx(2 * control_timestep(env))


def test_episodes_last_500_agent_steps_and_end_truncated():
    env = make_dmc_env("walker", "walk", pixels=False, seed=0)
    env.reset()
    for t in range(1, 501):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert 0.0 <= reward <= 2.0 and not terminated and truncated == (t == 500)
    assert physics_time(env) == pytest.approx(1000 * control_timestep(env))


def test_proprio_is_the_observation_dict_flattened_in_task_order():
    env = make_dmc_env("walker", "walk", pixels=False, seed=0)
    env.reset()
    obs, *_ = env.step(env.action_space.sample())
    dm_env = env.unwrapped.dm_env
    observation = dm_env.task.get_observation(dm_env.physics)
    assert list(observation) == ["orientations", "height", "velocity"]
    expected = np.concatenate([observation["orientations"], [observation["height"]], observation["velocity"]])
    assert obs.shape == (24,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, expected.astype(np.float32))


def test_seed_fixes_the_initial_state():
    first = [make_dmc_env("walker", "walk", pixels=False).reset(seed=s)[0] for s in (1, 1, 2)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


@pytest.mark.parametrize(("domain", "task", "camera"), [("walker", "walk", 0), ("quadruped", "walk", 2)])
def test_pixels_are_stacked_frames_from_the_protocol_camera(domain, task, camera):
    env = make_dmc_env(domain, task, pixels=True, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (12, 96, 96) and obs.dtype == np.uint8
    for i in range(1, 4):
        np.testing.assert_array_equal(obs[3 * i : 3 * i + 3], obs[:3])
    new, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(new[:9], obs[3:])
    physics = env.unwrapped.dm_env.physics
    np.testing.assert_array_equal(new[-3:], physics.render(96, 96, camera_id=camera).transpose(2, 0, 1))
    assert new[-3:].std() > 0  # a real picture, not a blank buffer


def test_actions_in_unit_box_map_onto_the_task_bounds():
    env = make_dmc_env("quadruped", "walk", pixels=False, seed=0)
    env.reset()
    spec = env.unwrapped.dm_env.action_spec()
    assert not np.all(spec.maximum == 1.0)  # quadruped's bounds are not [-1, 1]
    ctrl = env.unwrapped.dm_env.physics.data.ctrl
    for unit, expected in (
        (1.0, spec.maximum),
        (-1.0, spec.minimum),
        (0.0, (spec.minimum + spec.maximum) / 2),
    ):
        env.step(np.full(12, unit, np.float32))
        np.testing.assert_allclose(ctrl, expected)


@pytest.mark.parametrize(("pixels", "obs_shape", "frame_stack"), [(False, (24,), 1), (True, (12, 96, 96), 4)])
def test_spec_of_walker(pixels, obs_shape, frame_stack):
    env = make_dmc_env("walker", "walk", pixels=pixels, seed=0)
    spec = EnvSpec.from_env(env, "walker-walk", 0.997**2)
    assert spec.obs_shape == obs_shape and spec.frame_stack == frame_stack
    assert spec.obs_dtype == ("uint8" if pixels else "float32")
    assert spec.action_kind == "continuous" and spec.action_dim == 6 and spec.action_shape == (6,)
    assert spec.action_low == (-1.0,) * 6 and spec.action_high == (1.0,) * 6
    assert spec.discount == 0.997**2 and spec.max_episode_steps == 500
    assert env.action_space.dtype == np.float32


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: stand, walk, run"):
        make_dmc_env("walker", "wlk", pixels=False)
    with pytest.raises(ValueError, match="walker-walk") as info:
        make_dmc_env("walkr", "walk", pixels=False)
    assert "cheetah-run" in str(info.value)


def test_the_dmc_config_clips_the_models_decoded_values_to_its_bounds():
    from effzero.config import DMCEnvConfig
    from effzero.data.acting import build_model
    from effzero.data.environments import build_spec
    from tests.small import small_model

    spec = build_spec(DMCEnvConfig(id="walker-walk", domain="walker", task="walk", value_bounds=[0.0, 1e5]))
    assert spec.value_bounds == (0.0, 1e5)
    model = build_model(small_model(), spec)
    logits = model.value_support.to_two_hot(torch.tensor([-3.0, 2.0])).log()
    torch.testing.assert_close(
        model.value_support.to_scalar(logits), torch.tensor([0.0, 2.0]), atol=1e-4, rtol=0
    )
    assert model.reward_support.clip is None  # rewards are not clipped


def test_the_configured_episode_cap_reaches_a_dmc_env():
    from effzero.config import DMCEnvConfig
    from effzero.data.environments import env_maker

    env = env_maker(DMCEnvConfig(id="walker-walk", domain="walker", task="walk", max_episode_steps=7))(0)
    env.reset(seed=0)
    ends = [env.step(np.zeros(6, np.float32))[2:4] for _ in range(7)]
    assert ends == [(False, False)] * 6 + [(False, True)]  # truncated at the 7th agent step
