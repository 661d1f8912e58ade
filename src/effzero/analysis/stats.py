"""Aggregate scores over tasks and seeds, with stratified-bootstrap confidence intervals.

Scores are ragged: one array per task (a game, an env), one entry per seed, and tasks may
have different numbers of seeds. Every aggregate takes that list, with any leading batch
axes shared by all tasks (`[..., n_task]`), and returns the batch shape (`[...]`), so the
bootstrap evaluates all its resamples in one call.

Conventions, following Agarwal et al. 2021 ("Deep RL at the edge of the statistical
precipice", the rliable library):
- mean: the mean over tasks of each task's mean over seeds.
- median: the median over tasks of each task's mean over seeds.
- IQM: the mean of the middle 50% of all runs, each task weighing the same. The runs form
  a discrete distribution (a run of task t has mass 1 / (T · n_t)); the IQM is the average
  of its quantile function over [0.25, 0.75]. A run straddling a quartile counts with the
  fraction of its mass inside, so n need not be divisible by 4: of 1..5 the middle 2.5
  runs are 3/4 of run 2, run 3 and 3/4 of run 4, so the IQM is (1.5 + 3 + 3) / 2.5 = 3. With equal seeds per task and n divisible by 4 this
  is rliable's `trim_mean(scores, 0.25)`; otherwise rliable drops floor(n/4) runs at each
  end instead of weighting the runs on the quartiles.
- CI: the percentile bootstrap; each resample draws every task's seeds with replacement
  from that task only (stratified), so each task keeps its number of seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Scores = Sequence[np.ndarray]  # one array [..., n_task] per task
Aggregate = Callable[[Scores], np.ndarray]  # Scores -> [...]


def mean(scores: Scores) -> np.ndarray:
    """Mean over tasks of the per-task mean: [..., n_t] per task -> [...]."""
    return np.mean([np.mean(s, axis=-1) for s in scores], axis=0)


def median(scores: Scores) -> np.ndarray:
    """Median over tasks of the per-task mean: [..., n_t] per task -> [...]."""
    return np.median([np.mean(s, axis=-1) for s in scores], axis=0)


def iqm(scores: Scores) -> np.ndarray:
    """Interquartile mean of all runs, tasks weighing equally: [..., n_t] per task -> [...]."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in scores], axis=-1)  # [..., N]
    weights = np.concatenate([np.full(np.shape(s)[-1], 1.0 / np.shape(s)[-1]) for s in scores])
    weights = weights / len(scores)  # [N], sums to 1
    order = np.argsort(values, axis=-1)
    ranked = np.take_along_axis(values, order, axis=-1)
    mass = weights[order]  # [..., N]
    upper = np.cumsum(mass, axis=-1)
    inside = np.clip(np.minimum(upper, 0.75) - np.maximum(upper - mass, 0.25), 0.0, None)
    return np.sum(inside * ranked, axis=-1) / 0.5


def stratified_resample(scores: Scores, reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`reps` bootstrap resamples of every task's seeds, drawn within the task: [n_t] -> [reps, n_t]."""
    out = []
    for task in scores:
        task = np.asarray(task, dtype=float)
        out.append(task[rng.integers(0, len(task), size=(reps, len(task)))])
    return out


def bootstrap_ci(
    scores: Scores,
    aggregate: Aggregate,
    reps: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile stratified-bootstrap interval of `aggregate` ([n_t] per task) at `level`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    resampled = aggregate(stratified_resample(scores, reps, rng))  # [reps]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(low), float(high)


def curve_band(
    values: np.ndarray, reps: int = 2000, level: float = 0.95, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its bootstrap interval at every grid point: [n_seeds, G] -> 3 × [G]."""
    rng = rng if rng is not None else np.random.default_rng(0)
    values = np.asarray(values, dtype=float)
    draws = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)  # [reps, G]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
    return values.mean(axis=0), low, high
