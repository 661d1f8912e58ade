"""Self-play speed: env steps/s of one self-play worker (batched envs + one search per step).

    python bench/selfplay.py                          # cartpole, atari, dmc
    python bench/selfplay.py --config atari --steps 200 env.num_envs=8
    python bench/selfplay.py --device cuda --bf16     # on a GPU
    python bench/selfplay.py --quick

What is timed is the run's own self-play worker (`run_selfplay` with the job the pipeline
builds for it), in a thread of this process: initial inference, the configured search, the
env batch's step and the replay write, with the config's env.num_envs environments, search
and model (random weights: a step costs the same, but episodes are shorter than a trained
agent's, so resets are more frequent). The clock starts once the worker has built its envs
and taken two steps. Beside it, `env_only` is the same env batch stepped with random
actions: the environments' part of a self-play step.

A worker runs with data.worker_threads torch threads (1); `--threads` changes that. Each
round measures every config in turn (interleaved, against the machine's drift); figures
are medians over rounds.

Projection: self-play-bound wall-clock of a full run = data.total_env_steps /
(env steps/s × data.selfplay_workers) (Atari 100k: 100k steps; DMC walker: 50k agent steps).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import (
    GpuMonitor,
    SelfPlayThread,
    bench_parser,
    data_side,
    full_run,
    hours,
    median,
    worker_runs,
)

from effzero.config import TrainConfig
from effzero.data.environments import env_maker
from effzero.envs import EnvBatch, EnvSpec

POLL_S = 0.002


def selfplay_rate(conf: TrainConfig, spec: EnvSpec, device: torch.device, steps: int) -> tuple[float, float]:
    """Env steps/s of the self-play worker over `steps` env steps, after its first two steps,
    and the CPU ms of this process per env step."""
    pipeline = data_side(conf, spec, device, steps, full_replay=False)
    counters, warm = pipeline.counters, 2 * conf.env.num_envs
    worker = SelfPlayThread(pipeline).start()
    while counters.env_steps < warm and worker.running:
        time.sleep(POLL_S)
    start, cpu, start_steps = time.perf_counter(), time.process_time(), counters.env_steps
    worker.join()
    taken = counters.env_steps - start_steps
    return taken / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / taken


def env_only_rate(conf: TrainConfig, spec: EnvSpec, steps: int, seed: int) -> float:
    """Env steps/s of the same env batch stepped with uniformly random actions."""
    num_envs = conf.env.num_envs
    rng = np.random.default_rng(seed)
    with EnvBatch(env_maker(conf.env), num_envs, seed) as envs:
        batches = max(steps // num_envs, 2)
        start = time.perf_counter()
        for _ in range(batches):
            if spec.is_discrete:
                envs.step(rng.integers(0, spec.num_actions, num_envs))
            else:
                envs.step(rng.uniform(-1, 1, (num_envs, spec.action_dim)).astype(np.float32))
        return batches * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--steps", type=int, default=400, help="env steps per config and round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = min(args.steps, 40), min(args.rounds, 2)
    device, runs, threads = worker_runs(args)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    env_rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu_ms: dict[str, list[float]] = {name: [] for name in runs}
    with GpuMonitor(device) as gpu:
        for r in range(args.rounds):
            for name, (conf, spec) in runs.items():
                torch.set_num_threads(threads[name])
                rate, cpu = selfplay_rate(conf, spec, device, args.steps)
                rates[name].append(rate)
                cpu_ms[name].append(cpu)
                env_rates[name].append(env_only_rate(conf, spec, args.steps, conf.seed + r))
    print(
        f"# self-play env steps/s (one worker), median of {args.rounds} interleaved rounds of "
        f"{args.steps} env steps; bf16={args.bf16}{gpu.summary()}"
    )
    for name, (conf, _) in runs.items():
        rate, env_rate = median(rates[name]), median(env_rates[name])
        env_steps, _ = full_run(conf)
        workers = conf.data.selfplay_workers
        print(
            f"selfplay config={name} envs={conf.env.num_envs} sims={conf.search.num_simulations} "
            f"device={device} threads={threads[name]} env_steps_per_s={rate:.1f} "
            f"cpu_ms_per_step={median(cpu_ms[name]):.1f} "
            f"rounds=[{', '.join(f'{x:.1f}' for x in rates[name])}] env_only_steps_per_s={env_rate:.0f} "
            f"env_share={rate / env_rate:.0%} full_run_env_steps={env_steps} workers={workers} "
            f"selfplay_bound_wall={hours(env_steps / (rate * workers))}",
            flush=True,
        )
    print(
        "# selfplay_bound_wall = full_run_env_steps / (env_steps_per_s × workers); "
        "env_share = env_steps_per_s / env_only_steps_per_s (the envs' share of a self-play step); "
        "cpu_ms_per_step: this process's CPU time, all threads"
    )


if __name__ == "__main__":
    main()
