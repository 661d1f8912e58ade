"""The comparison tables: per task and per group, as CSV rows and markdown.

Scores are each run's final mean return. Across tasks the group table aggregates raw
returns, or, when every task is an Atari 100k game, human-normalised scores (HNS), next to
the same aggregates of the EZ-V2 and EZ-V1 paper columns over the same games.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effzero.analysis import atari_scores, stats
from effzero.analysis.runs import RunResult

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Cell]]

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows([["" if v is None else v for v in row] for row in self.rows])

    def markdown(self) -> str:
        """A markdown table; the columns `<x>_ci_low`, `<x>_ci_high` print as one `<x> 95% CI`."""
        spans, i = [], 0  # (header, column indices)
        while i < len(self.columns):
            name = self.columns[i]
            if name.endswith("_ci_low") and i + 1 < len(self.columns):
                spans.append((f"{name.removesuffix('_ci_low')} 95% CI", [i, i + 1]))
                i += 2
            else:
                spans.append((name, [i]))
                i += 1
        lines = ["| " + " | ".join(h for h, _ in spans) + " |", "|" + "---|" * len(spans)]
        for row in self.rows:
            cells = [_fmt(row[c[0]]) if len(c) == 1 else _interval(row[c[0]], row[c[1]]) for _, c in spans]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def _interval(low: Cell, high: Cell) -> str:
    return "" if low is None else f"[{_fmt(low)}, {_fmt(high)}]"


def is_atari(results: list[RunResult]) -> bool:
    return all(atari_scores.is_atari_game(r.task) for r in results)


def _by(results: list[RunResult], *keys: str) -> dict[tuple[str, ...], list[RunResult]]:
    out = defaultdict(list)
    for r in results:
        out[tuple(getattr(r, k) for k in keys)].append(r)
    return dict(sorted(out.items()))


def _sources(runs: list[RunResult]) -> str:
    return " + ".join(sorted({r.source for r in runs}))


def per_task(results: list[RunResult], reps: int, rng: np.random.Generator) -> Table:
    """One row per (task, group): seeds, mean final return and its CI, IQM; Atari adds HNS and papers."""
    atari = is_atari(results)
    columns = ["task", "group", "seeds", "mean", "mean_ci_low", "mean_ci_high", "iqm", "source"]
    if atari:
        columns += ["hns", "EZ-V2 paper", "EZ-V1 paper"]
    rows = []
    for (task, group), runs in _by(results, "task", "group").items():
        scores = [np.array([r.score for r in runs])]
        mean = float(stats.mean(scores))
        row: list[Cell] = [
            task,
            group,
            len(runs),
            mean,
            *stats.bootstrap_ci(scores, stats.mean, reps, rng=rng),
        ]
        row += [float(stats.iqm(scores)), _sources(runs)]
        if atari:
            game = atari_scores.game(task)
            row += [game.hns(mean), game.paper["EZ-V2"], game.paper["EZ-V1"]]
        rows.append(row)
    return Table(columns, rows)


def summary(results: list[RunResult], reps: int, rng: np.random.Generator) -> Table:
    """One row per group: tasks, runs, mean/median/IQM over tasks with stratified-bootstrap CIs."""
    atari = is_atari(results)
    columns = ["group", "tasks", "runs", "score"]  # runs: seeds summed over tasks
    columns += ["mean", "mean_ci_low", "mean_ci_high", "median", "iqm", "iqm_ci_low", "iqm_ci_high", "source"]
    rows = []
    for (group,), runs in _by(results, "group").items():
        tasks = _by(runs, "task")
        scores = [
            np.array([atari_scores.hns(r.score, task) if atari else r.score for r in task_runs])
            for (task,), task_runs in tasks.items()
        ]
        row: list[Cell] = [group, len(tasks), len(runs), "HNS" if atari else "return"]
        row += [float(stats.mean(scores)), *stats.bootstrap_ci(scores, stats.mean, reps, rng=rng)]
        row += [float(stats.median(scores)), float(stats.iqm(scores))]
        row += [*stats.bootstrap_ci(scores, stats.iqm, reps, rng=rng), _sources(runs)]
        rows.append(row)
    if atari:  # the papers' per-game scores over the games compared here
        games = sorted({r.task for r in results})
        for label in atari_scores.PAPER_COLUMNS:
            agg = atari_scores.aggregates(atari_scores.paper_hns(label, games))
            paper: list[Cell] = [f"{label} (paper)", len(games), None, "HNS", agg["mean"], None, None]
            paper += [agg["median"], agg["iqm"], None, None, "per-game scores (atari100k_scores.csv)"]
            rows.append(paper)
    return Table(columns, rows)


def notes(results: list[RunResult]) -> list[str]:
    """What a reader of the tables should know: uneven task sets, the papers' own aggregates."""
    out = []
    tasks = {group: {r.task for r in runs} for (group,), runs in _by(results, "group").items()}
    if len({frozenset(t) for t in tasks.values()}) > 1:
        counts = ", ".join(f"{g}: {len(t)}" for g, t in tasks.items())
        out.append(f"The groups cover different tasks ({counts}): their aggregates are not comparable.")
    if is_atari(results):
        stated = "; ".join(f"{k} {m:.3f} / {md:.3f}" for k, (m, md) in atari_scores.PAPER_AGGREGATES.items())
        out.append(f"HNS mean / median over all 26 games as the papers state them: {stated}.")
    return out
