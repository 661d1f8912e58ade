"""MLflow helpers: read a run's curves back and plot them.

python -m effzero.tracking curve --experiment cartpole --out docs/cartpole_curve.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

DEFAULT_URI = f"sqlite:///{Path(__file__).resolve().parents[2] / 'logs' / 'mlflow.db'}"


def latest_run(client: MlflowClient, experiment: str) -> Run:
    """The most recent finished training run of an experiment."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} in {client.tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    runs = [r for r in runs if r.data.tags.get("kind") != "eval"]  # eval.py runs are not training curves
    if not runs:
        raise ValueError(f"experiment {experiment!r} has no finished training run")
    return runs[0]


def eval_curve(client: MlflowClient, run_id: str) -> tuple[list[float], list[float], list[float]]:
    """(env steps, return mean, return std) of every evaluation of a run."""
    by_step = {}
    for key in ("eval/env_steps", "eval/return_mean", "eval/return_std"):
        for metric in client.get_metric_history(run_id, key):
            by_step.setdefault(metric.step, {})[key] = metric.value
    points = sorted((v for v in by_step.values() if len(v) == 3), key=lambda v: v["eval/env_steps"])
    return (
        [p["eval/env_steps"] for p in points],
        [p["eval/return_mean"] for p in points],
        [p["eval/return_std"] for p in points],
    )


def plot_curve(client: MlflowClient, run: Run, out: Path, title: str) -> None:
    steps, mean, std = eval_curve(client, run.info.run_id)
    if not steps:
        raise ValueError(f"run {run.info.run_id} logged no evaluation with eval/env_steps")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, mean, marker="o", ms=3, label="eval return (noise-free search)")
    ax.fill_between(
        steps,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        alpha=0.2,
    )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Plot the evaluation curve of the latest run of an experiment."
    )
    parser.add_argument("command", choices=["curve"])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tracking-uri", default=DEFAULT_URI)
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    run = latest_run(client, args.experiment)
    plot_curve(client, run, args.out, f"{args.experiment}: run {run.info.run_id[:8]}")
    print(f"wrote {args.out} from run {run.info.run_id}")


if __name__ == "__main__":
    main()
