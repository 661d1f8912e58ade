"""End to end: a real training run for N minutes, and where its time goes.

    python bench/e2e.py --config cartpole --minutes 5
    python bench/e2e.py --config atari --minutes 10 --device cuda --bf16
    python bench/e2e.py --quick

Runs `effzero.training.train` (what `src/train.py` runs) on the composed config at replay
ratio `--replay-ratio` (1 by default: one update per env step), stopped by Lightning's
`max_time` after `--minutes`. Changed from the config so that a short run measures what a
long one does: no evaluation but one single-episode one at the end (capped at 20 steps), no
checkpoints (each copies the whole replay; their cost is not in these figures), MLflow in a
temporary directory. SIGTERM stops the run after the update in progress, and the figures
cover the run up to there.

A callback times, after the first update (before it is the startup: worker processes and
data.start_transitions steps of self-play):
  learner_step   on_train_batch_start → end: forward, losses, backward, optimiser step
  wait_selfplay  in the pipeline's wait_for_update: the replay-ratio governor holds the
                 learner until self-play has collected the steps the next update needs
  wait_reanalyse in next_batch: no reanalysed batch is ready
  other          the rest: moving the batch to the device, weight publishing, logging
and reports updates/s, env steps/s (agent steps/hour) and, on CUDA, the GPU's utilisation.

Projection: wall-clock of a full run ≈ startup + U / (updates/s), U = data.total_env_steps ×
replay ratio + data.offline_updates (Atari 100k: 120k; DMC walker: 70k): the measured
steady rate held for the whole run. Offline updates (after collection) wait for no
self-play, so this overestimates them; evaluation and checkpoints are not included.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
import warnings

import lightning as L
import torch
from common import (
    QUICK,
    GpuMonitor,
    composed,
    full_run,
    hours,
    machine_line,
    pick_device,
    sync,
)
from omegaconf import OmegaConf, open_dict

from effzero.config import TrainConfig
from effzero.training import train

# --quick: a small cartpole run that ends after 30 updates (or its --minutes, whichever first).
QUICK_RUN = [*QUICK, "data.start_transitions=100", "logger=none", "trainer.max_steps=30"]


class E2EClock(L.Callback):
    """Times the learner's step and its two waits; `E2EClock.latest` is the last run's instance."""

    latest: E2EClock | None = None

    def __init__(self) -> None:
        E2EClock.latest = self
        self.waits = {"wait_selfplay": [], "wait_reanalyse": []}  # (end time, seconds)
        self.steps: list[float] = []
        self.started = self.first = self.last = 0.0
        self.first_env_steps = self.last_env_steps = self.first_update = self.last_update = 0
        self._batch_start = 0.0

    def _timed(self, name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self.waits[name].append((end, end - start))

        return wrapper

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()
        pipeline = pl_module.pipeline
        # Instance attributes shadow the methods for the stream that calls them: timing only.
        pipeline.wait_for_update = self._timed("wait_selfplay", pipeline.wait_for_update)
        pipeline.next_batch = self._timed("wait_reanalyse", pipeline.next_batch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        sync(pl_module.device)
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        sync(pl_module.device)
        now = time.perf_counter()
        env_steps = pl_module.pipeline.counters.env_steps
        if not self.first:
            self.first, self.first_env_steps, self.first_update = now, env_steps, trainer.global_step
        else:
            self.steps.append(now - self._batch_start)
        self.last, self.last_env_steps, self.last_update = now, env_steps, trainer.global_step

    @property
    def updates(self) -> int:
        return self.last_update - self.first_update

    def report(self) -> dict[str, float]:
        """Seconds of the steady window (after the first update) by where they went."""
        window = self.last - self.first
        split = {"learner_step": sum(self.steps)}
        for name, waits in self.waits.items():
            split[name] = sum(seconds for end, seconds in waits if self.first < end <= self.last)
        split["other"] = max(window - sum(split.values()), 0.0)
        return split


def run(args, device: torch.device) -> tuple[E2EClock, TrainConfig, str]:
    """The run's clock, its config and the GPU's utilisation summary."""
    overrides = [
        f"data.replay_ratio={args.replay_ratio}",
        "eval.every=0",
        "eval.episodes=1",
        "eval.max_episode_steps=20",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        *([f"trainer.devices=[{device.index or 0}]"] if device.type == "cuda" else []),
        *(["trainer.precision=bf16-mixed", "data.worker_precision=bf16"] if args.bf16 else []),
        *([f"threads={args.threads}"] if args.threads else []),
        *(QUICK_RUN if args.quick else []),
        *args.overrides,
    ]
    with composed(args.config, overrides) as cfg:
        seconds = round(args.minutes * 60)
        with open_dict(cfg):
            cfg.trainer.max_time = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
            cfg.callbacks = {
                name: node
                for name, node in (cfg.callbacks or {}).items()
                if name not in ("model_checkpoint", "interrupt_checkpoint")
            }
            cfg.callbacks["e2e_clock"] = {"_target_": f"{E2EClock.__module__}.{E2EClock.__qualname__}"}
        cfg.paths.log_dir = cfg.paths.output_dir  # MLflow and runs in the temporary directory
        conf = OmegaConf.to_object(cfg)
        print(
            f"# e2e: experiment={cfg.name} for {args.minutes:g} min, replay ratio {args.replay_ratio}, "
            f"batch {conf.data.batch_size}, {conf.data.selfplay_workers} self-play + "
            f"{conf.data.reanalyse_workers} reanalyse workers on {conf.data.worker_device}",
            flush=True,
        )
        with GpuMonitor(device) as gpu:
            try:
                train(cfg)
            except SystemExit as stop:  # SIGTERM (bench/suite.py at a step's time): report until then
                if stop.code not in (0, None):
                    raise
                print("# e2e: stopped by a signal; the figures cover the run up to the stop", flush=True)
    return E2EClock.latest, conf, gpu.summary()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="cartpole", help="cartpole, atari, dmc or any experiment name")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock of the run, startup included")
    parser.add_argument("--replay-ratio", type=float, default=1.0)
    parser.add_argument("--device", default="auto", help="the learner's: auto (cuda if present), cpu, cuda")
    parser.add_argument(
        "--bf16", action="store_true", help="trainer.precision=bf16-mixed data.worker_precision=bf16"
    )
    parser.add_argument("--threads", type=int, default=None, help="the learner's torch threads (threads=)")
    parser.add_argument("--quick", action="store_true", help="a small cartpole run of 30 updates")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.worker_device=cuda")
    args = parser.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 1.5)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    device = pick_device(args.device)
    print(machine_line(device), flush=True)
    clock, conf, gpu = run(args, device)
    window = clock.last - clock.first
    startup = clock.first - clock.started
    if clock.updates < 2:
        print(
            f"e2e config={args.config} startup_s={startup:.1f} updates={clock.updates}: too few updates "
            "to measure; raise --minutes or lower data.start_transitions"
        )
        return
    rate = clock.updates / window
    env_rate = (clock.last_env_steps - clock.first_env_steps) / window
    split = clock.report()
    _, total_updates = full_run(conf)
    print(
        f"e2e config={args.config} device={device} learner_threads={torch.get_num_threads()} "
        f"B={conf.data.batch_size} ratio={args.replay_ratio} "
        f"startup_s={startup:.1f} window_s={window:.1f} updates={clock.updates} "
        f"updates_per_s={rate:.2f} env_steps_per_s={env_rate:.2f} agent_steps_per_hour={env_rate * 3600:.0f} "
        + " ".join(f"{name}={seconds / window:.0%}" for name, seconds in split.items())
        + gpu,
        flush=True,
    )
    print(
        f"projection config={args.config} full_run_updates={total_updates} "
        f"full_run_wall={hours(startup + total_updates / rate)}"
    )
    print(
        "# full_run_wall = startup_s + full_run_updates / updates_per_s (steady rate; no eval, no checkpoints)"
    )


if __name__ == "__main__":
    main()
