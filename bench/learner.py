"""Learner speed: updates/s of the training step alone, at each real config.

    python bench/learner.py                                  # cartpole, atari, dmc (batch 256; cartpole 128)
    python bench/learner.py --config atari --steps 5 --rounds 1
    python bench/learner.py --device cuda --bf16 --compile   # on a GPU
    python bench/learner.py --quick                          # seconds, small sizes

The step is EZAgent's own, run by a Lightning Trainer built from the config's trainer group
(gradient clipping, precision; `--bf16` = bf16-mixed): the batch's move to the device, the
K-step unroll, the losses, backward, clipping, the optimiser and LR-scheduler step, and the
agent's end-of-batch work (priorities into replay, weights published every
data.selfplay_refresh updates, target swaps). The data side is cut off: the stream yields
one batch over and over. That batch comes from the real reanalyse function (`make_batch`)
over a replay of random transitions of the env's shapes, so its layout is exactly what the
learner gets in a run; at most 32 samples are reanalysed and tiled up to `--batch-size`.
No logger is attached (a run's MLflow writes every trainer.log_every_n_steps are not timed).

Each round runs `--warmup` untimed and `--steps` timed updates of every config in turn
(interleaved, against the machine's drift); figures are medians over rounds.

Projection: learner-bound wall-clock of a full run = updates / (updates/s), with updates =
data.total_env_steps × data.replay_ratio + data.offline_updates (Atari 100k: 120k, DMC
walker: 70k, cartpole: 5k). It is a lower bound: it assumes self-play and reanalysis keep up.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass

import lightning as L
import torch
from common import (
    Elapsed,
    GpuMonitor,
    bench_parser,
    config_names,
    fill_random,
    full_run,
    hours,
    load_run,
    machine_line,
    median,
    pick_device,
    run_overrides,
    sync,
    timed,
)
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from effzero.agent import EZAgent
from effzero.config import TrainConfig
from effzero.data.acting import build_model
from effzero.data.pipeline import Pipeline
from effzero.data.reanalyse import make_batch
from effzero.envs import EnvSpec

REANALYSED = 32  # samples reanalysed for the batch; the rest are copies of them


class RepeatBatch(IterableDataset):
    def __init__(self, batch: dict[str, Tensor]):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


class FixedBatchData(L.LightningDataModule):
    """Stands in for ReplayDataModule: the agent reaches `pipeline` for priorities and weights."""

    def __init__(self, pipeline: Pipeline, batch: dict[str, Tensor]):
        super().__init__()
        self.pipeline, self.batch = pipeline, batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatBatch(self.batch), batch_size=None)


class StepClock(L.Callback):
    """Time between consecutive ends of training batches, the device's work included."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ends: list[Elapsed] = []  # clock readings (wall, process CPU) at each end

    def on_train_batch_end(self, *args) -> None:
        sync(self.device)
        self.ends.append(Elapsed(time.perf_counter(), time.process_time()))

    def intervals(self, skip: int) -> list[Elapsed]:
        """Durations of the updates after the first `skip` (the first end closes update 1)."""
        ends = self.ends[skip - 1 :]
        return [Elapsed(b.wall - a.wall, b.cpu - a.cpu) for a, b in itertools.pairwise(ends)]


