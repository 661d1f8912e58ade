"""Lightning callbacks: periodic evaluation with noise-free search; a clean stop with a checkpoint."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import gymnasium as gym
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from effzero.config import SearchConfig
from effzero.data.evaluate import EvalResult, evaluate
from effzero.data.pipeline import BatchStream
from effzero.data.selfplay import SelfPlay
from effzero.envs import EnvSpec

log = logging.getLogger(__name__)


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


class Interrupted(BaseException):
    """Raised in the learner when SIGINT or SIGTERM stops the run.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it; not a
    KeyboardInterrupt, which Lightning turns into exit code 1.
    """

    def __init__(self, signum: int, clean: bool = True):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.clean = signum, clean


def _inside(frame: FrameType | None, codes: frozenset) -> bool:
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


# Where the learner may be stopped at any instant: waiting for a batch, playing evaluation
# episodes. Neither changes the state a checkpoint holds, except a self-play step, which
# `data.synchronous` runs inside the wait for a batch: it writes the replay, so a stop waits
# for its end.
UNWIND_SAFE = frozenset({BatchStream.__iter__.__code__, evaluate.__code__})
WRITES_REPLAY = frozenset({SelfPlay.step.__code__})


def _may_unwind(frame: FrameType | None) -> bool:
    return _inside(frame, UNWIND_SAFE) and not _inside(frame, WRITES_REPLAY)


class InterruptCheckpoint(L.Callback):
    """Save `<dirpath>/interrupted.ckpt` when training stops early: SIGINT, SIGTERM or an exception.

    SIGINT (Ctrl-C) and SIGTERM (schedulers, `kill`) stop the run cleanly, inside
    `handling_signals()`: while the learner waits for data or evaluates, at once; during an
    update (training step, optimiser step, weight publishing), just after it, so a checkpoint
    never holds a half-applied update. A second signal during that wait stops at once, without
    a checkpoint. The checkpoint holds what any checkpoint holds (weights, optimiser, target
    networks, counters, replay): resume with `ckpt_path=<dirpath>/interrupted.ckpt`.
    A stop before the first update saves too: the transitions collected so far are worth keeping.
    Under DDP, `stopping_ranks_together()` instead: the ranks stop together, before an update.
    """

    POLL_S = 0.2  # while a stop waits for the update to end: how often to look whether it has

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.signal: int | None = None  # the signal that stopped the run
        self.requested: int | None = None  # DDP: a signal this rank received, not yet agreed on
        self._ranks = False  # inside `stopping_ranks_together`
        self.saved: str | None = None  # the checkpoint written on the way out
        self._training = False  # between on_train_start and on_train_end
        self._saving = False

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM to this callback for the duration (single-process runs)."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGALRM, self._poll)
        try:
            yield
        finally:
            self._poll_every(0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def stopping_ranks_together(self, trainer: L.Trainer) -> Iterator[None]:
        """DDP: SIGINT and SIGTERM stop every rank at the same point, with a checkpoint.

        A signal only records a request on the rank it reached; at the start of each update and
        at the end of training the ranks agree on whether any has one (one scalar all-reduce),
        so all stop together, where a checkpoint (which gathers every rank's replay shard) can
        be written. A second signal stops its rank at once, without a checkpoint.

        These handlers take over SIGINT and SIGTERM where Lightning registers its own: after
        the ranks have joined and restored their checkpoint, before the replay warms up.
        Lightning's SIGTERM handler would broadcast from inside the handler, colliding with
        whatever collective the rank is in (on gloo: "Received data size doesn't match expected
        size", and a dead rank). Before that point a signal acts as it would without effzero,
        so that no rank waits, unable to stop, for another that a signal has ended.
        """
        # Lightning offers no public hook between its registration and the first batch.
        connector = trainer._signal_connector
        register = connector.register_signal_handlers

        def register_then_take_over() -> None:
            register()  # Lightning's, for SLURM's requeue signal
            signal.signal(signal.SIGINT, self._on_ddp_signal)
            signal.signal(signal.SIGTERM, self._on_ddp_signal)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        connector.register_signal_handlers = register_then_take_over
        self._ranks = True
        try:
            yield
        finally:
            self._ranks = False
            del connector.register_signal_handlers  # the class's method again
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_ddp_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._saving:
            log.info("%s: writing the checkpoint, one moment", name)
            return
        if self.requested is not None:
            raise KeyboardInterrupt  # this rank stops at once; the others end with it
        self.requested = signum
        log.info("%s: every rank stops before the next update (send it again to stop at once)", name)

    def _agreed_signal(self, trainer: L.Trainer) -> int | None:
        """The largest signal number any rank has received (a collective: every rank calls it)."""
        asked = torch.tensor(self.requested or 0, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(asked, reduce_op="max")) or None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._saving:
            rank_zero_info(f"{name}: writing the checkpoint, one moment")
            return
        if self.signal is not None:
            self._poll_every(0)
            raise Interrupted(signum, clean=False)
        self.signal = signum
        if not self._training or _may_unwind(frame):
            raise Interrupted(signum)
        rank_zero_info(f"{name}: stopping after the update in progress (send it again to stop at once)")
        self._poll_every(self.POLL_S)

    def _poll(self, signum: int, frame: FrameType | None) -> None:
        """SIGALRM while a stop is pending: stop as soon as the update has ended."""
        if self.signal is not None and not self._saving and _may_unwind(frame):
            self._poll_every(0)
            raise Interrupted(self.signal)

    @staticmethod
    def _poll_every(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds, seconds)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self._ranks:
            self.signal = self._agreed_signal(trainer)
        if self.signal is not None:  # the previous update has ended: stop before the next one
            self._poll_every(0)
            self._unfetch(trainer)
            raise Interrupted(self.signal)

    @staticmethod
    def _unfetch(trainer: L.Trainer) -> None:
        """Count the batch this stop skips as never fetched, so the checkpoint resumes as after an update.

        Lightning reads a fetched-but-unstarted batch as a stop inside an update and, resuming,
        advances its logging step by one: every metric after the resume would be logged one
        step late.
        """
        progress = trainer.fit_loop.epoch_loop.batch_progress
        progress.total.ready -= 1
        progress.current.ready -= 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training = False
        if self._ranks:  # a signal during the last update: the ranks skip the final evaluation together
            self.signal = self._agreed_signal(trainer)
        if self.signal is not None:  # the last update ended meanwhile: skip the final evaluation
            self._poll_every(0)
            raise Interrupted(self.signal)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._poll_every(0)
        training, self._training = self._training, False
        if isinstance(exception, Interrupted) and not exception.clean:
            rank_zero_info("stopped at once, without a checkpoint (the update was not over)")
            return
        if not training:
            return  # the error came while restoring a checkpoint, or after the last one was written
        if self.signal is None and trainer.global_step == 0:
            return  # an error before the first update: nothing worth resuming from
        if trainer.world_size > 1 and not isinstance(exception, (Interrupted, SIGTERMException)):
            # Writing one gathers every rank's replay shard, and the other ranks are elsewhere
            # (in a collective of their own): they would wait for each other for ever. Only a
            # stop the ranks agree on at a step writes one.
            log.error(
                "rank %d stopped by %s: %s\nA DDP run writes interrupted.ckpt only when stopped by SIGINT or "
                "SIGTERM (all ranks at the same step): resume from the last periodic checkpoint, last.ckpt",
                trainer.global_rank,
                type(exception).__name__,
                exception,
            )
            return
        path = os.path.join(self.dirpath, "interrupted.ckpt")
        self._saving = True
        try:
            trainer.save_checkpoint(path, weights_only=False)  # everything: optimiser, replay, loops
        finally:
            self._saving = False
        self.saved = path
        cause = signal.Signals(self.signal).name if self.signal is not None else type(exception).__name__
        rank_zero_info(f"saved {path} after {cause}; resume with ckpt_path={path}")
