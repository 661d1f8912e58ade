"""Evaluate a checkpoint: what `src/eval.py` calls."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile

import imageio.v2 as imageio
import mlflow
import torch
from omegaconf import DictConfig

from effzero import checkpointing
from effzero.config import ENV_SCHEMAS, MODEL_SCHEMAS, SearchConfig, as_config, load
from effzero.data.acting import build_model
from effzero.data.environments import build_spec, env_maker
from effzero.data.evaluate import EvalResult, evaluate
from effzero.mlflow_store import prepare_store

log = logging.getLogger(__name__)


def load_run(ckpt_path: str) -> tuple[torch.nn.Module, dict, dict]:
    """The trained model of a checkpoint, the run config stored in it, and the checkpoint."""
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; checkpoints are under logs/train/runs/<run>/checkpoints/"
        )
    checkpoint = checkpointing.load(ckpt_path)  # refuses a truncated or corrupted file clearly
    if "effzero_config" not in checkpoint:
        raise ValueError(f"{ckpt_path} was not written by effzero's train.py (it has no run config)")
    run = checkpoint["effzero_config"]
    env = load(ENV_SCHEMAS, run["env"])
    model = build_model(load(MODEL_SCHEMAS, run["model"]), build_spec(env))
    state = {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }
    model.load_state_dict(state)
    return model, run, checkpoint


def evaluate_checkpoint(cfg: DictConfig) -> EvalResult:
    """Play `cfg.episodes` noise-free episodes with a checkpoint; log them to MLflow."""
    model, run, checkpoint = load_run(cfg.ckpt_path)
    env = load(ENV_SCHEMAS, run["env"])
    if cfg.max_episode_steps is not None:
        env = dataclasses.replace(env, max_episode_steps=cfg.max_episode_steps)
    search = as_config(SearchConfig, run["search"])
    if cfg.num_simulations is not None:
        search = dataclasses.replace(search, num_simulations=cfg.num_simulations)
    spec = build_spec(env)
    make_env = env_maker(env, train=False)
    if cfg.video:  # the first episode's env renders frames for the video
        plain, rendering = make_env, env_maker(env, train=False, render=True)

        def make_env(index: int):
            return rendering(index) if index == 0 else plain(index)

    result = evaluate(model, make_env, spec, search, cfg.episodes, cfg.seed, record=cfg.video)
    step = int(checkpoint.get("global_step", 0))
    print(
        f"{cfg.ckpt_path} (step {step}): return {result.mean:.1f} ± {result.std:.1f} over {cfg.episodes} episodes"
    )
    print("returns:", " ".join(f"{r:.1f}" for r in result.returns))
    if cfg.mlflow:
        _log(cfg, run, result, step, checkpoint.get("mlflow_run_id"))
    return result


def _log(cfg: DictConfig, run: dict, result: EvalResult, step: int, train_run_id: str | None) -> None:
    prepare_store(cfg.tracking_uri)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(run.get("name", "default"))
    # The training run's tags, so compare.py groups this score with its run (and its seed).
    tags = {
        "kind": "eval",
        "experiment": run.get("name", "default"),
        "algo": run["algo"]["name"],
        "env": run["env"]["id"],
        "seed": str(run.get("seed", 0)),
    }
    if train_run_id is not None:
        tags["train_run_id"] = train_run_id
    with mlflow.start_run(run_name=f"eval-{os.path.basename(cfg.ckpt_path)}", tags=tags):
        mlflow.log_params({"ckpt_path": cfg.ckpt_path, "episodes": cfg.episodes, "step": step})
        mlflow.log_metrics({"eval/return_mean": result.mean, "eval/return_std": result.std}, step=step)
        if result.frames:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"episode_step_{step:07d}.mp4")
                imageio.mimsave(path, result.frames, fps=30)
                mlflow.log_artifact(path, "videos")
                log.info("video logged to MLflow (videos/%s)", os.path.basename(path))
    log.info("eval run logged to MLflow experiment %r (%s)", run.get("name"), cfg.tracking_uri)