def reanalysed_batch(
    conf: TrainConfig, spec: EnvSpec, pipeline: Pipeline, batch_size: int
) -> dict[str, Tensor]:
    """A batch of the run's layout: `make_batch` over random transitions, tiled to `batch_size`."""
    replay = pipeline.replay
    fill_random(replay, spec, replay.layout.lane_length * 3 // 4)
    model = build_model(conf.model, spec).eval()
    small = min(batch_size, REANALYSED)
    data = conf.data
    batch = make_batch(
        replay, model, spec, conf.search, conf.algo, small, data.priority_alpha, data.priority_beta, 0, 0
    )
    rows = torch.arange(batch_size) % small
    return {k: v if k == "learner_step" else v[rows].clone() for k, v in batch.items()}


@dataclass
class Bench:
    name: str
    conf: TrainConfig
    agent: EZAgent
    data: FixedBatchData


def build(name: str, overrides: list[str], compile_model: bool) -> Bench:
    conf, spec = load_run(name, overrides)
    agent = EZAgent(conf.model, conf.algo, conf.optim, conf.data, spec)
    # A replay just big enough to reanalyse a batch from: its size does not touch the step.
    lanes = conf.data.selfplay_workers * conf.env.num_envs
    window = conf.algo.unroll_steps + conf.algo.td_steps
    conf.data.capacity = lanes * (2 * math.ceil(REANALYSED / lanes) + 2 * window + 32)
    pipeline = Pipeline(conf, spec, agent.model)
    batch = reanalysed_batch(conf, spec, pipeline, conf.data.batch_size)
    if compile_model:
        # as `compile=true` does in a run
        agent.losses = torch.compile(agent.losses)
    return Bench(name, conf, agent, FixedBatchData(pipeline, batch))


def run_round(bench: Bench, device: torch.device, args, root: str) -> tuple[float, float, float]:
    """Updates/s, the median update's ms and its CPU ms, over `args.steps` timed updates."""
    torch.set_num_threads(args.threads or bench.conf.threads or args.default_threads)
    clock = StepClock(device)
    extra = {"precision": "bf16-mixed"} if args.bf16 else {}
    trainer = instantiate(
        bench.conf.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        limit_train_batches=args.warmup + args.steps + 1,
        logger=False,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **extra,
    )
    trainer.fit(bench.agent, datamodule=bench.data)
    steps = clock.intervals(args.warmup)
    wall = [s.wall for s in steps]
    return len(steps) / sum(wall), median(wall) * 1e3, median([s.cpu for s in steps]) * 1e3


def h2d_ms(batch: dict[str, Tensor], device: torch.device, reps: int = 5) -> tuple[float, float]:
    """Milliseconds to copy a batch to the GPU from pageable memory (what the stream hands the
    learner: `BatchSlots.take` clones into it) and from pinned memory (non-blocking, as Lightning
    copies): what pinning the taken batch would save per update."""
    pinned = {k: v.pin_memory() for k, v in batch.items()}

    def copy(source: dict[str, Tensor]):
        return lambda: {k: v.to(device, non_blocking=True) for k, v in source.items()}

    return tuple(median([timed(copy(b), device).wall * 1e3 for _ in range(reps)]) for b in (batch, pinned))


def main() -> None:
    parser = bench_parser(__doc__, batch_size=True)
    parser.add_argument("--steps", type=int, default=20, help="timed updates per config and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first (compilation, caches)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the loss computation (unroll + losses)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = min(args.steps, 5), 1, min(args.rounds, 2)
    args.warmup = max(args.warmup, 1)  # the first update's end starts the clock
    args.default_threads = torch.get_num_threads()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(device), flush=True)
    overrides = run_overrides(args)
    benches = [build(name, overrides, args.compile) for name in config_names(args)]
    rates: dict[str, list[float]] = {b.name: [] for b in benches}
    step_ms: dict[str, list[float]] = {b.name: [] for b in benches}
    cpu_ms: dict[str, list[float]] = {b.name: [] for b in benches}
    with tempfile.TemporaryDirectory(prefix="effzero-bench-") as root, GpuMonitor(device) as gpu:
        for _ in range(args.rounds):
            for bench in benches:
                rate, ms, cpu = run_round(bench, device, args, root)
                rates[bench.name].append(rate)
                step_ms[bench.name].append(ms)
                cpu_ms[bench.name].append(cpu)
    precision = "bf16-mixed" if args.bf16 else benches[0].conf.trainer.get("precision", "32-true")
    print(
        f"# learner updates/s, median of {args.rounds} interleaved rounds of {args.steps} updates "
        f"(after {args.warmup} warm-up); precision={precision} compile={args.compile}{gpu.summary()}"
    )
    for bench in benches:
        rate = median(rates[bench.name])
        _, updates = full_run(bench.conf)
        print(
            f"learner config={bench.name} B={bench.conf.data.batch_size} device={device} "
            f"threads={args.threads or bench.conf.threads or args.default_threads} "
            f"updates_per_s={rate:.2f} ms_per_update={median(step_ms[bench.name]):.1f} "
            f"cpu_ms_per_update={median(cpu_ms[bench.name]):.1f} "
            f"rounds=[{', '.join(f'{r:.2f}' for r in rates[bench.name])}] "
            f"full_run_updates={updates} learner_bound_wall={hours(updates / rate)}",
            flush=True,
        )
    print(
        "# learner_bound_wall = full_run_updates / updates_per_s (assumes the data side keeps up); "
        "cpu_ms_per_update: this process's CPU time, all threads"
    )
    if device.type == "cuda":  # after the figures above: they stand if this fails
        for bench in benches:
            batch = bench.data.batch
            mib = sum(v.nbytes for v in batch.values()) / 2**20
            pageable, pinned = h2d_ms(batch, device)
            print(
                f"h2d config={bench.name} batch_mib={mib:.1f} pageable_ms={pageable:.2f} "
                f"pinned_ms={pinned:.2f} per_update_share={pageable / median(step_ms[bench.name]):.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
