"""compare end to end on a real MLflow store: training and eval.py runs written with the client."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from effzero.cli import run_or_explain
from effzero.compare import compare, register_schema
from effzero.config import register_schemas

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
register_schemas()
register_schema()


def training_run(client, experiment, *, algo, env, seed, finals, budget=10_000, output_dir=None, name=None):
    """A finished training run evaluated at 3 learner steps; `finals` is its eval/return_mean curve."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    tags = {"experiment": experiment, "algo": algo, "env": env, "seed": str(seed)}
    run = client.create_run(exp_id, run_name=name or f"{experiment}-{algo}-s{seed}", tags=tags)
    params = {"data/total_env_steps": str(budget), "eval/episodes": "10", "paths/root_dir": "/repo"}
    if output_dir:
        params["paths/output_dir"] = output_dir
    now = int(time.time() * 1000)
    metrics = []
    for i, value in enumerate(finals):  # evaluations at learner steps 100, 200, ...; env steps ≈ 2 per step
        step = 100 * (i + 1)
        metrics += [
            Metric("eval/return_mean", value, now, step),
            Metric("eval/env_steps", 2 * step + seed, now, step),
        ]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def eval_run(client, experiment, *, step, score, tags=None, ckpt_path="x.ckpt"):
    """A finished src/eval.py run, as evaluation.py logs it (plus optional tags)."""
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.create_run(exp_id, run_name="eval-last.ckpt", tags={"kind": "eval", **(tags or {})})
    params = [Param("ckpt_path", ckpt_path), Param("episodes", "32"), Param("step", str(step))]
    metric = Metric("eval/return_mean", score, int(time.time() * 1000), step)
    client.log_batch(run.info.run_id, metrics=[metric], params=params, tags=[RunTag("kind", "eval")])
    client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """logs/ with an mlflow.db holding every case the tests read."""
    logs = tmp_path_factory.mktemp("logs")
    client = MlflowClient(f"sqlite:///{logs}/mlflow.db")
    # cartpole: ezv2 ends at 100 / 200 / 300, muzero at 50 / 60 / 70.
    seed0 = training_run(client, "cartpole", algo="ezv2", env="CartPole-v1", seed=0, finals=[10, 20, 100])
    for seed, final in [(1, 200), (2, 300)]:
        training_run(client, "cartpole", algo="ezv2", env="CartPole-v1", seed=seed, finals=[10, 40, final])
    for seed, final in enumerate([50, 60, 70]):
        training_run(client, "cartpole", algo="muzero", env="CartPole-v1", seed=seed, finals=[5, 30, final])
    eval_run(client, "cartpole", step=300, score=150.0, tags={"train_run_id": seed0})  # replaces 100
    eval_run(client, "cartpole", step=200, score=999.0, tags={"train_run_id": seed0})  # not the final step
    # Atari: HNS 1 at human, 0 at random. breakout random 1.7 human 30.5; MsPacman 307.3 / 6951.6.
    out = "/repo/logs/train/runs/b0"
    training_run(
        client, "atari_breakout", algo="ezv2", env="breakout", seed=0, finals=[1, 2, 5], output_dir=out
    )
    eval_run(
        client, "atari_breakout", step=300, score=30.5, ckpt_path="logs/train/runs/b0/checkpoints/last.ckpt"
    )
    training_run(client, "atari_breakout", algo="ezv2", env="breakout", seed=1, finals=[1, 2, 16.1])
    for seed in (0, 1):
        training_run(client, "atari_ms_pacman", algo="ezv2", env="ms_pacman", seed=seed, finals=[300, 6951.6])
    # Bad input.
    training_run(client, "budgets", algo="ezv2", env="CartPole-v1", seed=0, finals=[1], budget=10_000)
    training_run(client, "budgets", algo="ezv2", env="CartPole-v1", seed=1, finals=[1], budget=20_000)
    training_run(client, "silent", algo="ezv2", env="CartPole-v1", seed=0, finals=[1])
    training_run(client, "silent", algo="ezv2", env="CartPole-v1", seed=1, finals=[], name="crashed-early")
    return logs


def config(logs: Path, *overrides: str):
    paths = [f"paths.root_dir={CONFIGS.parent}", f"paths.log_dir={logs}", f"paths.output_dir={logs}"]
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("compare", overrides=[*paths, *overrides])


def run_compare(logs: Path, *overrides: str):
    return compare(config(logs, *overrides))


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["group"] + ("/" + r["task"] if "task" in r else ""): r for r in csv.DictReader(f)}


