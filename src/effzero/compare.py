"""Compare training runs logged to MLflow: what `src/compare.py` calls.

Selects the finished training runs of some experiments (names or globs, optional tag
filters), groups them by a tag, and reports each group's final scores over tasks and seeds
(mean, median, IQM, stratified-bootstrap 95% CIs; human-normalised for Atari) and its
learning curves. Writes report.md, summary.csv, per_task.csv, runs.csv and curves.png to
the output directory and logs them to an MLflow run named `comparison` (tag
kind=comparison, which later comparisons skip).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.config_store import ConfigStore
from mlflow.tracking import MlflowClient
from omegaconf import MISSING, DictConfig, OmegaConf

from effzero.analysis import curves, report, runs
from effzero.analysis.runs import RunResult
from effzero.config import PathsConfig
from effzero.mlflow_store import prepare_store

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    """The root of `configs/compare.yaml`."""

    experiments: Any = MISSING  # an experiment name, a glob ('atari_*'), or a list of them
    tags: dict[str, str | None] = field(default_factory=dict)  # keep runs with these tag values; None: any
    group_by: str = "algo"  # the tag whose values are compared
    name: str | None = None  # of the report; None: from the experiments
    out_dir: str | None = None  # None: <paths.log_dir>/compare/<name>
    tracking_uri: str = MISSING
    artifact_location: str | None = None  # of a new `comparisons` experiment
    log_experiment: str | None = None  # None: the compared experiment, or `comparisons` for several
    mlflow: bool = True  # log the report as an MLflow run
    bootstrap_reps: int = 2000
    points: int = 50  # of each learning curve's grid
    seed: int = 0  # of the bootstrap
    paths: PathsConfig = MISSING
    task_name: str = "compare"


def register_schema() -> None:
    ConfigStore.instance().store(name="compare_schema", node=CompareConfig)


def compare(cfg: DictConfig) -> report.Table:
    """Build the report described by `cfg`; return the per-group table."""
    conf: CompareConfig = OmegaConf.to_object(cfg)
    patterns = [conf.experiments] if isinstance(conf.experiments, str) else list(conf.experiments)
    if not patterns or conf.bootstrap_reps < 1 or conf.points < 1:
        raise ValueError(
            "experiments must name at least one experiment; bootstrap_reps and points must be ≥ 1"
        )
    name = conf.name or "+".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p.replace("*", "all")) for p in patterns)
    out = Path(conf.out_dir or Path(conf.paths.log_dir) / "compare" / name)
    prepare_store(conf.tracking_uri)
    client = MlflowClient(conf.tracking_uri)
    tags = {k: v for k, v in conf.tags.items() if v is not None}
    results = runs.load(client, patterns, tags, conf.group_by)
    rng = np.random.default_rng(conf.seed)
    summary = report.summary(results, conf.bootstrap_reps, rng)
    per_task = report.per_task(results, conf.bootstrap_reps, rng)
    out.mkdir(parents=True, exist_ok=True)
    summary.write_csv(out / "summary.csv")
    per_task.write_csv(out / "per_task.csv")
    _write_runs(results, out / "runs.csv")
    curves.plot(results, out / "curves.png", conf.points, conf.bootstrap_reps, rng)
    text = _markdown(conf, patterns, tags, name, results, summary, per_task)
    (out / "report.md").write_text(text)
    print(text)
    print(f"\nwrote {out}/: report.md summary.csv per_task.csv runs.csv curves.png")
    if conf.mlflow:
        run_id, experiment = _log(client, conf, patterns, tags, results, out, text)
        print(f"MLflow run {run_id} ('comparison') in experiment {experiment!r} ({conf.tracking_uri})")
    return summary


def _markdown(
    conf: CompareConfig,
    patterns: list[str],
    tags: dict[str, str],
    name: str,
    results: list[RunResult],
    summary: report.Table,
    per_task: report.Table,
) -> str:
    score = "human-normalised score (HNS)" if report.is_atari(results) else "final evaluation return"
    lines = [
        f"# Comparison: {name}",
        "",
        f"Experiments {', '.join(patterns)}, tags {tags or 'any'}, grouped by `{conf.group_by}`; "
        f"{len(results)} runs. Score: each run's {score}; 95% CIs from a stratified bootstrap "
        f"over seeds ({conf.bootstrap_reps} resamples).",
        "",
        summary.markdown(),
        "",
        *[f"- {note}" for note in report.notes(results)],
        "",
        "## Per task",
        "",
        per_task.markdown(),
        "",
        "![learning curves](curves.png)",
        "",
    ]
    return "\n".join(lines)


def _write_runs(results: list[RunResult], path: Path) -> None:
    """Which run gave which score: the audit trail of the tables."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["run_id", "name", "experiment", "group", "task", "seed", "score", "source", "budget"]
        )
        for r in results:
            writer.writerow(
                [r.run_id, r.name, r.experiment, r.group, r.task, r.seed, r.score, r.source, r.budget]
            )


def _log(
    client: MlflowClient,
    conf: CompareConfig,
    patterns: list[str],
    tags: dict[str, str],
    results: list[RunResult],
    out: Path,
    text: str,
) -> tuple[str, str]:
    """Log the report as the artifacts of a run named `comparison`; return its id and experiment."""
    compared = sorted({r.experiment for r in results})
    name = conf.log_experiment or (compared[0] if len(compared) == 1 else "comparisons")
    found = client.get_experiment_by_name(name)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(name, artifact_location=conf.artifact_location)
    )
    # The note shows the summary on the run's page in the MLflow UI; tag values hold 8000
    # characters at most, so the per-task table (26 games × groups) stays in report.md.
    note = (
        text.split("## Per task")[0][:6000]
        + "\nThe per-task table and the curves: artifacts report.md, curves.png."
    )
    tags = {"kind": "comparison", "group_by": conf.group_by, "mlflow.note.content": note}
    run = client.create_run(experiment_id, run_name="comparison", tags=tags)
    run_id = run.info.run_id
    params = {
        "name": out.name,
        "experiments": ",".join(patterns),
        "tags": str(tags),
        "group_by": conf.group_by,
    }
    params |= {"runs": len(results), "bootstrap_reps": conf.bootstrap_reps, "seed": conf.seed}
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_artifacts(run_id, str(out))
    client.set_terminated(run_id)
    return run_id, name
