"""Reanalysis speed: samples/s of the reanalyse worker's batch function, per config.

    python bench/reanalyse.py                              # cartpole, atari, dmc (batch 256; cartpole 128)
    python bench/reanalyse.py --config atari --batches 2 --rounds 1
    python bench/reanalyse.py --device cuda --bf16         # on a GPU
    python bench/reanalyse.py --quick

What is timed is `make_batch`, the function a reanalyse worker calls for every batch: sample
windows by priority, embed every observation of each window with the target model, search
from the K + 1 unroll positions of every sample (policy targets, search-based values), and
build the TD / mixed value targets. Its replay holds real transitions: the run's own
self-play worker first collects enough steps for a batch (`--fill random` writes random
transitions of the right shapes instead, when self-play is too slow to wait for). The
replay has the run's full capacity (sampling is linear in it); `data.capacity=N` shrinks it.

A worker runs with data.worker_threads torch threads (1); `--threads` changes that. Each
round times `--batches` batches of every config in turn (interleaved, against the machine's
drift); figures are medians over rounds.

Projection: reanalysis-bound wall-clock of a full run = updates × batch /
(samples/s × data.reanalyse_workers), updates = data.total_env_steps × data.replay_ratio +
data.offline_updates (Atari 100k: 120k; DMC walker: 70k).
"""

from __future__ import annotations

import math
import time

import torch
from common import (
    GpuMonitor,
    SelfPlayThread,
    bench_parser,
    data_side,
    fill_random,
    full_run,
    hours,
    median,
    timed,
    worker_runs,
)

from effzero.config import TrainConfig
from effzero.data.acting import worker_model
from effzero.data.pipeline import Pipeline
from effzero.data.reanalyse import make_batch
from effzero.envs import EnvSpec


def filled(conf: TrainConfig, spec: EnvSpec, device: torch.device, fill: str) -> Pipeline:
    """A pipeline whose replay has at least 1.5 batches of sampleable start slots."""
    envs, window = conf.env.num_envs, conf.algo.unroll_steps + conf.algo.td_steps
    per_lane = math.ceil(1.5 * conf.data.batch_size / envs) + window + 2
    pipeline = data_side(conf, spec, device, envs * per_lane, full_replay=True)
    start = time.perf_counter()
    if fill == "selfplay":
        SelfPlayThread(pipeline).start().join()
    else:
        fill_random(pipeline.replay, spec, per_lane)
    print(
        f"# {conf.name}: replay filled by {fill} in {time.perf_counter() - start:.1f} s: "
        f"{pipeline.replay.num_sampleable()} sampleable of {pipeline.replay.layout.capacity} slots",
        flush=True,
    )
    return pipeline


class Reanalyser:
    """The target model and its `make_batch` calls for one config."""

    def __init__(self, conf: TrainConfig, spec: EnvSpec, pipeline: Pipeline, device: torch.device):
        self.conf, self.spec, self.pipeline, self.device = conf, spec, pipeline, device
        self.model = worker_model(conf.model, spec, str(device), conf.data.worker_precision)
        self.generator = torch.Generator().manual_seed(conf.seed)

    def batch(self) -> None:
        data, counters = self.conf.data, self.pipeline.counters
        make_batch(
            self.pipeline.replay,
            self.model,
            self.spec,
            self.conf.search,
            self.conf.algo,
            data.batch_size,
            data.priority_alpha,
            data.priority_beta,
            counters.updates,
            counters.env_steps,
            self.generator,
        )


def main() -> None:
    parser = bench_parser(__doc__, batch_size=True)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per config and round")
    parser.add_argument("--fill", choices=("selfplay", "random"), default="selfplay", help="replay contents")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = min(args.batches, 2), min(args.rounds, 2)
    device, runs, threads = worker_runs(args)
    reanalysers = {}
    for name, (conf, spec) in runs.items():
        torch.set_num_threads(threads[name])
        pipeline = filled(conf, spec, device, args.fill)
        reanalysers[name] = reanalyser = Reanalyser(conf, spec, pipeline, device)
        reanalyser.batch()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in runs}  # per batch, median of each round
    cpu_seconds: dict[str, list[float]] = {name: [] for name in runs}
    with GpuMonitor(device) as gpu:
        for _ in range(args.rounds):
            for name, reanalyser in reanalysers.items():
                torch.set_num_threads(threads[name])
                times = [timed(reanalyser.batch, reanalyser.device) for _ in range(args.batches)]
                seconds[name].append(median([t.wall for t in times]))
                cpu_seconds[name].append(median([t.cpu for t in times]))
    print(
        f"# reanalysed samples/s (one worker), median of {args.rounds} interleaved rounds of "
        f"{args.batches} batches; bf16={args.bf16} fill={args.fill}{gpu.summary()}"
    )
    for name, (conf, _) in runs.items():
        batch, workers = conf.data.batch_size, conf.data.reanalyse_workers
        per_batch = median(seconds[name])
        rate = batch / per_batch
        _, updates = full_run(conf)
        roots = batch * (conf.algo.unroll_steps + 1) * (2 if conf.algo.off_policy_correction else 1)
        print(
            f"reanalyse config={name} B={batch} roots={roots} sims={conf.search.num_simulations} "
            f"device={reanalysers[name].device} threads={threads[name]} s_per_batch={per_batch:.3f} "
            f"cpu_s_per_batch={median(cpu_seconds[name]):.3f} "
            f"samples_per_s={rate:.1f} rounds=[{', '.join(f'{batch / s:.1f}' for s in seconds[name])}] "
            f"full_run_updates={updates} workers={workers} "
            f"reanalyse_bound_wall={hours(updates * batch / (rate * workers))}",
            flush=True,
        )
    print(
        "# reanalyse_bound_wall = full_run_updates × B / (samples_per_s × workers); "
        "cpu_s_per_batch: this process's CPU time, all threads"
    )


if __name__ == "__main__":
    main()
