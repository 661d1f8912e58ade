"""Every algo preset end to end on the smallest config of its action space (debug=smoke)."""

import pytest

from tests.integration.helpers import mlflow_runs, run

QUIET = ("debug=smoke", "trainer.enable_progress_bar=false")
# What each preset composes: search kind, value prefix, consistency loss, value target, correction.
PRESETS = {
    "efficientzero_v1": ("puct", True, True, "td", True),
    "muzero": ("puct", False, False, "td", False),
    "gumbel_muzero": ("gumbel", False, False, "td", False),
    "sampled_muzero": ("puct", False, False, "td", False),
    "sampled_efficientzero": ("puct", True, True, "td", True),
    "ezv2": ("gumbel", False, True, "mixed", False),  # the proprio model has no value prefix by default
}


@pytest.mark.parametrize(
    ("experiment", "algo"),
    [
        ("cartpole", "efficientzero_v1"),
        ("cartpole", "muzero"),
        ("cartpole", "gumbel_muzero"),
        ("pendulum", "ezv2"),
        ("pendulum", "sampled_muzero"),
        ("pendulum", "sampled_efficientzero"),
    ],
)
def test_algo_preset_trains_and_is_tagged(tmp_path, experiment, algo):
    result = run("train", tmp_path, f"experiment={experiment}", f"algo={algo}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path, experiment)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    tags, params, metrics = runs[0].data.tags, runs[0].data.params, runs[0].data.metrics
    assert (tags["algo"], tags["experiment"], tags["seed"]) == (algo, experiment, "0")
    kind, prefix, consistency, target, correction = PRESETS[algo]
    assert params["search/kind"] == kind and params["model/value_prefix"] == str(prefix)
    assert params["algo/consistency"] == str(consistency) and params["algo/value_target"] == target
    assert params["algo/off_policy_correction"] == str(correction)
    assert ("loss/consistency" in metrics) == consistency
    assert "eval/return_mean" in metrics and "loss/policy" in metrics
