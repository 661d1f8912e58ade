"""What the throughput benchmarks share: the machine line, the real configs, timing, projections.

The benchmarks run as scripts (`python bench/learner.py`), so `bench/` is on `sys.path` and
they import this module as `common`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

from effzero.config import TrainConfig, register_schemas  # noqa: E402
from effzero.data.acting import build_model  # noqa: E402
from effzero.data.environments import build_spec  # noqa: E402
from effzero.data.pipeline import Pipeline, replay_layout  # noqa: E402
from effzero.data.replay import TERMINATED, TRANSITION, Replay  # noqa: E402
from effzero.envs import EnvSpec  # noqa: E402
from effzero.training import max_steps  # noqa: E402

# The benchmark names of the real configs: what `--config` accepts.
CONFIGS = {"cartpole": "cartpole", "atari": "atari_breakout", "dmc": "dmc_walker"}
# `--quick`: small enough that every script finishes in seconds on 2 CPU cores.
QUICK = ["data.batch_size=16", "search.num_simulations=4", "env.num_envs=2"]


# ---------------------------------------------------------------------- machine and device


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; a CUDA device torch cannot see ends the script."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {name}: torch {torch.__version__} sees no CUDA device here; use --device cpu")
    return device


def machine_line(device: torch.device) -> str:
    """CPU model, cores, torch threads, torch and python versions, and the device (GPU name)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = (
        f"# machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {sys.version.split()[0]}, device {device}"
    )
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        line += f" ({torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda})"
    return line


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock interval covers the work it timed."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_utilisation(device: torch.device) -> float | None:
    """The GPU's current utilisation in percent (nvidia-smi, else NVML through torch), or None."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-i={index}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return float(out.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    try:
        return float(torch.cuda.utilization(index))
    except Exception:  # no pynvml, or NVML refuses: utilisation is unknown, not an error
        return None


class GpuMonitor:
    """Samples GPU utilisation in a background thread while a `with` block runs."""

    def __init__(self, device: torch.device, every_s: float = 1.0):
        self.device, self.every_s = device, every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            value = gpu_utilisation(self.device)
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> GpuMonitor:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> str:
        """` gpu_util=..% gpu_peak_mem=..GiB` on CUDA, empty on the CPU."""
        if self.device.type != "cuda":
            return ""
        util = f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        return f" gpu_util={util} gpu_peak_mem={peak:.2f}GiB"


# ---------------------------------------------------------------------- configs


@contextmanager
def composed(name: str, overrides: list[str]) -> Iterator[DictConfig]:
    """The run config `python src/train.py experiment=<name> <overrides>` would get.

    Hydra's `${hydra:runtime.output_dir}` has no value outside `@hydra.main`, so the run's
    output directory is a temporary one (removed when the block ends).
    """
    register_schemas()
    experiment = CONFIGS.get(name, name)
    with tempfile.TemporaryDirectory(prefix="effzero-bench-") as out:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[f"experiment={experiment}", f"paths.output_dir={out}", *overrides],
            )
        yield cfg


def load_run(name: str, overrides: list[str]) -> tuple[TrainConfig, EnvSpec]:
    """The typed run config and the env's spec (builds the env once)."""
    with composed(name, overrides) as cfg:
        conf: TrainConfig = OmegaConf.to_object(cfg)
    return conf, build_spec(conf.env)


def run_overrides(args) -> list[str]:
    """Hydra overrides from the common flags: `--quick`, `--batch-size`, and free ones."""
    overrides = list(QUICK) if args.quick else []
    if args.bf16:
        overrides.append("data.worker_precision=bf16")
    if getattr(args, "batch_size", None) is not None:
        overrides.append(f"data.batch_size={args.batch_size}")
    return overrides + list(args.overrides)


