"""Read the runs of a comparison from MLflow: each training run's final score and its curve.

A training run is a finished run without a `kind` tag (or kind=train); `src/eval.py` runs
carry kind=eval and comparison reports kind=comparison. Unfinished runs are left out: a
running or killed run's last evaluation is not its final one. A run's final score is its
last `eval/return_mean`, replaced by an eval.py run of its final checkpoint when one exists
(Atari's 32-episode evaluation). An eval.py run belongs to a training run when its tag `train_run_id` names it
or, for eval runs that lack the tag, when its `ckpt_path` lies in the training run's
output directory (`paths/output_dir`).
"""

from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RETURN, ENV_STEPS = "eval/return_mean", "eval/env_steps"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    name: str
    experiment: str
    group: str  # the value of the group-by tag
    task: str  # the env tag: a gymnasium id, an Atari game, a DMC domain-task
    seed: str
    score: float  # the final evaluation's mean return
    source: str  # "training ×10": the training run's own evaluation; "eval.py ×32": an eval run's
    budget: int  # env steps of the run (data.total_env_steps, else the last evaluation's)
    steps: np.ndarray  # [P] env steps of every evaluation during training, increasing
    returns: np.ndarray  # [P] mean return of those evaluations


def load(client: MlflowClient, patterns: list[str], tags: dict[str, str], group_by: str) -> list[RunResult]:
    """The latest finished training run per (group, task, seed) of the matching experiments."""
    experiments = _experiments(client, patterns)
    runs = _search(client, list(experiments))
    finished = [r for r in runs if r.info.status == "FINISHED"]
    training = [r for r in finished if r.data.tags.get("kind", "train") == "train"]
    evals = [r for r in finished if r.data.tags.get("kind") == "eval"]
    selected = [r for r in training if all(r.data.tags.get(k) == str(v) for k, v in tags.items())]
    if not selected:
        raise ValueError(
            f"no finished training run in experiments {sorted(experiments.values())} matches tags {tags} "
            f"({len(training)} finished training runs there, {len(runs) - len(finished)} runs unfinished); "
            f"experiments in {client.tracking_uri}: "
            f"{', '.join(_all_experiments(client))}"
        )
    _check_group_tag(selected, group_by)
    results = _results(client, selected, evals, experiments, group_by)
    results = _latest_per_seed(results, {r.info.run_id: r.info.start_time for r in selected})
    _check_budgets(results)
    return results


def _all_experiments(client: MlflowClient) -> list[str]:
    return sorted(e.name for e in client.search_experiments())


def _experiments(client: MlflowClient, patterns: list[str]) -> dict[str, str]:
    """Experiment id -> name of the experiments whose names match any pattern (fnmatch globs)."""
    found = {
        e.experiment_id: e.name
        for e in client.search_experiments()
        if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)
    }
    if not found:
        raise ValueError(
            f"no MLflow experiment matches experiments={patterns} in {client.tracking_uri}; "
            f"the experiments there: {', '.join(_all_experiments(client))}"
        )
    return found


