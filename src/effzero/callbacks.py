"""Lightning callbacks: periodic evaluation with noise-free search, a checkpoint on interruption."""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from effzero.config import SearchConfig
from effzero.data.evaluate import EvalResult, evaluate
from effzero.envs import EnvSpec


class Evaluation(L.Callback):
    """Every `every` learner steps and at the end of training, play `episodes` episodes.

    Logs `eval/return_mean`, `eval/return_std`, `eval/length_mean` and `eval/env_steps` at
    the learner step (rank 0 only); `latest` holds the last result.
    """

    def __init__(
        self,
        make_env: Callable[[int], gym.Env],
        spec: EnvSpec,
        search: SearchConfig,
        every: int,
        episodes: int,
        seed: int,
    ):
        self.make_env, self.spec, self.search = make_env, spec, search
        self.every, self.episodes, self.seed = every, episodes, seed
        self.latest: EvalResult | None = None
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step != self._last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self.run(trainer, pl_module)

    @rank_zero_only
    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = step = trainer.global_step
        result = evaluate(
            pl_module.model, self.make_env, self.spec, self.search, self.episodes, self.seed + step
        )
        self.latest = result
        metrics = {"eval/return_mean": result.mean, "eval/return_std": result.std}
        metrics["eval/length_mean"] = sum(result.lengths) / len(result.lengths)
        metrics["eval/env_steps"] = float(pl_module.pipeline.counters.env_steps * trainer.world_size)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        rank_zero_info(
            f"[eval] step {step}: return {result.mean:.1f} ± {result.std:.1f} over {self.episodes} episodes"
        )


class InterruptCheckpoint(L.Callback):
    """Save `<dirpath>/interrupted.ckpt` when training stops on an exception or Ctrl-C.

    Resume with `ckpt_path=<dirpath>/interrupted.ckpt`. (Lightning's OnExceptionCheckpoint
    also makes every later `fit` resume from "last" implicitly; this one only writes.)
    """

    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.global_step == 0:
            return  # nothing learnt yet (e.g. the error came while restoring a checkpoint)
        path = os.path.join(self.dirpath, "interrupted.ckpt")
        trainer.save_checkpoint(path)
        rank_zero_info(f"saved {path} after {type(exception).__name__}; resume with ckpt_path={path}")
