"""Build a run from its composed config and fit it: what `src/train.py` calls."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
import warnings
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from effzero import checkpointing
from effzero.agent import EZAgent
from effzero.callbacks import Evaluation, InterruptCheckpoint, Interrupted
from effzero.cli import is_locked_database
from effzero.config import TrainConfig
from effzero.data.datamodule import ReplayDataModule
from effzero.data.environments import build_spec, env_maker
from effzero.mlflow_store import prepare_store

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
    resume: tuple[str, int] | None = None  # (MLflow run id, step) of the checkpoint resumed
    if conf.ckpt_path is not None:
        if not os.path.isfile(conf.ckpt_path):
            raise FileNotFoundError(
                f"ckpt_path={conf.ckpt_path} does not exist; checkpoints are under logs/train/runs/<run>/checkpoints/"
            )
        checkpointing.verify(conf.ckpt_path)  # before any worker starts
        # mmap: the run's MLflow id and step, without reading the replay into memory
        saved = torch.load(conf.ckpt_path, map_location="cpu", mmap=True, weights_only=False)
        if saved.get("mlflow_run_id"):
            resume = (saved["mlflow_run_id"], int(saved["global_step"]))
        del saved
        # Lightning warns on resuming mid-epoch with a dataloader that has no state; the stream is
        # endless (an epoch is only a checkpoint interval) and its state, the replay, is in the checkpoint.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
    # The agent returns no loss for a step it skips (non-finite loss) and logs why itself.
    warnings.filterwarnings("ignore", message="`training_step` returned `None`")
    L.seed_everything(conf.seed, workers=True)
    if conf.threads is not None:
        torch.set_num_threads(conf.threads)
    spec = build_spec(conf.env)
    agent = EZAgent(
        conf.model, conf.algo, conf.optim, conf.data, spec, max_nonfinite_steps=conf.max_nonfinite_steps
    )
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
    loggers = connect_loggers(
        list((conf.logger or {}).values()), _loggable(cfg), conf.tracking_wait_s, resume
    )
    trainer: L.Trainer = instantiate(
        conf.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_steps=max_steps(conf),
        plugins=[checkpointing.AtomicCheckpointIO()],
    )
    if conf.compile:  # the learner calls the model's inference methods, never its forward
        agent.losses = torch.compile(agent.losses)
    interrupt = next((c for c in callbacks if isinstance(c, InterruptCheckpoint)), None)
    signals: contextlib.AbstractContextManager = contextlib.nullcontext()
    if interrupt is not None:
        one = trainer.world_size == 1
        signals = interrupt.handling_signals() if one else interrupt.stopping_ranks_together(trainer)
    stopped = False
    try:
        with signals:
            trainer.fit(agent, datamodule=datamodule, ckpt_path=conf.ckpt_path)
    except (Interrupted, SIGTERMException):
        stopped = True
        _report_interruption(trainer, loggers, interrupt)
    finally:
        # Lightning skips the datamodule's teardown when fit raises: stop the workers here, so
        # a sweep or a notebook that goes on after a failed run does not keep them.
        datamodule.teardown("fit")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _report(trainer, loggers, metrics)
    if stopped:
        raise SystemExit(0)  # exit code 0 for a clean stop; in a sweep, no further run starts
    return metrics


def connect_loggers(
    configs: list[Any], params: dict[str, Any], wait_s: float, resume: tuple[str, int] | None = None
) -> list[Logger]:
    """Build the loggers and open their runs, waiting up to `wait_s` for a locked MLflow database.

    `resume`: the (run id, step) of a resumed checkpoint, whose MLflow run then continues (its
    curves go on at the step), if this store holds it; else a new run starts.

    SQLite lets one writer at a time: another run starting, or `mlflow gc`, holds the lock for
    moments, so waiting is what a user wants; a lock held for longer is a stuck process, and
    the run stops with a message instead of hanging.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            for config in configs:
                if _is_mlflow(config):
                    prepare_store(str(config.get("tracking_uri")), max(0.0, deadline - time.monotonic()))
            return [_open_logger(c, params, resume) for c in configs]
        except Exception as error:
            if not is_locked_database(error):
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the MLflow database is locked by another process and stayed locked for {wait_s:.0f} s "
                    "(tracking_wait_s). Find it with `fuser logs/mlflow.db` (an `mlflow` command, a run "
                    "or a notebook holding a transaction) and end it; or give this run its own store: "
                    "logger.mlflow.tracking_uri=sqlite:///<other>.db, or logger=none"
                ) from None
            log.warning("the MLflow database is locked by another process; retrying (up to %.0f s)", wait_s)
            time.sleep(min(2.0, wait_s))