def _search(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    runs, token = [], None
    while True:  # pages of 1000: a 26-game sweep with eval runs exceeds one
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _check_group_tag(runs: list[Run], group_by: str) -> None:
    missing = [r for r in runs if group_by not in r.data.tags]
    if not missing:
        return
    if len(missing) == len(runs):
        known = sorted({k for r in runs for k in r.data.tags if not k.startswith("mlflow.")})
        raise ValueError(f"unknown group tag group_by={group_by!r}; the runs' tags are: {', '.join(known)}")
    names = ", ".join(f"{r.info.run_name} ({r.info.run_id})" for r in missing)
    raise ValueError(f"group_by={group_by!r}: these runs have no such tag: {names}")


def _final_eval(run: Run, evals: list[Run], last_step: int) -> Run | None:
    """The latest eval.py run of `run`'s final checkpoint (logged at `last_step`), if any."""
    output_dir = run.data.params.get("paths/output_dir")
    root = Path(run.data.params.get("paths/root_dir", "."))

    def belongs(e: Run) -> bool:
        if "train_run_id" in e.data.tags:
            return e.data.tags["train_run_id"] == run.info.run_id
        ckpt = e.data.params.get("ckpt_path")
        if ckpt is None or output_dir is None:
            return False
        return Path(output_dir).resolve() in (root / ckpt).resolve().parents

    # An eval of an earlier checkpoint would mix two points of the curve in one table.
    final = [
        e
        for e in evals
        if RETURN in e.data.metrics and int(e.data.params.get("step", -1)) == last_step and belongs(e)
    ]
    return max(final, key=lambda e: e.info.start_time, default=None)


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """Learner step -> value of a metric (the last value logged at a step wins)."""
    return {
        m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
    }


def _results(
    client: MlflowClient, runs: list[Run], evals: list[Run], experiments: dict[str, str], group_by: str
) -> list[RunResult]:
    results, silent = [], []
    for run in runs:
        returns = _history(client, run.info.run_id, RETURN)
        if not returns:
            silent.append(f"{run.info.run_name} ({run.info.run_id})")
            continue
        env_steps = _history(client, run.info.run_id, ENV_STEPS)
        last = max(returns)
        curve = sorted((env_steps[s], returns[s]) for s in returns if s in env_steps)
        budget = run.data.params.get("data/total_env_steps")
        final = _final_eval(run, evals, last)
        if final is None:
            score, source = returns[last], f"training ×{run.data.params.get('eval/episodes', '?')}"
        else:
            score, source = final.data.metrics[RETURN], f"eval.py ×{final.data.params.get('episodes', '?')}"
        results.append(
            RunResult(
                run_id=run.info.run_id,
                name=run.info.run_name,
                experiment=experiments[run.info.experiment_id],
                group=run.data.tags[group_by],
                task=run.data.tags.get("env", experiments[run.info.experiment_id]),
                seed=run.data.tags.get("seed", run.info.run_id),
                score=float(score),
                source=source,
                budget=int(float(budget)) if budget is not None else int(env_steps.get(last, 0)),
                steps=np.array([p[0] for p in curve], dtype=float),
                returns=np.array([p[1] for p in curve], dtype=float),
            )
        )
    if silent:
        raise ValueError(
            f"these runs logged no {RETURN} (stopped before their first evaluation?): {', '.join(silent)}; "
            "delete them (mlflow runs delete --run-id <id>) or leave them out with tag filters"
        )
    return results


def _check_budgets(results: list[RunResult]) -> None:
    """Runs of one task must share an env-step budget (tasks may differ: DMC's easy/hard split)."""
    by_task: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_task[r.task][r.budget].append(r.name)
    mixed = {task: budgets for task, budgets in by_task.items() if len(budgets) > 1}
    if mixed:
        lines = [
            f"  {task}: "
            + "; ".join(f"{b} env steps: {', '.join(names)}" for b, names in sorted(budgets.items()))
            for task, budgets in sorted(mixed.items())
        ]
        raise ValueError(
            "mixed env-step budgets within a task; compare runs of one budget "
            "(filter with tags, or separate experiments):\n" + "\n".join(lines)
        )


def _latest_per_seed(results: list[RunResult], started: dict[str, int]) -> list[RunResult]:
    """A seed run twice counts once, with its latest run, so re-runs do not add fake seeds."""
    latest: dict[tuple[str, str, str], RunResult] = {}
    for r in sorted(results, key=lambda r: started[r.run_id]):
        key = (r.group, r.task, r.seed)
        if key in latest:
            log.warning(
                "%s seed %s in %s ran twice: using %s, not %s",
                r.group,
                r.seed,
                r.task,
                r.name,
                latest[key].name,
            )
        latest[key] = r
    return sorted(latest.values(), key=lambda r: (r.group, r.task, r.seed))
