"""End to end through `src/train.py` and `src/eval.py`: real envs, workers, MLflow, checkpoints."""

import torch

from effzero.data.replay import FINAL
from effzero.training import changed_settings
from tests.integration.helpers import SMOKE, checkpoints, mlflow_runs, run


def test_smoke_run_trains_evaluates_and_logs_to_mlflow(tmp_path):
    result = run("train", tmp_path, *SMOKE)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    for key in (
        "loss/total",
        "loss/value",
        "loss/policy",
        "loss/reward",
        "loss/consistency",
        "train/env_steps",
    ):
        assert key in metrics, key
    assert "eval/return_mean" in metrics and metrics["eval/return_mean"] > 0
    params = runs[0].data.params
    assert params["algo/name"] == "ezv2" and params["env/id"] == "CartPole-v1"
    assert runs[0].data.tags["experiment"] == "cartpole"
    artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id)]
    assert "last" in artifacts  # the checkpoint, logged as an artifact
    assert any(p.name == "last.ckpt" for p in checkpoints(tmp_path))


def test_resume_restores_weights_counters_and_replay(tmp_path):
    budget = ("data.total_env_steps=2000", "data.replay_ratio=0.1")
    first = run("train", tmp_path, *SMOKE, *budget, "trainer.max_steps=30")
    assert first.returncode == 0, first.stderr[-3000:]
    last = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt")
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 30
    env_steps = int(saved["ReplayDataModule"]["shards"][0]["counters"][0])
    replay = saved["ReplayDataModule"]["shards"][0]["replay"]
    assert env_steps >= 500 and int(replay["written"].sum()) >= env_steps  # final-observation slots too

    # A changed learning rate takes effect: the checkpoint's optimiser does not override it.
    second = run(
        "train", tmp_path, *SMOKE, *budget, "trainer.max_steps=60", "optim.lr=0.0005", f"ckpt_path={last}"
    )
    assert second.returncode == 0, second.stderr[-3000:]
    latest = max(
        checkpoints(tmp_path),
        key=lambda p: (torch.load(p, weights_only=False)["global_step"], p.stat().st_mtime),
    )
    resumed = torch.load(latest, weights_only=False)
    assert resumed["global_step"] == 60
    assert resumed["lr_schedulers"][0]["base_lrs"] == [0.0005]
    assert resumed["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 0.0005
    # Collection continued from the saved count, and the old transitions are still there: the
    # episodes the checkpoint cut end there (a lone first observation is dropped, else the last
    # observation becomes the final one), and the new episodes start after them.
    assert int(resumed["ReplayDataModule"]["shards"][0]["counters"][0]) > env_steps
    after = resumed["ReplayDataModule"]["shards"][0]["replay"]
    lanes = zip(replay["written"].tolist(), replay["episode_start"].tolist(), strict=True)
    for lane, (count, start) in enumerate(lanes):
        kept = count - 1 if start == count - 1 else count
        assert torch.equal(replay["obs"][lane, :kept], after["obs"][lane, :kept])
        if start < count - 1 and count < after["kind"].shape[1]:  # a cut episode, the lane not wrapped
            assert int(after["kind"][lane, count - 1]) == FINAL and int(after["start"][lane, count]) == count
    # The resumed run goes on in the same MLflow run: one curve, before and after step 30.
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/total")]
    assert min(steps) < 30 < max(steps) and max(steps) <= 60
    tags = client.get_run(runs[0].info.run_id).data.tags
    assert tags["resumed_at_steps"] == "30"
    assert tags["changed_at_step_30"] == "optim/lr: 0.001 → 0.0005; trainer/max_steps: 30 → 60", tags


def test_changed_settings_leave_out_what_every_resume_changes():
    then, now = "/logs/train/runs/2026-11-22_09-00-09", "/logs/train/runs/2026-11-22_10-00-10"
    long_tail = "/checkpoints/" + "x" * 300  # past MLflow's 250-character cut, as logged
    logged = {
        "paths/output_dir": then,
        "callbacks/ckpt/dirpath": (then + long_tail)[:250],
        "logger/mlflow/run_name": "cartpole-ezv2-s0-20261122-090009",
        "optim/lr": "0.001",
        "model/hidden": "[64, 64]",
        "removed": "1",
    }
    params = {
        "paths": {"output_dir": now},
        "callbacks": {"ckpt": {"dirpath": now + long_tail}},
        "logger": {"mlflow": {"run_name": "cartpole-ezv2-s0-20261122-100010"}},
        "optim": {"lr": 0.0005},
        "model": {"hidden": [64, 64]},
        "ckpt_path": "/logs/last.ckpt",
        "added": True,
    }
    assert changed_settings(logged, params) == [
        "added: (none) → True",
        "optim/lr: 0.001 → 0.0005",
        "removed: 1 → (none)",
    ]


def test_eval_script_replays_a_checkpoint_and_logs_a_video(tmp_path):
    trained = run("train", tmp_path, *SMOKE)
    assert trained.returncode == 0, trained.stderr[-3000:]
    last = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt")
    result = run("eval", tmp_path, f"ckpt_path={last}", "episodes=3", "video=true", "max_episode_steps=40")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "over 3 episodes" in result.stdout
    client, runs = mlflow_runs(tmp_path)
    evaluation = runs[-1]
    assert evaluation.data.tags.get("kind") == "eval" and "eval/return_mean" in evaluation.data.metrics
    training = runs[0]  # eval.py's run names the training run and carries its tags
    assert evaluation.data.tags["train_run_id"] == training.info.run_id
    for tag in ("experiment", "algo", "env", "seed"):
        assert evaluation.data.tags[tag] == training.data.tags[tag], tag
    videos = client.list_artifacts(evaluation.info.run_id, "videos")
    assert videos and videos[0].path.endswith(".mp4")


def test_two_process_ddp_on_cpu_keeps_a_replay_shard_per_rank(tmp_path):
    ddp = ("trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
    result = run("train", tmp_path, *SMOKE, *ddp, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    last = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt")
    shards = torch.load(last, weights_only=False)["ReplayDataModule"]["shards"]
    assert len(shards) == 2
    # Each rank collected its own half of the budget with its own seed.
    steps = [int(s["counters"][0]) for s in shards]
    assert all(300 <= n <= 400 for n in steps), steps
    assert not torch.equal(shards[0]["replay"]["obs"], shards[1]["replay"]["obs"])
    _, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1  # one MLflow run, from rank 0
    assert len(list((tmp_path / "debug" / "runs").iterdir())) == 1  # one run directory for both ranks
