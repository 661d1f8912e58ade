"""The benchmark experiments end to end on 2 CPU cores (debug=smoke): real ALE and MuJoCo envs."""

import pytest

from tests.integration.helpers import mlflow_runs, run


@pytest.mark.parametrize(
    ("experiment", "env_id"),
    [("dmc_walker", "walker-walk"), ("dmc_walker_vision", "walker-walk"), ("atari_breakout", "breakout")],
)
def test_benchmark_experiment_smoke_run(tmp_path, experiment, env_id):
    result = run(
        "train",
        tmp_path,
        f"experiment={experiment}",
        "debug=smoke",
        "trainer.enable_progress_bar=false",
        timeout=850,  # pytest-timeout stops a test at 900 s
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path, experiment)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["env"] == env_id
    metrics = runs[0].data.metrics
    assert {"loss/total", "loss/policy", "loss/consistency", "eval/return_mean"} <= set(metrics)
