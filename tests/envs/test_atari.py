"""make_atari_env on the real ALE: frame skip and max-pooling, no-op starts, frame stacks, and the
training and evaluation protocols (clipped rewards, life loss, time caps)."""

import cv2
import gymnasium
import numpy as np
import pytest

from effzero.envs import EnvSpec, make_atari_env

BREAKOUT_FIRE = 1


def frame_number(env: gymnasium.Env) -> int:
    return env.unwrapped.ale.getEpisodeFrameNumber()


def lives(env: gymnasium.Env) -> int:
    return env.unwrapped.ale.lives()


def resized(screen: np.ndarray) -> np.ndarray:
    """[210, 160, 3] raw screen -> [3, 96, 96], computed here independently of the wrappers."""
    return cv2.resize(screen, (96, 96), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)


def test_unknown_game_lists_close_atari_100k_games():
    with pytest.raises(ValueError, match="breakout") as info:
        make_atari_env("breakot", train=True)
    assert "ALE/Breakot-v5" in str(info.value) and "up_n_down" in str(info.value)


@pytest.mark.parametrize(("game", "num_actions"), [("ms_pacman", 9), ("up_n_down", 6), ("space_invaders", 6)])
def test_snake_names_map_to_ale_games_beyond_the_100k_set(game, num_actions):
    env = make_atari_env(game, train=False, seed=0)
    assert env.action_space.n == num_actions


@pytest.mark.parametrize(("train", "cap"), [(True, 3000), (False, 27000)])
def test_spec_reads_stacked_frames_and_the_cap(train, cap):
    env = make_atari_env("breakout", train=train, seed=0)
    spec = EnvSpec.from_env(env, "breakout", 0.997**4)
    assert spec.obs_shape == (12, 96, 96) and spec.obs_dtype == "uint8" and spec.frame_stack == 4
    assert spec.is_discrete and spec.num_actions == 4
    assert spec.max_episode_steps == cap and spec.discount == 0.997**4
    obs, _ = env.reset()
    assert obs.shape == (12, 96, 96) and obs.dtype == np.uint8 and obs.flags.c_contiguous


def test_noop_starts_are_seeded_and_between_1_and_30_frames():
    env = make_atari_env("breakout", train=True)
    env.reset(seed=7)
    seeded = frame_number(env)
    noops = []
    for _ in range(40):
        env.reset()
        noops.append(frame_number(env))
    env.reset(seed=7)
    assert frame_number(env) == seeded
    assert all(1 <= n <= 30 for n in [seeded, *noops]) and len(set(noops)) > 10


def test_a_step_plays_four_frames_and_max_pools_the_last_two():
    """Replays the same seed and actions on a bare ALE env and rebuilds every frame from its screens."""
    env = make_atari_env("breakout", train=False)
    raw = gymnasium.make(
        "ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False
    )
    obs, _ = env.reset(seed=3)
    screen, _ = raw.reset(seed=3)
    for _ in range(frame_number(env)):
        screen, *_ = raw.step(0)
    np.testing.assert_array_equal(obs[-3:], resized(screen))
    rng = np.random.default_rng(0)
    pooled_differs = 0
    for t in range(40):
        action = BREAKOUT_FIRE if t == 0 else int(rng.integers(4))
        before = frame_number(env)
        obs, *_ = env.step(action)
        assert frame_number(env) == before + 4
        screens = [raw.step(action)[0] for _ in range(4)]
        pooled = np.maximum(screens[-2], screens[-1])
        np.testing.assert_array_equal(obs[-3:], resized(pooled))
        pooled_differs += not np.array_equal(pooled, screens[-1])
    assert pooled_differs > 0  # the ball and paddle moved: the max is not just the last frame


def test_frame_stack_repeats_the_first_frame_then_shifts_by_one():
    env = make_atari_env("breakout", train=True, seed=0)
    obs, _ = env.reset(seed=1)
    for i in range(1, 4):
        np.testing.assert_array_equal(obs[3 * i : 3 * i + 3], obs[:3])
    for action in (BREAKOUT_FIRE, 2, 3, 2, 3):
        new, *_ = env.step(action)
        np.testing.assert_array_equal(new[:9], obs[3:])
        obs = new


def test_train_clips_rewards_and_a_lost_life_ends_the_episode_eval_does_neither():
    """Training and evaluation envs share a seed and actions, so they play the same game until the
    training one stops at the first lost life."""
    train = make_atari_env("ms_pacman", train=True)
    evaluate = make_atari_env("ms_pacman", train=False)
    train.reset(seed=0)
    evaluate.reset(seed=0)
    rng = np.random.default_rng(0)
    raw_rewards = []
    for _ in range(2000):
        action = int(rng.integers(9))
        train_obs, clipped, terminated, truncated, _ = train.step(action)
        eval_obs, raw, eval_terminated, eval_truncated, _ = evaluate.step(action)
        np.testing.assert_array_equal(train_obs, eval_obs)
        assert clipped == np.sign(raw) and clipped in (-1.0, 0.0, 1.0)
        raw_rewards.append(raw)
        if terminated:
            break
    assert terminated and not truncated, "no life was lost in 2000 steps"
    assert max(raw_rewards) > 1  # raw points (pellets score 10) reach evaluation unclipped
    assert lives(evaluate) == lives(train) == 2 and not (eval_terminated or eval_truncated)
    for _ in range(5):  # the evaluation game goes on
        assert evaluate.step(0)[2:4] == (False, False)


def test_reset_after_a_lost_life_continues_the_game():
    env = make_atari_env("breakout", train=True)
    env.reset(seed=0)
    env.step(BREAKOUT_FIRE)
    terminated = False
    while not terminated:  # no-ops after the launch: the paddle misses the ball
        _, _, terminated, truncated, _ = env.step(0)
        assert not truncated
    assert lives(env) == 4
    frames = frame_number(env)
    env.reset(seed=123)  # the seed is not used: the game goes on
    assert lives(env) == 4 and frame_number(env) == frames + 4


def test_training_cap_truncates_and_the_next_reset_restarts_the_game():
    env = make_atari_env("breakout", train=True, max_episode_steps=10)
    assert EnvSpec.from_env(env, "breakout", 0.99).max_episode_steps == 10
    env.reset(seed=0)
    for t in range(1, 11):  # no-ops without FIRE never launch the ball: no life is lost
        _, reward, terminated, truncated, _ = env.step(0)
        assert reward == 0.0 and not terminated and truncated == (t == 10)
    env.reset()
    assert frame_number(env) <= 30 and lives(env) == 5