def _is_mlflow(config: Any) -> bool:
    return str(config.get("_target_", "")).endswith("MLFlowLogger")


def _open_logger(config: Any, params: dict[str, Any], resume: tuple[str, int] | None) -> Logger:
    """A logger with its run open: the resumed checkpoint's MLflow run, else a new one."""
    if resume is not None and _is_mlflow(config):
        run_id, step = resume
        logger = instantiate(config, run_id=run_id)
        try:
            client = logger.experiment
            if rank_zero_only.rank == 0:  # other ranks' experiment is a stand-in that returns None
                client.update_run(run_id, status="RUNNING")
                data = client.get_run(run_id).data
                earlier = data.tags.get("resumed_at_steps")
                client.set_tag(run_id, "resumed_at_steps", f"{earlier},{step}" if earlier else str(step))
                # MLflow params cannot change: what differs from them goes into a tag.
                changes = changed_settings(data.params, params)
                if changes:
                    log.info("resumed with settings changed since the run began: %s", "; ".join(changes))
                    client.set_tag(run_id, f"changed_at_step_{step}", "; ".join(changes)[:5000])
            return logger
        except Exception as error:
            if getattr(error, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":  # MLflow: no such run
                raise
            log.warning(
                "the checkpoint's MLflow run %s is not in %s; logging to a new run",
                run_id,
                config.get("tracking_uri"),
            )
    logger = instantiate(config)
    logger.log_hyperparams(params)  # creates the MLflow experiment and run now
    return logger


def changed_settings(logged: dict[str, str], params: dict[str, Any]) -> list[str]:
    """`key: old → new` for each setting of `params` that differs from a run's MLflow params.

    `params` are flattened and cut as Lightning's MLFlowLogger logs them. What differs at every
    resume is left out: the checkpoint path, the run's directory (wherever it appears: paths,
    checkpoint folders) and the time-stamped run name.
    """
    full = {k: str(v) for k, v in _flatten_dict(_convert_params(params)).items()}
    now = {k: v[:250] for k, v in full.items()}
    old_dir, new_dir = logged.get("paths/output_dir"), full.get("paths/output_dir")

    def as_logged_then(key: str) -> str:  # the value as the first run would have logged it
        if key not in full:
            return "(none)"
        return full[key].replace(new_dir, old_dir)[:250] if old_dir and new_dir else now[key]

    def always_differs(key: str) -> bool:
        return key == "ckpt_path" or key.startswith("paths/") or key.endswith("/run_name")

    differ = (k for k in set(logged) | set(full) if logged.get(k, "(none)") != as_logged_then(k))
    keys = sorted(k for k in differ if not always_differs(k))
    return [f"{k}: {logged.get(k, '(none)')} → {now.get(k, '(none)')}" for k in keys]


def _loggable(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node, for MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return container


def _report_interruption(
    trainer: L.Trainer, loggers: list[Logger], interrupt: InterruptCheckpoint | None
) -> None:
    """A run stopped by a signal ends normally (exit code 0); MLflow marks it KILLED."""
    if trainer.global_rank != 0:
        return
    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
            logger.experiment.set_terminated(logger.run_id, "KILLED")
    signum = interrupt.signal if interrupt is not None and interrupt.signal is not None else signal.SIGTERM
    name, step = signal.Signals(signum).name, trainer.global_step
    if interrupt is not None and interrupt.saved is not None:
        log.info("stopped by %s at step %d; resume with ckpt_path=%s", name, step, interrupt.saved)
    else:
        log.info("stopped by %s at step %d without a new checkpoint", name, step)


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