def bench_parser(doc: str, batch_size: bool = False) -> argparse.ArgumentParser:
    """The flags every throughput benchmark takes (and `--batch-size` where a batch is timed)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        nargs="+",
        default=None,
        help=f"{', '.join(CONFIGS)} or any experiment name (default: all three; cartpole with --quick)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1")
    parser.add_argument(
        "--bf16", action="store_true", help="data.worker_precision=bf16 (bf16-mixed in the learner)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the configs (median)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: what the run's process uses)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a few seconds on 2 CPU cores")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides applied to every config, e.g. env.num_envs=8"
    )
    if batch_size:
        parser.add_argument(
            "--batch-size", type=int, default=None, help="default: the config's (256; cartpole 128)"
        )
    return parser


def worker_runs(args) -> tuple[torch.device, dict[str, tuple[TrainConfig, EnvSpec]], dict[str, int]]:
    """The device, the configs by benchmark name and each one's worker threads; prints the machine line.

    A worker runs with data.worker_threads torch threads unless `--threads` says otherwise.
    """
    device = pick_device(args.device)
    overrides = run_overrides(args)
    runs = {name: load_run(name, overrides) for name in config_names(args)}
    threads = {name: args.threads or conf.data.worker_threads for name, (conf, _) in runs.items()}
    torch.set_num_threads(next(iter(threads.values())))
    print(machine_line(device), flush=True)
    return device, runs, threads


def config_names(args) -> list[str]:
    if args.config:
        return args.config
    return ["cartpole"] if args.quick else list(CONFIGS)


# ---------------------------------------------------------------------- the data side


def data_side(
    conf: TrainConfig, spec: EnvSpec, device: torch.device, env_steps: int, full_replay: bool
) -> Pipeline:
    """A run's pipeline (replay, shared weights, counters, worker jobs) whose workers are not started.

    Self-play may collect `env_steps` at once: they are both the budget and the governor's
    start, so no learner is waited for. `full_replay` keeps the run's replay capacity (sampling
    cost grows with it); otherwise the replay holds just those steps. Weights and target
    weights are published (random ones: costs do not depend on them). Workers run on `device`.
    """
    capacity = conf.data.capacity
    if full_replay and capacity is None:
        capacity = replay_layout(conf.data, conf.env, conf.algo, spec, 1).capacity
    data = dataclasses.replace(
        conf.data,
        total_env_steps=env_steps,
        start_transitions=env_steps,
        capacity=capacity,
        worker_device=str(device),
    )
    template = build_model(conf.model, spec)
    pipeline = Pipeline(dataclasses.replace(conf, data=data), spec, template)
    pipeline.weights.publish(template.state_dict())
    pipeline.target_weights.publish(template.state_dict())
    return pipeline


class SelfPlayThread:
    """The pipeline's first self-play worker, run in a thread of this process.

    Its job is the one the pipeline would hand the worker process (`make_job`), so what runs
    is exactly a run's self-play loop, minus the process boundary.
    """

    def __init__(self, pipeline: Pipeline):
        supervisor = pipeline.supervisor
        worker = supervisor.workers[0]
        job = worker.make_job(0, supervisor.status.heartbeat(0))
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.target(job)
            except BaseException as error:
                self.errors.append(error)

        self.thread = threading.Thread(target=run, name="selfplay", daemon=True)

    def start(self) -> SelfPlayThread:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()
        if self.errors:
            raise self.errors[0]


# ---------------------------------------------------------------------- replay contents


def fill_random(replay: Replay, spec: EnvSpec, steps_per_lane: int, episode_length: int = 64) -> None:
    """Write random transitions of the env's shapes into every lane, in fixed-length episodes.

    For benchmarks whose speed does not depend on the values (the learner's step), and as a
    fallback when real self-play would take too long to fill a replay.
    """
    generator = torch.Generator().manual_seed(0)
    layout = replay.layout
    n = layout.lanes
    lanes = torch.arange(n)

    def observations() -> torch.Tensor:
        if layout.obs_dtype == torch.uint8:
            return torch.randint(0, 256, (n, *spec.obs_shape), dtype=torch.uint8, generator=generator)
        return torch.randn(n, *spec.obs_shape, generator=generator)

    for t in range(steps_per_lane):
        if spec.is_discrete:
            action = torch.randint(0, spec.num_actions, (n,), generator=generator)
        else:
            action = torch.rand(n, spec.action_dim, generator=generator) * 2 - 1
        ended = (t + 1) % episode_length == 0
        kind = torch.full((n,), TERMINATED if ended else TRANSITION, dtype=torch.uint8)
        policy = torch.softmax(torch.randn(n, layout.policy_size, generator=generator), -1)
        reward = torch.randn(n, generator=generator).clamp(-1, 1)
        step = t * n + lanes
        replay.append(
            lanes, observations(), action, reward, kind, torch.randn(n, generator=generator), policy, step
        )
        if ended:
            replay.end_episodes(lanes, observations(), step)


# ---------------------------------------------------------------------- timing and projections


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclasses.dataclass(frozen=True)
class Elapsed:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process, all its threads: what a shared machine's load does not inflate


def timed(fn, device: torch.device) -> Elapsed:
    """How long one call of `fn` takes, the device's queued work included."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return Elapsed(time.perf_counter() - start, time.process_time() - cpu)


def full_run(conf: TrainConfig) -> tuple[int, int]:
    """Env steps and learner updates of a complete run of `conf`.

    Updates = trainer.max_steps, else data.total_env_steps × data.replay_ratio +
    data.offline_updates (Atari 100k: 100k + 20k = 120k; DMC walker: 50k + 20k = 70k;
    cartpole: 10k × 0.5 = 5k).
    """
    return conf.data.total_env_steps, max_steps(conf)


def hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"
