"""Learning curves: each group's mean evaluation return over seeds, with a 95% bootstrap band.

Seeds evaluate at slightly different env steps (vector envs overshoot, DDP ranks add up), so
each seed's curve is interpolated linearly onto a grid shared by the seeds of a group: from
the latest first evaluation to the earliest last one, never extrapolated.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from effzero.analysis import stats
from effzero.analysis.runs import RunResult


def common_grid(runs: list[RunResult], points: int) -> np.ndarray:
    """Env steps [G] covered by every run's curve (G = points, or 1 when they meet in one step)."""
    low = max(float(r.steps[0]) for r in runs)
    high = min(float(r.steps[-1]) for r in runs)
    if high <= low:
        return np.array([high])
    return np.linspace(low, high, points)


def on_grid(runs: list[RunResult], grid: np.ndarray) -> np.ndarray:
    """Every run's evaluation return interpolated at the grid: [n_runs, G]."""
    return np.stack([np.interp(grid, r.steps, r.returns) for r in runs])


def plot(results: list[RunResult], path: Path, points: int, reps: int, rng: np.random.Generator) -> None:
    """One panel per task, one line per group (mean over seeds) with its 95% CI band, to a PNG."""
    by_task: dict[str, dict[str, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if len(r.steps):  # a run whose evaluations logged no env steps has no curve
            by_task[r.task][r.group].append(r)
    tasks = sorted(by_task)
    cols = min(4, max(1, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    colors = {g: f"C{i}" for i, g in enumerate(sorted({r.group for r in results}))}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for group, runs in sorted(by_task[task].items()):
            grid = common_grid(runs, points)
            mean, low, high = stats.curve_band(on_grid(runs, grid), reps, rng=rng)
            label = f"{group} (n={len(runs)})"
            ax.plot(grid, mean, color=colors[group], marker="o" if len(grid) == 1 else None, label=label)
            ax.fill_between(grid, low, high, color=colors[group], alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
