"""EnvBatch on real CartPole-v1 and Pendulum-v1: auto-reset, final observations, returns, seeds."""

import gymnasium
import numpy as np

from effzero.envs import EnvBatch, make_gym_env


def cartpole(index, **kwargs):
    return make_gym_env("CartPole-v1", **kwargs)


def rollout(seed, actions):
    """Observations [T+1, N, *obs], rewards [T, N] and finished episodes of a fixed action sequence."""
    with EnvBatch(cartpole, 3, seed) as batch:
        observations, rewards, finished = [batch.observations], [], []
        for a in actions:
            result = batch.step(a)
            observations.append(batch.observations)
            rewards.append(result.rewards)
            finished.append(result.finished)
    return np.stack(observations), np.stack(rewards), finished


def test_same_seed_same_trajectories():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(120, 3))
    obs_a, rew_a, fin_a = rollout(7, actions)
    obs_b, rew_b, fin_b = rollout(7, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert fin_a == fin_b and any(fin_a)  # episodes ended, and their resets matched too
    obs_c, _, _ = rollout(8, actions)
    assert not np.array_equal(obs_a[0], obs_c[0])


def test_first_episode_i_uses_seed_plus_i():
    with EnvBatch(cartpole, 2, 10) as batch:
        for i in range(2):
            reference, _ = gymnasium.make("CartPole-v1").reset(seed=10 + i)
            np.testing.assert_array_equal(batch.observations[i], reference)


def test_termination_reports_terminal_observation_and_resets():
    seed, n = 5, 2
    reference = gymnasium.make("CartPole-v1")
    expected_obs, _ = reference.reset(seed=seed + 1)
    with EnvBatch(cartpole, n, seed) as batch:
        np.testing.assert_array_equal(batch.observations[1], expected_obs)
        steps, term = 0, False
        while not term:
            steps += 1
            assert steps < 50, "constant pushes should topple the pole within 50 steps"
            result = batch.step(np.ones(n, dtype=np.int64))
            expected_obs, _, term, _, _ = reference.step(1)
            assert result.terminated[1] == term and not result.truncated[1]
            np.testing.assert_array_equal(result.final_observations[1], expected_obs)
            if not term:
                np.testing.assert_array_equal(batch.observations[1], expected_obs)
        assert (1, float(steps), steps) in result.finished  # CartPole pays 1 per step, the last one too
        # The env was reset: a fresh start state (|x| <= 0.05), not the terminal one.
        assert not np.array_equal(batch.observations[1], result.final_observations[1])
        assert np.all(np.abs(batch.observations[1]) <= 0.05)
        assert batch.episode_returns[1] == 0.0 and batch.episode_lengths[1] == 0


def test_truncation_on_time_limit_and_running_returns_reset():
    def short(index):
        return make_gym_env("CartPole-v1", max_episode_steps=5)

    with EnvBatch(short, 2, 0) as batch:
        actions = np.array([0, 1])
        for t in range(1, 5):
            result = batch.step(actions := 1 - actions)  # alternate: the pole stays up
            assert not result.truncated.any() and not result.finished
            np.testing.assert_array_equal(batch.episode_lengths, [t, t])
            np.testing.assert_array_equal(batch.episode_returns, [t, t])
        result = batch.step(actions := 1 - actions)
        assert result.truncated.all() and not result.terminated.any()
        assert sorted(result.finished) == [(0, 5.0, 5), (1, 5.0, 5)]
        np.testing.assert_array_equal(batch.episode_returns, [0.0, 0.0])
        np.testing.assert_array_equal(batch.episode_lengths, [0, 0])
        result = batch.step(actions := 1 - actions)
        np.testing.assert_array_equal(batch.episode_returns, [1.0, 1.0])
        np.testing.assert_array_equal(batch.episode_lengths, [1, 1])


def test_continuous_actions_and_result_dtypes():
    with EnvBatch(lambda i: make_gym_env("Pendulum-v1"), 3, 0) as batch:
        assert batch.observations.shape == (3, 3) and batch.observations.dtype == np.float32
        result = batch.step(np.full((3, 1), 0.5, dtype=np.float32))
        assert result.rewards.shape == (3,) and result.rewards.dtype == np.float32
        assert result.terminated.dtype == bool and result.truncated.dtype == bool
        assert result.final_observations.shape == (3, 3)
        np.testing.assert_array_equal(result.final_observations, batch.observations)
        assert np.all(result.rewards <= 0.0)  # Pendulum's reward is a negative cost
        np.testing.assert_allclose(batch.episode_returns, result.rewards, rtol=1e-6)
