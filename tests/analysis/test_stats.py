"""Aggregates and bootstrap intervals against closed forms and brute force."""

import itertools

import numpy as np
import pytest

from effzero.analysis import stats


def test_iqm_of_1_to_8_is_the_mean_of_3_to_6():
    assert stats.iqm([np.arange(1.0, 9.0)]) == pytest.approx((3 + 4 + 5 + 6) / 4)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 9, 10])
def test_iqm_weights_the_runs_on_the_quartiles_by_their_share(n):
    """Each run repeated 4 times makes n divisible by 4: then the IQM is a plain 25% trimmed mean."""
    values = np.random.default_rng(n).normal(size=n) ** 3  # skewed, so a wrong weighting shows
    repeated = np.sort(np.repeat(values, 4))
    trimmed = repeated[n : 3 * n].mean()  # drop n of 4n at each end
    assert stats.iqm([values]) == pytest.approx(trimmed)


def test_iqm_of_1_to_5_by_hand():
    # The middle 2.5 runs: 3/4 of run 2, run 3, 3/4 of run 4.
    assert stats.iqm([np.arange(1.0, 6.0)]) == pytest.approx((0.75 * 2 + 3 + 0.75 * 4) / 2.5)


def test_tasks_weigh_the_same_whatever_their_seed_counts():
    # Task a: 1 seed at 0; task b: 3 seeds at 10. Masses 1/2 and 1/6 each: the middle half
    # is 1/4 at 0 and 1/4 at 10.
    scores = [np.array([0.0]), np.array([10.0, 10.0, 10.0])]
    assert stats.iqm(scores) == pytest.approx(5.0)
    assert stats.mean(scores) == pytest.approx(5.0)
    assert stats.median([np.array([1.0, 3.0]), np.array([5.0]), np.array([100.0])]) == pytest.approx(5.0)


def test_aggregates_keep_leading_batch_axes():
    scores = [np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[0.0], [1.0]])]  # [2, n_t]
    assert stats.mean(scores) == pytest.approx([0.75, 2.5])
    assert stats.iqm(scores) == pytest.approx([stats.iqm([s[i] for s in scores]) for i in range(2)])


def test_ci_of_a_constant_is_the_constant():
    assert stats.bootstrap_ci([np.full(5, 3.5), np.full(2, 3.5)], stats.mean) == pytest.approx((3.5, 3.5))
    assert stats.bootstrap_ci([np.full(5, 3.5)], stats.iqm) == pytest.approx((3.5, 3.5))


def test_ci_matches_the_exact_bootstrap_distribution():
    """With 4 seeds all 4^4 resamples are equally likely: their quantiles are the exact interval."""
    seeds = np.array([1.0, 2.0, 4.0, 9.0])
    exact = [np.mean(seeds[list(i)]) for i in itertools.product(range(4), repeat=4)]
    low, high = np.quantile(exact, [0.025, 0.975])
    got = stats.bootstrap_ci([seeds], stats.mean, reps=40_000, rng=np.random.default_rng(1))
    assert got == pytest.approx((low, high), abs=0.15)


def test_ci_covers_the_mean_and_shrinks_with_more_seeds():
    base = np.array([7.0, 9.0, 10.0, 14.0])  # σ = 2.55 (population)
    widths = []
    for copies in (1, 4, 16, 64):  # the same spread, n = 4 to 256 seeds
        seeds = np.tile(base, copies)
        low, high = stats.bootstrap_ci([seeds], stats.mean, reps=4000, rng=np.random.default_rng(0))
        assert low <= seeds.mean() <= high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    # The normal approximation 2 · 1.96 · σ/√n at n = 256; the width halves as n quadruples.
    assert widths[-1] == pytest.approx(2 * 1.96 * base.std() / 16, rel=0.1)
    assert widths[-1] / widths[-2] == pytest.approx(0.5, rel=0.15)


def test_stratification_keeps_each_tasks_seed_count():
    scores = [np.array([0.0, 0.0, 0.0]), np.array([100.0])]
    resampled = stats.stratified_resample(scores, reps=50, rng=np.random.default_rng(0))
    assert [r.shape for r in resampled] == [(50, 3), (50, 1)]
    assert set(np.unique(resampled[0])) == {0.0} and set(np.unique(resampled[1])) == {100.0}
    # Pooled resampling would vary the share of task b; within tasks the mean never moves.
    assert stats.bootstrap_ci(scores, stats.mean) == pytest.approx((50.0, 50.0))


def test_the_bootstrap_is_seeded():
    scores = [np.array([1.0, 5.0, 2.0]), np.array([3.0, 8.0])]
    first = stats.bootstrap_ci(scores, stats.iqm, rng=np.random.default_rng(7))
    assert first == stats.bootstrap_ci(scores, stats.iqm, rng=np.random.default_rng(7))


def test_curve_band_is_the_mean_over_seeds_at_every_point():
    values = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 2.0]])  # [seeds, grid]
    mean, low, high = stats.curve_band(values)
    assert mean == pytest.approx([1.0, 2.0, 2.0])
    assert low[2] == high[2] == pytest.approx(2.0)
    assert np.all(low <= mean) and np.all(mean <= high)