def test_cartpole_tables_match_hand_computation(store, capsys):
    run_compare(store, "experiments=cartpole", "bootstrap_reps=500")
    out = store / "compare" / "cartpole"
    summary = rows(out / "summary.csv")
    ezv2, muzero = summary["ezv2"], summary["muzero"]
    # ezv2: eval.py's 150 replaces seed 0's 100 (its 999 is of an earlier checkpoint).
    assert float(ezv2["mean"]) == pytest.approx((150 + 200 + 300) / 3)
    # IQM of 3 runs: the middle 1.5 are 1/4 of 150, 200 and 1/4 of 300.
    assert float(ezv2["iqm"]) == pytest.approx((0.25 * 150 + 200 + 0.25 * 300) / 1.5)
    assert ezv2["runs"] == "3" and ezv2["source"] == "eval.py ×32 + training ×10"
    assert float(muzero["mean"]) == pytest.approx(60.0)
    assert muzero["source"] == "training ×10"
    for group, seeds in (("ezv2", [150, 200, 300]), ("muzero", [50, 60, 70])):
        low, high = float(summary[group]["mean_ci_low"]), float(summary[group]["mean_ci_high"])
        assert min(seeds) <= low < np.mean(seeds) < high <= max(seeds)
    assert float(rows(out / "per_task.csv")["muzero/CartPole-v1"]["mean"]) == pytest.approx(60.0)
    for name in ("report.md", "summary.csv", "per_task.csv", "runs.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| ezv2 | 1 | 3 | return | 216.7 |" in printed
    assert "| muzero | 1 | 3 | return | 60.000 |" in printed


def test_the_comparison_run_holds_the_report_and_is_skipped_next_time(store):
    first = run_compare(store, "experiments=cartpole", "bootstrap_reps=200", "name=again")
    second = run_compare(store, "experiments=cartpole", "bootstrap_reps=200", "name=again")
    assert second.rows == first.rows  # the comparison runs of the first call are not training runs
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp_id = client.get_experiment_by_name("cartpole").experiment_id
    runs = client.search_runs([exp_id], "tags.kind = 'comparison' and params.name = 'again'")
    assert {r.info.run_name for r in runs} == {"comparison"} and len(runs) == 2
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert artifacts == {"report.md", "summary.csv", "per_task.csv", "runs.csv", "curves.png"}
    assert runs[0].data.params["runs"] == "6"
    assert "| muzero | 1 | 3 | return | 60.000 |" in runs[0].data.tags["mlflow.note.content"]


def test_atari_reports_hns_next_to_the_papers(store):
    run_compare(store, "experiments=atari_*", "bootstrap_reps=200")
    out = store / "compare" / "atari_all"
    ezv2 = rows(out / "summary.csv")["ezv2"]
    # HNS per seed: breakout [1 (eval.py), 0.5], ms_pacman [1, 1].
    assert ezv2["score"] == "HNS" and ezv2["tasks"] == "2" and ezv2["runs"] == "4"
    assert float(ezv2["mean"]) == pytest.approx((0.75 + 1.0) / 2)
    assert float(ezv2["median"]) == pytest.approx(0.875)
    assert float(ezv2["iqm"]) == pytest.approx(1.0)  # middle half of [0.5, 1, 1, 1]
    # The paper columns over the same two games, from the CSV's numbers.
    v2 = [(400.1 - 1.7) / (30.5 - 1.7), (2251.0 - 307.3) / (6951.6 - 307.3)]
    paper = rows(out / "summary.csv")["EZ-V2 (paper)"]
    assert float(paper["mean"]) == pytest.approx(np.mean(v2), rel=1e-6)
    breakout = rows(out / "per_task.csv")["ezv2/breakout"]
    assert float(breakout["hns"]) == pytest.approx(0.75)
    assert float(breakout["EZ-V1 paper"]) == 414.1
    assert breakout["source"] == "eval.py ×32 + training ×10"
    report = (out / "report.md").read_text()
    assert "EZ-V2 2.428 / 1.286" in report and "human-normalised score" in report


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["experiments=nothing_*"],
            r"no MLflow experiment matches experiments=\['nothing_\*'\].*atari_breakout, ",
        ),
        (["experiments=cartpole", "tags.algo=sampled_muzero"], "no finished training run.*experiments in"),
        (["experiments=cartpole", "group_by=optimiser"], "unknown group tag group_by='optimiser'.*algo, env"),
        (["experiments=silent"], "logged no eval/return_mean.*: crashed-early \\("),
        (
            ["experiments=budgets"],
            "(?s)mixed env-step budgets.*CartPole-v1: 10000 env steps: budgets-ezv2-s0; 20000",
        ),
    ],
)
def test_bad_input_gets_one_clear_message(store, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_compare(store, *overrides, "mlflow=false")


def test_the_entry_point_turns_a_bad_input_into_exit_1(store, capsys, monkeypatch):
    monkeypatch.delenv("EFFZERO_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_or_explain(compare, config(store, "experiments=nope"))
    assert exit_info.value.code == 1
    assert "error: no MLflow experiment matches" in capsys.readouterr().err
