"""Build a run from its composed config and fit it: what `src/train.py` calls."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from effzero.agent import EZAgent
from effzero.callbacks import Evaluation
from effzero.config import TrainConfig
from effzero.data.datamodule import ReplayDataModule
from effzero.data.environments import build_spec, env_maker

log = logging.getLogger(__name__)


def max_steps(conf: TrainConfig) -> int:
    """Learner updates of the run: trainer.max_steps, else env steps · replay ratio + offline updates."""
    configured = conf.trainer.get("max_steps")
    if configured not in (None, -1):
        return int(configured)
    return int(conf.data.total_env_steps * conf.data.replay_ratio) + conf.data.offline_updates


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the agent described by `cfg`; return the final metrics."""
    conf: TrainConfig = OmegaConf.to_object(cfg)
    if conf.ckpt_path is not None and not os.path.isfile(conf.ckpt_path):
        raise FileNotFoundError(
            f"ckpt_path={conf.ckpt_path} does not exist; checkpoints are under logs/train/runs/<run>/checkpoints/"
        )
    L.seed_everything(conf.seed, workers=True)
    if conf.threads is not None:
        torch.set_num_threads(conf.threads)
    spec = build_spec(conf.env)
    agent = EZAgent(conf.model, conf.algo, conf.optim, conf.data, spec)
    agent.run_config = _loggable(cfg)
    datamodule = ReplayDataModule(conf, spec)
    eval_env = conf.env
    if conf.eval.max_episode_steps is not None:
        eval_env = dataclasses.replace(conf.env, max_episode_steps=conf.eval.max_episode_steps)
    evaluation = Evaluation(
        env_maker(eval_env, train=False),
        spec,
        conf.search,
        conf.eval.every,
        conf.eval.episodes,
        conf.seed + 10_000,
    )
    callbacks = [instantiate(c) for c in (conf.callbacks or {}).values()] + [evaluation]
    loggers = [instantiate(c) for c in (conf.logger or {}).values()]
    trainer: L.Trainer = instantiate(
        conf.trainer, callbacks=callbacks, logger=loggers or False, max_steps=max_steps(conf)
    )
    if conf.compile:
        agent.model.compile()
    for logger in loggers:
        logger.log_hyperparams(_loggable(cfg))
    trainer.fit(agent, datamodule=datamodule, ckpt_path=conf.ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _report(trainer, loggers, metrics)
    return metrics


def _loggable(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node, for MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return container


def _report(trainer: L.Trainer, loggers: list, metrics: dict[str, float]) -> None:
    if trainer.global_rank != 0:
        return
    if "eval/return_mean" in metrics:
        log.info(
            "final evaluation: return %.1f ± %.1f",
            metrics["eval/return_mean"],
            metrics.get("eval/return_std", 0),
        )
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            uri = logger._tracking_uri
            log.info(
                "MLflow run %s in experiment %r (%s)\n  open the UI: mlflow ui --backend-store-uri %s  "
                "then http://127.0.0.1:5000",
                logger.run_id,
                logger._experiment_name,
                uri,
                uri,
            )
    if trainer.checkpoint_callback is not None:
        log.info("checkpoints: %s", trainer.checkpoint_callback.dirpath)
